//! Trace context across the bus: a published record carries the W3C
//! `traceparent` (and `baggage`, where the process propagates it) of its
//! `publish` span in its headers, and a stage's `consume` span continues
//! from them, so that one turn is one trace whichever processes handle it.
//!
//! What goes into and comes out of the headers is decided by the
//! process's global OpenTelemetry propagator, which the binary sets only
//! when it exports traces. Without it, and whenever the spans are disabled
//! (no exporter, the default log filter), nothing is injected and nothing
//! is extracted: a record carries no trace headers and this costs a check
//! of the span.

use crate::{Bus, BusError, RecordPosition};
use opentelemetry::baggage::BaggageExt;
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::{global, Context, KeyValue};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Publishes inside a `publish <topic>` span, its trace context in the
/// record's headers. `baggage`: entries to carry downstream besides what
/// the current context already carries (the gateway's user id, when the
/// operator enabled it).
pub async fn publish(
    bus: &dyn Bus,
    topic: &str,
    key: &str,
    payload: Vec<u8>,
    baggage: Option<KeyValue>,
) -> Result<RecordPosition, BusError> {
    let span = tracing::debug_span!(
        "publish",
        otel.name = format!("publish {topic}"),
        otel.kind = "producer",
        messaging.destination.name = topic,
    );
    let mut headers = Vec::new();
    if !span.is_disabled() {
        let mut cx = span.context();
        if let Some(entry) = baggage {
            cx = cx.with_baggage([entry]);
        }
        inject(&cx, &mut headers);
    }
    bus.publish(topic, key, payload, headers)
        .instrument(span)
        .await
}

/// The current span's trace context as header pairs, for a call that
/// leaves the process by other means than the bus (an action server).
pub fn current_headers() -> Vec<(String, String)> {
    let mut headers = Vec::new();
    let span = tracing::Span::current();
    if !span.is_disabled() {
        inject(&span.context(), &mut headers);
    }
    headers
}

/// Makes `span` continue the trace whose context `headers` carry (a
/// record's), and records the baggage that came with it as attributes.
/// A span without that context (no headers, or a disabled span) stays as
/// it is.
pub fn continue_from(span: &tracing::Span, headers: &[(String, String)]) {
    if span.is_disabled() {
        return;
    }
    let cx = extract(headers);
    for (key, (value, _)) in cx.baggage() {
        span.set_attribute(key.clone(), value.to_string());
    }
    // Fails only when the span has already started, which a span handed
    // here straight after its creation has not.
    let _ = span.set_parent(cx);
}

fn inject(cx: &Context, headers: &mut Vec<(String, String)>) {
    global::get_text_map_propagator(|p| p.inject_context(cx, &mut Headers(headers)));
}

fn extract(headers: &[(String, String)]) -> Context {
    global::get_text_map_propagator(|p| p.extract(&HeaderSlice(headers)))
}

struct Headers<'a>(&'a mut Vec<(String, String)>);

impl Injector for Headers<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.retain(|(k, _)| k != key);
        self.0.push((key.to_string(), value));
    }
}

struct HeaderSlice<'a>(&'a [(String, String)]);

impl Extractor for HeaderSlice<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k.as_str()).collect()
    }
}

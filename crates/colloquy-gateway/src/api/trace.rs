//! The `gateway.receive` span of a message, by HTTP or WebSocket: the
//! root of a turn's trace, or the continuation of a client's. A request's
//! `traceparent` (and `tracestate`) is honoured; its `baggage` is not:
//! what a client puts there is neither checked nor ours to pass on to
//! every stage, and the one entry the gateway adds (the user id, when the
//! operator enabled it) it adds itself, after authentication.

use axum::extract::Request;
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use opentelemetry::global;
use opentelemetry::propagation::Extractor;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Runs a message's request inside its `gateway.receive` span.
pub(super) async fn receive(req: Request, next: Next) -> Response {
    let span = tracing::debug_span!(
        "gateway.receive",
        otel.kind = "server",
        transport = "http",
        http.response.status_code = tracing::field::Empty,
    );
    if !span.is_disabled() {
        let parent = global::get_text_map_propagator(|p| p.extract(&TraceHeaders(req.headers())));
        // A span is started only when first entered: this cannot fail.
        let _ = span.set_parent(parent);
    }
    let response = next.run(req).instrument(span.clone()).await;
    span.record("http.response.status_code", response.status().as_u16());
    response
}

/// The span of one message frame of a WebSocket session: a trace of its
/// own (the session outlives many turns).
pub(super) fn ws_receive() -> tracing::Span {
    tracing::debug_span!("gateway.receive", otel.kind = "server", transport = "ws")
}

/// The trace context of a request's headers, and nothing else.
struct TraceHeaders<'a>(&'a HeaderMap);

const TRACE_CONTEXT: [&str; 2] = ["traceparent", "tracestate"];

impl Extractor for TraceHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        if !TRACE_CONTEXT.contains(&key) {
            return None;
        }
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        TRACE_CONTEXT
            .into_iter()
            .filter(|k| self.0.contains_key(*k))
            .collect()
    }
}

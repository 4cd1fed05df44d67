//! A process's logs and traces. Logs go to stderr as text or JSON, their
//! levels from `RUST_LOG`. With `telemetry.endpoint` set, the spans of
//! every turn (gateway receive, publish, consume, nlu, policy, store
//! append, action calls, delivery) are exported over OTLP/HTTP by a batch
//! processor on the tokio runtime, and a JSON log line written inside a
//! turn carries its `trace_id`.
//!
//! The turn spans are at DEBUG level, so that under any usual log filter
//! (the default `warn`, or `info`) they are disabled unless traces are
//! exported: without an endpoint a turn makes no spans at all. The
//! exporter sees them through a filter of its own that takes spans only:
//! log events never become span events, as some name the user (a stale
//! snapshot's warning), which a trace may only carry where the operator
//! opted in. A log line finds its trace by its `trace_id` instead.

use crate::config;
use anyhow::Context as _;
use opentelemetry::propagation::{TextMapCompositePropagator, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig};
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use opentelemetry_sdk::runtime::Tokio;
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use opentelemetry_sdk::trace::{BatchConfigBuilder, Sampler, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use std::time::Duration;
use tracing::{Event, Subscriber};
use tracing_subscriber::filter::{filter_fn, FilterFn, LevelFilter};
use tracing_subscriber::fmt::format::{self, FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// One export's deadline; it also bounds the flush on shutdown.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// Spans waiting for export; past it new ones are dropped (and counted by
/// the SDK), never waited for. At 10 % sampling of ~17k turns/s with
/// seven spans each, a batch of 512 leaves every ~40 ms.
const QUEUE: usize = 8192;

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The server roles, each reporting its own service name.
#[derive(Clone, Copy)]
pub enum Role {
    Serve,
    Gateway,
    Worker,
}

impl Role {
    fn service_name(self, settings: &config::Telemetry) -> &str {
        match self {
            Role::Serve => &settings.serve_service_name,
            Role::Gateway => &settings.gateway_service_name,
            Role::Worker => &settings.worker_service_name,
        }
    }
}

/// Logs alone, for the commands that are not servers.
pub fn init_logs(format: LogFormat) {
    install(format, None);
}

/// The exporter of a server role, if it has one; [`Telemetry::shutdown`]
/// flushes it.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Logs, and traces if `settings` name an endpoint. Runs on the tokio
    /// runtime, where the batch processor's task is spawned.
    pub fn start(
        settings: &config::Telemetry,
        role: Role,
        format: LogFormat,
    ) -> anyhow::Result<Telemetry> {
        if settings.endpoint.is_empty() {
            install(format, None);
            return Ok(Telemetry { provider: None });
        }
        let exporter = SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(settings.traces_url())
            .with_timeout(EXPORT_TIMEOUT)
            .build()
            .context("telemetry.endpoint: the OTLP exporter")?;
        let processor = BatchSpanProcessor::builder(exporter, Tokio)
            .with_batch_config(
                BatchConfigBuilder::default()
                    .with_max_queue_size(QUEUE)
                    .build(),
            )
            .build();
        let resource = Resource::builder()
            .with_service_name(role.service_name(settings).to_string())
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                settings.sampling_ratio,
            ))))
            .with_resource(resource)
            .build();
        // Baggage is read from and written to bus headers only where the
        // operator enabled it: a process without the flag drops the user
        // id instead of passing it on.
        let mut propagators: Vec<Box<dyn TextMapPropagator + Send + Sync>> =
            vec![Box::new(TraceContextPropagator::new())];
        if settings.user_id_baggage {
            propagators.push(Box::new(BaggagePropagator::new()));
        }
        opentelemetry::global::set_text_map_propagator(TextMapCompositePropagator::new(
            propagators,
        ));
        install(format, Some(provider.tracer("colloquy")));
        Ok(Telemetry {
            provider: Some(provider),
        })
    }

    /// Export what is still queued. The SDK's flush blocks its thread
    /// until the export task (on this runtime) answers, so it waits on a
    /// blocking thread, not on one of the runtime's.
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else {
            return;
        };
        let flushed = tokio::task::spawn_blocking(move || provider.shutdown());
        match tokio::time::timeout(EXPORT_TIMEOUT * 2, flushed).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "exporting the last spans failed"),
            Ok(Err(e)) => tracing::warn!(error = %e, "exporting the last spans failed"),
            Err(_) => tracing::warn!("the last spans were not exported in time"),
        }
    }
}

fn install(format: LogFormat, tracer: Option<opentelemetry_sdk::trace::Tracer>) {
    let logs = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let traces = tracer.map(|tracer| {
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            // Each of these is an attribute or a clock reading per span.
            .with_location(false)
            .with_threads(false)
            .with_target(false)
            .with_tracked_inactivity(false)
            .with_filter(turn_spans())
    });
    let registry = tracing_subscriber::registry().with(traces);
    let stderr = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    match format {
        LogFormat::Text => registry.with(stderr.with_filter(logs)).init(),
        LogFormat::Json => registry
            .with(
                stderr
                    .json()
                    .event_format(WithTraceId(format::format().json()))
                    .with_filter(logs),
            )
            .init(),
    }
}

/// What the exporter sees: colloquy's spans, no events.
fn turn_spans() -> FilterFn<impl Fn(&tracing::Metadata<'_>) -> bool> {
    filter_fn(|meta| meta.is_span() && meta.target().starts_with("colloquy"))
        .with_max_level_hint(LevelFilter::DEBUG)
}

/// A JSON log line, with `"trace_id"` first when it is written inside a
/// traced span: the trace of its turn, whether or not it was sampled.
struct WithTraceId<F>(F);

impl<S, N, F> FormatEvent<S, N> for WithTraceId<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        // The exporter's layer makes an entered span's context the
        // current one.
        let cx = opentelemetry::Context::current();
        let span = cx.span();
        let trace = span.span_context();
        if !trace.is_valid() {
            return self.0.format_event(ctx, writer, event);
        }
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        match line.strip_prefix('{') {
            Some(rest) => write!(writer, "{{\"trace_id\":\"{}\",{rest}", trace.trace_id()),
            None => writer.write_str(&line),
        }
    }
}

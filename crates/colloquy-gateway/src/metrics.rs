//! Prometheus metrics: request latency by route and status, messages by
//! stage and outcome, intents recognised; stage counters and queue depth
//! are read from their sources at scrape time.

use colloquy_worker::pipeline::StageObserver;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::fmt::Write;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    route: String,
    method: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabels {
    stage: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IntentLabels {
    intent: String,
}

type HistogramFamily = Family<HttpLabels, Histogram, fn() -> Histogram>;

pub struct Metrics {
    registry: Registry,
    http: HistogramFamily,
    messages: Family<StageLabels, Counter>,
    intents: Family<IntentLabels, Counter>,
}

/// Values sampled from other parts of the process when scraped.
pub struct Sampled {
    pub queue_depth: u64,
    pub retries: u64,
    pub dead_letters: u64,
    pub in_flight: u64,
    pub waiting_requests: usize,
}

fn latency_histogram() -> Histogram {
    // 0.1 ms … ~3.3 s
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("colloquy");
        let http: HistogramFamily = Family::new_with_constructor(latency_histogram);
        let messages = Family::<StageLabels, Counter>::default();
        let intents = Family::<IntentLabels, Counter>::default();
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency",
            http.clone(),
        );
        registry.register(
            "messages",
            "Messages handled by stage and outcome",
            messages.clone(),
        );
        registry.register(
            "intents",
            "Intents recognised (none = below threshold)",
            intents.clone(),
        );
        Metrics {
            registry,
            http,
            messages,
            intents,
        }
    }
}

impl Metrics {
    pub fn observe_request(&self, route: &str, method: &str, status: u16, seconds: f64) {
        self.http
            .get_or_create(&HttpLabels {
                route: route.to_string(),
                method: method.to_string(),
                status,
            })
            .observe(seconds);
    }

    pub fn render(&self, sampled: &Sampled) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode_registry(&mut out, &self.registry)
            .expect("encoding to a String");
        let gauges: [(&str, &str, &str, u64); 5] = [
            (
                "colloquy_queue_depth",
                "gauge",
                "Accepted messages not yet handled",
                sampled.queue_depth,
            ),
            (
                "colloquy_stage_retries",
                "counter",
                "Handler attempts that failed and were retried",
                sampled.retries,
            ),
            (
                "colloquy_dead_letters",
                "counter",
                "Messages moved to a dead-letter topic",
                sampled.dead_letters,
            ),
            (
                "colloquy_stage_in_flight",
                "gauge",
                "Messages being handled now",
                sampled.in_flight,
            ),
            (
                "colloquy_waiting_requests",
                "gauge",
                "Requests waiting for replies",
                sampled.waiting_requests as u64,
            ),
        ];
        for (name, kind, help, value) in gauges {
            let sample = if kind == "counter" {
                format!("{name}_total")
            } else {
                name.to_string()
            };
            let _ = write!(
                out,
                "# HELP {name} {help}.\n# TYPE {name} {kind}\n{sample} {value}\n"
            );
        }
        out.push_str("# EOF\n");
        out
    }
}

impl StageObserver for Metrics {
    fn message(&self, stage: &'static str, outcome: &'static str) {
        self.messages
            .get_or_create(&StageLabels { stage, outcome })
            .inc();
    }

    fn intent(&self, intent: Option<&str>) {
        let intent = intent.unwrap_or("none").to_string();
        self.intents.get_or_create(&IntentLabels { intent }).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family() {
        let m = Metrics::default();
        m.observe_request("messages", "POST", 202, 0.002);
        m.message("policy", "ok");
        m.intent(Some("ask_stock"));
        let text = m.render(&Sampled {
            queue_depth: 7,
            retries: 1,
            dead_letters: 2,
            in_flight: 0,
            waiting_requests: 0,
        });
        assert!(
            text.contains("colloquy_http_request_duration_seconds_bucket{"),
            "{text}"
        );
        assert!(
            text.contains("route=\"messages\"") && text.contains("status=\"202\""),
            "{text}"
        );
        assert!(
            text.contains("colloquy_messages_total{stage=\"policy\",outcome=\"ok\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("colloquy_intents_total{intent=\"ask_stock\"} 1"),
            "{text}"
        );
        assert!(text.contains("colloquy_queue_depth 7"), "{text}");
        assert!(text.contains("colloquy_dead_letters_total 2"), "{text}");
        assert!(text.ends_with("# EOF\n"));
        assert_eq!(text.matches("# EOF").count(), 1);
    }
}

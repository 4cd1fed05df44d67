//! Throughput of a bus backend: durable publishes with 1 to 4,096
//! concurrent publishers (on the embedded bus also how many share an
//! fsync), then a stage runner draining 8 partitions with a no-op handler,
//! commits included, then the relay: the bus traffic of a distributed turn
//! alone (client publishes to `in`, a stage on its own bus forwards to
//! `out`, the client's follower of `out` completes it), with users in a
//! closed loop as in `colloquy bench`, and the broker's CPU per turn.
//!
//! `cargo bench -p colloquy-bus --bench bus [-- embedded|kafka]` (embedded
//! by default). Kafka runs against `COLLOQUY_KAFKA_BROKERS` (`host:port`,
//! comma-separated) if set, else against a tansu broker it starts (see
//! `colloquy_bus::kafka::testing`); `COLLOQUY_KAFKA_PROPERTIES`
//! (`name=value,…`) adds librdkafka properties, e.g.
//! `fetch.wait.max.ms=10,linger.ms=0`. Results also go to
//! `bench-results/bus.json` (`bus-kafka.json`) under the workspace root, or
//! under the directory in `COLLOQUY_BENCH_OUT`.

#[path = "../../../benches/report.rs"]
mod report;

use async_trait::async_trait;
use colloquy_bus::conformance::unique;
use colloquy_bus::kafka::testing::TestBroker;
use colloquy_bus::runner::{Handler, HandlerError, StageConfig, StageRunner};
use colloquy_bus::{Bus, EmbeddedBus, EmbeddedConfig, KafkaBus, KafkaConfig, Record};
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

const PAYLOAD_BYTES: usize = 256;
const RUN_FOR: Duration = Duration::from_secs(3);
const PARTITIONS: u32 = 8;
const RUNNER_RECORDS: u64 = 200_000;

enum Backend {
    Embedded,
    Kafka {
        cfg: KafkaConfig,
        /// Kept alive for the run when the bench started its own broker.
        broker: Option<TestBroker>,
    },
}

/// A fresh bus with an empty topic `topic` of [`PARTITIONS`] partitions.
struct Opened {
    bus: Arc<dyn Bus>,
    topic: String,
    /// The embedded bus, for its write counters.
    embedded: Option<Arc<EmbeddedBus>>,
    _dir: Option<tempfile::TempDir>,
}

impl Backend {
    fn from_args() -> Backend {
        // cargo passes `--bench`; the backend is the first other argument.
        let name = std::env::args()
            .skip(1)
            .find(|a| !a.starts_with("--"))
            .unwrap_or_else(|| "embedded".to_string());
        match name.as_str() {
            "embedded" => Backend::Embedded,
            "kafka" => with_properties(match std::env::var("COLLOQUY_KAFKA_BROKERS") {
                Ok(brokers) => Backend::Kafka {
                    cfg: KafkaConfig {
                        brokers: brokers.split(',').map(str::to_string).collect(),
                        ..KafkaConfig::default()
                    },
                    broker: None,
                },
                Err(_) => {
                    let broker = TestBroker::start();
                    Backend::Kafka {
                        cfg: broker.config(),
                        broker: Some(broker),
                    }
                }
            }),
            other => panic!("unknown backend {other:?}: embedded or kafka"),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Backend::Embedded => "embedded",
            Backend::Kafka { .. } => "kafka",
        }
    }

    /// librdkafka batches across publishers, so it needs many in flight
    /// to show its rate.
    fn publishers(&self) -> &'static [usize] {
        match self {
            Backend::Embedded => &[1, 64, 512],
            Backend::Kafka { .. } => &[1, 64, 512, 4096],
        }
    }

    async fn open(&self) -> Opened {
        let opened = match self {
            Backend::Embedded => {
                let dir = tempfile::tempdir().expect("temp dir");
                let cfg = EmbeddedConfig {
                    max_backlog: u64::MAX,
                    max_queued: 1 << 16,
                    ..EmbeddedConfig::default()
                };
                let bus = Arc::new(EmbeddedBus::open(dir.path(), cfg).expect("open bus"));
                Opened {
                    bus: Arc::clone(&bus) as _,
                    topic: "bench".to_string(),
                    embedded: Some(bus),
                    _dir: Some(dir),
                }
            }
            // The broker outlives a bus: a fresh topic keeps runs apart.
            Backend::Kafka { cfg, .. } => Opened {
                bus: Arc::new(KafkaBus::new(cfg.clone()).expect("Kafka bus")),
                topic: unique("bench"),
                embedded: None,
                _dir: None,
            },
        };
        opened
            .bus
            .ensure_topic(&opened.topic, PARTITIONS)
            .await
            .expect("topic");
        opened
    }
}

/// The Kafka backend with the properties of `COLLOQUY_KAFKA_PROPERTIES`.
fn with_properties(mut backend: Backend) -> Backend {
    if let (Backend::Kafka { cfg, .. }, Ok(list)) =
        (&mut backend, std::env::var("COLLOQUY_KAFKA_PROPERTIES"))
    {
        for pair in list.split(',').filter(|p| !p.is_empty()) {
            let (name, value) = pair
                .split_once('=')
                .expect("COLLOQUY_KAFKA_PROPERTIES: name=value,…");
            cfg.properties.insert(name.into(), value.into());
        }
    }
    backend
}

fn main() {
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let backend = Backend::from_args();
    let publish: Vec<_> = backend
        .publishers()
        .iter()
        .map(|&c| runtime.block_on(publish(&backend, c)))
        .collect();
    let runner = runtime.block_on(runner(&backend));
    let relay: Vec<_> = [1, 64, 256]
        .iter()
        .map(|&users| runtime.block_on(relay(&backend, users)))
        .collect();
    let report = json!({
        "bench": "bus",
        "backend": backend.name(),
        "payload_bytes": PAYLOAD_BYTES,
        "partitions": PARTITIONS,
        "publish": publish,
        "runner": runner,
        "relay": relay,
    });
    let file = match backend {
        Backend::Embedded => "bus.json",
        Backend::Kafka { .. } => "bus-kafka.json",
    };
    report::write(file, &report);
}

async fn publish(backend: &Backend, publishers: usize) -> serde_json::Value {
    let opened = backend.open().await;
    let start = Instant::now();
    let deadline = start + RUN_FOR;
    let tasks: Vec<_> = (0..publishers)
        .map(|p| {
            let (bus, topic) = (Arc::clone(&opened.bus), opened.topic.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut n = 0u64;
                while Instant::now() < deadline {
                    let sent = Instant::now();
                    let key = format!("user-{p}-{}", n % 16);
                    bus.publish(&topic, &key, vec![7; PAYLOAD_BYTES], vec![])
                        .await
                        .expect("publish");
                    latencies.push(sent.elapsed());
                    n += 1;
                }
                latencies
            })
        })
        .collect();
    let mut latencies = latencies_of(tasks).await;
    let elapsed = start.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let pct = |q: f64| quantile_ms(&latencies, q);
    let mut result = json!({
        "publishers": publishers,
        "records": latencies.len(),
        "records_per_second": latencies.len() as f64 / elapsed,
        "latency_ms": { "p50": pct(0.50), "p99": pct(0.99), "max": pct(1.0) },
    });
    if let Some(embedded) = &opened.embedded {
        let stats = embedded.write_stats();
        result["batches"] = json!(stats.batches);
        result["records_per_batch"] = json!(stats.records as f64 / stats.batches as f64);
        result["fsyncs"] = json!(stats.fsyncs);
        result["records_per_fsync"] = json!(stats.records as f64 / stats.fsyncs as f64);
    }
    println!("publish {publishers:>4} publishers: {result}");
    result
}

/// Every latency the timing tasks measured.
async fn latencies_of(tasks: Vec<tokio::task::JoinHandle<Vec<Duration>>>) -> Vec<Duration> {
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.expect("timing task"));
    }
    latencies
}

/// The `q` quantile (0 to 1) of `sorted` latencies, in milliseconds.
fn quantile_ms(sorted: &[Duration], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e3
}

struct NoOp;

#[async_trait]
impl Handler for NoOp {
    async fn handle(&self, _record: &Record) -> Result<(), HandlerError> {
        Ok(())
    }
}

/// Fill 8 partitions, then time a stage draining them (commits included).
async fn runner(backend: &Backend) -> serde_json::Value {
    // Held to the end: it owns the embedded bus's directory.
    let opened = backend.open().await;
    let (bus, topic) = (Arc::clone(&opened.bus), opened.topic.clone());
    let fillers: Vec<_> = (0..1024u64)
        .map(|f| {
            let (bus, topic) = (Arc::clone(&bus), topic.clone());
            tokio::spawn(async move {
                for n in (f..RUNNER_RECORDS).step_by(1024) {
                    bus.publish(
                        &topic,
                        &format!("user-{}", n % 10_000),
                        vec![7; PAYLOAD_BYTES],
                        vec![],
                    )
                    .await
                    .expect("publish");
                }
            })
        })
        .collect();
    for filler in fillers {
        filler.await.expect("filler task");
    }
    // Each lag reading costs Kafka a request per partition.
    let poll = match backend {
        Backend::Embedded => Duration::from_millis(2),
        Backend::Kafka { .. } => Duration::from_millis(20),
    };
    let start = Instant::now();
    let handle = StageRunner::spawn(
        Arc::clone(&bus),
        StageConfig::new(topic.as_str(), "bench"),
        Arc::new(NoOp),
    )
    .await
    .expect("spawn stage");
    while bus.lag("bench", &topic).await.expect("lag") > 0 {
        tokio::time::sleep(poll).await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    handle.shutdown().await;
    let result = json!({
        "records": RUNNER_RECORDS,
        "seconds": elapsed,
        "records_per_second": RUNNER_RECORDS as f64 / elapsed,
    });
    println!("runner, no-op handler, {PARTITIONS} partitions: {result}");
    result
}

/// Forwards every record of `in` to `out`, as the policy stage publishes
/// its outcome to `chat.out`.
struct Forward {
    bus: Arc<dyn Bus>,
    out: String,
}

#[async_trait]
impl Handler for Forward {
    async fn handle(&self, record: &Record) -> Result<(), HandlerError> {
        self.bus
            .publish(&self.out, &record.key, record.payload.clone(), vec![])
            .await
            .map(drop)
            .map_err(|e| HandlerError::Unavailable(e.to_string()))
    }
}

type Waiting = Arc<std::sync::Mutex<HashMap<u64, tokio::sync::oneshot::Sender<()>>>>;

/// `users` clients in a closed loop, each publishing to `in` and waiting
/// for its record to come back on `out`: the broker's share of a
/// distributed turn (two publishes, two fetches, the stage's commits).
async fn relay(backend: &Backend, users: usize) -> serde_json::Value {
    let client = backend.open().await;
    let stage_bus = match backend {
        // One process: the stage shares the bus.
        Backend::Embedded => Arc::clone(&client.bus),
        // A worker is another process with clients of its own.
        Backend::Kafka { cfg, .. } => {
            Arc::new(KafkaBus::new(cfg.clone()).expect("Kafka bus")) as Arc<dyn Bus>
        }
    };
    let (input, out) = (client.topic.clone(), format!("{}.out", client.topic));
    client
        .bus
        .ensure_topic(&out, PARTITIONS)
        .await
        .expect("topic");
    let stage = StageRunner::spawn(
        Arc::clone(&stage_bus),
        StageConfig::new(input.as_str(), "relay"),
        Arc::new(Forward {
            bus: Arc::clone(&stage_bus),
            out: out.clone(),
        }),
    )
    .await
    .expect("spawn stage");
    let waiting: Waiting = Arc::default();
    let followers: Vec<_> = (0..PARTITIONS)
        .map(|partition| {
            let (bus, out, waiting) = (Arc::clone(&client.bus), out.clone(), Arc::clone(&waiting));
            tokio::spawn(async move {
                let mut next = 0;
                loop {
                    let records = bus
                        .fetch(&out, partition, next, 512, Duration::from_millis(500))
                        .await
                        .expect("follow out");
                    for r in records {
                        next = r.offset + 1;
                        let id = u64::from_le_bytes(r.payload[..8].try_into().expect("id"));
                        if let Some(done) = waiting.lock().expect("waiting").remove(&id) {
                            let _ = done.send(());
                        }
                    }
                }
            })
        })
        .collect();
    let cpu_before = backend.broker_cpu();
    let start = Instant::now();
    let deadline = start + RUN_FOR;
    let tasks: Vec<_> = (0..users as u64)
        .map(|u| {
            let (bus, input, waiting) =
                (Arc::clone(&client.bus), input.clone(), Arc::clone(&waiting));
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut n = 0u64;
                while Instant::now() < deadline {
                    let id = u << 32 | n;
                    let (done, back) = tokio::sync::oneshot::channel();
                    waiting.lock().expect("waiting").insert(id, done);
                    let mut payload = id.to_le_bytes().to_vec();
                    payload.resize(PAYLOAD_BYTES, 7);
                    let sent = Instant::now();
                    bus.publish(&input, &format!("user-{u}"), payload, vec![])
                        .await
                        .expect("publish");
                    back.await.expect("relayed");
                    latencies.push(sent.elapsed());
                    n += 1;
                }
                latencies
            })
        })
        .collect();
    let mut latencies = latencies_of(tasks).await;
    let elapsed = start.elapsed().as_secs_f64();
    let broker_cpu = backend.broker_cpu().zip(cpu_before).map(|(a, b)| a - b);
    for f in followers {
        f.abort();
    }
    stage.shutdown().await;
    latencies.sort_unstable();
    let pct = |q: f64| quantile_ms(&latencies, q);
    let turns = latencies.len() as f64;
    let result = json!({
        "users": users,
        "turns_per_second": turns / elapsed,
        "latency_ms": { "p50": pct(0.50), "p99": pct(0.99) },
        "broker_cpu_seconds": broker_cpu,
        "broker_cpu_ms_per_turn": broker_cpu.map(|s| s * 1e3 / turns),
    });
    println!("relay {users:>4} users: {result}");
    result
}

impl Backend {
    /// CPU seconds the broker this bench started has used so far.
    fn broker_cpu(&self) -> Option<f64> {
        let Backend::Kafka {
            broker: Some(broker),
            ..
        } = self
        else {
            return None;
        };
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", broker.pid())).ok()?;
        // Fields 14 and 15 (user, system), in clock ticks, after the
        // parenthesised command name.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let ticks: f64 =
            fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
        Some(ticks / 100.0)
    }
}

//! Throughput of the embedded bus: durable publishes with 1, 64 and 512
//! concurrent publishers (and how many share an fsync), then a stage runner
//! draining 8 partitions with a no-op handler.
//!
//! `cargo bench -p colloquy-bus --bench bus`; results also go to
//! `bench-results/bus.json` under the workspace root, or under the
//! directory in `COLLOQUY_BENCH_OUT`.

use async_trait::async_trait;
use colloquy_bus::runner::{Handler, HandlerError, StageConfig, StageRunner};
use colloquy_bus::{Bus, EmbeddedBus, EmbeddedConfig, Record};
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

const PUBLISHERS: [usize; 3] = [1, 64, 512];
const PAYLOAD_BYTES: usize = 256;
const RUN_FOR: Duration = Duration::from_secs(3);
const PARTITIONS: u32 = 8;
const RUNNER_RECORDS: u64 = 200_000;

fn main() {
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let publish: Vec<_> = PUBLISHERS
        .iter()
        .map(|&c| runtime.block_on(publish(c)))
        .collect();
    let runner = runtime.block_on(runner());
    let report = json!({
        "bench": "bus",
        "backend": "embedded",
        "payload_bytes": PAYLOAD_BYTES,
        "partitions": PARTITIONS,
        "publish": publish,
        "runner": runner,
    });
    let dir = std::env::var_os("COLLOQUY_BENCH_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../bench-results"));
    std::fs::create_dir_all(&dir).expect("create the results directory");
    let path = dir.join("bus.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report).unwrap() + "\n")
        .expect("write results");
    println!("wrote {}", path.display());
}

fn open() -> (tempfile::TempDir, Arc<EmbeddedBus>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = EmbeddedConfig {
        max_backlog: u64::MAX,
        max_queued: 1 << 16,
        ..EmbeddedConfig::default()
    };
    let bus = Arc::new(EmbeddedBus::open(dir.path(), cfg).expect("open bus"));
    (dir, bus)
}

async fn publish(publishers: usize) -> serde_json::Value {
    let (_dir, bus) = open();
    bus.ensure_topic("bench", PARTITIONS).await.expect("topic");
    let start = Instant::now();
    let deadline = start + RUN_FOR;
    let tasks: Vec<_> = (0..publishers)
        .map(|p| {
            let bus = Arc::clone(&bus);
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut n = 0u64;
                while Instant::now() < deadline {
                    let sent = Instant::now();
                    let key = format!("user-{p}-{}", n % 16);
                    bus.publish("bench", &key, vec![7; PAYLOAD_BYTES], vec![])
                        .await
                        .expect("publish");
                    latencies.push(sent.elapsed());
                    n += 1;
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.expect("publisher task"));
    }
    let elapsed = start.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e3;
    let stats = bus.write_stats();
    let result = json!({
        "publishers": publishers,
        "records": latencies.len(),
        "records_per_second": latencies.len() as f64 / elapsed,
        "batches": stats.batches,
        "records_per_batch": stats.records as f64 / stats.batches as f64,
        "fsyncs": stats.fsyncs,
        "records_per_fsync": stats.records as f64 / stats.fsyncs as f64,
        "latency_ms": { "p50": pct(0.50), "p99": pct(0.99), "max": pct(1.0) },
    });
    println!("publish {publishers:>3} publishers: {result}");
    result
}

struct NoOp;

#[async_trait]
impl Handler for NoOp {
    async fn handle(&self, _record: &Record) -> Result<(), HandlerError> {
        Ok(())
    }
}

/// Fill 8 partitions, then time a stage draining them (commits included).
async fn runner() -> serde_json::Value {
    let (_dir, bus) = open();
    bus.ensure_topic("bench", PARTITIONS).await.expect("topic");
    let fillers: Vec<_> = (0..256u64)
        .map(|f| {
            let bus = Arc::clone(&bus);
            tokio::spawn(async move {
                for n in (f..RUNNER_RECORDS).step_by(256) {
                    bus.publish(
                        "bench",
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
    let bus: Arc<dyn Bus> = bus;
    let start = Instant::now();
    let handle = StageRunner::spawn(
        Arc::clone(&bus),
        StageConfig::new("bench", "bench"),
        Arc::new(NoOp),
    )
    .await
    .expect("spawn stage");
    while bus.lag("bench", "bench").await.expect("lag") > 0 {
        tokio::time::sleep(Duration::from_millis(2)).await;
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

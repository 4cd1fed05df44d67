//! Append throughput and latency of `SqliteStore` under concurrent users,
//! each appending 3-event messages back to back, as workers would.
//!
//! `cargo bench -p colloquy-store --bench append`; results also go to
//! `bench-results/store.json` under the workspace root, or under the
//! directory in `COLLOQUY_BENCH_OUT`.

use colloquy_store::{conformance, ConversationStore, SqliteStore};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

const USERS: [usize; 3] = [1, 64, 512];
const EVENTS_PER_APPEND: usize = 3;
const RUN_FOR: Duration = Duration::from_secs(3);

fn main() {
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let results: Vec<_> = USERS
        .iter()
        .map(|&users| runtime.block_on(run(users)))
        .collect();
    let report = json!({
        "bench": "store_append",
        "backend": "sqlite",
        "events_per_append": EVENTS_PER_APPEND,
        "seconds_per_run": RUN_FOR.as_secs_f64(),
        "results": results,
    });
    let dir = std::env::var_os("COLLOQUY_BENCH_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).ancestors().nth(2);
            workspace
                .expect("crate sits in crates/")
                .join("bench-results")
        });
    std::fs::create_dir_all(&dir).expect("create the results directory");
    let path = dir.join("store.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report).unwrap() + "\n")
        .expect("write results");
    println!("wrote {}", path.display());
}

async fn run(users: usize) -> serde_json::Value {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Arc::new(SqliteStore::open(dir.path()).expect("open store"));
    let start = Instant::now();
    let deadline = start + RUN_FOR;
    let tasks: Vec<_> = (0..users)
        .map(|u| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let user = format!("bench-user-{u}");
                let (mut seq, mut latencies) = (0, Vec::new());
                while Instant::now() < deadline {
                    let batch =
                        conformance::events(&user, seq, EVENTS_PER_APPEND, seq as i64, "bench");
                    let sent = Instant::now();
                    seq = store.append(&user, seq, &batch).await.expect("append");
                    latencies.push(sent.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.expect("appender task"));
    }
    let elapsed = start.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let ms = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e3;
    let stats = store.stats();
    let appends = latencies.len() as f64;
    let result = json!({
        "users": users,
        "appends": latencies.len(),
        "appends_per_s": appends / elapsed,
        "events_per_s": appends * EVENTS_PER_APPEND as f64 / elapsed,
        "commits": stats.commits,
        "mean_batch": stats.requests as f64 / stats.commits as f64,
        "p50_ms": ms(0.50),
        "p99_ms": ms(0.99),
    });
    println!(
        "users {users:>4}: {:>8.0} appends/s {:>8.0} events/s  {} commits (mean batch {:.1})  p50 {:.2} ms  p99 {:.2} ms",
        appends / elapsed,
        appends * EVENTS_PER_APPEND as f64 / elapsed,
        stats.commits,
        stats.requests as f64 / stats.commits as f64,
        ms(0.50),
        ms(0.99),
    );
    result
}

//! Get and put throughput of the Redis L1 from one client (one
//! `RedisHotStates`, one multiplexed connection), one call at a time and
//! with many calls in flight, as a worker's concurrent users would issue
//! them.
//!
//! `cargo bench -p colloquy-store --bench l1`; Redis from
//! `COLLOQUY_BENCH_REDIS_URL` (default `redis://127.0.0.1:6379`). Results
//! also go to `bench-results/l1.json` under the workspace root, or under
//! the directory in `COLLOQUY_BENCH_OUT`.

use colloquy_core::{State, Value};
use colloquy_store::l1::{HotStates, RedisHotStates, RedisL1Config};
use colloquy_store::SnapshotKey;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const IN_FLIGHT: [usize; 3] = [1, 16, 64];
const USERS: usize = 1_000;
const RUN_FOR: Duration = Duration::from_secs(3);

#[derive(Clone, Copy)]
enum Op {
    Put,
    Get,
}

fn main() {
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let url = std::env::var("COLLOQUY_BENCH_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let config = RedisL1Config {
        url: url.clone(),
        key_prefix: format!("colloquy-bench:{nanos}:"),
        // Short: the bench keys must not linger in a shared Redis.
        ttl_secs: 60,
        ..RedisL1Config::default()
    };
    let key = SnapshotKey::new(b"bench-l1-key-0123456789abcdefghij".to_vec()).unwrap();
    let sample = state("bench-user-0", 1);
    let entry_bytes = serde_json::to_vec(&key.sign(&sample)).unwrap().len() + 21;
    let hot = runtime.block_on(async { Arc::new(RedisHotStates::new(&config, key).unwrap()) });

    let mut results = Vec::new();
    for &in_flight in &IN_FLIGHT {
        // Puts first, so that the gets find every user.
        for op in [Op::Put, Op::Get] {
            let r = runtime.block_on(run(Arc::clone(&hot), op, in_flight));
            results.push(r);
        }
    }
    let stats = hot.stats();
    assert_eq!(stats.errors, 0, "Redis at {url} failed calls: {stats:?}");
    let report = json!({
        "bench": "l1_redis",
        "url_host": url.rsplit('@').next(),
        "users": USERS,
        "entry_bytes": entry_bytes,
        "timeout_ms": config.timeout_ms,
        "seconds_per_run": RUN_FOR.as_secs_f64(),
        "results": results,
        "stats": { "hits": stats.hits, "misses": stats.misses, "errors": stats.errors },
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
    let path = dir.join("l1.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report).unwrap() + "\n")
        .expect("write results");
    println!("wrote {}", path.display());
}

/// A state of typical size: a handful of slots and an active flow.
fn state(user: &str, seq: u64) -> State {
    let mut s = State::new(user);
    s.seq = seq;
    s.last_ts_ms = 1_700_000_000_000 + seq as i64;
    s.slots.insert("size".into(), Value::Int(39));
    s.slots
        .insert("brand".into(), Value::Text("星云跑鞋".into()));
    s.slots.insert("color".into(), Value::Text("black".into()));
    s.slots.insert("budget".into(), Value::Float(499.0));
    s.last_intent = Some("ask_stock".into());
    s.last_confidence = 0.93;
    s.recent_messages
        .extend((0..8).map(|i| format!("0190a5c2-7d1e-7000-8000-{i:012}")));
    s
}

async fn run(hot: Arc<RedisHotStates>, op: Op, in_flight: usize) -> serde_json::Value {
    let start = Instant::now();
    let deadline = start + RUN_FOR;
    let tasks: Vec<_> = (0..in_flight)
        .map(|t| {
            let hot = Arc::clone(&hot);
            tokio::spawn(async move {
                let (mut n, mut latencies) = (0usize, Vec::new());
                while Instant::now() < deadline {
                    let user = format!("bench-user-{}", (t + n * in_flight) % USERS);
                    let sent = Instant::now();
                    match op {
                        Op::Put => hot.put(&state(&user, 1 + n as u64)).await,
                        Op::Get => {
                            hot.get(&user).await;
                        }
                    }
                    latencies.push(sent.elapsed());
                    n += 1;
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.expect("bench task"));
    }
    let elapsed = start.elapsed().as_secs_f64();
    latencies.sort();
    let pct = |p: f64| {
        let i = ((latencies.len() as f64 * p) as usize).min(latencies.len() - 1);
        latencies[i].as_secs_f64() * 1e6
    };
    let name = match op {
        Op::Put => "put",
        Op::Get => "get",
    };
    let ops_per_s = latencies.len() as f64 / elapsed;
    println!(
        "{name} in_flight={in_flight:>3}: {ops_per_s:>9.0} ops/s  p50 {:>6.0} µs  p99 {:>6.0} µs",
        pct(0.50),
        pct(0.99)
    );
    json!({
        "op": name,
        "in_flight": in_flight,
        "ops": latencies.len(),
        "ops_per_s": ops_per_s,
        "p50_us": pct(0.50),
        "p99_us": pct(0.99),
    })
}

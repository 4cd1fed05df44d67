//! Get and put throughput of the Redis L1 from one client (one
//! `RedisHotStates`, one multiplexed connection), one call at a time and
//! with many calls in flight, as a worker's concurrent users would issue
//! them.
//!
//! `cargo bench -p colloquy-store --bench l1`; Redis from
//! `COLLOQUY_BENCH_REDIS_URL` (default `redis://127.0.0.1:6379`). Results
//! also go to `bench-results/l1.json` under the workspace root, or under
//! the directory in `COLLOQUY_BENCH_OUT`.

#[path = "../../../benches/report.rs"]
mod report;

use colloquy_core::{State, Value};
use colloquy_store::l1::{HotStates, HotStats, RedisHotStates, RedisL1Config};
use colloquy_store::SnapshotKey;
use redis::aio::ConnectionManager;
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};
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
    let key_for_codec = key.clone();
    let hot = runtime.block_on(async { Arc::new(RedisHotStates::new(&config, key).unwrap()) });

    let raw = runtime.block_on(async {
        let client = redis::Client::open(url.as_str()).expect("redis url");
        let conn = ConnectionManager::new(client)
            .await
            .unwrap_or_else(|e| panic!("Redis at {url} is unreachable: {e}"));
        let value = vec![b'x'; entry_bytes];
        Target::Raw(
            conn,
            Arc::new(value),
            format!("{}raw:", config.key_prefix).into(),
        )
    });
    let mut results = Vec::new();
    for &in_flight in &IN_FLIGHT {
        for target in [Target::L1(Arc::clone(&hot)), raw.clone()] {
            // Puts first, so that the gets find every user.
            for op in [Op::Put, Op::Get] {
                results.push(runtime.block_on(run(target.clone(), op, in_flight)));
            }
        }
    }
    let stats = hot.stats();
    if stats.errors > 0 {
        // Calls past the timeout are dropped as a worker would drop them;
        // they are part of the result, not a reason to discard it.
        println!("{} calls failed or timed out: {stats:?}", stats.errors);
    }
    let codec = codec(&key_for_codec, &sample);
    let report = json!({
        "bench": "l1_redis",
        "url_host": url.rsplit('@').next(),
        "users": USERS,
        "entry_bytes": entry_bytes,
        "timeout_ms": config.timeout.as_millis() as u64,
        "seconds_per_run": RUN_FOR.as_secs_f64(),
        "results": results,
        "codec_per_s": codec,
        "stats": { "hits": stats.hits, "misses": stats.misses, "errors": stats.errors },
    });
    report::write("l1.json", &report);
}

/// What each call costs in CPU before Redis sees it, on one core: signing
/// and encoding an entry (put), decoding and verifying it (get), done the
/// way the backend does.
fn codec(key: &SnapshotKey, state: &State) -> serde_json::Value {
    let rate = |f: &mut dyn FnMut()| {
        let start = Instant::now();
        let mut n = 0u64;
        while start.elapsed() < Duration::from_secs(1) {
            f();
            n += 1;
        }
        n as f64 / start.elapsed().as_secs_f64()
    };
    let encoded = serde_json::to_vec(&key.sign(state)).unwrap();
    let encode = rate(&mut || {
        std::hint::black_box(serde_json::to_vec(&key.sign(state)).unwrap());
    });
    let decode = rate(&mut || {
        let s: colloquy_store::Snapshot = serde_json::from_slice(&encoded).unwrap();
        key.verify(&s).unwrap();
        std::hint::black_box(s);
    });
    println!("codec on one core: sign+encode {encode:.0}/s, decode+verify {decode:.0}/s");
    json!({ "sign_encode": encode, "decode_verify": decode })
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
        .extend((0..8).map(|i| format!("0190a5c2-7d1e-7000-8000-{i:012}").into()));
    s
}

/// Who the calls go through: the L1 backend, or plain GET/SET of an
/// entry-sized value on a bare connection, the baseline that shows what
/// the backend adds (signing, verifying, the put script, timeouts).
#[derive(Clone)]
enum Target {
    L1(Arc<RedisHotStates>),
    Raw(ConnectionManager, Arc<Vec<u8>>, Arc<str>),
}

async fn call(target: &mut Target, op: Op, user: &str, seq: u64) {
    match (target, op) {
        (Target::L1(hot), Op::Put) => hot.put(Arc::new(state(user, seq))).await,
        (Target::L1(hot), Op::Get) => {
            std::hint::black_box(hot.get(user).await);
        }
        (Target::Raw(conn, value, prefix), Op::Put) => {
            let set = redis::cmd("SET")
                .arg(format!("{prefix}{user}"))
                .arg(value.as_slice())
                .arg("PX")
                .arg(60_000)
                .query_async::<()>(conn)
                .await;
            set.expect("raw SET");
        }
        (Target::Raw(conn, _, prefix), Op::Get) => {
            let got = redis::cmd("GET")
                .arg(format!("{prefix}{user}"))
                .query_async::<Option<Vec<u8>>>(conn)
                .await;
            std::hint::black_box(got.expect("raw GET"));
        }
    }
}

async fn run(target: Target, op: Op, in_flight: usize) -> serde_json::Value {
    let stats = |target: &Target| match target {
        Target::L1(hot) => hot.stats(),
        Target::Raw(..) => HotStats::default(),
    };
    let before = stats(&target);
    let start = Instant::now();
    let deadline = start + RUN_FOR;
    // One seq for all, so that every put is newer than the entry it meets
    // (a worker only puts states it just committed).
    let seq = Arc::new(AtomicU64::new(1));
    let tasks: Vec<_> = (0..in_flight)
        .map(|t| {
            let (mut target, seq) = (target.clone(), Arc::clone(&seq));
            tokio::spawn(async move {
                let (mut n, mut latencies) = (0usize, Vec::new());
                while Instant::now() < deadline {
                    let user = format!("bench-user-{}", (t + n * in_flight) % USERS);
                    let seq = seq.fetch_add(1, Ordering::Relaxed);
                    let sent = Instant::now();
                    call(&mut target, op, &user, seq).await;
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
    let after = stats(&target);
    // A call that failed or was skipped (backoff) returns at once and must
    // not count as throughput; raw calls panic on failure instead.
    let failed = match op {
        Op::Put => after.errors - before.errors,
        Op::Get => after.misses - before.misses,
    } as usize;
    let ok = latencies.len() - failed.min(latencies.len());
    latencies.sort();
    let pct = |p: f64| {
        let i = ((latencies.len() as f64 * p) as usize).min(latencies.len() - 1);
        latencies[i].as_secs_f64() * 1e6
    };
    let name = match op {
        Op::Put => "put",
        Op::Get => "get",
    };
    let via = match target {
        Target::L1(_) => "l1",
        Target::Raw(..) => "raw",
    };
    let ops_per_s = ok as f64 / elapsed;
    println!(
        "{via:>3} {name} in_flight={in_flight:>3}: {ops_per_s:>9.0} ops/s  p50 {:>6.0} µs  p99 {:>6.0} µs  failed {failed}",
        pct(0.50),
        pct(0.99)
    );
    json!({
        "via": via,
        "op": name,
        "in_flight": in_flight,
        "calls": latencies.len(),
        "failed": failed,
        "ops_per_s": ops_per_s,
        "p50_us": pct(0.50),
        "p99_us": pct(0.99),
    })
}

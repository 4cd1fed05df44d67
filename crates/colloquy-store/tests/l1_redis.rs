//! The L1 on a real Redis: the conformance suite
//! (`colloquy_store::l1::conformance`) on the Redis backend and on the
//! layered one in front of it (what workers run); then what only a shared
//! Redis can get wrong (forged entries, TTLs) and how it behaves when Redis
//! dies and comes back.
//!
//! Redis comes from `COLLOQUY_TEST_REDIS_URL` (default
//! `redis://127.0.0.1:6379`); each run uses its own key prefix. An
//! unreachable Redis fails these tests: it is never a reason to skip them.
//! The fault test starts a private `redis-server` (on `PATH`, or
//! `COLLOQUY_TEST_REDIS_SERVER`) and never touches the shared one.
#![cfg(feature = "redis")]

use colloquy_store::l1::conformance::{self, state, Capabilities, Handles};
use colloquy_store::l1::{
    HotStates, LayeredHotStates, RedisHotStates, RedisL1Config, MEMORY_L1_USERS,
};
use colloquy_store::SnapshotKey;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn key() -> SnapshotKey {
    SnapshotKey::new(b"l1-suite-key-0123456789abcdefghij".to_vec()).unwrap()
}

// ---- Redis plumbing ---------------------------------------------------------

fn redis_url() -> String {
    std::env::var("COLLOQUY_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A prefix no other run (or test in this run) shares.
fn unique_prefix(test: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("colloquy-test:{}:{nanos}:{test}:", std::process::id())
}

/// A raw connection to the test Redis, to look behind the backend's back.
/// Panics (failing the test) when Redis is not there.
async fn raw(url: &str) -> redis::aio::MultiplexedConnection {
    let attempt = async {
        let client = redis::Client::open(url)?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await?;
        Ok::<_, redis::RedisError>(conn)
    };
    match tokio::time::timeout(Duration::from_secs(5), attempt).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => panic!(
            "Redis at {url} is unreachable ({e}): these tests need a real Redis; \
             start one or set COLLOQUY_TEST_REDIS_URL"
        ),
        Err(_) => panic!("Redis at {url} did not answer PING within 5 s"),
    }
}

fn config(url: &str, prefix: &str) -> RedisL1Config {
    RedisL1Config {
        url: url.into(),
        key_prefix: prefix.into(),
        // Generous for the shared server: a loaded CI box must not turn the
        // behaviour tests into timeouts. The fault test uses the default.
        timeout: Duration::from_secs(2),
        // Test entries of a shared server should not outlive the run long.
        ttl_secs: 300,
    }
}

async fn get_raw(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> Option<Vec<u8>> {
    redis::cmd("GET").arg(key).query_async(conn).await.unwrap()
}

async fn set_raw(conn: &mut redis::aio::MultiplexedConnection, key: &str, value: &[u8]) {
    redis::cmd("SET")
        .arg(key)
        .arg(value)
        .query_async::<()>(conn)
        .await
        .unwrap()
}

async fn pttl(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> i64 {
    redis::cmd("PTTL").arg(key).query_async(conn).await.unwrap()
}

// ---- the backends -----------------------------------------------------------

/// A fresh L1 per case: a prefix of its own on the test Redis, seen by two
/// clients as two workers would.
fn fresh_prefixes(test: &'static str) -> impl Fn() -> String {
    let n = AtomicUsize::new(0);
    move || unique_prefix(&format!("{test}-{}", n.fetch_add(1, Ordering::Relaxed)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_backend_behaves_as_l1() {
    let url = redis_url();
    raw(&url).await;
    let prefix = fresh_prefixes("suite");
    conformance::run_all(Capabilities::REDIS, || {
        let prefix = prefix();
        Handles {
            a: Arc::new(RedisHotStates::new(&config(&url, &prefix), key()).unwrap()),
            b: Arc::new(RedisHotStates::new(&config(&url, &prefix), key()).unwrap()),
        }
    })
    .await;
}

/// What production runs: each worker's near copies in front of its own
/// client of the one Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layered_backend_over_redis_behaves_as_l1() {
    let url = redis_url();
    raw(&url).await;
    let prefix = fresh_prefixes("layered");
    conformance::run_all(Capabilities::LAYERED, || {
        let prefix = prefix();
        let worker = |prefix: &str| -> Arc<dyn HotStates> {
            let shared = RedisHotStates::new(&config(&url, prefix), key()).unwrap();
            Arc::new(LayeredHotStates::new(MEMORY_L1_USERS, Arc::new(shared)))
        };
        Handles {
            a: worker(&prefix),
            b: worker(&prefix),
        }
    })
    .await;
}

/// Puts and forgets of the layered L1 reach Redis itself, not only the
/// near copy: what other workers find there is the signed entry a put
/// wrote, and nothing once it was forgotten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layered_writes_through_and_forgets_in_redis() {
    let url = redis_url();
    let mut conn = raw(&url).await;
    let prefix = unique_prefix("through");
    let shared = Arc::new(RedisHotStates::new(&config(&url, &prefix), key()).unwrap());
    let layered = LayeredHotStates::new(MEMORY_L1_USERS, shared.clone());
    let entry = format!("{prefix}u");
    layered.put(Arc::new(state("u", 4))).await;
    let written = get_raw(&mut conn, &entry).await.expect("written through");
    assert!(written.starts_with(b"00000000000000000004:"), "seq header");
    assert_eq!(shared.get("u").await, Some(state("u", 4)));
    layered.forget("u").await;
    assert_eq!(get_raw(&mut conn, &entry).await, None, "forgotten in Redis");
    assert_eq!(layered.get("u").await, None, "and near");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_entries_are_signed_and_untrusted_ones_are_dropped() {
    let url = redis_url();
    let mut conn = raw(&url).await;
    let prefix = unique_prefix("forged");
    let hot = RedisHotStates::new(&config(&url, &prefix), key()).unwrap();
    let user = "mallory-target";
    let entry = format!("{prefix}{user}");

    hot.put(Arc::new(state(user, 4))).await;
    let good = get_raw(&mut conn, &entry).await.expect("entry written");
    assert!(good.starts_with(b"00000000000000000004:"), "seq header");

    // Edit a slot inside the signed state, keeping it valid JSON.
    let forged = String::from_utf8(good.clone())
        .unwrap()
        .replace("\"size\":43", "\"size\":44");
    assert_ne!(forged.as_bytes(), good.as_slice(), "the edit applied");
    let mut bad_values: Vec<Vec<u8>> = vec![
        forged.into_bytes(),
        b"not an entry at all".to_vec(),
        b"00000000000000000004:{\"truncated\":".to_vec(),
    ];
    // Header raised to block later puts: the signature does not cover it,
    // so it is checked against the signed seq.
    let mut raised = good.clone();
    raised[..20].copy_from_slice(b"00000000000000000099");
    bad_values.push(raised);
    // A well-signed state of another user, copied under this user's key.
    hot.put(Arc::new(state("someone-else", 4))).await;
    bad_values.push(
        get_raw(&mut conn, &format!("{prefix}someone-else"))
            .await
            .unwrap(),
    );
    // Signed with another key.
    let other_key = SnapshotKey::new(b"another-key-0123456789abcdefghijk".to_vec()).unwrap();
    let other = RedisHotStates::new(&config(&url, &prefix), other_key).unwrap();
    other.forget(user).await;
    other.put(Arc::new(state(user, 4))).await;
    bad_values.push(get_raw(&mut conn, &entry).await.unwrap());

    for (i, bad) in bad_values.iter().enumerate() {
        set_raw(&mut conn, &entry, bad).await;
        let before = hot.stats();
        assert_eq!(
            hot.get(user).await,
            None,
            "untrusted value #{i} was believed"
        );
        let after = hot.stats();
        assert_eq!(after.rejected - before.rejected, 1, "value #{i}");
        assert_eq!(after.misses - before.misses, 1, "value #{i}");
        assert_eq!(
            get_raw(&mut conn, &entry).await,
            None,
            "value #{i} was deleted"
        );
    }

    // A garbage entry never blocks a put, even one with a lower seq.
    set_raw(&mut conn, &entry, b"99999999999999999999:garbage").await;
    assert_eq!(hot.get(user).await, None);
    set_raw(&mut conn, &entry, b"garbage without a header").await;
    hot.put(Arc::new(state(user, 1))).await;
    assert_eq!(hot.get(user).await, Some(state(user, 1)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_entries_expire_and_puts_restart_the_ttl() {
    let url = redis_url();
    let mut conn = raw(&url).await;
    let prefix = unique_prefix("ttl");
    let hot = RedisHotStates::new(
        &RedisL1Config {
            ttl_secs: 600,
            ..config(&url, &prefix)
        },
        key(),
    )
    .unwrap();
    let entry = format!("{prefix}u");
    hot.put(Arc::new(state("u", 1))).await;
    let ttl = pttl(&mut conn, &entry).await;
    assert!((595_000..=600_000).contains(&ttl), "ttl {ttl} ms");

    redis::cmd("PEXPIRE")
        .arg(&entry)
        .arg(5_000)
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    hot.put(Arc::new(state("u", 2))).await;
    let ttl = pttl(&mut conn, &entry).await;
    assert!(ttl > 595_000, "a put restarts the ttl, got {ttl} ms");

    // An entry past its TTL is gone: a plain miss, nothing rejected.
    redis::cmd("PEXPIRE")
        .arg(&entry)
        .arg(1)
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let before = hot.stats();
    assert_eq!(hot.get("u").await, None);
    assert_eq!(hot.stats().rejected, before.rejected);
}

// ---- Redis dying and coming back ------------------------------------------

/// A private `redis-server` on `port`, killed when dropped.
struct PrivateRedis {
    child: Child,
}

impl PrivateRedis {
    fn start(port: u16) -> PrivateRedis {
        let bin =
            std::env::var("COLLOQUY_TEST_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
        let child = Command::new(&bin)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}; the fault test needs it"));
        PrivateRedis { child }
    }

    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until the private server answers PING, failing after 10 s.
async fn wait_ready(url: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ping = async {
            let client = redis::Client::open(url)?;
            let mut conn = client.get_multiplexed_async_connection().await?;
            redis::cmd("PING").query_async::<String>(&mut conn).await
        };
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(500), ping).await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "private redis-server at {url} never came up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_is_a_fast_miss_and_hits_resume_when_it_returns() {
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let server = PrivateRedis::start(port);
    wait_ready(&url).await;
    let cfg = RedisL1Config {
        url: url.clone(),
        key_prefix: unique_prefix("fault"),
        ..RedisL1Config::default()
    };
    let timeout = cfg.timeout;
    let hot = RedisHotStates::new(&cfg, key()).unwrap();
    hot.put(Arc::new(state("u", 1))).await;
    assert_eq!(hot.get("u").await, Some(state("u", 1)), "warm: a hit");
    assert_eq!(hot.stats().errors, 0);

    server.kill();
    // Slack for scheduling on a busy machine; a hang would blow far past it.
    let bound = timeout + Duration::from_millis(100);
    let mut slowest = Duration::ZERO;
    for i in 0..50 {
        let started = Instant::now();
        assert_eq!(hot.get("u").await, None, "get #{i} while Redis is down");
        let got = started.elapsed();
        hot.put(Arc::new(state("u", 2 + i))).await;
        let put = started.elapsed() - got;
        assert!(got < bound, "get #{i} took {got:?} with Redis down");
        assert!(put < bound, "put #{i} took {put:?} with Redis down");
        slowest = slowest.max(got).max(put);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!("slowest call with Redis down: {slowest:?}");
    let down = hot.stats();
    assert!(down.errors >= 100, "every failed call counted: {down:?}");
    assert!(down.misses >= 50, "{down:?}");

    let _server = PrivateRedis::start(port);
    wait_ready(&url).await;
    let back = Instant::now();
    let deadline = back + Duration::from_secs(10);
    loop {
        hot.put(Arc::new(state("u", 100))).await;
        if hot.get("u").await == Some(state("u", 100)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no hit 10 s after Redis returned: {:?}",
            hot.stats()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("hits resumed {:?} after Redis returned", back.elapsed());
    let errors = hot.stats().errors;
    assert_eq!(hot.get("u").await, Some(state("u", 100)));
    assert_eq!(hot.stats().errors, errors, "healthy again");
}

/// Sends `signal` (e.g. `STOP`, `CONT`) to the private server.
fn signal(server: &PrivateRedis, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(server.child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{signal}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_redis_costs_at_most_the_timeout_per_call() {
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let server = PrivateRedis::start(port);
    wait_ready(&url).await;
    let cfg = RedisL1Config {
        url,
        key_prefix: unique_prefix("hung"),
        ..RedisL1Config::default()
    };
    let timeout = cfg.timeout;
    let hot = RedisHotStates::new(&cfg, key()).unwrap();
    hot.put(Arc::new(state("u", 1))).await;
    assert_eq!(hot.get("u").await, Some(state("u", 1)));

    // Stopped, the server keeps its sockets open and answers nothing: the
    // case only a timeout can catch.
    signal(&server, "STOP");
    let started = Instant::now();
    for i in 0..20 {
        let call = Instant::now();
        assert_eq!(hot.get("u").await, None, "get #{i} while Redis hangs");
        assert!(
            call.elapsed() < timeout + Duration::from_millis(100),
            "get #{i} took {:?}",
            call.elapsed()
        );
    }
    // After the first timeout the backoff turns calls away at once.
    assert!(
        started.elapsed() < timeout * 4,
        "20 gets took {:?}",
        started.elapsed()
    );
    assert_eq!(hot.stats().errors, 20);

    signal(&server, "CONT");
    let deadline = Instant::now() + Duration::from_secs(10);
    while hot.get("u").await != Some(state("u", 1)) {
        assert!(Instant::now() < deadline, "no hit 10 s after Redis resumed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

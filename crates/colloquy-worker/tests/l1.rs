//! The engine with a Redis L1: workers share hot states, a stale one only
//! costs a retry, and a dead Redis costs only the hits, never a turn.
//!
//! Redis comes from `COLLOQUY_TEST_REDIS_URL` (default
//! `redis://127.0.0.1:6379`); an unreachable one fails the shared-Redis
//! test rather than skipping it.

use colloquy_store::l1::{HotStates, RedisHotStates, RedisL1Config};
use colloquy_store::{ConversationStore, Conversations, MemoryStore, SnapshotKey, SnapshotPolicy};
use colloquy_worker::{load_bot, Engine, LoadedBot};
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn key() -> SnapshotKey {
    SnapshotKey::new(b"engine-l1-test-key-0123456789abc".to_vec()).unwrap()
}

fn bot() -> Arc<LoadedBot> {
    static BOT: OnceLock<Arc<LoadedBot>> = OnceLock::new();
    BOT.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bots/shoe-store");
        Arc::new(load_bot(&dir).expect("bot"))
    })
    .clone()
}

fn conversations(store: &Arc<MemoryStore>) -> Conversations {
    Conversations::new(store.clone(), key(), SnapshotPolicy::default())
}

fn redis_l1(url: &str, prefix: &str) -> Arc<RedisHotStates> {
    let config = RedisL1Config {
        url: url.into(),
        key_prefix: prefix.into(),
        ..RedisL1Config::default()
    };
    Arc::new(RedisHotStates::new(&config, key()).unwrap())
}

fn unique_prefix(test: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("colloquy-test:{}:{nanos}:{test}:", std::process::id())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_is_served_from_l2_when_the_redis_l1_is_down() {
    // A port nothing listens on: bound, then released.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let hot = redis_l1(&format!("redis://127.0.0.1:{port}"), "colloquy:state:");
    let store = Arc::new(MemoryStore::new());
    let engine = Engine::with_hot_states(bot(), conversations(&store), hot);

    let started = Instant::now();
    let first = engine
        .handle("u", "m1", "星云跑鞋有39码吗", 1_000)
        .await
        .expect("served without L1");
    assert!(first.replies[0].contains("有货"), "{:?}", first.replies);
    let second = engine.handle("u", "m2", "谢谢", 2_000).await.unwrap();
    assert!(!second.events.is_empty());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "two turns took {:?}: L1 calls must fail fast",
        started.elapsed()
    );
    assert_eq!(store.last_seq("u").await.unwrap(), second.state.seq);
    let stats = engine.hot_stats();
    assert_eq!(stats.hits, 0);
    assert_eq!(stats.misses, 2, "{stats:?}");
    assert!(stats.errors >= 2, "failures are counted: {stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_share_a_redis_l1_and_a_stale_entry_only_costs_a_retry() {
    let url = std::env::var("COLLOQUY_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let prefix = unique_prefix("engine");
    let store = Arc::new(MemoryStore::new());
    let a = Engine::with_hot_states(bot(), conversations(&store), redis_l1(&url, &prefix));
    let b = Engine::with_hot_states(bot(), conversations(&store), redis_l1(&url, &prefix));

    let first = a
        .handle("u", "m1", "星云跑鞋有39码吗", 1_000)
        .await
        .unwrap();
    assert_eq!(
        a.hot_stats().errors,
        0,
        "Redis at {url} is unreachable: this test needs a real Redis \
         (start one or set COLLOQUY_TEST_REDIS_URL)"
    );
    // b has never seen the user: its state comes from a's write-through.
    let r = b.handle("u", "m2", "疾风板鞋呢", 2_000).await.unwrap();
    assert_eq!(b.hot_stats().hits, 1, "{:?}", b.hot_stats());
    assert!(r.state.seq > first.state.seq);

    // A worker without the shared L1 moves the log on behind its back.
    let c = Engine::new(bot(), conversations(&store));
    c.handle("u", "m3", "谢谢", 3_000).await.unwrap();
    let behind = store.last_seq("u").await.unwrap();

    // a's hit is stale: the append conflicts, a forgets it and reruns on
    // the log, then writes the fresh state through.
    let r = a.handle("u", "m4", "你好", 4_000).await.unwrap();
    let log_end = store.last_seq("u").await.unwrap();
    assert!(log_end > behind);
    assert_eq!(
        r.state.seq, log_end,
        "re-ran on the log instead of forking it"
    );
    let view = redis_l1(&url, &prefix);
    assert_eq!(view.get("u").await.map(|s| s.seq), Some(log_end));
}

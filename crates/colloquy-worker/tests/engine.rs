//! The engine is idempotent by message id and survives a cold cache.

use colloquy_store::{memory::MemoryStore, Conversations, SnapshotKey, SnapshotPolicy};
use colloquy_worker::{load_bot, Engine};
use std::path::Path;
use std::sync::Arc;

fn engine(store: Arc<MemoryStore>) -> Engine {
    let bot = load_bot(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bots/shoe-store"))
        .expect("bot");
    let key = SnapshotKey::new(b"engine-test-key-0123456789abcdef".to_vec()).unwrap();
    Engine::new(
        Arc::new(bot),
        Conversations::new(store, key, SnapshotPolicy::default()),
    )
}

#[tokio::test]
async fn a_repeated_message_is_processed_once_and_answered_the_same() {
    let store = Arc::new(MemoryStore::new());
    let e = engine(store.clone());
    let first = e
        .handle("u", "m1", "星云跑鞋有39码吗", 1_000)
        .await
        .unwrap();
    assert!(first.replies[0].contains("有货"), "{:?}", first.replies);
    let seq = first.state.seq;
    let again = e
        .handle("u", "m1", "星云跑鞋有39码吗", 2_000)
        .await
        .unwrap();
    assert_eq!(again.replies, first.replies);
    assert!(again.events.is_empty());
    assert_eq!(again.state.seq, seq);

    // A second engine on the same store (cold cache, e.g. after a restart
    // or on another worker) sees the same log and answers the same.
    let other = engine(store);
    let third = other
        .handle("u", "m1", "星云跑鞋有39码吗", 3_000)
        .await
        .unwrap();
    assert_eq!(third.replies, first.replies);
    assert_eq!(third.state.seq, seq);
}

#[tokio::test]
async fn a_stale_cache_loses_the_race_and_retries_on_fresh_state() {
    let store = Arc::new(MemoryStore::new());
    let a = engine(store.clone());
    let b = engine(store.clone());
    a.handle("u", "m1", "你好", 1_000).await.unwrap();
    // b caches the state, then a moves the log on behind b's back.
    b.handle("u", "m2", "星云跑鞋有39码吗", 2_000)
        .await
        .unwrap();
    let r = a.handle("u", "m3", "谢谢", 3_000).await.unwrap();
    assert!(!r.events.is_empty());
    let r = b.handle("u", "m4", "疾风板鞋呢", 4_000).await.unwrap();
    let log_end = colloquy_store::ConversationStore::last_seq(store.as_ref(), "u")
        .await
        .unwrap();
    assert_eq!(
        r.state.seq, log_end,
        "b re-ran on the fresh log instead of forking it"
    );
}

/// The engine keeps the state the policy returns instead of folding the
/// events again: after every message it must be what the stored log folds
/// to, through warm and cold caches and a session timeout.
#[tokio::test]
async fn every_turns_state_is_the_fold_of_the_stored_log() {
    let store = Arc::new(MemoryStore::new());
    let warm = engine(store.clone());
    let messages = [
        "查一下库存",
        "星云",
        "50码",
        "三十九码",
        "疾风板鞋39码呢",
        "我的订单到哪了",
        "2026110101",
        "谢谢",
    ];
    let mut now = 1_767_261_600_000;
    for (i, text) in messages.iter().cycle().take(24).enumerate() {
        // A fresh engine every fifth message: cold cache, state from the store.
        let cold;
        let e = if i % 5 == 4 {
            cold = engine(store.clone());
            &cold
        } else {
            &warm
        };
        now += if i == 12 { 2 * 60 * 60 * 1000 } else { 5_000 };
        let r = e.handle("u", &format!("m{i}"), text, now).await.unwrap();
        assert!(!r.events.is_empty(), "message {i} appended nothing");
        let log =
            colloquy_store::ConversationStore::events_after(store.as_ref(), "u", 0, usize::MAX)
                .await
                .unwrap();
        assert_eq!(
            *r.state,
            colloquy_core::State::from_events("u", &log),
            "after message {i} ({text})"
        );
    }
}

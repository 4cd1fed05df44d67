//! The shared backend conformance suite, against the in-tree backends.

use colloquy_store::{
    conformance, ConversationStore, LogConfig, LogStore, MemoryStore, SqliteStore,
};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_store_conforms() {
    conformance::run_all(|| Arc::new(MemoryStore::new()) as Arc<dyn ConversationStore>).await;
}

/// The suite on stores of a directory each, under one temporary root.
async fn in_fresh_dirs(open: impl Fn(&Path) -> Arc<dyn ConversationStore>) {
    let root = tempfile::tempdir().unwrap();
    let n = AtomicUsize::new(0);
    conformance::run_all(|| {
        open(
            &root
                .path()
                .join(n.fetch_add(1, Ordering::Relaxed).to_string()),
        )
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_store_conforms() {
    in_fresh_dirs(|dir| Arc::new(SqliteStore::open(dir).unwrap())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn event_log_store_conforms() {
    in_fresh_dirs(|dir| Arc::new(LogStore::open(dir, LogConfig::default()).unwrap())).await;
}

/// The same suite with segments so small that most records begin a new one
/// and an id cache that holds almost nothing: what a long-running store
/// does rarely, every test here does all the time.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn event_log_store_conforms_rolling_and_evicting() {
    let cfg = LogConfig {
        segment_bytes: 4096,
        cached_ids: 4,
    };
    in_fresh_dirs(|dir| Arc::new(LogStore::open(dir, cfg.clone()).unwrap())).await;
}

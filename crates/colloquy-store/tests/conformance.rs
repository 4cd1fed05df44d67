//! The shared backend conformance suite, against the in-tree backends.

use colloquy_store::{conformance, ConversationStore, MemoryStore, SqliteStore};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_store_conforms() {
    conformance::run_all(|| Arc::new(MemoryStore::new()) as Arc<dyn ConversationStore>).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_store_conforms() {
    let root = tempfile::tempdir().unwrap();
    let n = AtomicUsize::new(0);
    conformance::run_all(|| {
        let dir = root
            .path()
            .join(n.fetch_add(1, Ordering::Relaxed).to_string());
        Arc::new(SqliteStore::open(&dir).unwrap()) as Arc<dyn ConversationStore>
    })
    .await;
}

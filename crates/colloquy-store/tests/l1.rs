//! The L1 conformance suite (`colloquy_store::l1::conformance`) on the
//! backends that need no server: the memory L1, and the layered one with
//! its shared layer in memory too. The same suite runs on Redis, alone and
//! behind near copies as production runs it, in `l1_redis.rs`.

use colloquy_store::l1::conformance::{self, Capabilities, Handles};
use colloquy_store::l1::{HotStates, LayeredHotStates, MemoryHotStates};
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_backend_behaves_as_l1() {
    conformance::run_all(Capabilities::MEMORY, || {
        let hot: Arc<dyn HotStates> = Arc::new(MemoryHotStates::new(1000));
        Handles {
            a: hot.clone(),
            b: hot,
        }
    })
    .await;
}

/// Two processes' near copies in front of one shared copy: the layered
/// L1's own semantics, apart from Redis's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layered_backend_over_memory_behaves_as_l1() {
    conformance::run_all(Capabilities::LAYERED, || {
        let shared: Arc<dyn HotStates> = Arc::new(MemoryHotStates::new(1000));
        Handles {
            a: Arc::new(LayeredHotStates::new(1000, shared.clone())),
            b: Arc::new(LayeredHotStates::new(1000, shared)),
        }
    })
    .await;
}

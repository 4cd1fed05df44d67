//! L1: hot copies of recently used users' states, so a busy user's next
//! turn skips the snapshot read and the replay. The log (L2) stays the
//! truth: an entry is only ever a copy of a committed state, a put never
//! replaces a newer copy with an older one, and a stale copy is harmless
//! because the append's expected-seq check rejects it (the caller then
//! forgets the entry and reloads from L2).
//!
//! Backends: [`memory`] (in-process LRU, the default) and `redis` (shared
//! by several workers, signed entries with a TTL; behind the cargo feature
//! of that name), which workers use behind an in-process copy
//! ([`layered`]); [`open`] builds the one `[store.l1]` picks. An L1 failure
//! never fails a caller: it is a miss, counted in [`HotStats::errors`].

mod config;
pub mod layered;
pub mod memory;
#[cfg(feature = "redis")]
pub mod redis;

pub use self::config::{open, L1Backend, L1Config, RedisL1Config, MEMORY_L1_USERS};
pub use self::layered::LayeredHotStates;
pub use self::memory::MemoryHotStates;
#[cfg(feature = "redis")]
pub use self::redis::{RedisHotStates, RedisL1ConfigError};

use async_trait::async_trait;
use colloquy_core::State;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Where hot states are kept. Infallible by design: whatever goes wrong in
/// the backend is logged and counted, and the caller falls back to L2.
#[async_trait]
pub trait HotStates: Send + Sync {
    /// The hot copy of `user`'s state, if there is a trustworthy one.
    async fn get(&self, user: &str) -> Option<State>;

    /// As [`get`](Self::get), for a caller that runs a turn on the state and
    /// then puts the result: a backend may hand its copy over instead of
    /// copying it (the in-process one does), so a turn that ends without a
    /// put leaves no entry and the next load reads L2.
    async fn take(&self, user: &str) -> Option<State> {
        self.get(user).await
    }

    /// Keep `state` (a committed state of `state.user_id`) unless the entry
    /// already holds a newer one. Shared, so that the in-process backend
    /// keeps it without a copy.
    async fn put(&self, state: Arc<State>);

    /// Drop `user`'s entry, e.g. after it turned out to be stale.
    async fn forget(&self, user: &str);

    /// Counters since the backend was created.
    fn stats(&self) -> HotStats;
}

/// What an L1 has served, for a hit-ratio metric.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HotStats {
    /// Gets answered from L1.
    pub hits: u64,
    /// Gets that fell back to L2, whatever the reason (absent, expired,
    /// rejected, backend failing).
    pub misses: u64,
    /// Backend calls (get, put or forget) that failed or timed out, or were
    /// skipped because the backend had just failed.
    pub errors: u64,
    /// Entries found but not trusted (bad signature, undecodable, another
    /// user's), each also a miss.
    pub rejected: u64,
}

impl HotStats {
    /// Hits over gets; `None` before the first get.
    pub fn hit_ratio(&self) -> Option<f64> {
        let gets = self.hits + self.misses;
        (gets > 0).then(|| self.hits as f64 / gets as f64)
    }
}

/// The counters behind [`HotStats`], shared by the backends.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    errors: AtomicU64,
    rejected: AtomicU64,
}

impl Counters {
    pub(crate) fn hit(&self) {
        self.hits.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn miss(&self) {
        self.misses.fetch_add(1, Ordering::Relaxed);
    }

    /// Count a lookup's result as a hit or a miss and pass it on.
    pub(crate) fn counted<T>(&self, found: Option<T>) -> Option<T> {
        match found {
            Some(_) => self.hit(),
            None => self.miss(),
        }
        found
    }

    // Only a backend outside the process fails or holds untrusted entries.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn rejected(&self) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> HotStats {
        HotStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hit_ratio_counts_every_get() {
        assert_eq!(HotStats::default().hit_ratio(), None);
        let c = Counters::default();
        c.hit();
        c.hit();
        c.hit();
        c.miss();
        c.error();
        assert_eq!(c.snapshot().hit_ratio(), Some(0.75));
        assert_eq!(c.snapshot().errors, 1);
    }
}

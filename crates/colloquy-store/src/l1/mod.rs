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
//! What a get may return on each is in the [`HotStates`] docs.

mod config;
#[cfg(feature = "conformance")]
pub mod conformance;
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
///
/// A *handle* is one process's object of a backend (the tasks of a process
/// share it). The `conformance` feature's `l1::conformance::run_all` checks
/// every promise below against every backend.
///
/// # What every backend promises
///
/// - **Only what was put.** `get` and `take` answer with a state that a
///   handle put for that very user, unaltered, or with `None`. `None` is
///   always a possible answer (evicted, expired, untrusted, backend down):
///   the caller then reads L2.
/// - **Newer wins.** A put never replaces a state of a higher seq, however
///   the puts of many handles interleave; of two states of one seq either
///   may stay.
/// - **Own writes are seen.** While the backend is healthy and nothing
///   evicted the entry, a handle's get after its own `put(s)` answers `s`
///   or a newer state.
/// - **Forget.** After `forget(user)` a handle's gets miss until a handle
///   puts a state of the user again, of any seq: forgetting is how a stale
///   entry makes way for an older, committed state reloaded from L2.
/// - **Counted.** Each get and each take is exactly one hit or one miss in
///   [`HotStats`].
///
/// # One copy or near copies
///
/// [`MemoryHotStates`] (one handle per process) and `RedisHotStates` (one
/// copy per user in Redis, shared by all handles) are *coherent*: a get on
/// any handle answers the newest state any handle put, and a forget on one
/// handle is seen by all.
///
/// [`LayeredHotStates`], what workers run in production with Redis (near
/// copies in this process's memory in front of Redis), is not. Each handle
/// keeps a near copy of the newest state it put itself:
///
/// - A get or take answers from the near copy when there is one. That copy
///   may lag behind a newer state another handle put since, until this
///   handle's next put, take or forget of the user; it is never older than
///   this handle's own last put. Without a near copy it reads Redis: the
///   newest state of any handle.
/// - A put writes through: near copy and Redis.
/// - A forget drops this handle's near copy and the copy in Redis. Other
///   handles' near copies stay until they drop them, and are never written
///   back to Redis.
/// - A take hands the near copy over; the copy in Redis stays, so what the
///   handle reads next is the newest state of any handle.
///
/// A lagging near copy costs what any stale entry costs: the append's
/// expected-seq check refuses it, and the caller forgets the entry and
/// reloads from L2. The ring gives each user to one worker at a time, so a
/// near copy lags only after its user moved to another worker and back.
#[async_trait]
pub trait HotStates: Send + Sync {
    /// The hot copy of `user`'s state, if there is a trustworthy one.
    async fn get(&self, user: &str) -> Option<State>;

    /// As [`get`](Self::get), for a caller that runs a turn on the state and
    /// then puts the result: a backend may hand its copy over instead of
    /// copying it (the in-process one does, leaving no entry, so a turn
    /// that ends without a put makes the next load read L2). A backend with
    /// a shared copy keeps it: a get right after a take answers the newest
    /// state any handle put.
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
    /// Gets (and takes) answered from L1.
    pub hits: u64,
    /// Gets (and takes) that fell back to L2, whatever the reason (absent,
    /// expired, rejected, backend failing).
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

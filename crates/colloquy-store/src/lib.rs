//! colloquy-store: where conversations are kept. Each user has an
//! append-only event log (the only source of truth) plus at most one
//! HMAC-signed snapshot of the folded [`State`](colloquy_core::State), which
//! only shortens replay.
//!
//! [`ConversationStore`] is the contract every backend meets (the embedded
//! [`eventlog`], the default of `colloquy serve`; the embedded [`sqlite`]
//! one; [`memory`]; MySQL/MariaDB and PostgreSQL in [`sql`]); the
//! `conformance` feature holds the one test suite they all must pass.
//! [`l1`] keeps hot copies of states in front of them (memory or Redis),
//! with a conformance suite of its own.
//! [`Conversations`] is what workers use: load = verified snapshot + replay,
//! commit = optimistic append + occasional snapshot.
//!
//! `[store]` of the configuration file is a [`StoreConfig`]: [`open`]
//! builds the L2 it picks, [`l1::open`] the L1. The backends on servers are
//! behind cargo features of their names, all on by default: `mysql`,
//! `postgres` and `redis`; a configuration picking one a build left out is
//! refused with the feature's name.
//!
//! This crate must not know about HTTP or the message bus: it stores and
//! returns events and snapshots, nothing more.

mod config;
#[cfg(feature = "conformance")]
pub mod conformance;
mod conversations;
mod error;
pub mod eventlog;
pub mod l1;
pub mod memory;
pub mod registry;
pub mod seal;
mod snapshot;
pub mod sql;
pub mod sqlite;
mod writer_thread;

pub use config::{open, StoreBackend, StoreConfig};
pub use conversations::{Conversations, LoadInfo, SnapshotPolicy};
pub use error::{ErrorKind, StoreError};
pub use eventlog::{LogConfig, LogStore};
#[cfg(feature = "redis")]
pub use l1::RedisHotStates;
pub use l1::{HotStates, HotStats, MemoryHotStates, RedisL1Config};
pub use memory::MemoryStore;
pub use registry::{BotRegistry, RegistryError};
pub use seal::{KeyRing, SealError, Sealed};
pub use snapshot::{Snapshot, SnapshotError, SnapshotKey};
#[cfg(feature = "mysql")]
pub use sql::MySqlStore;
#[cfg(feature = "postgres")]
pub use sql::PgStore;
pub use sql::SqlConfig;
pub use sqlite::SqliteStore;

use async_trait::async_trait;
use colloquy_core::Event;

/// Durable per-user event logs plus the latest snapshot per user.
///
/// Logs never fork: `append` succeeds only if the log still ends where the
/// caller last saw it, so of concurrent writers for one user exactly one wins
/// and the others get [`StoreError::Conflict`], reload and try again.
#[async_trait]
pub trait ConversationStore: Send + Sync {
    /// Append `events` (seqs `expected_seq + 1 ..`, contiguous, all of
    /// `user_id`, at least one) atomically, if and only if the log's last seq
    /// is `expected_seq`. An event id appears at most once in a user's log
    /// (ids derive from the user and the message, so this is what makes a
    /// redelivered message's second append fail). Returns the new last seq;
    /// `Ok` means the events are durable.
    async fn append(
        &self,
        user_id: &str,
        expected_seq: u64,
        events: &[Event],
    ) -> Result<u64, StoreError>;

    /// Up to `limit` events with seq > `after_seq`, in ascending seq order.
    async fn events_after(
        &self,
        user_id: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError>;

    /// Seq of the user's last event, 0 for an empty log.
    async fn last_seq(&self, user_id: &str) -> Result<u64, StoreError>;

    /// Keep `snapshot` as its user's snapshot unless the stored one has a
    /// higher seq (snapshot writers may race; the newest must win).
    async fn put_snapshot(&self, snapshot: &Snapshot) -> Result<(), StoreError>;

    /// The user's snapshot as stored: unverified, possibly stale or forged.
    async fn get_snapshot(&self, user_id: &str) -> Result<Option<Snapshot>, StoreError>;

    /// Seal again, in place, every stored event and snapshot that an older
    /// key of the ring sealed ([`seal::Resealer`]). Only the ciphertexts
    /// change: every event keeps its id, seq and content, so the log is
    /// still the same append-only history, and no record is added or
    /// removed.
    async fn reseal(&self, resealer: &seal::Resealer) -> Result<seal::ResealReport, StoreError>;
}

/// The checks every backend makes before writing anything, so that they all
/// reject the same malformed batches with the same error.
pub(crate) fn check_append(
    user_id: &str,
    expected_seq: u64,
    events: &[Event],
) -> Result<(), StoreError> {
    let invalid = |reason: String| StoreError::InvalidEvents {
        user_id: user_id.to_string(),
        reason,
    };
    if events.is_empty() {
        return Err(invalid("no events to append".into()));
    }
    for (i, e) in events.iter().enumerate() {
        if e.user_id != user_id {
            return Err(invalid(format!(
                "event {} belongs to user {:?}",
                e.event_id, e.user_id
            )));
        }
        let want = expected_seq + 1 + i as u64;
        if e.seq != want {
            return Err(invalid(format!(
                "event {} has seq {}, expected {want}",
                e.event_id, e.seq
            )));
        }
        if !e.kind.is_finite() {
            return Err(invalid(format!(
                "event {} holds a number that is not finite",
                e.event_id
            )));
        }
    }
    Ok(())
}

/// The events with seq > `after_seq`, at most `limit`, from a user's
/// appends in seq order, each stored whole as a JSON array of its events
/// (as both embedded stores keep them); the first may begin at or before
/// `after_seq`.
pub(crate) fn events_in_appends<B: AsRef<[u8]>>(
    bodies: impl IntoIterator<Item = Result<B, StoreError>>,
    user_id: &str,
    after_seq: u64,
    limit: usize,
) -> Result<Vec<Event>, StoreError> {
    let mut out = Vec::new();
    for body in bodies {
        let events: Vec<Event> = serde_json::from_slice(body?.as_ref()).map_err(|e| {
            StoreError::Corrupt(format!(
                "events of user {user_id} after seq {after_seq}: {e}"
            ))
        })?;
        out.extend(events.into_iter().filter(|e| e.seq > after_seq));
        if out.len() >= limit {
            out.truncate(limit);
            break;
        }
    }
    Ok(out)
}

/// Counters of an embedded store's writer thread, for benchmarks and
/// metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Group commits (one fsync each).
    pub commits: u64,
    /// Requests (appends and snapshot writes) in those commits.
    pub requests: u64,
}

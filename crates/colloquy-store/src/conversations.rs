//! Loading and committing conversation state on top of any store.

use crate::{ConversationStore, Snapshot, SnapshotError, SnapshotKey, StoreError};
use colloquy_core::{Event, State};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Events fetched per round trip while replaying.
const REPLAY_PAGE: usize = 1000;

/// Users whose last snapshot position is remembered. Past this the memory is
/// dropped wholesale; a forgotten user costs one snapshot read on its next
/// commit, which is cheaper than bookkeeping for an LRU.
const REMEMBERED_USERS: usize = 100_000;

/// When `commit` writes a snapshot: once either threshold since the last
/// snapshot is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotPolicy {
    pub every_events: u64,
    /// Measured in event time (`ts_ms`), not wall-clock time.
    pub every_ms: i64,
}

impl Default for SnapshotPolicy {
    fn default() -> Self {
        SnapshotPolicy {
            every_events: 50,
            every_ms: 30_000,
        }
    }
}

/// How a state was loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadInfo {
    /// Seq of the snapshot the fold started from; `None` if there was no
    /// usable snapshot and the whole log was replayed.
    pub snapshot_seq: Option<u64>,
    /// Events folded on top of the snapshot (or of the empty state).
    pub replayed: usize,
}

/// Where a user's last snapshot stands. Without a snapshot, `seq` is 0 and
/// `ts_ms` the time of the first event seen, so that a brand-new user is not
/// snapshotted at once by the time rule.
#[derive(Debug, Clone, Copy)]
struct Mark {
    seq: u64,
    ts_ms: i64,
}

/// The workers' view of the store: verified snapshot + replay to load, and
/// optimistic append + snapshot policy to commit.
pub struct Conversations {
    store: Arc<dyn ConversationStore>,
    key: SnapshotKey,
    policy: SnapshotPolicy,
    marks: Mutex<HashMap<String, Mark>>,
}

impl Conversations {
    pub fn new(
        store: Arc<dyn ConversationStore>,
        key: SnapshotKey,
        policy: SnapshotPolicy,
    ) -> Self {
        Conversations {
            store,
            key,
            policy,
            marks: Mutex::default(),
        }
    }

    pub fn store(&self) -> &Arc<dyn ConversationStore> {
        &self.store
    }

    /// The user's current state: the snapshot if it is trustworthy, plus
    /// every later event.
    pub async fn load(&self, user_id: &str) -> Result<State, StoreError> {
        Ok(self.load_with_info(user_id).await?.0)
    }

    pub async fn load_with_info(&self, user_id: &str) -> Result<(State, LoadInfo), StoreError> {
        let snapshot = match self.store.get_snapshot(user_id).await {
            Ok(snapshot) => snapshot,
            // An unreadable snapshot is as good as none: the log has it all.
            Err(StoreError::Corrupt(why)) => {
                tracing::warn!(user_id, %why, "ignoring unreadable snapshot; replaying the log");
                None
            }
            Err(e) => return Err(e),
        };
        let snapshot = match snapshot {
            Some(s) => match self.check(user_id, &s).await? {
                Ok(()) => Some(s),
                Err(why) => {
                    tracing::warn!(user_id, snapshot_seq = s.seq, %why, "ignoring snapshot; replaying the log");
                    None
                }
            },
            None => None,
        };
        let snapshot_seq = snapshot.as_ref().map(|s| s.seq);
        let mut mark = snapshot.as_ref().map(|s| Mark {
            seq: s.seq,
            ts_ms: s.ts_ms,
        });
        let mut state = snapshot.map_or_else(|| State::new(user_id), |s| s.state);
        let mut replayed = 0;
        loop {
            let page = self
                .store
                .events_after(user_id, state.seq, REPLAY_PAGE)
                .await?;
            for e in &page {
                // `State::apply` would skip over a hole silently.
                if e.seq != state.seq + 1 {
                    return Err(StoreError::Corrupt(format!(
                        "log of user {user_id} jumps from seq {} to {}",
                        state.seq, e.seq
                    )));
                }
                mark.get_or_insert(Mark {
                    seq: 0,
                    ts_ms: e.ts_ms,
                });
                state.apply(e);
            }
            replayed += page.len();
            if page.len() < REPLAY_PAGE {
                break;
            }
        }
        if let Some(mark) = mark {
            self.remember(user_id, mark);
        }
        Ok((
            state,
            LoadInfo {
                snapshot_seq,
                replayed,
            },
        ))
    }

    /// Append `events` to the log (failing with [`StoreError::Conflict`] if
    /// the log moved on since the state they follow was loaded) and write a
    /// snapshot of `state` if the policy says it is due. `state` is the
    /// state after `events`, as [`colloquy_core::step`] returns it; it is
    /// not folded again here. A failed snapshot write is only logged: the
    /// events are committed and the log alone is the truth.
    pub async fn commit(&self, state: &State, events: &[Event]) -> Result<(), StoreError> {
        let (Some(first), Some(last)) = (events.first(), events.last()) else {
            return Ok(());
        };
        // A state that is not the one these events lead to would be
        // snapshotted as the truth at their seq; refuse before writing.
        if (state.seq, state.last_ts_ms) != (last.seq, last.ts_ms) {
            return Err(StoreError::InvalidEvents {
                user_id: state.user_id.clone(),
                reason: format!(
                    "the state is at seq {} (ts {}) but the events end at seq {} (ts {})",
                    state.seq, state.last_ts_ms, last.seq, last.ts_ms
                ),
            });
        }
        let after_seq = first.seq.saturating_sub(1);
        self.store.append(&state.user_id, after_seq, events).await?;
        let known = self
            .marks
            .lock()
            .expect("marks lock")
            .get(&state.user_id)
            .copied();
        let mut mark = match known {
            Some(mark) => mark,
            None if after_seq == 0 => Mark {
                seq: 0,
                ts_ms: first.ts_ms,
            },
            None => self.stored_mark(state, first.ts_ms).await,
        };
        let due = state.seq - mark.seq >= self.policy.every_events
            || state.last_ts_ms.saturating_sub(mark.ts_ms) >= self.policy.every_ms;
        if due {
            match self.store.put_snapshot(&self.key.sign(state)).await {
                Ok(()) => {
                    mark = Mark {
                        seq: state.seq,
                        ts_ms: state.last_ts_ms,
                    }
                }
                Err(e) => {
                    tracing::warn!(user_id = %state.user_id, seq = state.seq, error = %e, "snapshot write failed")
                }
            }
        }
        self.remember(&state.user_id, mark);
        Ok(())
    }

    /// Whether a stored snapshot may stand in for the log up to its seq. The
    /// outer error is the store failing; the inner one says why the
    /// snapshot is not trusted.
    async fn check(
        &self,
        user_id: &str,
        s: &Snapshot,
    ) -> Result<Result<(), SnapshotError>, StoreError> {
        if let Err(why) = self.key.verify(s) {
            return Ok(Err(why));
        }
        for found in [&s.user_id, &s.state.user_id] {
            if found != user_id {
                let (expected, found) = (user_id.to_string(), found.clone());
                return Ok(Err(SnapshotError::OtherUser { expected, found }));
            }
        }
        if s.state.seq != s.seq {
            return Ok(Err(SnapshotError::SeqMismatch {
                snapshot: s.seq,
                state: s.state.seq,
            }));
        }
        if s.seq == 0 {
            return Ok(Ok(()));
        }
        // The event at the snapshot's seq must exist and be the one the
        // snapshot was folded from (same timestamp): a log restored from an
        // older backup and grown again must not pair with a snapshot of the
        // lost timeline. The log only grows, so reading the snapshot first
        // and this event second cannot race a writer into a false alarm.
        let at = self.store.events_after(user_id, s.seq - 1, 1).await?;
        Ok(match at.first() {
            Some(e) if e.seq == s.seq && e.ts_ms == s.ts_ms => Ok(()),
            Some(e) if e.seq == s.seq => Err(SnapshotError::Diverged {
                seq: s.seq,
                snapshot_ts_ms: s.ts_ms,
                log_ts_ms: e.ts_ms,
            }),
            _ => Err(SnapshotError::BeyondLog { snapshot: s.seq }),
        })
    }

    /// The last snapshot's position for a user this process has forgotten.
    async fn stored_mark(&self, state: &State, first_ts_ms: i64) -> Mark {
        let fresh = Mark {
            seq: 0,
            ts_ms: first_ts_ms,
        };
        match self.store.get_snapshot(&state.user_id).await {
            Ok(Some(s)) if s.seq <= state.seq && self.key.verify(&s).is_ok() => Mark {
                seq: s.seq,
                ts_ms: s.ts_ms,
            },
            Ok(_) => fresh,
            // Only the timing of the next snapshot depends on this.
            Err(e) => {
                tracing::warn!(user_id = %state.user_id, error = %e, "could not read snapshot position");
                fresh
            }
        }
    }

    fn remember(&self, user_id: &str, mark: Mark) {
        let mut marks = self.marks.lock().expect("marks lock");
        if marks.len() >= REMEMBERED_USERS && !marks.contains_key(user_id) {
            marks.clear();
        }
        marks.insert(user_id.to_string(), mark);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryStore;
    use colloquy_core::{seal, BotRef, EventKind};

    #[tokio::test]
    async fn a_state_that_is_not_the_events_outcome_is_refused_before_appending() {
        let store = Arc::new(MemoryStore::new());
        let key = SnapshotKey::new(b"conversations-test-key-012345678".to_vec()).unwrap();
        let conv = Conversations::new(store.clone(), key, SnapshotPolicy::default());
        let bot = BotRef {
            name: "b".into(),
            version: "1".into(),
        };
        let kinds = vec![EventKind::SlotCleared { slot: "x".into() }; 2];
        let events = seal(kinds, "u", 0, 1_000, &bot, "m");
        let before = State::new("u");
        let err = conv.commit(&before, &events).await.unwrap_err();
        assert!(matches!(err, StoreError::InvalidEvents { .. }), "{err}");
        assert_eq!(store.last_seq("u").await.unwrap(), 0);

        let after = State::from_events("u", &events);
        conv.commit(&after, &events).await.unwrap();
        assert_eq!(store.last_seq("u").await.unwrap(), 2);
    }
}

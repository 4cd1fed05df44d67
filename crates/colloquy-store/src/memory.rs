//! In-process store: the reference semantics in the fewest lines, for tests
//! and as the basis of a cache tier. Nothing survives the process.

use crate::seal::{ResealReport, Resealer};
use crate::{check_append, ConversationStore, Snapshot, StoreError};
use async_trait::async_trait;
use colloquy_core::Event;
use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};

#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    logs: HashMap<String, Vec<Event>>,
    snapshots: HashMap<String, Snapshot>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        // Every critical section leaves `Inner` consistent before anything
        // can panic, so a poisoned lock still guards valid data.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl ConversationStore for MemoryStore {
    async fn append(
        &self,
        user_id: &str,
        expected_seq: u64,
        events: &[Event],
    ) -> Result<u64, StoreError> {
        check_append(user_id, expected_seq, events)?;
        let mut inner = self.inner();
        let log = inner.logs.get(user_id).map_or(&[][..], Vec::as_slice);
        let actual = log.len() as u64;
        if actual != expected_seq {
            return Err(StoreError::Conflict {
                user_id: user_id.to_string(),
                expected: expected_seq,
                actual,
            });
        }
        // Ids are unique within the user's log: the log itself says which
        // it holds (this store is for tests, where logs are short).
        let mut batch = HashSet::new();
        if events.iter().any(|e| {
            !batch.insert(e.event_id) || log.iter().any(|held| held.event_id == e.event_id)
        }) {
            return Err(StoreError::DuplicateEvent {
                user_id: user_id.to_string(),
            });
        }
        inner
            .logs
            .entry(user_id.to_string())
            .or_default()
            .extend_from_slice(events);
        Ok(expected_seq + events.len() as u64)
    }

    async fn events_after(
        &self,
        user_id: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        let inner = self.inner();
        let log = inner.logs.get(user_id).map_or(&[][..], Vec::as_slice);
        // Seqs are 1-based and gapless, so seq n sits at index n - 1.
        let from = usize::try_from(after_seq).map_or(log.len(), |s| s.min(log.len()));
        Ok(log[from..].iter().take(limit).cloned().collect())
    }

    async fn last_seq(&self, user_id: &str) -> Result<u64, StoreError> {
        Ok(self
            .inner()
            .logs
            .get(user_id)
            .map_or(0, |log| log.len() as u64))
    }

    async fn put_snapshot(&self, snapshot: &Snapshot) -> Result<(), StoreError> {
        let mut inner = self.inner();
        let newer_kept = inner
            .snapshots
            .get(&snapshot.user_id)
            .is_some_and(|old| old.seq > snapshot.seq);
        if !newer_kept {
            inner
                .snapshots
                .insert(snapshot.user_id.clone(), snapshot.clone());
        }
        Ok(())
    }

    async fn get_snapshot(&self, user_id: &str) -> Result<Option<Snapshot>, StoreError> {
        Ok(self.inner().snapshots.get(user_id).cloned())
    }

    async fn reseal(&self, resealer: &Resealer) -> Result<ResealReport, StoreError> {
        let mut inner = self.inner();
        let mut report = ResealReport::default();
        for log in inner.logs.values_mut() {
            for event in log.iter_mut() {
                report.read += 1;
                if resealer.events(std::slice::from_mut(event))? {
                    report.rewritten += 1;
                }
            }
        }
        for snapshot in inner.snapshots.values_mut() {
            report.read += 1;
            if resealer.state(&mut snapshot.state)? {
                report.rewritten += 1;
            }
        }
        Ok(report)
    }
}

//! The in-process L1: an LRU of states, private to one worker. Nothing
//! outside the process can write it, so entries are kept unsigned and
//! never expire; capacity alone bounds it. States are shared, not copied:
//! a turn takes its user's entry out and puts the new state in, so a busy
//! user's state is never cloned on the way.

use super::{Counters, HotStates, HotStats};
use async_trait::async_trait;
use colloquy_core::State;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub struct MemoryHotStates {
    inner: Mutex<Inner>,
    capacity: usize,
    counters: Counters,
}

struct Inner {
    tick: u64,
    states: HashMap<String, (Arc<State>, u64)>,
}

impl MemoryHotStates {
    /// Keep at most `capacity` users (at least one); past it the least
    /// recently used go.
    pub fn new(capacity: usize) -> Self {
        MemoryHotStates {
            inner: Mutex::new(Inner {
                tick: 0,
                states: HashMap::new(),
            }),
            capacity: capacity.max(1),
            counters: Counters::default(),
        }
    }

    fn lookup(&self, user: &str) -> Option<State> {
        let mut inner = self.inner.lock().expect("state cache lock");
        inner.tick += 1;
        let tick = inner.tick;
        inner.states.get_mut(user).map(|(s, used)| {
            *used = tick;
            State::clone(s)
        })
    }

    /// Hand the entry over: without another holder, no copy is made.
    fn remove(&self, user: &str) -> Option<State> {
        let taken = self
            .inner
            .lock()
            .expect("state cache lock")
            .states
            .remove(user);
        taken.map(|(s, _)| Arc::unwrap_or_clone(s))
    }

    fn insert(&self, state: Arc<State>) {
        let mut inner = self.inner.lock().expect("state cache lock");
        inner.tick += 1;
        let tick = inner.tick;
        match inner.states.get_mut(&state.user_id) {
            // Writers of one user may finish out of order; the newer copy
            // stays, as in the shared backends.
            Some((held, _)) if held.seq > state.seq => return,
            Some(entry) => {
                *entry = (state, tick);
                return;
            }
            None => {}
        }
        if inner.states.len() >= self.capacity {
            // Evict the least recently used tenth in one pass, so the scan
            // is paid once per many inserts rather than on each.
            let mut ticks: Vec<u64> = inner.states.values().map(|(_, t)| *t).collect();
            let cut = ticks.len() / 10;
            let (_, nth, _) = ticks.select_nth_unstable(cut);
            let limit = *nth;
            inner.states.retain(|_, (_, t)| *t > limit);
        }
        inner.states.insert(state.user_id.clone(), (state, tick));
    }
}

#[async_trait]
impl HotStates for MemoryHotStates {
    async fn get(&self, user: &str) -> Option<State> {
        self.counters.counted(self.lookup(user))
    }

    async fn take(&self, user: &str) -> Option<State> {
        self.counters.counted(self.remove(user))
    }

    async fn put(&self, state: Arc<State>) {
        self.insert(state);
    }

    async fn forget(&self, user: &str) {
        self.inner
            .lock()
            .expect("state cache lock")
            .states
            .remove(user);
    }

    fn stats(&self) -> HotStats {
        self.counters.snapshot()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_recent_users_and_evicts_the_oldest() {
        let c = MemoryHotStates::new(10);
        for i in 0..10 {
            c.insert(Arc::new(State::new(format!("u{i}"))));
        }
        assert!(c.lookup("u0").is_some(), "touching u0 makes it recent");
        c.insert(Arc::new(State::new("new")));
        assert!(c.lookup("u0").is_some());
        assert!(
            c.lookup("u1").is_none(),
            "the least recently used went first"
        );
        assert!(c.lookup("new").is_some());
    }

    #[test]
    fn an_older_state_does_not_replace_a_newer_one() {
        let c = MemoryHotStates::new(10);
        let mut s = State::new("u");
        s.seq = 5;
        c.insert(Arc::new(s.clone()));
        s.seq = 4;
        c.insert(Arc::new(s));
        assert_eq!(c.lookup("u").map(|s| s.seq), Some(5));
    }

    #[test]
    fn a_taken_entry_is_handed_over_and_gone() {
        let c = MemoryHotStates::new(10);
        let mut s = State::new("u");
        s.seq = 3;
        let shared = Arc::new(s);
        c.insert(Arc::clone(&shared));
        drop(shared);
        assert_eq!(c.remove("u").map(|s| s.seq), Some(3));
        assert!(c.lookup("u").is_none(), "taking leaves no entry");
    }
}

//! L1: recently used users' states in memory, so a busy user's next turn
//! does not read a snapshot and replay the log. The log stays the truth:
//! an entry is only ever a copy of a state that was committed, and a
//! conflicting append drops it.

use colloquy_core::State;
use std::collections::HashMap;
use std::sync::Mutex;

pub struct StateCache {
    inner: Mutex<Inner>,
    capacity: usize,
}

struct Inner {
    tick: u64,
    states: HashMap<String, (State, u64)>,
}

impl StateCache {
    pub fn new(capacity: usize) -> Self {
        StateCache {
            inner: Mutex::new(Inner {
                tick: 0,
                states: HashMap::new(),
            }),
            capacity: capacity.max(1),
        }
    }

    pub fn get(&self, user: &str) -> Option<State> {
        let mut inner = self.inner.lock().expect("state cache lock");
        inner.tick += 1;
        let tick = inner.tick;
        inner.states.get_mut(user).map(|(s, used)| {
            *used = tick;
            s.clone()
        })
    }

    pub fn put(&self, user: &str, state: &State) {
        let mut inner = self.inner.lock().expect("state cache lock");
        inner.tick += 1;
        let tick = inner.tick;
        if inner.states.len() >= self.capacity && !inner.states.contains_key(user) {
            // Evict the least recently used tenth in one pass, so the scan
            // is paid once per many inserts rather than on each.
            let mut ticks: Vec<u64> = inner.states.values().map(|(_, t)| *t).collect();
            let cut = ticks.len() / 10;
            let (_, nth, _) = ticks.select_nth_unstable(cut);
            let limit = *nth;
            inner.states.retain(|_, (_, t)| *t > limit);
        }
        inner.states.insert(user.to_string(), (state.clone(), tick));
    }

    pub fn forget(&self, user: &str) {
        self.inner
            .lock()
            .expect("state cache lock")
            .states
            .remove(user);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_recent_users_and_evicts_the_oldest() {
        let c = StateCache::new(10);
        for i in 0..10 {
            c.put(&format!("u{i}"), &State::new(format!("u{i}")));
        }
        assert!(c.get("u0").is_some(), "touching u0 makes it recent");
        c.put("new", &State::new("new"));
        assert!(c.get("u0").is_some());
        assert!(c.get("u1").is_none(), "the least recently used went first");
        assert!(c.get("new").is_some());
        c.forget("new");
        assert!(c.get("new").is_none());
    }
}

//! A process's own copies in front of a shared L1: a worker that owns a
//! user (the ring gives each user one worker at a time) finds the state of
//! the user's last turn in its memory, instead of reading it back from
//! Redis, checking its signature and decoding it on every turn. Puts still
//! go to both (write-through), so another worker taking the user over finds
//! the newest state in Redis.
//!
//! A copy left behind when the user moved away and back is stale: the
//! append's expected-seq check refuses it, and the caller forgets the entry
//! (here and in Redis) and reloads from L2, as with any stale L1 entry. What
//! exactly a get may then return is in the [`HotStates`] docs ("One copy or
//! near copies").

use super::{HotStates, HotStats, MemoryHotStates};
use async_trait::async_trait;
use colloquy_core::State;
use std::sync::Arc;

pub struct LayeredHotStates {
    near: MemoryHotStates,
    far: Arc<dyn HotStates>,
}

impl LayeredHotStates {
    /// `near_users` states kept in this process, in front of `far`.
    pub fn new(near_users: usize, far: Arc<dyn HotStates>) -> Self {
        LayeredHotStates {
            near: MemoryHotStates::new(near_users),
            far,
        }
    }
}

#[async_trait]
impl HotStates for LayeredHotStates {
    async fn get(&self, user: &str) -> Option<State> {
        match self.near.get(user).await {
            Some(state) => Some(state),
            None => self.far.get(user).await,
        }
    }

    async fn take(&self, user: &str) -> Option<State> {
        match self.near.take(user).await {
            Some(state) => Some(state),
            // The shared copy stays whatever the far backend's take would
            // do: it is there for the other processes too.
            None => self.far.get(user).await,
        }
    }

    async fn put(&self, state: Arc<State>) {
        self.near.put(Arc::clone(&state)).await;
        self.far.put(state).await;
    }

    async fn forget(&self, user: &str) {
        self.near.forget(user).await;
        self.far.forget(user).await;
    }

    /// A get answered by either layer is a hit; a miss is one that reached
    /// the shared layer and found nothing usable there.
    fn stats(&self) -> HotStats {
        let (near, far) = (self.near.stats(), self.far.stats());
        HotStats {
            hits: near.hits + far.hits,
            ..far
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(user: &str, seq: u64) -> Arc<State> {
        let mut s = State::new(user);
        s.seq = seq;
        Arc::new(s)
    }

    #[tokio::test]
    async fn the_near_copy_answers_and_both_layers_are_written() {
        let far = Arc::new(MemoryHotStates::new(10));
        let l = LayeredHotStates::new(10, far.clone());
        l.put(state("u", 3)).await;
        assert_eq!(
            far.get("u").await.map(|s| s.seq),
            Some(3),
            "written through"
        );
        assert_eq!(l.take("u").await.map(|s| s.seq), Some(3));
        let far_hits = far.stats().hits;
        assert_eq!(far_hits, 1, "only the check above read the far layer");
        // Gone from the near layer once taken: the far one answers.
        assert_eq!(l.take("u").await.map(|s| s.seq), Some(3));
        assert_eq!(far.stats().hits, 2);
        l.forget("u").await;
        assert_eq!(l.get("u").await, None);
        assert_eq!(far.get("u").await, None, "forgotten in both");
        let stats = l.stats();
        assert_eq!((stats.hits, stats.misses), (3, 2));
    }
}

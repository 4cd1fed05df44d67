//! Reply delivery inside a gateway: requests waiting for the replies to
//! their message, and WebSocket streams following a user.

use colloquy_core::wire::Outcome;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{broadcast, oneshot};

/// Per-user stream capacity; a client that falls further behind is told it
/// lagged and can catch up from the event log.
const STREAM_CAPACITY: usize = 256;

/// Requests waiting for one message's outcome, keyed by (user, message id).
type Waiters = HashMap<(String, String), Vec<oneshot::Sender<Arc<Outcome>>>>;

#[derive(Default)]
pub struct Hub {
    waiters: Mutex<Waiters>,
    streams: Mutex<HashMap<String, broadcast::Sender<Arc<Outcome>>>>,
}

impl Hub {
    /// Register interest in one message's outcome. Register before
    /// publishing, or the outcome may come first and be missed.
    pub fn wait_for(&self, user: &str, message_id: &str) -> oneshot::Receiver<Arc<Outcome>> {
        let (tx, rx) = oneshot::channel();
        let mut w = self.waiters.lock().expect("hub lock");
        let list = w
            .entry((user.to_string(), message_id.to_string()))
            .or_default();
        // Waiters that timed out leave closed senders behind: drop them here.
        list.retain(|s| !s.is_closed());
        list.push(tx);
        rx
    }

    /// Forget the waiters of a message whose wait timed out.
    pub fn abandon(&self, user: &str, message_id: &str) {
        let mut w = self.waiters.lock().expect("hub lock");
        let key = (user.to_string(), message_id.to_string());
        if let Some(list) = w.get_mut(&key) {
            list.retain(|s| !s.is_closed());
            if list.is_empty() {
                w.remove(&key);
            }
        }
    }

    pub fn subscribe(&self, user: &str) -> broadcast::Receiver<Arc<Outcome>> {
        let mut s = self.streams.lock().expect("hub lock");
        s.entry(user.to_string())
            .or_insert_with(|| broadcast::channel(STREAM_CAPACITY).0)
            .subscribe()
    }

    pub fn waiting(&self) -> usize {
        self.waiters.lock().expect("hub lock").len()
    }
}

impl Hub {
    /// Hand an outcome to whoever waits for it here.
    /// Sensitive values the turn set are masked first: waiting requests
    /// and streams show what the events API would.
    pub fn push(&self, mut outcome: Outcome) {
        let _delivering = tracing::debug_span!("gateway.deliver").entered();
        colloquy_core::redact::mask_outcome(&mut outcome);
        let outcome = Arc::new(outcome);
        let key = (outcome.user.clone(), outcome.message_id.clone());
        if let Some(list) = self.waiters.lock().expect("hub lock").remove(&key) {
            for w in list {
                let _ = w.send(outcome.clone());
            }
        }
        let mut streams = self.streams.lock().expect("hub lock");
        if let Some(tx) = streams.get(&outcome.user) {
            if tx.send(outcome.clone()).is_err() {
                // Nobody listens any more.
                streams.remove(&outcome.user);
            }
        }
    }
}

//! Keeping a JWKS current. One task per verifier reads the set again every
//! `auth.jwks_refresh`, and sooner when a token names a `kid` the set lacks
//! (the issuer may have rotated its keys), at most once per
//! [`UNKNOWN_KID_COOLDOWN`] so that tokens with invented kids cannot make
//! the gateway hammer the identity provider. The task reads and parses
//! with no lock held; the verifier swaps the new set in at once. A read
//! that fails keeps the set in use.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{watch, Notify};

use super::super::config::Algorithm;
use super::set::KeySet;
use super::source::{Source, JWKS_FETCH_TIMEOUT};

/// At most one refresh for unknown kids per this long.
pub const UNKNOWN_KID_COOLDOWN: Duration = Duration::from_secs(30);

/// What holds the set in use: the verifier, which swaps it and forgets
/// the tokens it verified with keys the new set no longer holds.
pub(in crate::auth) trait Holder: Send + Sync + 'static {
    /// Puts `set` in use; false when it holds the same keys as before.
    fn replace(&self, set: KeySet) -> bool;
}

/// Refreshes counted since start, for the metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JwksStats {
    /// Reads that gave a usable set (changed or not).
    pub refreshed: u64,
    /// Reads that failed; the set in use was kept.
    pub failed: u64,
    /// Usable keys in the set in use.
    pub keys: u64,
}

pub(in crate::auth) struct Refresher {
    source: Source,
    algorithm: Algorithm,
    every: Duration,
    wake: Notify,
    /// Reads begun, and (in the channel) reads finished: reads run one
    /// after another, so read `n` has finished once `finished >= n`.
    started: AtomicU64,
    finished: watch::Sender<u64>,
    asked: Mutex<Asked>,
    refreshed: AtomicU64,
    failed: AtomicU64,
    keys: AtomicU64,
}

/// The last refresh asked for because of an unknown kid.
#[derive(Default)]
struct Asked {
    at: Option<Instant>,
    /// The read that answers it.
    read: u64,
}

impl Refresher {
    pub(in crate::auth) fn new(source: Source, algorithm: Algorithm, every: Duration) -> Refresher {
        Refresher {
            source,
            algorithm,
            every,
            wake: Notify::new(),
            started: AtomicU64::new(0),
            finished: watch::Sender::new(0),
            asked: Mutex::default(),
            refreshed: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            keys: AtomicU64::new(0),
        }
    }

    /// Reads and parses the set once; errors name the source.
    pub(in crate::auth) async fn load(&self) -> Result<KeySet, String> {
        let bytes = self
            .source
            .read()
            .await
            .map_err(|why| format!("{} {why}", self.source))?;
        KeySet::parse(self.algorithm, &bytes).map_err(|why| format!("{} {why}", self.source))
    }

    /// Counts the set read at startup.
    pub(in crate::auth) fn started_with(&self, set: &KeySet) {
        self.keys.store(set.len() as u64, Ordering::Relaxed);
    }

    pub(in crate::auth) fn stats(&self) -> JwksStats {
        JwksStats {
            refreshed: self.refreshed.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            keys: self.keys.load(Ordering::Relaxed),
        }
    }

    /// Runs the refreshes until `holder` is dropped.
    pub(in crate::auth) fn spawn<H: Holder>(self: &Arc<Self>, holder: Weak<H>) {
        let this = Arc::clone(self);
        tokio::spawn(async move { this.run(holder).await });
    }

    async fn run<H: Holder>(&self, holder: Weak<H>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.every) => {}
                _ = self.wake.notified() => {}
            }
            if holder.strong_count() == 0 {
                return;
            }
            self.started.fetch_add(1, Ordering::Relaxed);
            let loaded = self.load().await;
            let Some(holder) = holder.upgrade() else {
                return;
            };
            match loaded {
                Ok(set) => {
                    let keys = set.len() as u64;
                    let (kids, skipped) = (set.kids(), set.skipped());
                    if holder.replace(set) {
                        tracing::info!(source = %self.source, ?kids, "JWKS changed");
                        if !skipped.is_empty() {
                            tracing::warn!(source = %self.source, ?skipped, "JWKS keys this server does not use");
                        }
                    }
                    self.keys.store(keys, Ordering::Relaxed);
                    self.refreshed.fetch_add(1, Ordering::Relaxed);
                }
                Err(why) => {
                    tracing::warn!(error = %why, "JWKS refresh failed; keeping the key set in use");
                    self.failed.fetch_add(1, Ordering::Relaxed);
                }
            }
            drop(holder);
            self.finished.send_modify(|n| *n += 1);
        }
    }

    /// A token named a kid the set lacks: asks for a refresh unless one was
    /// asked for less than [`UNKNOWN_KID_COOLDOWN`] ago, and waits until
    /// the refresh asked for has finished (at most about
    /// [`JWKS_FETCH_TIMEOUT`]). Requests that come while it runs wait for
    /// the same one; after it, they return at once until the cooldown ends.
    pub(in crate::auth) async fn refresh_for_unknown_kid(&self) {
        let read = {
            let mut asked = self.asked.lock().expect("JWKS refresh lock");
            let finished = *self.finished.borrow();
            match asked.at {
                Some(at) if at.elapsed() < UNKNOWN_KID_COOLDOWN => {
                    if finished >= asked.read {
                        return;
                    }
                    asked.read
                }
                _ => {
                    asked.at = Some(Instant::now());
                    asked.read = self.started.load(Ordering::Relaxed) + 1;
                    self.wake.notify_one();
                    asked.read
                }
            }
        };
        let mut finished = self.finished.subscribe();
        let wait = finished.wait_for(|n| *n >= read);
        let _ = tokio::time::timeout(JWKS_FETCH_TIMEOUT + Duration::from_secs(1), wait).await;
    }
}

//! The shared L1: hot states in Redis, seen by every worker.
//!
//! An entry is `colloquy:state:{user}` (prefix configurable) holding the
//! state's seq as 20 zero-padded digits, a `:`, and the state as a
//! [`Snapshot`] signed with the [`SnapshotKey`]: anyone who can write to
//! Redis could otherwise put words in a user's mouth, so an entry that does
//! not verify is a miss, and is deleted. The digits let the put script
//! compare seqs exactly (as strings) without decoding the state, so that of
//! racing workers the newest state always stays.
//!
//! Redis is an optimisation, never a dependency: every call is bounded by
//! the configured timeout; a failure is a miss (the caller reads L2), is
//! counted, and is logged at most every [`WARN_EVERY`]. After a failure the
//! backend stops calling Redis for a backoff that grows up to
//! [`MAX_BACKOFF`], then lets one call through as a probe, so a dead Redis
//! costs callers nothing but the lost hits. The connection itself is a
//! [`ConnectionManager`], which reconnects on the next call after the
//! connection broke: when Redis is back, hits resume without a restart.

use super::{Counters, HotStates, HotStats, RedisL1Config};
use crate::{KeyRing, Snapshot, SnapshotError, SnapshotKey};
use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{RedisResult, Script};
use async_trait::async_trait;
use colloquy_core::State;
use std::future::Future;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long one connection attempt may take. Longer than call timeouts on
/// purpose: the attempt goes on in the background after the call that
/// started it gave up, so a slow handshake still completes.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Backoff after the first failure; doubles with each further one.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);

/// Longest pause between probes while Redis is failing: bounds how long
/// hits stay off after Redis came back.
pub const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// At most one warning per this while Redis is failing; it says how many
/// calls failed since the previous one.
pub const WARN_EVERY: Duration = Duration::from_secs(10);

/// Digits of the seq header: enough for any u64.
const SEQ_DIGITS: usize = 20;

/// KEYS[1] entry; ARGV[1] the new seq (SEQ_DIGITS digits), ARGV[2] the
/// entry, ARGV[3] the TTL in ms. Reads only the header of the held entry.
/// A header that is not digits is garbage and gets replaced, so a corrupt
/// entry cannot block puts until it expires.
const PUT_SCRIPT: &str = r"
local held = redis.call('GETRANGE', KEYS[1], 0, 19)
if string.len(held) == 20 and string.find(held, '^%d+$') and held > ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
";

/// KEYS[1] entry; ARGV[1] the value found untrustworthy. Deletes it only if
/// it is still there, so a good state put meanwhile by another worker stays.
const DROP_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

#[derive(Debug, thiserror::Error)]
pub enum RedisL1ConfigError {
    // The URL itself is left out: it may hold a password.
    #[error("l1 redis url is not valid: {0}")]
    Url(#[source] ::redis::RedisError),
    #[error("l1 redis ttl_secs must be at least 1")]
    ZeroTtl,
    #[error("l1 redis timeout_ms must be at least 1")]
    ZeroTimeout,
}

/// Why an entry found in Redis was not believed.
#[derive(Debug, thiserror::Error)]
enum Untrusted {
    #[error("no seq header")]
    Header,
    #[error("undecodable: {0}")]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error("header says seq {header}, signed state is at seq {state}")]
    HeaderSeq { header: u64, state: u64 },
    #[error(transparent)]
    Sealed(#[from] crate::SealError),
}

pub struct RedisHotStates {
    conn: ConnectionManager,
    key: SnapshotKey,
    prefix: String,
    ttl_ms: u64,
    timeout: Duration,
    put_script: Script,
    drop_script: Script,
    counters: Counters,
    health: Health,
    /// Seals the sensitive slots of what is put, opens them in what is got.
    ring: Option<Arc<KeyRing>>,
}

impl RedisHotStates {
    /// A client for `config`, signing entries with `key`. Does not connect:
    /// the first call does, so a worker starts (and serves from L2) while
    /// Redis is down. Must be called inside a tokio runtime.
    pub fn new(config: &RedisL1Config, key: SnapshotKey) -> Result<Self, RedisL1ConfigError> {
        if config.ttl_secs == 0 {
            return Err(RedisL1ConfigError::ZeroTtl);
        }
        if config.timeout.is_zero() {
            return Err(RedisL1ConfigError::ZeroTimeout);
        }
        let timeout = config.timeout;
        let client = ::redis::Client::open(config.url.as_str()).map_err(RedisL1ConfigError::Url)?;
        let manager_config = ConnectionManagerConfig::new()
            // One attempt per reconnect: `Health` decides when to try again,
            // and a call must never wait on a retry loop.
            .set_number_of_retries(0)
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(timeout));
        let conn = ConnectionManager::new_lazy_with_config(client, manager_config)
            .map_err(RedisL1ConfigError::Url)?;
        Ok(RedisHotStates {
            conn,
            key,
            prefix: config.key_prefix.clone(),
            ttl_ms: config.ttl_secs.saturating_mul(1000),
            timeout,
            put_script: Script::new(PUT_SCRIPT),
            drop_script: Script::new(DROP_SCRIPT),
            counters: Counters::default(),
            health: Health::new(),
            ring: None,
        })
    }

    /// Entries hold the values of sensitive slots sealed under `ring`
    /// (signed in the clear, so an entry opened with another ring's keys
    /// fails its signature and is a miss).
    pub fn sealing(mut self, ring: Arc<KeyRing>) -> Self {
        self.ring = Some(ring);
        self
    }

    fn entry_key(&self, user: &str) -> String {
        format!("{}{user}", self.prefix)
    }

    fn encode(&self, state: &State) -> Vec<u8> {
        let mut snapshot = self.key.sign(state);
        if let Some(sealed) = self.ring.as_ref().and_then(|r| r.seal_state(state)) {
            snapshot.state = sealed;
        }
        let mut value = format!("{:0width$}:", state.seq, width = SEQ_DIGITS).into_bytes();
        serde_json::to_writer(&mut value, &snapshot)
            // A Snapshot holds only plain data and string-keyed maps.
            .expect("Snapshot serializes to JSON");
        value
    }

    fn decode(&self, user: &str, raw: &[u8]) -> Result<State, Untrusted> {
        let (header, body) = raw.split_at_checked(SEQ_DIGITS).ok_or(Untrusted::Header)?;
        let body = body.strip_prefix(b":").ok_or(Untrusted::Header)?;
        let header: u64 = std::str::from_utf8(header)
            .ok()
            .and_then(|digits| digits.parse().ok())
            .ok_or(Untrusted::Header)?;
        let mut snapshot: Snapshot = serde_json::from_slice(body)?;
        if let Some(ring) = &self.ring {
            ring.open_state(&mut snapshot.state)?;
        }
        self.key.verify(&snapshot)?;
        for found in [&snapshot.user_id, &snapshot.state.user_id] {
            if found != user {
                return Err(SnapshotError::OtherUser {
                    expected: user.to_string(),
                    found: found.clone(),
                }
                .into());
            }
        }
        if snapshot.state.seq != snapshot.seq {
            return Err(SnapshotError::SeqMismatch {
                snapshot: snapshot.seq,
                state: snapshot.state.seq,
            }
            .into());
        }
        if header != snapshot.seq {
            // A wrong header would make the put script keep or drop the
            // wrong states.
            return Err(Untrusted::HeaderSeq {
                header,
                state: snapshot.seq,
            });
        }
        Ok(snapshot.state)
    }

    /// Run one Redis call within the timeout, unless Redis is in backoff.
    /// `None` on any failure, which is counted and (rate-limited) logged.
    async fn call<T>(
        &self,
        op: &'static str,
        call: impl Future<Output = RedisResult<T>>,
    ) -> Option<T> {
        let Some(gate) = self.health.may_call() else {
            self.counters.error();
            self.health
                .report(op, || "skipped: Redis failed recently".into());
            return None;
        };
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(value)) => {
                self.health.succeeded();
                Some(value)
            }
            Ok(Err(e)) => {
                self.counters.error();
                self.health.failed(gate, op, || e.to_string());
                None
            }
            Err(_) => {
                self.counters.error();
                let timeout = self.timeout;
                self.health
                    .failed(gate, op, || format!("timed out after {timeout:?}"));
                None
            }
        }
    }

    async fn drop_untrusted(&self, key: &str, raw: &[u8]) {
        let mut conn = self.conn.clone();
        let mut drop = self.drop_script.key(key);
        drop.arg(raw);
        let _: Option<i64> = self.call("drop", drop.invoke_async(&mut conn)).await;
    }
}

#[async_trait]
impl HotStates for RedisHotStates {
    async fn get(&self, user: &str) -> Option<State> {
        let key = self.entry_key(user);
        let mut conn = self.conn.clone();
        let mut get = ::redis::cmd("GET");
        get.arg(&key);
        let get = get.query_async::<Option<Vec<u8>>>(&mut conn);
        let Some(raw) = self.call("get", get).await.flatten() else {
            self.counters.miss();
            return None;
        };
        match self.decode(user, &raw) {
            Ok(state) => {
                self.counters.hit();
                Some(state)
            }
            Err(why) => {
                self.counters.rejected();
                self.counters.miss();
                tracing::warn!(user, %why, "dropping an untrusted L1 entry from Redis; reading L2");
                self.drop_untrusted(&key, &raw).await;
                None
            }
        }
    }

    async fn put(&self, state: Arc<State>) {
        let key = self.entry_key(&state.user_id);
        let value = self.encode(&state);
        let mut conn = self.conn.clone();
        let mut put = self.put_script.key(&key);
        put.arg(format!("{:0width$}", state.seq, width = SEQ_DIGITS))
            .arg(value)
            .arg(self.ttl_ms);
        let _: Option<i64> = self.call("put", put.invoke_async(&mut conn)).await;
    }

    async fn forget(&self, user: &str) {
        let key = self.entry_key(user);
        let mut conn = self.conn.clone();
        let mut del = ::redis::cmd("DEL");
        del.arg(&key);
        let del = del.query_async::<i64>(&mut conn);
        self.call("forget", del).await;
    }

    fn stats(&self) -> HotStats {
        self.counters.snapshot()
    }
}

/// Whether Redis is worth calling, and the rate limit of the warnings.
/// Lock-free: every call of every user passes through here.
///
/// The backoff grows by one step per failed *probe*, not per failed call:
/// when Redis stalls, every call in flight times out at about the same
/// moment, and counting each would jump straight to the longest pause
/// after a single hiccup.
struct Health {
    epoch: Instant,
    /// Backoff steps since the last success; 0 while healthy.
    failures: AtomicU32,
    /// No call before this (ms since `epoch`) while failing.
    closed_until_ms: AtomicU64,
    next_warn_ms: AtomicU64,
    /// Failures not yet told in a warning.
    unreported: AtomicU64,
}

/// How a call got past [`Health::may_call`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gate {
    /// Redis was healthy when the call started.
    Open,
    /// The one call let through after `failures` backoff steps.
    Probe { failures: u32 },
}

impl Health {
    fn new() -> Self {
        Health {
            epoch: Instant::now(),
            failures: AtomicU32::new(0),
            closed_until_ms: AtomicU64::new(0),
            next_warn_ms: AtomicU64::new(0),
            unreported: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// While failing, one caller per backoff gets through as the probe;
    /// everybody else is turned away (`None`) without touching Redis.
    fn may_call(&self) -> Option<Gate> {
        let failures = self.failures.load(Ordering::Relaxed);
        if failures == 0 {
            return Some(Gate::Open);
        }
        let until = self.closed_until_ms.load(Ordering::Relaxed);
        let now = self.now_ms();
        // Until the probe's outcome sets the next pause, nobody else goes.
        let hold = now + backoff_ms(failures);
        let won = now >= until
            && self
                .closed_until_ms
                .compare_exchange(until, hold, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok();
        won.then_some(Gate::Probe { failures })
    }

    fn succeeded(&self) {
        // Checked first: a plain load keeps the shared cache line clean on
        // the hot path.
        if self.failures.load(Ordering::Relaxed) != 0 {
            let failures = self.failures.swap(0, Ordering::Relaxed);
            if failures != 0 {
                let unreported = self.unreported.swap(0, Ordering::Relaxed);
                tracing::info!(failures, unreported, "Redis L1 reachable again");
            }
        }
    }

    /// A call that reached Redis failed: the first such call since Redis
    /// was last healthy, or a failed probe, backs off one step further.
    fn failed(&self, gate: Gate, op: &'static str, error: impl FnOnce() -> String) {
        let step = match gate {
            Gate::Open => self
                .failures
                .compare_exchange(0, 1, Ordering::Relaxed, Ordering::Relaxed)
                .ok()
                .map(|_| 1),
            Gate::Probe { failures } => {
                let next = failures.saturating_add(1);
                self.failures.store(next, Ordering::Relaxed);
                Some(next)
            }
        };
        if let Some(step) = step {
            self.closed_until_ms
                .store(self.now_ms() + backoff_ms(step), Ordering::Relaxed);
        }
        self.report(op, error);
    }

    /// Count a failed or skipped call toward the next warning, and warn if
    /// the last one is old enough. Skipped calls must not extend the
    /// backoff, or steady traffic would keep the probe from ever running.
    fn report(&self, op: &'static str, error: impl FnOnce() -> String) {
        self.unreported.fetch_add(1, Ordering::Relaxed);
        let now = self.now_ms();
        let next = self.next_warn_ms.load(Ordering::Relaxed);
        if now >= next
            && self
                .next_warn_ms
                .compare_exchange(
                    next,
                    now + WARN_EVERY.as_millis() as u64,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            let failed_calls = self.unreported.swap(0, Ordering::Relaxed);
            tracing::warn!(op, error = %error(), failed_calls, "Redis L1 unavailable; serving from L2");
        }
    }
}

/// Pause after `failures` consecutive failures: doubling from
/// [`FIRST_BACKOFF`] up to [`MAX_BACKOFF`].
fn backoff_ms(failures: u32) -> u64 {
    let doubled = FIRST_BACKOFF.as_millis() as u64 * (1u64 << failures.saturating_sub(1).min(16));
    doubled.min(MAX_BACKOFF.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        assert_eq!(backoff_ms(1), 50);
        assert_eq!(backoff_ms(2), 100);
        assert_eq!(backoff_ms(5), 800);
        assert_eq!(backoff_ms(6), 1000);
        assert_eq!(backoff_ms(u32::MAX), 1000);
    }

    #[test]
    fn after_a_failure_only_one_probe_per_backoff_goes_through() {
        let h = Health::new();
        assert_eq!(h.may_call(), Some(Gate::Open), "healthy: everyone calls");
        assert_eq!(h.may_call(), Some(Gate::Open));
        h.failed(Gate::Open, "get", || "boom".into());
        assert_eq!(h.may_call(), None, "in backoff");
        h.closed_until_ms.store(0, Ordering::Relaxed);
        let probe = h.may_call();
        assert_eq!(probe, Some(Gate::Probe { failures: 1 }), "backoff over");
        assert_eq!(h.may_call(), None, "the others wait for the probe");
        h.failed(probe.unwrap(), "get", || "boom".into());
        assert_eq!(
            h.failures.load(Ordering::Relaxed),
            2,
            "a failed probe backs off further"
        );
        h.succeeded();
        assert_eq!(h.may_call(), Some(Gate::Open));
    }

    #[test]
    fn calls_failing_together_back_off_one_step() {
        let h = Health::new();
        // A stall: everything in flight times out at once.
        for _ in 0..64 {
            h.failed(Gate::Open, "get", || "timed out".into());
        }
        assert_eq!(h.failures.load(Ordering::Relaxed), 1);
        let pause = h
            .closed_until_ms
            .load(Ordering::Relaxed)
            .saturating_sub(h.now_ms());
        assert!(pause <= backoff_ms(1), "paused {pause} ms");
    }
}

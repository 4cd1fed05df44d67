//! Token buckets: per user, per token and per WebSocket connection. A
//! message spends one token; a bucket refills at `rate` per second up to
//! `burst`. A refused message is answered 429 with the seconds until a
//! token is back (`Retry-After`) and is never queued.
//!
//! Memory is bounded: the buckets of a shard are dropped once they have
//! refilled (a full bucket is the same as no bucket), checked whenever a
//! shard grows past its share of `MAX_KEYS`.

use crate::auth::Principal;
use crate::input::Limits;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Keys tracked at most before idle ones are swept, over all shards.
const MAX_KEYS: usize = 100_000;
const SHARDS: usize = 16;

/// One bucket's settings. `rate` 0 means unlimited.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_second: f64,
    pub burst: f64,
}

impl Rate {
    pub fn unlimited(&self) -> bool {
        self.per_second <= 0.0
    }
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn refilled(&self, rate: Rate, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        (self.tokens + elapsed * rate.per_second).min(rate.burst)
    }
}

/// Buckets by key, sharded so that concurrent messages of different users
/// rarely meet on a lock.
pub struct Buckets<K> {
    rate: Rate,
    shards: Vec<Mutex<HashMap<K, Bucket>>>,
    hasher: std::collections::hash_map::RandomState,
}

impl<K: Hash + Eq + Clone> Buckets<K> {
    pub fn new(rate: Rate) -> Buckets<K> {
        Buckets {
            rate,
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: Default::default(),
        }
    }

    /// Spend one token of `key`'s bucket, or say how long until one is
    /// back.
    pub fn take(&self, key: &K, now: Instant) -> Result<(), Duration> {
        if self.rate.unlimited() {
            return Ok(());
        }
        let shard = &self.shards[self.hasher.hash_one(key) as usize % SHARDS];
        let mut map = shard.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_KEYS / SHARDS && !map.contains_key(key) {
            let rate = self.rate;
            map.retain(|_, b| b.refilled(rate, now) < rate.burst);
        }
        let bucket = map.entry(key.clone()).or_insert(Bucket {
            tokens: self.rate.burst,
            at: now,
        });
        let tokens = bucket.refilled(self.rate, now);
        if tokens >= 1.0 {
            *bucket = Bucket {
                tokens: tokens - 1.0,
                at: now,
            };
            Ok(())
        } else {
            *bucket = Bucket { tokens, at: now };
            Err(Duration::from_secs_f64(
                (1.0 - tokens) / self.rate.per_second,
            ))
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap().len()).sum()
    }
}

/// A single bucket, for a WebSocket connection (no key, no lock).
pub struct Single {
    rate: Rate,
    bucket: Bucket,
}

impl Single {
    pub fn new(rate: Rate, now: Instant) -> Single {
        Single {
            rate,
            bucket: Bucket {
                tokens: rate.burst,
                at: now,
            },
        }
    }

    pub fn take(&mut self, now: Instant) -> Result<(), Duration> {
        if self.rate.unlimited() {
            return Ok(());
        }
        let tokens = self.bucket.refilled(self.rate, now);
        self.bucket = Bucket { tokens, at: now };
        if tokens >= 1.0 {
            self.bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - tokens) / self.rate.per_second,
            ))
        }
    }
}

/// The gateway's limits on messages, from `[limits]`.
pub struct Limiter {
    users: Buckets<String>,
    tokens: Buckets<u64>,
    admin_tokens: Buckets<u64>,
    /// Each WebSocket connection's own bucket is made from this.
    pub connection: Rate,
}

/// Which limit refused a message, for the error and the metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limited {
    User,
    Token,
    Connection,
}

impl Limited {
    pub fn label(self) -> &'static str {
        match self {
            Limited::User => "user",
            Limited::Token => "token",
            Limited::Connection => "connection",
        }
    }
}

impl Limiter {
    pub fn new(limits: &Limits) -> Result<Limiter, String> {
        let rate = |name: &str, per_second: f64, burst: u32| {
            if !per_second.is_finite() || per_second < 0.0 {
                return Err(format!(
                    "limits.{name}_rate must be 0 (unlimited) or more, got {per_second}"
                ));
            }
            if per_second > 0.0 && burst == 0 {
                return Err(format!(
                    "limits.{name}_burst must be at least 1 when limits.{name}_rate is set"
                ));
            }
            Ok(Rate {
                per_second,
                burst: f64::from(burst),
            })
        };
        Ok(Limiter {
            users: Buckets::new(rate("user", limits.user_rate, limits.user_burst)?),
            tokens: Buckets::new(rate("token", limits.token_rate, limits.token_burst)?),
            admin_tokens: Buckets::new(rate(
                "admin_token",
                limits.admin_token_rate,
                limits.admin_token_burst,
            )?),
            connection: rate(
                "ws_message",
                limits.ws_message_rate,
                limits.ws_message_burst,
            )?,
        })
    }

    /// May `principal` send a message for `user` now? An admin token is a
    /// service acting for many users: only its own limit applies.
    pub fn admit(
        &self,
        principal: &Principal,
        user: &str,
        now: Instant,
    ) -> Result<(), (Limited, Duration)> {
        if principal.is_admin() {
            return self
                .admin_tokens
                .take(&principal.token_id, now)
                .map_err(|w| (Limited::Token, w));
        }
        self.tokens
            .take(&principal.token_id, now)
            .map_err(|w| (Limited::Token, w))?;
        self.users
            .take(&user.to_string(), now)
            .map_err(|w| (Limited::User, w))
    }
}

/// Seconds for `Retry-After`: whole, at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    (wait.as_secs_f64().ceil() as u64).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIVE: Rate = Rate {
        per_second: 5.0,
        burst: 2.0,
    };

    #[test]
    fn a_burst_then_the_rate() {
        let b = Buckets::new(FIVE);
        let t0 = Instant::now();
        assert!(b.take(&"u", t0).is_ok());
        assert!(b.take(&"u", t0).is_ok());
        let wait = b.take(&"u", t0).unwrap_err();
        assert!((wait.as_secs_f64() - 0.2).abs() < 1e-6, "{wait:?}");
        // Other keys have their own bucket.
        assert!(b.take(&"v", t0).is_ok());
        // 200 ms later one token is back, not two.
        let t1 = t0 + Duration::from_millis(200);
        assert!(b.take(&"u", t1).is_ok());
        assert!(b.take(&"u", t1).is_err());
    }

    #[test]
    fn zero_is_unlimited() {
        let b = Buckets::new(Rate {
            per_second: 0.0,
            burst: 0.0,
        });
        let t0 = Instant::now();
        for _ in 0..1000 {
            assert!(b.take(&1u64, t0).is_ok());
        }
    }

    #[test]
    fn idle_buckets_are_swept_so_memory_stays_bounded() {
        let b = Buckets::new(FIVE);
        let t0 = Instant::now();
        for i in 0..MAX_KEYS * 2 {
            let _ = b.take(&i, t0);
        }
        // Every bucket spent a token at t0: none is full yet.
        assert!(b.len() >= MAX_KEYS);
        let later = t0 + Duration::from_secs(1);
        for i in 0..MAX_KEYS {
            let _ = b.take(&(MAX_KEYS * 2 + i), later);
        }
        assert!(b.len() <= MAX_KEYS + SHARDS, "{}", b.len());
    }

    #[test]
    fn a_connection_bucket() {
        let t0 = Instant::now();
        let mut s = Single::new(FIVE, t0);
        assert!(s.take(t0).is_ok());
        assert!(s.take(t0).is_ok());
        assert!(s.take(t0).is_err());
        assert!(s.take(t0 + Duration::from_millis(250)).is_ok());
    }

    #[test]
    fn limits_that_cannot_work_are_refused_by_name() {
        let bad = Limits {
            user_rate: 2.0,
            user_burst: 0,
            ..Limits::default()
        };
        let e = Limiter::new(&bad).err().unwrap();
        assert!(e.contains("limits.user_burst"), "{e}");
        let negative = Limits {
            ws_message_rate: -1.0,
            ..Limits::default()
        };
        let e = Limiter::new(&negative).err().unwrap();
        assert!(e.contains("limits.ws_message_rate"), "{e}");
        assert!(Limiter::new(&Limits::default()).is_ok());
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(Duration::from_millis(200)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1200)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(3)), 3);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
    }
}

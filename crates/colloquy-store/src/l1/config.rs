//! `[store.l1]`: which L1 a process keeps, and [`open`], which builds it.
//! Part of every build, so that a file choosing Redis still reads in a
//! build without it, and is refused with the feature to build in.

use super::{HotStates, MemoryHotStates};
use crate::{KeyRing, SnapshotKey, StoreError};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// Hot states kept in a process's memory: the whole L1 with the memory
/// backend, the near copies in front of Redis with the Redis one. Beyond
/// this the least recently used go.
pub const MEMORY_L1_USERS: usize = 100_000;

/// Hot states (L1): each worker's memory, or Redis shared by all workers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct L1Config {
    pub backend: L1Backend,
    pub redis: RedisL1Config,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum L1Backend {
    #[default]
    Memory,
    Redis,
}

/// `[store.l1.redis]` in the configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisL1Config {
    /// `redis://[:password@]host:port[/db]`.
    pub url: String,
    /// Prepended to the user id to make an entry's key; lets deployments
    /// (or test runs) share one Redis without seeing each other's entries.
    pub key_prefix: String,
    /// Lifetime of an entry, restarted by every put.
    pub ttl_secs: u64,
    /// Bound on each Redis call (get, put, forget). Written `timeout_ms`,
    /// in milliseconds.
    #[serde(rename = "timeout_ms", with = "crate::config::millis")]
    pub timeout: Duration,
}

impl Default for RedisL1Config {
    fn default() -> Self {
        RedisL1Config {
            url: "redis://127.0.0.1:6379".into(),
            key_prefix: "colloquy:state:".into(),
            ttl_secs: 3600,
            timeout: Duration::from_millis(50),
        }
    }
}

impl L1Backend {
    fn not_built(self) -> StoreError {
        StoreError::not_built(r#"store.l1.backend = "redis""#, "redis")
    }
}

impl L1Config {
    /// Check the choice without opening anything (for `colloquy check`):
    /// this build must have the chosen backend.
    pub fn validate(&self) -> Result<(), StoreError> {
        if self.backend == L1Backend::Redis && !cfg!(feature = "redis") {
            return Err(L1Backend::Redis.not_built());
        }
        Ok(())
    }
}

/// The L1 `config` picks: [`MemoryHotStates`] of [`MEMORY_L1_USERS`], or
/// Redis (entries signed with `key`) behind near copies of as many users
/// ([`super::LayeredHotStates`]), the values of sensitive slots sealed
/// under `ring` there. Connects to nothing: a Redis L1 connects on its
/// first call, so it must be opened inside a tokio runtime.
pub fn open(
    config: &L1Config,
    key: SnapshotKey,
    ring: Arc<KeyRing>,
) -> Result<Arc<dyn HotStates>, StoreError> {
    Ok(match config.backend {
        L1Backend::Memory => Arc::new(MemoryHotStates::new(MEMORY_L1_USERS)),
        L1Backend::Redis => redis(&config.redis, key, ring)?,
    })
}

#[cfg(feature = "redis")]
fn redis(
    config: &RedisL1Config,
    key: SnapshotKey,
    ring: Arc<KeyRing>,
) -> Result<Arc<dyn HotStates>, StoreError> {
    let shared = super::RedisHotStates::new(config, key)
        .map_err(|e| StoreError::Config(format!("store.l1.redis: {e}")))?
        .sealing(ring);
    // The worker's own copies first: the ring gives it its users one at a
    // time, so most turns find the last state here.
    Ok(Arc::new(super::LayeredHotStates::new(
        MEMORY_L1_USERS,
        Arc::new(shared),
    )))
}

#[cfg(not(feature = "redis"))]
fn redis(
    _: &RedisL1Config,
    _: SnapshotKey,
    _: Arc<KeyRing>,
) -> Result<Arc<dyn HotStates>, StoreError> {
    Err(L1Backend::Redis.not_built())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SnapshotKey {
        SnapshotKey::new(b"l1-config-test-key-0123456789abc".to_vec()).unwrap()
    }

    fn ring() -> Arc<KeyRing> {
        let json = format!(
            r#"{{"current":"k0001","keys":{{"k0001":"{}"}}}}"#,
            "ab".repeat(32)
        );
        Arc::new(KeyRing::from_json(&json, "test").unwrap())
    }

    #[test]
    fn config_defaults_and_unknown_keys() {
        let c: RedisL1Config = serde_json::from_str(r#"{"url":"redis://h:1"}"#).unwrap();
        assert_eq!(c.url, "redis://h:1");
        assert_eq!(c.key_prefix, "colloquy:state:");
        assert_eq!((c.ttl_secs, c.timeout), (3600, Duration::from_millis(50)));
        assert!(serde_json::from_str::<RedisL1Config>(r#"{"ttl":5}"#).is_err());
    }

    #[test]
    fn the_timeout_keeps_its_millisecond_key() {
        let c: RedisL1Config = serde_json::from_str(r#"{"timeout_ms":120}"#).unwrap();
        assert_eq!(c.timeout, Duration::from_millis(120));
        assert_eq!(serde_json::to_value(&c).unwrap()["timeout_ms"], 120);
        assert!(serde_json::from_str::<RedisL1Config>(r#"{"timeout":120}"#).is_err());
    }

    #[test]
    fn backends_are_named_in_lowercase() {
        let c: L1Config = serde_json::from_str(r#"{"backend":"redis"}"#).unwrap();
        assert_eq!(c.backend, L1Backend::Redis);
        assert_eq!(L1Config::default().backend, L1Backend::Memory);
        assert!(serde_json::from_str::<L1Config>(r#"{"backend":"memcached"}"#).is_err());
    }

    #[test]
    fn a_redis_l1_left_out_of_the_build_is_named_with_its_feature() {
        let err = L1Backend::Redis.not_built().to_string();
        assert!(
            err.contains(r#"store.l1.backend = "redis" needs a colloquy built with the `redis` cargo feature"#),
            "{err}"
        );
    }

    #[tokio::test]
    async fn memory_is_always_built_and_redis_only_with_its_feature() {
        let memory = L1Config::default();
        memory.validate().unwrap();
        assert!(open(&memory, key(), ring()).is_ok());
        let redis = L1Config {
            backend: L1Backend::Redis,
            ..L1Config::default()
        };
        if cfg!(feature = "redis") {
            redis.validate().unwrap();
            // Lazy: opening needs no Redis, so this runs without one.
            assert!(open(&redis, key(), ring()).is_ok());
        } else {
            for err in [
                redis.validate().unwrap_err(),
                open(&redis, key(), ring()).err().unwrap(),
            ] {
                assert!(matches!(err, StoreError::Config(_)), "{err:?}");
                assert!(err.to_string().contains("`redis` cargo feature"), "{err}");
            }
        }
    }

    #[tokio::test]
    async fn a_bad_redis_setting_is_a_configuration_error_naming_the_section() {
        let config = L1Config {
            backend: L1Backend::Redis,
            redis: RedisL1Config {
                ttl_secs: 0,
                ..RedisL1Config::default()
            },
        };
        let err = open(&config, key(), ring()).err().unwrap();
        assert!(matches!(err, StoreError::Config(_)), "{err:?}");
        let want = if cfg!(feature = "redis") {
            "store.l1.redis"
        } else {
            "`redis` cargo feature"
        };
        assert!(err.to_string().contains(want), "{err}");
    }
}

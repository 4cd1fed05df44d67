//! `[store.l1.redis]`: part of every build, so that a file choosing Redis
//! still reads in a build without it.

use serde::{Deserialize, Serialize};
use std::time::Duration;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}

//! Where the shards live: [`SqlConfig`] as the configuration file holds
//! it, the shard of a user, and the shard map the two resolve to. Part of
//! every build, so that a file naming a server whose backend was left out
//! still reads, and is refused with the feature to build in.

use crate::StoreError;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;
use std::time::Duration;

/// Logical shards. Placement depends on it: never change it.
pub const SHARDS: u8 = 64;

/// The logical shard of a user: the first byte of SHA-256 over the user
/// id's UTF-8 bytes, modulo 64 (e.g. `sha256sum` in a shell gives the same).
/// It places data, so it must never change across releases.
pub fn shard_of(user_id: &str) -> u8 {
    Sha256::digest(user_id.as_bytes())[0] % SHARDS
}

/// Where the shards live and how to talk to their databases. Embeddable in
/// the binary's TOML config:
///
/// ```toml
/// url = "mysql://root@127.0.0.1/colloquy"   # every shard not routed below
/// max_connections = 16
///
/// [[shards]]
/// range = "32-63"
/// url = "mysql://root@10.0.0.2/colloquy"
/// ```
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SqlConfig {
    /// Database of every shard that no `shards` entry routes elsewhere.
    /// Without it the `shards` entries must cover all 64 shards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Ranges of shards held by other databases; each shard at most once.
    #[serde(default)]
    pub shards: Vec<ShardRoute>,
    /// Connections per database (pool bound); the writers use some of them.
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// Writer tasks (concurrent group commits) per database.
    #[serde(default = "default_writers")]
    pub writers: u32,
    /// How long to wait for a connection, including opening one. Written
    /// `connect_timeout_ms`, in milliseconds.
    #[serde(
        rename = "connect_timeout_ms",
        with = "crate::config::millis",
        default = "default_connect_timeout"
    )]
    pub connect_timeout: Duration,
    /// How long one read or one group commit may take before it is given up
    /// as a transient failure. Written `query_timeout_ms`, in milliseconds.
    #[serde(
        rename = "query_timeout_ms",
        with = "crate::config::millis",
        default = "default_query_timeout"
    )]
    pub query_timeout: Duration,
}

/// `range` is `"A-B"` (inclusive) or a single shard `"N"`.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ShardRoute {
    pub range: String,
    pub url: String,
}

fn default_max_connections() -> u32 {
    10
}
fn default_writers() -> u32 {
    2
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_query_timeout() -> Duration {
    Duration::from_secs(10)
}

/// No database yet, default limits: what the binary's config holds until
/// `[store.sql]` names one.
impl Default for SqlConfig {
    fn default() -> Self {
        SqlConfig {
            url: None,
            ..SqlConfig::single("")
        }
    }
}

impl SqlConfig {
    /// All shards in one database, default limits.
    pub fn single(url: impl Into<String>) -> SqlConfig {
        SqlConfig {
            url: Some(url.into()),
            shards: Vec::new(),
            max_connections: default_max_connections(),
            writers: default_writers(),
            connect_timeout: default_connect_timeout(),
            query_timeout: default_query_timeout(),
        }
    }

    /// Check the configuration without connecting (for `colloquy check`),
    /// including that this build has the backend of the URLs' server.
    pub fn validate(&self) -> Result<(), StoreError> {
        self.dialect()?.built()
    }

    /// Which dialect the URLs speak; all must speak the same one.
    pub fn dialect(&self) -> Result<DialectKind, StoreError> {
        Ok(self.layout()?.kind)
    }

    pub(super) fn layout(&self) -> Result<Layout, StoreError> {
        let config = |m: String| StoreError::Config(format!("sql store: {m}"));
        if self.max_connections < 2 {
            return Err(config("max_connections must be at least 2".into()));
        }
        if self.writers == 0 || self.writers >= self.max_connections {
            return Err(config(format!(
                "writers must be at least 1 and below max_connections ({}), so that reads \
                 still get connections; got {}",
                self.max_connections, self.writers
            )));
        }
        let mut owner: [Option<usize>; SHARDS as usize] = [None; SHARDS as usize];
        for (i, route) in self.shards.iter().enumerate() {
            let (lo, hi) = parse_range(&route.range)
                .map_err(|m| config(format!("shards[{i}].range {:?}: {m}", route.range)))?;
            for shard in lo..=hi {
                if let Some(j) = owner[shard as usize] {
                    return Err(config(format!(
                        "shard {shard} is routed twice: by shards[{j}] (range {:?}) and \
                         shards[{i}] (range {:?})",
                        self.shards[j].range, route.range
                    )));
                }
                owner[shard as usize] = Some(i);
            }
        }
        let mut urls: Vec<String> = Vec::new();
        let mut route = [0usize; SHARDS as usize];
        let mut unrouted = Vec::new();
        for shard in 0..SHARDS {
            let url = match (owner[shard as usize], &self.url) {
                (Some(i), _) => &self.shards[i].url,
                (None, Some(url)) => url,
                (None, None) => {
                    unrouted.push(shard);
                    continue;
                }
            };
            route[shard as usize] = match urls.iter().position(|u| u == url) {
                Some(i) => i,
                None => {
                    urls.push(url.clone());
                    urls.len() - 1
                }
            };
        }
        if !unrouted.is_empty() {
            return Err(config(format!(
                "shards {} have no database: set `url` or add [[shards]] entries covering them",
                ranges(&unrouted)
            )));
        }
        let mut kind = None;
        for url in &urls {
            let this = DialectKind::of(url).ok_or_else(|| {
                config(format!(
                    "{}: unknown scheme, expected mysql://, mariadb://, postgres:// or \
                     postgresql://",
                    redact(url)
                ))
            })?;
            if kind.is_some_and(|k| k != this) {
                return Err(config(
                    "all shards must be on the same kind of server (MySQL or PostgreSQL)".into(),
                ));
            }
            kind = Some(this);
        }
        Ok(Layout {
            kind: kind.expect("64 shards routed means at least one url"),
            urls,
            route,
        })
    }
}

/// The server kind a [`SqlConfig`] points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialectKind {
    MySql,
    Postgres,
}

impl DialectKind {
    fn of(url: &str) -> Option<DialectKind> {
        let scheme = url.split_once("://")?.0;
        match scheme {
            "mysql" | "mariadb" => Some(DialectKind::MySql),
            "postgres" | "postgresql" => Some(DialectKind::Postgres),
            _ => None,
        }
    }

    /// The cargo feature that builds this server's backend.
    pub fn feature(self) -> &'static str {
        match self {
            DialectKind::MySql => "mysql",
            DialectKind::Postgres => "postgres",
        }
    }

    /// Whether this build has the server's backend.
    pub fn is_built(self) -> bool {
        match self {
            DialectKind::MySql => cfg!(feature = "mysql"),
            DialectKind::Postgres => cfg!(feature = "postgres"),
        }
    }

    pub(super) fn built(self) -> Result<(), StoreError> {
        if self.is_built() {
            Ok(())
        } else {
            Err(self.not_built())
        }
    }

    pub(super) fn not_built(self) -> StoreError {
        let server = match self {
            DialectKind::MySql => "MySQL",
            DialectKind::Postgres => "PostgreSQL",
        };
        StoreError::not_built(
            &format!("sql store: the URLs are for {server}, which"),
            self.feature(),
        )
    }
}

/// The shard map resolved: distinct database URLs and each shard's index
/// into them.
// A build without SQL backends only checks a layout, never uses it.
#[cfg_attr(not(any(feature = "mysql", feature = "postgres")), allow(dead_code))]
pub(super) struct Layout {
    pub(super) kind: DialectKind,
    pub(super) urls: Vec<String>,
    pub(super) route: [usize; SHARDS as usize],
}

#[cfg_attr(not(any(feature = "mysql", feature = "postgres")), allow(dead_code))]
impl Layout {
    pub(super) fn shards_of(&self, db: usize) -> Vec<u8> {
        (0..SHARDS)
            .filter(|&s| self.route[s as usize] == db)
            .collect()
    }
}

fn parse_range(range: &str) -> Result<(u8, u8), String> {
    let shard = |s: &str| {
        s.trim()
            .parse::<u8>()
            .ok()
            .filter(|&n| n < SHARDS)
            .ok_or_else(|| format!("{s:?} is not a shard number 0-{}", SHARDS - 1))
    };
    let (lo, hi) = match range.split_once('-') {
        Some((lo, hi)) => (shard(lo)?, shard(hi)?),
        None => (shard(range)?, shard(range)?),
    };
    if lo > hi {
        return Err(format!("{lo} is above {hi}"));
    }
    Ok((lo, hi))
}

/// `[0, 1, 2, 5]` as `"0-2, 5"`.
pub(super) fn ranges(shards: &[u8]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < shards.len() {
        let mut j = i;
        while j + 1 < shards.len() && shards[j + 1] == shards[j] + 1 {
            j += 1;
        }
        out.push(if i == j {
            shards[i].to_string()
        } else {
            format!("{}-{}", shards[i], shards[j])
        });
        i = j + 1;
    }
    out.join(", ")
}

/// A URL fit for logs and errors: the password replaced by `***`.
pub(super) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_string();
    };
    match rest[..at].split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***{}", &rest[at..]),
        None => url.to_string(),
    }
}

// By hand, to keep passwords in URLs out of logs.
impl fmt::Debug for SqlConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlConfig")
            .field("url", &self.url.as_deref().map(redact))
            .field("shards", &self.shards)
            .field("max_connections", &self.max_connections)
            .field("writers", &self.writers)
            .field("connect_timeout", &self.connect_timeout)
            .field("query_timeout", &self.query_timeout)
            .finish()
    }
}

impl fmt::Debug for ShardRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShardRoute")
            .field("range", &self.range)
            .field("url", &redact(&self.url))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_like: &[(&str, &str)], url: Option<&str>) -> SqlConfig {
        SqlConfig {
            url: url.map(str::to_string),
            shards: toml_like
                .iter()
                .map(|(range, url)| ShardRoute {
                    range: range.to_string(),
                    url: url.to_string(),
                })
                .collect(),
            ..SqlConfig::single("")
        }
    }

    #[test]
    fn the_shard_hash_never_changes() {
        // Pinned (also by `printf %s alice | sha256sum`): these place stored
        // data, so a new value here means data users can no longer find.
        assert_eq!(
            ["alice", "bob", "", "用户-42"].map(shard_of),
            [43, 1, 35, 34]
        );
        assert!((0..10_000).all(|i| shard_of(&format!("u{i}")) < SHARDS));
    }

    #[test]
    fn one_url_routes_every_shard() {
        let layout = parse(&[], Some("mysql://a/x")).layout().unwrap();
        assert_eq!(layout.urls, ["mysql://a/x"]);
        assert!(layout.route.iter().all(|&i| i == 0));
    }

    #[test]
    fn overrides_take_their_range() {
        let config = parse(
            &[("32-63", "mysql://b/x"), ("7", "mysql://c/x")],
            Some("mysql://a/x"),
        );
        let layout = config.layout().unwrap();
        // Databases are numbered in the order of their first shard.
        assert_eq!(layout.urls, ["mysql://a/x", "mysql://c/x", "mysql://b/x"]);
        assert_eq!(layout.shards_of(0).len(), 31);
        assert_eq!(layout.shards_of(1), vec![7]);
        assert_eq!(layout.shards_of(2), (32..64).collect::<Vec<u8>>());
    }

    #[test]
    fn gaps_and_overlaps_are_rejected() {
        let gap = parse(&[("0-30", "mysql://a/x"), ("33-63", "mysql://b/x")], None);
        let err = gap.validate().unwrap_err().to_string();
        assert!(err.contains("shards 31-32 have no database"), "{err}");
        let overlap = parse(&[("0-31", "mysql://a/x"), ("31-63", "mysql://b/x")], None);
        let err = overlap.validate().unwrap_err().to_string();
        assert!(err.contains("shard 31 is routed twice"), "{err}");
        for bad in ["64", "5-2", "x", "1-"] {
            let err = parse(&[(bad, "mysql://a/x")], Some("mysql://a/x"))
                .validate()
                .unwrap_err();
            assert!(err.to_string().contains("range"), "{bad}: {err}");
        }
    }

    #[test]
    fn mixed_or_unknown_servers_are_rejected() {
        let mixed = parse(&[("0-31", "postgres://b/x")], Some("mysql://a/x"));
        assert!(mixed.validate().is_err());
        assert!(parse(&[], Some("redis://a")).validate().is_err());
        assert_eq!(
            parse(&[], Some("postgresql://a/x")).dialect().unwrap(),
            DialectKind::Postgres
        );
    }

    #[test]
    fn unknown_keys_are_an_error() {
        let err =
            serde_json::from_str::<SqlConfig>(r#"{"url": "mysql://a", "colour": 1}"#).unwrap_err();
        assert!(err.to_string().contains("colour"), "{err}");
        let config: SqlConfig = serde_json::from_str(
            r#"{"url": "mysql://a/x", "shards": [{"range": "0-31", "url": "mysql://b/x"}]}"#,
        )
        .unwrap();
        assert_eq!(config.max_connections, default_max_connections());
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("mysql://root:hunter2@h:1/db"),
            "mysql://root:***@h:1/db"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("postgres://h/db?x=a@b"), "postgres://h/db?x=a@b");
    }

    #[test]
    fn shard_lists_read_as_ranges() {
        assert_eq!(ranges(&[0, 1, 2, 5, 7, 8]), "0-2, 5, 7-8");
    }

    #[test]
    fn timeouts_keep_their_millisecond_keys() {
        let config: SqlConfig = serde_json::from_str(
            r#"{"url": "mysql://a/x", "connect_timeout_ms": 250, "query_timeout_ms": 1500}"#,
        )
        .unwrap();
        assert_eq!(config.connect_timeout, Duration::from_millis(250));
        assert_eq!(config.query_timeout, Duration::from_millis(1500));
        let written = serde_json::to_value(&config).unwrap();
        assert_eq!(written["connect_timeout_ms"], 250);
        assert_eq!(written["query_timeout_ms"], 1500);
        let defaults = SqlConfig::default();
        assert_eq!(
            (defaults.connect_timeout, defaults.query_timeout),
            (Duration::from_secs(5), Duration::from_secs(10))
        );
        assert!(serde_json::from_str::<SqlConfig>(r#"{"connect_timeout": 5}"#).is_err());
    }

    #[test]
    fn a_server_left_out_of_the_build_is_named_with_its_feature() {
        let err = DialectKind::Postgres.not_built().to_string();
        assert_eq!(
            err,
            "invalid configuration: sql store: the URLs are for PostgreSQL, which needs a \
             colloquy built with the `postgres` cargo feature (it is on by default)"
        );
        assert_eq!(
            DialectKind::MySql.is_built(),
            cfg!(feature = "mysql"),
            "MySQL"
        );
        assert_eq!(
            DialectKind::Postgres.is_built(),
            cfg!(feature = "postgres"),
            "PostgreSQL"
        );
    }

    #[cfg(not(feature = "mysql"))]
    #[test]
    fn without_the_mysql_feature_mysql_urls_are_refused() {
        let err = parse(&[], Some("mysql://a/x")).validate().unwrap_err();
        assert!(matches!(err, StoreError::Config(_)), "{err:?}");
        assert!(err.to_string().contains("`mysql` cargo feature"), "{err}");
    }

    #[cfg(not(feature = "postgres"))]
    #[test]
    fn without_the_postgres_feature_postgres_urls_are_refused() {
        let err = parse(&[], Some("postgres://a/x")).validate().unwrap_err();
        assert!(matches!(err, StoreError::Config(_)), "{err:?}");
        assert!(
            err.to_string().contains("`postgres` cargo feature"),
            "{err}"
        );
    }
}

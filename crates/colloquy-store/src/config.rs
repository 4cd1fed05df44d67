//! `[store]` of the configuration file as [`StoreConfig`], and [`open`],
//! which builds the L2 it picks ([`crate::l1::open`] builds the L1). The
//! binary reads the file and calls these; which backends exist, how they
//! are checked and opened, is this crate's business.

use crate::eventlog::{LogConfig, LogStore};
use crate::l1::L1Config;
use crate::sql::{self, SqlConfig};
use crate::{ConversationStore, SnapshotPolicy, SqliteStore, StoreError};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Where conversations are kept, as `[store]` and its subsections say:
///
/// ```toml
/// [store]
/// backend = "mysql"            # eventlog (default) | sqlite | mysql | postgres
/// snapshot_every_events = 50
/// snapshot_interval = "30s"
///
/// [store.sql]                  # for mysql and postgres; see SqlConfig
/// url = "mysql://root@127.0.0.1/colloquy"
///
/// [store.l1]
/// backend = "redis"            # memory (default) | redis
///
/// [store.l1.redis]
/// url = "redis://127.0.0.1:6379"
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Where the event logs and snapshots (L2) live: `eventlog` (embedded,
    /// append-only segment files in `DATA/events`), `sqlite` (embedded, one
    /// SQLite file `DATA/colloquy.db`), `mysql` or `postgres`
    /// (`[store.sql]`).
    pub backend: StoreBackend,
    /// A snapshot is written once this many events were appended since the
    /// last one (0 counts as 1)...
    pub snapshot_every_events: u64,
    /// ...or once this much event time passed since it.
    #[serde(with = "colloquy_core::duration::text")]
    pub snapshot_interval: Duration,
    pub eventlog: LogConfig,
    pub sql: SqlConfig,
    pub l1: L1Config,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            backend: StoreBackend::EventLog,
            snapshot_every_events: 50,
            snapshot_interval: Duration::from_secs(30),
            eventlog: LogConfig::default(),
            sql: SqlConfig::default(),
            l1: L1Config::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    #[default]
    EventLog,
    Sqlite,
    Mysql,
    Postgres,
}

impl StoreBackend {
    /// As the configuration file writes it.
    fn name(self) -> &'static str {
        match self {
            StoreBackend::EventLog => "eventlog",
            StoreBackend::Sqlite => "sqlite",
            StoreBackend::Mysql => "mysql",
            StoreBackend::Postgres => "postgres",
        }
    }

    fn is_built(self) -> bool {
        match self {
            StoreBackend::EventLog | StoreBackend::Sqlite => true,
            StoreBackend::Mysql => cfg!(feature = "mysql"),
            StoreBackend::Postgres => cfg!(feature = "postgres"),
        }
    }

    /// The backends that can be left out are behind a feature of their
    /// own name.
    fn not_built(self) -> StoreError {
        StoreError::not_built(&format!("store.backend = {:?}", self.name()), self.name())
    }
}

impl StoreConfig {
    /// Check the configuration without opening anything (for `colloquy
    /// check`): the chosen backends are in this build, and the settings of
    /// the chosen L2 are sound. The settings of backends not chosen are not
    /// looked at.
    pub fn validate(&self) -> Result<(), StoreError> {
        self.validate_l2()?;
        self.l1.validate()
    }

    fn validate_l2(&self) -> Result<(), StoreError> {
        if !self.backend.is_built() {
            return Err(self.backend.not_built());
        }
        match self.backend {
            StoreBackend::EventLog => self
                .eventlog
                .validate()
                .map_err(|e| in_section("store.eventlog", e)),
            StoreBackend::Sqlite => Ok(()),
            StoreBackend::Mysql | StoreBackend::Postgres => {
                self.sql.validate().map_err(|e| in_section("store.sql", e))
            }
        }
    }

    /// When [`Conversations`](crate::Conversations) writes snapshots.
    pub fn snapshot_policy(&self) -> SnapshotPolicy {
        SnapshotPolicy {
            every_events: self.snapshot_every_events.max(1),
            every_ms: i64::try_from(self.snapshot_interval.as_millis()).unwrap_or(i64::MAX),
        }
    }
}

/// A configuration error said where in the file it is.
fn in_section(section: &str, e: StoreError) -> StoreError {
    match e {
        StoreError::Config(message) => StoreError::Config(format!("{section}: {message}")),
        other => other,
    }
}

/// The L2 `config` picks, open and serving: the event log in
/// `data_dir/events`, SQLite in `data_dir/colloquy.db`, or the databases of
/// `[store.sql]`, which must have been migrated ([`sql::migrate`]). The
/// embedded stores lock their directory: one process at a time.
pub async fn open(
    config: &StoreConfig,
    data_dir: &Path,
) -> Result<Arc<dyn ConversationStore>, StoreError> {
    config.validate_l2()?;
    let dir = data_dir.to_path_buf();
    Ok(match config.backend {
        StoreBackend::EventLog => {
            let log = config.eventlog.clone();
            Arc::new(blocking(move || open_event_log(&dir, log)).await?)
        }
        StoreBackend::Sqlite => Arc::new(blocking(move || SqliteStore::open(&dir)).await?),
        StoreBackend::Mysql | StoreBackend::Postgres => sql::connect(&config.sql).await?,
    })
}

/// The event log of the data directory `data_dir`. A directory that holds
/// only an SQLite store from an earlier colloquy is refused rather than
/// served as if it had no conversations.
fn open_event_log(data_dir: &Path, config: LogConfig) -> Result<LogStore, StoreError> {
    let dir = data_dir.join("events");
    if !dir.exists() && data_dir.join("colloquy.db").exists() {
        return Err(StoreError::Config(format!(
            "{} holds an SQLite store (colloquy.db) and no event log; to keep using it set \
             `[store] backend = \"sqlite\"` (or COLLOQUY_STORE_BACKEND=sqlite)",
            data_dir.display()
        )));
    }
    LogStore::open(&dir, config)
}

/// The embedded stores read their files when they open (the event log
/// replays its segments): off the runtime's threads.
async fn blocking<T: Send + 'static>(
    open: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    match tokio::task::spawn_blocking(open).await {
        Ok(opened) => opened,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(StoreError::Unavailable(
            "the runtime shut down while the store was opening".into(),
        )),
    }
}

/// `#[serde(with = "crate::config::millis")]` on a `Duration` that the
/// file has always given as whole milliseconds under a `*_ms` key: files
/// written before it became a `Duration` read the same.
pub(crate) mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::l1::L1Backend;

    /// The configuration file around `[store]`.
    #[derive(Debug, Deserialize, Serialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        #[serde(default)]
        store: StoreConfig,
    }

    fn parse(text: &str) -> Result<StoreConfig, String> {
        toml::from_str::<File>(text)
            .map(|f| f.store)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn every_section_reads_as_the_file_writes_it() {
        let c = parse(
            r#"
            [store]
            backend = "postgres"
            snapshot_every_events = 10
            snapshot_interval = "5m"

            [store.eventlog]
            segment_bytes = 8192

            [store.sql]
            url = "postgres://u:secret@db/colloquy"
            max_connections = 8
            connect_timeout_ms = 750
            query_timeout_ms = 2500

            [[store.sql.shards]]
            range = "32-63"
            url = "postgres://u@db2/colloquy"

            [store.l1]
            backend = "redis"

            [store.l1.redis]
            url = "redis://cache:6379/2"
            ttl_secs = 60
            timeout_ms = 20
            "#,
        )
        .unwrap();
        assert_eq!(c.backend, StoreBackend::Postgres);
        assert_eq!(c.snapshot_every_events, 10);
        assert_eq!(c.snapshot_interval, Duration::from_secs(300));
        assert_eq!(c.eventlog.segment_bytes, 8192);
        assert_eq!(
            c.sql.url.as_deref(),
            Some("postgres://u:secret@db/colloquy")
        );
        assert_eq!(c.sql.shards[0].range, "32-63");
        assert_eq!(c.sql.max_connections, 8);
        assert_eq!(c.sql.connect_timeout, Duration::from_millis(750));
        assert_eq!(c.sql.query_timeout, Duration::from_millis(2500));
        assert_eq!(c.l1.backend, L1Backend::Redis);
        assert_eq!(c.l1.redis.url, "redis://cache:6379/2");
        assert_eq!(c.l1.redis.ttl_secs, 60);
        assert_eq!(c.l1.redis.timeout, Duration::from_millis(20));

        // Written back, it reads the same: what `colloquy` does with the
        // defaults to match environment overrides against the keys.
        let text = toml::to_string(&File { store: c.clone() }).unwrap();
        assert!(text.contains("snapshot_interval = \"5m\""), "{text}");
        assert!(text.contains("connect_timeout_ms = 750"), "{text}");
        assert!(text.contains("timeout_ms = 20"), "{text}");
        assert_eq!(parse(&text).unwrap(), c);
    }

    #[test]
    fn the_shipped_configuration_files_read() {
        let files = [
            (
                "embedded",
                include_str!("../../../config/embedded.toml"),
                StoreBackend::EventLog,
                L1Backend::Memory,
            ),
            (
                "distributed-mysql",
                include_str!("../../../config/distributed-mysql.toml"),
                StoreBackend::Mysql,
                L1Backend::Redis,
            ),
            (
                "distributed-postgres",
                include_str!("../../../config/distributed-postgres.toml"),
                StoreBackend::Postgres,
                L1Backend::Redis,
            ),
        ];
        for (name, text, backend, l1) in files {
            let file: toml::Table = toml::from_str(text).unwrap();
            let store: StoreConfig = file["store"]
                .clone()
                .try_into()
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!((store.backend, store.l1.backend), (backend, l1), "{name}");
            assert_eq!(store.snapshot_policy(), SnapshotPolicy::default(), "{name}");
            if l1 == L1Backend::Redis {
                assert_eq!(store.l1.redis.timeout, Duration::from_millis(50), "{name}");
            }
            let built = backend.is_built() && (l1 == L1Backend::Memory || cfg!(feature = "redis"));
            match store.validate() {
                Ok(()) => assert!(built, "{name}: a backend left out was accepted"),
                Err(e) => assert!(
                    !built && e.to_string().contains("cargo feature"),
                    "{name}: {e}"
                ),
            }
        }
    }

    #[test]
    fn an_empty_file_means_the_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c, StoreConfig::default());
        assert_eq!(c.backend, StoreBackend::EventLog);
        assert_eq!(c.l1.backend, L1Backend::Memory);
        assert_eq!(c.snapshot_policy(), SnapshotPolicy::default());
        c.validate().unwrap();
        let written = toml::to_string(&File { store: c }).unwrap();
        assert!(written.contains("snapshot_interval = \"30s\""), "{written}");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        let e = parse("[store]\nbackend = \"mongodb\"\n").unwrap_err();
        assert!(e.contains("mongodb"), "{e}");
        let e = parse("[store]\nsnapshot_intervall = \"30s\"\n").unwrap_err();
        assert!(e.contains("snapshot_intervall"), "{e}");
        let e = parse("[store]\nsnapshot_interval = \"soon\"\n").unwrap_err();
        assert!(e.contains("`soon` is not a duration"), "{e}");
        let e = parse("[store.l1.redis]\ntimeout = 5\n").unwrap_err();
        assert!(e.contains("timeout"), "{e}");
    }

    #[test]
    fn the_snapshot_policy_follows_the_settings() {
        let c = StoreConfig {
            snapshot_every_events: 0,
            snapshot_interval: Duration::from_secs(300),
            ..StoreConfig::default()
        };
        assert_eq!(
            c.snapshot_policy(),
            SnapshotPolicy {
                every_events: 1,
                every_ms: 300_000
            }
        );
    }

    #[test]
    fn only_the_chosen_backends_settings_are_checked() {
        let broken = StoreConfig {
            eventlog: LogConfig {
                segment_bytes: 100,
                ..LogConfig::default()
            },
            // No database at all: fine as long as no SQL backend is chosen.
            sql: SqlConfig::default(),
            ..StoreConfig::default()
        };
        let e = broken.validate().unwrap_err();
        assert!(matches!(e, StoreError::Config(_)), "{e:?}");
        let e = e.to_string();
        assert!(
            e.contains("store.eventlog") && e.contains("at least 4096"),
            "{e}"
        );
        let sqlite = StoreConfig {
            backend: StoreBackend::Sqlite,
            ..broken.clone()
        };
        sqlite.validate().unwrap();
        for backend in [StoreBackend::Mysql, StoreBackend::Postgres] {
            let sql = StoreConfig {
                backend,
                ..broken.clone()
            };
            let e = sql.validate().unwrap_err().to_string();
            let want = if backend.is_built() {
                "store.sql: sql store: shards 0-63 have no database"
            } else {
                "cargo feature"
            };
            assert!(e.contains(want), "{backend:?}: {e}");
        }
    }

    #[test]
    fn a_backend_left_out_of_the_build_is_named_with_its_feature() {
        assert_eq!(
            StoreBackend::Mysql.not_built().to_string(),
            "invalid configuration: store.backend = \"mysql\" needs a colloquy built with the \
             `mysql` cargo feature (it is on by default)"
        );
        assert!(StoreBackend::Postgres
            .not_built()
            .to_string()
            .contains("store.backend = \"postgres\" needs a colloquy built with the `postgres`"));
        assert!(StoreBackend::EventLog.is_built() && StoreBackend::Sqlite.is_built());
        assert_eq!(StoreBackend::Mysql.is_built(), cfg!(feature = "mysql"));
        assert_eq!(
            StoreBackend::Postgres.is_built(),
            cfg!(feature = "postgres")
        );
    }

    #[cfg(not(feature = "mysql"))]
    #[test]
    fn without_the_mysql_feature_the_mysql_backend_is_refused() {
        let c =
            parse("[store]\nbackend = \"mysql\"\n[store.sql]\nurl = \"mysql://h/db\"\n").unwrap();
        let e = c.validate().unwrap_err();
        assert!(matches!(e, StoreError::Config(_)), "{e:?}");
        assert!(
            e.to_string().contains(
                "store.backend = \"mysql\" needs a colloquy built with the `mysql` cargo feature"
            ),
            "{e}"
        );
    }

    #[cfg(not(feature = "redis"))]
    #[test]
    fn without_the_redis_feature_the_redis_l1_is_refused() {
        let c = parse("[store.l1]\nbackend = \"redis\"\n").unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("`redis` cargo feature"), "{e}");
    }
}

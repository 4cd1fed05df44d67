//! L2 backends on SQL servers: MySQL/MariaDB ([`mysql`]) and PostgreSQL
//! ([`postgres`]), through sqlx. Everything but the SQL dialect is shared
//! and lives here: the configuration, the shard map, the migration runner
//! and the group-commit writer.
//!
//! # Layout
//!
//! Users are spread over [`SHARDS`] logical shards by [`shard_of`]. Shard
//! `NN` (two digits, `00`..`63`) has its own tables `events_NN` and
//! `snapshots_NN`; which database holds a shard is configuration
//! ([`SqlConfig`]), so one database can hold all 64 shards or 64 databases
//! one each. Every database also has `colloquy_schema` (schema version per
//! shard it holds).
//!
//! An event id is unique within its user's log (the store's contract),
//! through a unique key (user_id, event_id) on the user's shard table, so
//! the check is clustered by user and costs no statement of its own.
//! Schema version 1 kept every id of a database in one `event_ids` table
//! keyed by the id alone: a random insert into one ever-growing B-tree per
//! event, shared by all shards, which version 2 drops.
//!
//! # Using it
//!
//! ```no_run
//! # async fn f(config: &colloquy_store::sql::SqlConfig) -> Result<(), colloquy_store::StoreError> {
//! // `colloquy migrate`: create or upgrade every shard of every database.
//! colloquy_store::sql::migrate(config).await?;
//! // Serving: refuses databases that were not migrated.
//! let store = colloquy_store::sql::connect(config).await?;
//! # Ok(()) }
//! ```
//!
//! # Writes
//!
//! Appends and snapshot writes of all users go through a few writer tasks
//! per database that group whatever is queued into one transaction, paying
//! one commit (one fsync) for all of it. Within a group each append still
//! stands alone: its expected seq is checked against one read of every
//! user's last seq (plus the group's own earlier appends), and all accepted
//! rows go in as a few multi-row INSERTs. If one of those hits a unique key
//! (another process appended for the same user, or an event id repeats),
//! the group is redone append by append under savepoints, so that only the
//! offending append fails. The primary key (user_id, seq) is what keeps a
//! log from forking between processes. Reads go straight to the pool.
//!
//! Connection loss, timeouts, deadlocks and the like are
//! [`ErrorKind::Transient`](crate::ErrorKind::Transient): retry them. A
//! group whose commit was cut off may or may not have committed: a retry
//! then meets a conflict, and the reloaded log shows which it was.

pub mod mysql;
pub mod postgres;

pub use mysql::MySqlStore;
pub use postgres::PgStore;

use crate::WriterStats;
use crate::{check_append, ConversationStore, Snapshot, StoreError};
use async_trait::async_trait;
use colloquy_core::{Event, State};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::database::HasStatementCache;
use sqlx::error::DatabaseError;
use sqlx::pool::PoolOptions;
use sqlx::query_builder::QueryBuilder;
use sqlx::{
    ColumnIndex, ConnectOptions, Connection, Decode, Encode, Executor, IntoArguments, Pool, Row,
    Type,
};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::marker::PhantomData;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Mutex};

/// Logical shards. Placement depends on it: never change it.
pub const SHARDS: u8 = 64;

/// Schema version this build writes (the same for both dialects: entry `i`
/// of each dialect's migrations means the same change).
pub const SCHEMA_VERSION: i64 = 2;

/// Longest user id accepted. MySQL keys need a bounded column; both dialects
/// enforce the same limit so that a deployment can move between them.
pub const MAX_USER_ID_BYTES: usize = 255;

/// Requests waiting for a database's writers; beyond this, appenders wait.
const QUEUE: usize = 4096;
/// Requests per group commit; bounds the latency one transaction adds.
const MAX_BATCH: usize = 512;
/// Rows per multi-row INSERT, well under both servers' 65,535 bind limit.
const ROWS_PER_INSERT: usize = 1000;
/// Body bytes per multi-row INSERT, under MySQL's default 16 MiB packet.
const BYTES_PER_INSERT: usize = 4 << 20;
/// SQL text sent in one round trip (several statements), under MySQL's
/// default 16 MiB packet even with hex doubling a full INSERT.
const BYTES_PER_SCRIPT: usize = 8 << 20;

/// The logical shard of a user: the first byte of SHA-256 over the user
/// id's UTF-8 bytes, modulo 64 (e.g. `sha256sum` in a shell gives the same).
/// It places data, so it must never change across releases.
pub fn shard_of(user_id: &str) -> u8 {
    Sha256::digest(user_id.as_bytes())[0] % SHARDS
}

fn events_table(shard: u8) -> String {
    format!("events_{shard:02}")
}

fn snapshots_table(shard: u8) -> String {
    format!("snapshots_{shard:02}")
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

    /// Check the configuration without connecting (for `colloquy check`).
    pub fn validate(&self) -> Result<(), StoreError> {
        self.layout().map(drop)
    }

    /// Which dialect the URLs speak; all must speak the same one.
    pub fn dialect(&self) -> Result<DialectKind, StoreError> {
        Ok(self.layout()?.kind)
    }

    fn layout(&self) -> Result<Layout, StoreError> {
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
}

/// The shard map resolved: distinct database URLs and each shard's index
/// into them.
struct Layout {
    kind: DialectKind,
    urls: Vec<String>,
    route: [usize; SHARDS as usize],
}

impl Layout {
    fn shards_of(&self, db: usize) -> Vec<u8> {
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
fn ranges(shards: &[u8]) -> String {
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
fn redact(url: &str) -> String {
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

/// Open every database of `config` and check that it is migrated; the
/// backend is chosen by the URLs' scheme.
pub async fn connect(config: &SqlConfig) -> Result<Arc<dyn ConversationStore>, StoreError> {
    Ok(match config.dialect()? {
        DialectKind::MySql => Arc::new(MySqlStore::connect(config).await?),
        DialectKind::Postgres => Arc::new(PgStore::connect(config).await?),
    })
}

/// Create or upgrade the schema of every shard in every database of
/// `config` (what `colloquy migrate` runs). Idempotent.
pub async fn migrate(config: &SqlConfig) -> Result<MigrationReport, StoreError> {
    match config.dialect()? {
        DialectKind::MySql => MySqlStore::migrate(config).await,
        DialectKind::Postgres => PgStore::migrate(config).await,
    }
}

/// What [`migrate`] changed; empty `upgraded` means nothing was to do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrationReport {
    pub upgraded: Vec<ShardUpgrade>,
    /// Shards that were at [`SCHEMA_VERSION`] already.
    pub current: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardUpgrade {
    /// The database, password redacted.
    pub database: String,
    pub shard: u8,
    pub from: i64,
    pub to: i64,
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for sqlx::MySql {}
    impl Sealed for sqlx::Postgres {}
}

/// What differs between the servers; implemented for [`sqlx::MySql`] and
/// [`sqlx::Postgres`] only. Statements are templates: `{shard}` stands for
/// the two-digit shard number, `{table}` for the table written to.
pub trait Dialect: sqlx::Database + HasStatementCache + sealed::Sealed {
    const KIND: DialectKind;
    /// Run on every new connection.
    const SESSION_SETUP: &'static [&'static str];
    const CREATE_SCHEMA_TABLE: &'static str;
    /// Entry `i` takes a shard from version `i` to `i + 1`, one statement
    /// each. Append only: released entries must never change.
    const MIGRATIONS: &'static [&'static [&'static str]];
    /// Follows `INSERT INTO colloquy_schema (shard, version) VALUES (..)`.
    const VERSION_UPSERT: &'static str;
    /// Follows `INSERT INTO {table} (user_id, seq, ts_ms, body, hmac)
    /// VALUES ..`: keep the row with the higher seq, the new one on a tie.
    const SNAPSHOT_UPSERT: &'static str;
    /// Serializes migrations of one database across processes; a query
    /// returning 1 once the session holds the lock.
    const LOCK: &'static str;
    const UNLOCK: &'static str;

    /// Append `value` to `sql` as a string literal that nothing in it can
    /// break out of, whatever the session's settings. `value` has no NUL
    /// (callers check), which PostgreSQL would cut the query at.
    fn literal(sql: &mut String, value: &str);
    /// Append to `sql` a query with a row `(i, MAX(seq))` for every user
    /// `i` of `users` (shard, user id; sorted): NULL for an empty log.
    fn last_seqs(sql: &mut String, users: &[(u8, &str)]);

    fn options(url: &str) -> Result<<Self::Connection as Connection>::Options, sqlx::Error>;
    /// Server error codes that pass: lost connections, shutdowns,
    /// deadlocks, lock timeouts, too many connections.
    fn is_transient(e: &dyn DatabaseError) -> bool;
    fn is_missing_table(e: &dyn DatabaseError) -> bool;
    /// A migration's index is already there: a step that crashed after its
    /// DDL committed (MySQL commits each) is being rerun.
    fn is_existing_index(e: &dyn DatabaseError) -> bool;
}

// The compile-time check that both dialects know every schema version.
const _: () = assert!(
    <sqlx::MySql as Dialect>::MIGRATIONS.len() as i64 == SCHEMA_VERSION
        && <sqlx::Postgres as Dialect>::MIGRATIONS.len() as i64 == SCHEMA_VERSION
);

/// A store on one kind of SQL server; see [`MySqlStore`] and [`PgStore`].
pub struct SqlStore<DB: sqlx::Database> {
    databases: Vec<Database<DB>>,
    /// Index into `databases` per shard.
    route: [usize; SHARDS as usize],
}

/// One physical database and the writers that feed it.
struct Database<DB: sqlx::Database> {
    link: Arc<Link<DB>>,
    requests: mpsc::Sender<Request>,
}

/// What a writer task needs; without the request sender, so that dropping
/// the store closes the queue and the writers end.
struct Link<DB: sqlx::Database> {
    pool: Pool<DB>,
    /// The URL with its password redacted.
    label: String,
    shards: Vec<u8>,
    timeout: Duration,
    commits: AtomicU64,
    requests: AtomicU64,
}

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

enum Request {
    Append(Append),
    Snapshot(SnapshotRow, Reply<()>),
}

struct Append {
    user_id: String,
    shard: u8,
    expected: u64,
    rows: Vec<EventRow>,
    reply: Reply<u64>,
}

struct EventRow {
    seq: i64,
    event_id: String,
    ts_ms: i64,
    /// The event as JSON, as the SQLite backend stores it.
    body: String,
}

struct SnapshotRow {
    user_id: String,
    shard: u8,
    seq: i64,
    ts_ms: i64,
    body: String,
    hmac: String,
}

impl Append {
    fn last(&self) -> u64 {
        self.expected + self.rows.len() as u64
    }

    fn conflict(&self, actual: u64) -> StoreError {
        StoreError::Conflict {
            user_id: self.user_id.clone(),
            expected: self.expected,
            actual,
        }
    }
}

/// What both dialects can store and key on: PostgreSQL text has no NUL,
/// MySQL keys need a bounded length.
fn check_text(user_id: &str, what: &str, value: &str) -> Result<(), StoreError> {
    let reason = if value.len() > MAX_USER_ID_BYTES {
        format!("{what} is longer than {MAX_USER_ID_BYTES} bytes")
    } else if value.contains('\0') {
        format!("{what} contains a NUL character")
    } else {
        return Ok(());
    };
    Err(StoreError::InvalidEvents {
        user_id: user_id.to_string(),
        reason,
    })
}

fn to_i64(user_id: &str, what: &str, n: u64) -> Result<i64, StoreError> {
    i64::try_from(n).map_err(|_| StoreError::InvalidEvents {
        user_id: user_id.to_string(),
        reason: format!("{what} {n} is out of range"),
    })
}

fn to_u64(label: &str, n: Option<i64>) -> Result<u64, StoreError> {
    n.map_or(Ok(0), |n| {
        u64::try_from(n).map_err(|_| StoreError::Corrupt(format!("{label}: negative seq {n}")))
    })
}

impl<DB: sqlx::Database> SqlStore<DB> {
    /// Group commits of all databases, for metrics.
    pub fn stats(&self) -> WriterStats {
        let mut stats = WriterStats::default();
        for db in &self.databases {
            stats.commits += db.link.commits.load(Ordering::Relaxed);
            stats.requests += db.link.requests.load(Ordering::Relaxed);
        }
        stats
    }

    fn database(&self, user_id: &str) -> (&Database<DB>, u8) {
        let shard = shard_of(user_id);
        (&self.databases[self.route[shard as usize]], shard)
    }

    async fn call<T>(
        &self,
        db: &Database<DB>,
        request: impl FnOnce(Reply<T>) -> Request,
    ) -> Result<T, StoreError> {
        let gone =
            || StoreError::Unavailable(format!("{}: the writers have stopped", db.link.label));
        let (reply, answer) = oneshot::channel();
        db.requests.send(request(reply)).await.map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

/// A failed sqlx call as the trait's error: connection trouble and the
/// server's transient codes are retryable, the rest needs an operator.
fn store_error<DB: Dialect>(label: &str, e: sqlx::Error) -> StoreError {
    let transient = match &e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(d) => DB::is_transient(d.as_ref()),
        _ => false,
    };
    if transient {
        StoreError::Unavailable(format!("{label}: {e}"))
    } else {
        StoreError::Backend {
            message: format!("{label}: {e}"),
            retryable: false,
        }
    }
}

fn timed_out(label: &str, timeout: Duration) -> StoreError {
    StoreError::Unavailable(format!("{label}: no answer within {timeout:?}"))
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

impl<DB> SqlStore<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'a> &'a str: Encode<'a, DB> + Type<DB>,
    for<'a> i64: Encode<'a, DB> + Decode<'a, DB> + Type<DB>,
    for<'a> String: Decode<'a, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
{
    /// Open every database of `config` and start its writers. Fails with
    /// [`StoreError::NotMigrated`] if a shard's tables are missing or old
    /// (run `colloquy migrate`), [`StoreError::SchemaTooNew`] if newer than
    /// this build, and a transient error if a database is unreachable.
    pub async fn connect(config: &SqlConfig) -> Result<SqlStore<DB>, StoreError> {
        let layout = Self::layout(config)?;
        let mut databases = Vec::with_capacity(layout.urls.len());
        for (i, url) in layout.urls.iter().enumerate() {
            let link = Arc::new(Link::open(
                config,
                url,
                layout.shards_of(i),
                config.max_connections,
            )?);
            link.check_schema().await?;
            let (requests, queue) = mpsc::channel(QUEUE);
            let queue = Arc::new(Mutex::new(queue));
            for _ in 0..config.writers {
                tokio::spawn(Arc::clone(&link).write(Arc::clone(&queue)));
            }
            databases.push(Database { link, requests });
        }
        Ok(SqlStore {
            databases,
            route: layout.route,
        })
    }

    /// Create or upgrade the schema of every shard of every database in
    /// `config`. Idempotent, and safe to run from several processes at once.
    pub async fn migrate(config: &SqlConfig) -> Result<MigrationReport, StoreError> {
        let layout = Self::layout(config)?;
        let mut report = MigrationReport::default();
        for (i, url) in layout.urls.iter().enumerate() {
            let link = Link::<DB>::open(config, url, layout.shards_of(i), 1)?;
            let result = link.migrate(&mut report).await;
            link.pool.close().await;
            result?;
        }
        Ok(report)
    }

    fn layout(config: &SqlConfig) -> Result<Layout, StoreError> {
        let layout = config.layout()?;
        if layout.kind != DB::KIND {
            return Err(StoreError::Config(format!(
                "sql store: the URLs are for {:?}, not {}",
                layout.kind,
                <DB as sqlx::Database>::NAME
            )));
        }
        Ok(layout)
    }
}

impl<DB> Link<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'a> &'a str: Encode<'a, DB> + Type<DB>,
    for<'a> i64: Encode<'a, DB> + Decode<'a, DB> + Type<DB>,
    for<'a> String: Decode<'a, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
{
    /// Lazily: nothing is connected until the first query, whose failure is
    /// then reported like any other.
    fn open(
        config: &SqlConfig,
        url: &str,
        shards: Vec<u8>,
        max_connections: u32,
    ) -> Result<Link<DB>, StoreError> {
        let label = redact(url);
        let options = DB::options(url)
            .map_err(|e| StoreError::Config(format!("sql store: {label}: {e}")))?
            .disable_statement_logging();
        Ok(Link {
            pool: PoolOptions::<DB>::new()
                .max_connections(max_connections)
                .acquire_timeout(config.connect_timeout)
                .after_connect(|conn, _| {
                    Box::pin(async move {
                        for statement in DB::SESSION_SETUP {
                            conn.execute(*statement).await?;
                        }
                        Ok(())
                    })
                })
                .connect_lazy_with(options),
            label,
            shards,
            timeout: config.query_timeout,
            commits: AtomicU64::new(0),
            requests: AtomicU64::new(0),
        })
    }

    fn error(&self, e: sqlx::Error) -> StoreError {
        store_error::<DB>(&self.label, e)
    }

    async fn timed<T>(
        &self,
        work: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        tokio::time::timeout(self.timeout, work)
            .await
            .unwrap_or_else(|_| Err(timed_out(&self.label, self.timeout)))
    }

    /// Schema version per shard of this database, as recorded.
    async fn versions(&self, conn: &mut DB::Connection) -> Result<HashMap<u8, i64>, sqlx::Error> {
        let rows = sqlx::query::<DB>("SELECT shard, version FROM colloquy_schema")
            .fetch_all(&mut *conn)
            .await?;
        let mut versions = HashMap::new();
        for row in rows {
            let shard: i64 = row.try_get(0)?;
            if let Ok(shard) = u8::try_from(shard) {
                versions.insert(shard, row.try_get(1)?);
            }
        }
        Ok(versions)
    }

    fn too_new(&self, shard: u8, found: i64) -> StoreError {
        StoreError::SchemaTooNew {
            path: PathBuf::from(format!("{} (shard {shard:02})", self.label)),
            found,
            supported: SCHEMA_VERSION,
        }
    }

    async fn check_schema(&self) -> Result<(), StoreError> {
        let versions = self
            .timed(async {
                let mut conn = self.pool.acquire().await.map_err(|e| self.error(e))?;
                match self.versions(&mut conn).await {
                    Ok(versions) => Ok(versions),
                    Err(e) if e.as_database_error().is_some_and(DB::is_missing_table) => {
                        Ok(HashMap::new())
                    }
                    Err(e) => Err(self.error(e)),
                }
            })
            .await?;
        let mut behind = Vec::new();
        for &shard in &self.shards {
            match versions.get(&shard).copied().unwrap_or(0) {
                SCHEMA_VERSION => {}
                found if found > SCHEMA_VERSION => return Err(self.too_new(shard, found)),
                _ => behind.push(shard),
            }
        }
        if behind.is_empty() {
            return Ok(());
        }
        Err(StoreError::NotMigrated {
            database: self.label.clone(),
            detail: format!(
                "shards {} are not at schema version {SCHEMA_VERSION}",
                ranges(&behind)
            ),
        })
    }

    async fn migrate(&self, report: &mut MigrationReport) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await.map_err(|e| self.error(e))?;
        let locked: Option<i64> = sqlx::query_scalar(DB::LOCK)
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| self.error(e))?;
        if locked != Some(1) {
            return Err(StoreError::Unavailable(format!(
                "{}: another process holds the migration lock",
                self.label
            )));
        }
        let result = self.migrate_locked(&mut conn, report).await;
        // Also after a failure: the session may live on in the pool.
        let unlocked = sqlx::query::<DB>(DB::UNLOCK).execute(&mut *conn).await;
        result?;
        unlocked.map_err(|e| self.error(e))?;
        Ok(())
    }

    async fn migrate_locked(
        &self,
        conn: &mut DB::Connection,
        report: &mut MigrationReport,
    ) -> Result<(), StoreError> {
        let error = |e| self.error(e);
        conn.execute(DB::CREATE_SCHEMA_TABLE).await.map_err(error)?;
        let versions = self.versions(conn).await.map_err(error)?;
        for &shard in &self.shards {
            let found = versions.get(&shard).copied().unwrap_or(0);
            if found > SCHEMA_VERSION {
                return Err(self.too_new(shard, found));
            }
            if found == SCHEMA_VERSION {
                report.current += 1;
                continue;
            }
            for (version, statements) in (1..).zip(DB::MIGRATIONS).skip(found.max(0) as usize) {
                // Transactional DDL (PostgreSQL) makes a step all or nothing;
                // MySQL commits each DDL statement, so every statement is
                // written to be rerun after a crash mid-step.
                let mut tx = conn.begin().await.map_err(error)?;
                for statement in *statements {
                    let sql = statement.replace("{shard}", &format!("{shard:02}"));
                    match sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                        .execute(&mut *tx)
                        .await
                    {
                        Ok(_) => {}
                        Err(e) if e.as_database_error().is_some_and(DB::is_existing_index) => {}
                        Err(e) => return Err(error(e)),
                    }
                }
                let mut upsert = QueryBuilder::<DB>::new(
                    "INSERT INTO colloquy_schema (shard, version) VALUES (",
                );
                upsert
                    .push_bind(i64::from(shard))
                    .push(", ")
                    .push_bind(version)
                    .push(") ")
                    .push(DB::VERSION_UPSERT);
                upsert.build().execute(&mut *tx).await.map_err(error)?;
                tx.commit().await.map_err(error)?;
            }
            report.upgraded.push(ShardUpgrade {
                database: self.label.clone(),
                shard,
                from: found,
                to: SCHEMA_VERSION,
            });
        }
        Ok(())
    }

    /// A writer task: takes what is queued, commits it as one group, answers.
    async fn write(self: Arc<Self>, queue: Arc<Mutex<mpsc::Receiver<Request>>>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        loop {
            {
                let mut queue = queue.lock().await;
                let Some(first) = queue.recv().await else {
                    return;
                };
                batch.push(first);
                while batch.len() < MAX_BATCH {
                    match queue.try_recv() {
                        Ok(request) => batch.push(request),
                        Err(_) => break,
                    }
                }
            }
            let results = match self.timed(self.group_commit(&batch)).await {
                Ok(results) => results,
                Err(e) => {
                    // The outcome is unknown: the commit may or may not have
                    // happened. Callers retry and reload on the conflict.
                    tracing::warn!(database = %self.label, error = %e, requests = batch.len(),
                        "SQL group commit failed");
                    let message = e.to_string();
                    let retryable = e.is_retryable();
                    batch
                        .iter()
                        .map(|_| {
                            Err(if retryable {
                                StoreError::Unavailable(message.clone())
                            } else {
                                StoreError::Backend {
                                    message: message.clone(),
                                    retryable,
                                }
                            })
                        })
                        .collect()
                }
            };
            for (request, result) in batch.drain(..).zip(results) {
                // A caller that gave up no longer listens; its outcome stands.
                match request {
                    Request::Append(a) => drop(a.reply.send(result)),
                    Request::Snapshot(_, reply) => drop(reply.send(result.map(drop))),
                }
            }
        }
    }

    /// One result per request, or the error that sank the whole group.
    async fn group_commit(
        &self,
        batch: &[Request],
    ) -> Result<Vec<Result<u64, StoreError>>, StoreError> {
        let error = |e| self.error(e);
        let mut conn = self.pool.acquire().await.map_err(error)?;
        let mut tx = conn.begin().await.map_err(error)?;
        let mut results = match self.append_all(&mut tx, batch).await.map_err(error)? {
            Some(results) => results,
            None => {
                // Someone else's rows are in the way of one of the appends:
                // redo them one by one, so that only that one fails.
                tx.rollback().await.map_err(error)?;
                tx = conn.begin().await.map_err(error)?;
                self.append_each(&mut tx, batch).await.map_err(error)?
            }
        };
        self.put_snapshots(&mut tx, batch, &mut results)
            .await
            .map_err(error)?;
        tx.commit().await.map_err(error)?;
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.requests
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        Ok(results
            .into_iter()
            .map(|r| r.expect("every request has a result"))
            .collect())
    }

    /// The fast path: conflicts decided from one read of every user's last
    /// seq, then all accepted rows in a few multi-row INSERTs. `None` if an
    /// INSERT hit a unique key (a concurrent writer or a duplicate id); the
    /// transaction must then be rolled back.
    async fn append_all(
        &self,
        tx: &mut DB::Connection,
        batch: &[Request],
    ) -> Result<Option<Vec<Option<Result<u64, StoreError>>>>, sqlx::Error> {
        let appends: Vec<&Append> = batch
            .iter()
            .filter_map(|r| match r {
                Request::Append(a) => Some(a),
                Request::Snapshot(..) => None,
            })
            .collect();
        let last = self.last_seqs(tx, &appends).await?;
        let mut moved: HashMap<&str, u64> = HashMap::new();
        let mut ids = HashSet::new();
        let mut rows: BTreeMap<u8, Vec<(&str, &EventRow)>> = BTreeMap::new();
        let mut results = Vec::with_capacity(batch.len());
        for request in batch {
            let Request::Append(a) = request else {
                results.push(None);
                continue;
            };
            let actual = match moved.get(a.user_id.as_str()) {
                Some(&seq) => seq,
                None => to_u64(&self.label, last.get(a.user_id.as_str()).copied().flatten())
                    .map_err(|e| sqlx::Error::Decode(e.into()))?,
            };
            if actual != a.expected {
                results.push(Some(Err(a.conflict(actual))));
                continue;
            }
            // Which append a repeated id should fail depends on whether the
            // first one sticks: the one-by-one path decides that.
            if !a
                .rows
                .iter()
                .all(|r| ids.insert((a.user_id.as_str(), r.event_id.as_str())))
            {
                return Ok(None);
            }
            moved.insert(&a.user_id, a.last());
            rows.entry(a.shard)
                .or_default()
                .extend(a.rows.iter().map(|r| (a.user_id.as_str(), r)));
            results.push(Some(Ok(a.last())));
        }
        match self.insert(tx, rows).await {
            Ok(()) => Ok(Some(results)),
            Err(e) if is_unique_violation(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The slow path: each append checked against the log and inserted under
    /// its own savepoint, so that a failing one takes back only its rows.
    async fn append_each(
        &self,
        tx: &mut DB::Connection,
        batch: &[Request],
    ) -> Result<Vec<Option<Result<u64, StoreError>>>, sqlx::Error> {
        let mut results = Vec::with_capacity(batch.len());
        for request in batch {
            let Request::Append(a) = request else {
                results.push(None);
                continue;
            };
            let actual = self.last_seq(tx, a.shard, &a.user_id).await?;
            if actual != a.expected {
                results.push(Some(Err(a.conflict(actual))));
                continue;
            }
            let mut savepoint = tx.begin().await?;
            let rows = BTreeMap::from([(
                a.shard,
                a.rows.iter().map(|r| (a.user_id.as_str(), r)).collect(),
            )]);
            match self.insert(&mut savepoint, rows).await {
                Ok(()) => {
                    savepoint.commit().await?;
                    results.push(Some(Ok(a.last())));
                }
                Err(e) if is_unique_violation(&e) => {
                    savepoint.rollback().await?;
                    // Read committed: a writer that beat us is visible now.
                    let actual = self.last_seq(tx, a.shard, &a.user_id).await?;
                    results.push(Some(Err(if actual != a.expected {
                        a.conflict(actual)
                    } else {
                        StoreError::DuplicateEvent {
                            user_id: a.user_id.clone(),
                        }
                    })));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(results)
    }

    /// Last seq of every appending user (`None`: empty log), in one query
    /// per few hundred users, each user one index probe (see
    /// [`Dialect::last_seqs`]).
    async fn last_seqs<'a>(
        &self,
        tx: &mut DB::Connection,
        appends: &[&'a Append],
    ) -> Result<HashMap<&'a str, Option<i64>>, sqlx::Error> {
        let mut users: Vec<(u8, &str)> = appends
            .iter()
            .map(|a| (a.shard, a.user_id.as_str()))
            .collect();
        users.sort_unstable();
        users.dedup();
        let mut last = HashMap::with_capacity(users.len());
        for chunk in users.chunks(MAX_BATCH) {
            let mut query = Statement::<DB>::new("");
            DB::last_seqs(&mut query.sql, chunk);
            for row in query.fetch_all(tx).await? {
                let at: i64 = row.try_get(0)?;
                let user = usize::try_from(at)
                    .ok()
                    .and_then(|at| chunk.get(at))
                    .ok_or_else(|| sqlx::Error::Protocol(format!("no user at {at}")))?;
                last.insert(user.1, row.try_get::<Option<i64>, _>(1)?);
            }
        }
        Ok(last)
    }

    async fn last_seq(
        &self,
        conn: &mut DB::Connection,
        shard: u8,
        user_id: &str,
    ) -> Result<u64, sqlx::Error> {
        let mut query = QueryBuilder::<DB>::new(format!(
            "SELECT MAX(seq) FROM {} WHERE user_id = ",
            events_table(shard)
        ));
        query.push_bind(user_id);
        let seq: Option<i64> = query.build_query_scalar().fetch_one(&mut *conn).await?;
        to_u64(&self.label, seq).map_err(|e| sqlx::Error::Decode(e.into()))
    }

    /// Rows of several users per shard table. Rows go in sorted by shard,
    /// user and seq, so that concurrent groups of other processes take row
    /// locks in the same order and cannot deadlock on them.
    async fn insert(
        &self,
        tx: &mut DB::Connection,
        mut rows: BTreeMap<u8, Vec<(&str, &EventRow)>>,
    ) -> Result<(), sqlx::Error> {
        let mut statements = Vec::new();
        for (shard, rows) in &mut rows {
            rows.sort_unstable_by_key(|&(user, r)| (user, r.seq));
            let mut rest = &rows[..];
            while !rest.is_empty() {
                let (mut n, mut bytes) = (0, 0);
                while n < rest.len() && n < ROWS_PER_INSERT && (n == 0 || bytes < BYTES_PER_INSERT)
                {
                    bytes += rest[n].1.body.len();
                    n += 1;
                }
                let (chunk, tail) = rest.split_at(n);
                rest = tail;
                let mut query = Statement::<DB>::new(&format!(
                    "INSERT INTO {} (user_id, seq, event_id, ts_ms, body) VALUES ",
                    events_table(*shard)
                ));
                for (i, &(user, r)) in chunk.iter().enumerate() {
                    query.sql(if i == 0 { "(" } else { ", (" });
                    query.text(user).sql(", ").int(r.seq).sql(", ");
                    query.text(&r.event_id).sql(", ").int(r.ts_ms).sql(", ");
                    query.text(&r.body).sql(")");
                }
                statements.push(query);
            }
        }
        Statement::execute_all(statements, tx).await
    }

    /// The group's snapshot writes, newest per user only (an upsert may not
    /// touch one row twice).
    async fn put_snapshots(
        &self,
        tx: &mut DB::Connection,
        batch: &[Request],
        results: &mut [Option<Result<u64, StoreError>>],
    ) -> Result<(), sqlx::Error> {
        let mut newest: BTreeMap<(u8, &str), &SnapshotRow> = BTreeMap::new();
        for (request, result) in batch.iter().zip(results.iter_mut()) {
            if let Request::Snapshot(row, _) = request {
                let slot = newest
                    .entry((row.shard, row.user_id.as_str()))
                    .or_insert(row);
                if row.seq >= slot.seq {
                    *slot = row;
                }
                *result = Some(Ok(0));
            }
        }
        let mut by_shard: BTreeMap<u8, Vec<&SnapshotRow>> = BTreeMap::new();
        for ((shard, _), row) in newest {
            by_shard.entry(shard).or_default().push(row);
        }
        let mut statements = Vec::new();
        for (shard, rows) in by_shard {
            for chunk in rows.chunks(ROWS_PER_INSERT) {
                let table = snapshots_table(shard);
                let mut query = Statement::<DB>::new(&format!(
                    "INSERT INTO {table} (user_id, seq, ts_ms, body, hmac) VALUES "
                ));
                for (i, s) in chunk.iter().enumerate() {
                    query.sql(if i == 0 { "(" } else { ", (" });
                    query.text(&s.user_id).sql(", ").int(s.seq).sql(", ");
                    query.int(s.ts_ms).sql(", ").text(&s.body).sql(", ");
                    query.text(&s.hmac).sql(")");
                }
                query
                    .sql(" ")
                    .sql(&DB::SNAPSHOT_UPSERT.replace("{table}", &table));
                statements.push(query);
            }
        }
        Statement::execute_all(statements, tx).await
    }
}

/// A one-off statement of the writers, whose shape (row count, tables)
/// changes from group to group, with its values inlined as literals (see
/// [`Dialect::literal`]) and sent over the simple/text protocol: one round
/// trip, no statement to prepare and close. That halves the cost of a group
/// on PostgreSQL, and on MySQL it avoids the CLOSE of a one-off prepared
/// statement, which the server does not answer and which therefore holds the
/// next request back until the delayed ACK (~40 ms; sqlx leaves Nagle on).
struct Statement<DB: Dialect> {
    sql: String,
    dialect: PhantomData<DB>,
}

impl<DB> Statement<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    fn new(sql: &str) -> Self {
        Statement {
            sql: sql.to_string(),
            dialect: PhantomData,
        }
    }

    fn sql(&mut self, sql: &str) -> &mut Self {
        self.sql.push_str(sql);
        self
    }

    fn text(&mut self, value: &str) -> &mut Self {
        DB::literal(&mut self.sql, value);
        self
    }

    fn int(&mut self, value: i64) -> &mut Self {
        self.sql.push_str(&value.to_string());
        self
    }

    fn run(self) -> sqlx::RawSql {
        // Safe: every value went through `Dialect::literal` or is a number.
        sqlx::raw_sql(sqlx::AssertSqlSafe(self.sql))
    }

    /// Several statements, as few round trips as the size bound allows
    /// (both servers take `;`-separated scripts over this protocol); the
    /// first failing statement stops the rest and is the error.
    async fn execute_all(
        statements: Vec<Statement<DB>>,
        conn: &mut DB::Connection,
    ) -> Result<(), sqlx::Error> {
        let mut script: Option<Statement<DB>> = None;
        for statement in statements {
            script = Some(match script {
                Some(mut script) if script.sql.len() + statement.sql.len() < BYTES_PER_SCRIPT => {
                    script.sql("; ").sql(&statement.sql);
                    script
                }
                Some(full) => {
                    full.run().execute(&mut *conn).await?;
                    statement
                }
                None => statement,
            });
        }
        if let Some(script) = script {
            script.run().execute(conn).await?;
        }
        Ok(())
    }

    async fn fetch_all(self, conn: &mut DB::Connection) -> Result<Vec<DB::Row>, sqlx::Error> {
        self.run().fetch_all(conn).await
    }
}

#[async_trait]
impl<DB> ConversationStore for SqlStore<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'a> &'a str: Encode<'a, DB> + Type<DB>,
    for<'a> i64: Encode<'a, DB> + Decode<'a, DB> + Type<DB>,
    for<'a> String: Decode<'a, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
{
    async fn append(
        &self,
        user_id: &str,
        expected_seq: u64,
        events: &[Event],
    ) -> Result<u64, StoreError> {
        check_append(user_id, expected_seq, events)?;
        check_text(user_id, "user id", user_id)?;
        // Encoded here, on the callers' tasks, to keep the writers' critical
        // path to SQL alone.
        let rows = events
            .iter()
            .map(|e| {
                Ok(EventRow {
                    seq: to_i64(user_id, "seq", e.seq)?,
                    event_id: e.event_id.to_string(),
                    ts_ms: e.ts_ms,
                    body: serde_json::to_string(e).map_err(|e| StoreError::InvalidEvents {
                        user_id: user_id.to_string(),
                        reason: e.to_string(),
                    })?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let (db, shard) = self.database(user_id);
        self.call(db, |reply| {
            Request::Append(Append {
                user_id: user_id.to_string(),
                shard,
                expected: expected_seq,
                rows,
                reply,
            })
        })
        .await
    }

    async fn events_after(
        &self,
        user_id: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let (db, shard) = self.database(user_id);
        let link = &db.link;
        let after = i64::try_from(after_seq).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let bodies: Vec<String> = link
            .timed(async {
                let mut query = QueryBuilder::<DB>::new(format!(
                    "SELECT body FROM {} WHERE user_id = ",
                    events_table(shard)
                ));
                query
                    .push_bind(user_id)
                    .push(" AND seq > ")
                    .push_bind(after)
                    .push(" ORDER BY seq LIMIT ")
                    .push_bind(limit);
                query
                    .build_query_scalar()
                    .fetch_all(&link.pool)
                    .await
                    .map_err(|e| link.error(e))
            })
            .await?;
        bodies
            .iter()
            .map(|body| {
                serde_json::from_str(body).map_err(|e| {
                    StoreError::Corrupt(format!(
                        "event of user {user_id} after seq {after_seq}: {e}"
                    ))
                })
            })
            .collect()
    }

    async fn last_seq(&self, user_id: &str) -> Result<u64, StoreError> {
        let (db, shard) = self.database(user_id);
        let link = &db.link;
        link.timed(async {
            let mut conn = link.pool.acquire().await.map_err(|e| link.error(e))?;
            link.last_seq(&mut conn, shard, user_id)
                .await
                .map_err(|e| link.error(e))
        })
        .await
    }

    async fn put_snapshot(&self, snapshot: &Snapshot) -> Result<(), StoreError> {
        let invalid = |reason: String| StoreError::InvalidEvents {
            user_id: snapshot.user_id.clone(),
            reason,
        };
        check_text(&snapshot.user_id, "user id", &snapshot.user_id)?;
        check_text(&snapshot.user_id, "snapshot hmac", &snapshot.hmac)?;
        let (db, shard) = self.database(&snapshot.user_id);
        let row = SnapshotRow {
            user_id: snapshot.user_id.clone(),
            shard,
            seq: to_i64(&snapshot.user_id, "snapshot seq", snapshot.seq)?,
            ts_ms: snapshot.ts_ms,
            body: serde_json::to_string(&snapshot.state)
                .map_err(|e| invalid(format!("snapshot state: {e}")))?,
            hmac: snapshot.hmac.clone(),
        };
        self.call(db, |reply| Request::Snapshot(row, reply)).await
    }

    async fn get_snapshot(&self, user_id: &str) -> Result<Option<Snapshot>, StoreError> {
        let (db, shard) = self.database(user_id);
        let link = &db.link;
        let row = link
            .timed(async {
                let mut query = QueryBuilder::<DB>::new(format!(
                    "SELECT seq, ts_ms, body, hmac FROM {} WHERE user_id = ",
                    snapshots_table(shard)
                ));
                query.push_bind(user_id);
                let row = query
                    .build()
                    .fetch_optional(&link.pool)
                    .await
                    .map_err(|e| link.error(e))?;
                row.map(|row| {
                    Ok::<_, sqlx::Error>((
                        row.try_get::<i64, _>(0)?,
                        row.try_get::<i64, _>(1)?,
                        row.try_get::<String, _>(2)?,
                        row.try_get::<String, _>(3)?,
                    ))
                })
                .transpose()
                .map_err(|e| link.error(e))
            })
            .await?;
        let Some((seq, ts_ms, body, hmac)) = row else {
            return Ok(None);
        };
        let state: State = serde_json::from_str(&body)
            .map_err(|e| StoreError::Corrupt(format!("snapshot of user {user_id}: {e}")))?;
        Ok(Some(Snapshot {
            user_id: user_id.to_string(),
            seq: to_u64(&link.label, Some(seq))?,
            ts_ms,
            state,
            hmac,
        }))
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
}

//! [`SqlStore`]: the [`ConversationStore`] on an SQL server. Reads go
//! straight to a database's pool; appends and snapshot writes are queued
//! for its writers ([`super::writer`]).

use super::config::{redact, Layout};
use super::writer::{Append, EventRow, Reply, Request, SnapshotRow};
use super::{shard_of, Dialect, SqlConfig, SHARDS};
use crate::seal::{ResealReport, Resealer};
use crate::{check_append, ConversationStore, Snapshot, StoreError, WriterStats};
use async_trait::async_trait;
use colloquy_core::{Event, State};
use sqlx::pool::PoolOptions;
use sqlx::query_builder::QueryBuilder;
use sqlx::{ColumnIndex, ConnectOptions, Decode, Encode, Executor, IntoArguments, Pool, Row, Type};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Longest user id accepted. MySQL keys need a bounded column; both dialects
/// enforce the same limit so that a deployment can move between them.
pub const MAX_USER_ID_BYTES: usize = 255;

pub(super) fn events_table(shard: u8) -> String {
    format!("events_{shard:02}")
}

pub(super) fn snapshots_table(shard: u8) -> String {
    format!("snapshots_{shard:02}")
}

/// A store on one kind of SQL server: `MySqlStore` (feature `mysql`) or
/// `PgStore` (feature `postgres`).
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

/// One database as its reads, its writers and the migrations reach it;
/// without the writers' request sender, so that dropping the store closes
/// the queue and the writers end.
pub(super) struct Link<DB: sqlx::Database> {
    pub(super) pool: Pool<DB>,
    /// The URL with its password redacted.
    pub(super) label: String,
    pub(super) shards: Vec<u8>,
    pub(super) timeout: Duration,
    pub(super) commits: AtomicU64,
    pub(super) requests: AtomicU64,
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

pub(super) fn to_u64(label: &str, n: Option<i64>) -> Result<u64, StoreError> {
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
            let requests = link.start_writers(config.writers);
            databases.push(Database { link, requests });
        }
        Ok(SqlStore {
            databases,
            route: layout.route,
        })
    }

    pub(super) fn layout(config: &SqlConfig) -> Result<Layout, StoreError> {
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
    pub(super) fn open(
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

    pub(super) fn error(&self, e: sqlx::Error) -> StoreError {
        store_error::<DB>(&self.label, e)
    }

    /// `work`, given up as transient after the query timeout. Generic in
    /// the error so the bot registry shares it.
    pub(super) async fn timed<T, E: From<StoreError>>(
        &self,
        work: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        tokio::time::timeout(self.timeout, work)
            .await
            .unwrap_or_else(|_| Err(timed_out(&self.label, self.timeout).into()))
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
    async fn reseal(&self, resealer: &Resealer) -> Result<ResealReport, StoreError> {
        let mut report = ResealReport::default();
        for db in &self.databases {
            let link = &db.link;
            // One row's body written back: a user's event at a seq, or
            // their snapshot at its seq.
            let rewrite = |table: &str, user: &str, seq: i64, body: String| {
                let sql = format!("UPDATE {table} SET body = ");
                let user = user.to_string();
                async move {
                    link.timed(async {
                        let mut q = QueryBuilder::<DB>::new(sql);
                        q.push_bind(body.as_str())
                            .push(" WHERE user_id = ")
                            .push_bind(user.as_str())
                            .push(" AND seq = ")
                            .push_bind(seq);
                        q.build()
                            .execute(&link.pool)
                            .await
                            .map_err(|e| link.error(e))
                    })
                    .await
                    .map(|_| ())
                }
            };
            for &shard in &link.shards {
                let (events, snapshots) = (events_table(shard), snapshots_table(shard));
                // Rows in (user, seq) order, a batch at a time from where
                // the last batch ended, each rewritten on its own: the
                // writers go on meanwhile, and only sealed rows are read.
                let (mut user, mut seq) = (String::new(), -1i64);
                loop {
                    // The user comes from the body: user ids are bytes on
                    // MySQL, text on PostgreSQL, and the event names its own.
                    let rows: Vec<(i64, String)> = link
                        .timed(async {
                            let mut q = QueryBuilder::<DB>::new(format!(
                                "SELECT seq, body FROM {events} WHERE body LIKE '%\"sealed\":%' AND (user_id > "
                            ));
                            q.push_bind(user.as_str())
                                .push(" OR (user_id = ")
                                .push_bind(user.as_str())
                                .push(" AND seq > ")
                                .push_bind(seq)
                                .push(")) ORDER BY user_id, seq LIMIT ")
                                .push_bind(RESEAL_BATCH);
                            let rows = q.build().fetch_all(&link.pool).await.map_err(|e| link.error(e))?;
                            rows.iter()
                                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                                .collect::<Result<_, sqlx::Error>>()
                                .map_err(|e| link.error(e))
                        })
                        .await?;
                    if rows.is_empty() {
                        break;
                    }
                    for (row_seq, body) in rows {
                        report.read += 1;
                        let mut event: Event = serde_json::from_str(&body).map_err(|e| {
                            StoreError::Corrupt(format!("event {row_seq} in {events}: {e}"))
                        })?;
                        (user, seq) = (event.user_id.clone(), row_seq);
                        if !resealer.events(std::slice::from_mut(&mut event))? {
                            continue;
                        }
                        let body = serde_json::to_string(&event).expect("events serialize");
                        rewrite(&events, &event.user_id, row_seq, body).await?;
                        report.rewritten += 1;
                    }
                }
                let rows: Vec<String> = link
                    .timed(async {
                        let mut q = QueryBuilder::<DB>::new(format!(
                            "SELECT body FROM {snapshots} WHERE body LIKE '%\"sealed\":%'"
                        ));
                        let rows = q
                            .build()
                            .fetch_all(&link.pool)
                            .await
                            .map_err(|e| link.error(e))?;
                        rows.iter()
                            .map(|r| r.try_get(0))
                            .collect::<Result<_, sqlx::Error>>()
                            .map_err(|e| link.error(e))
                    })
                    .await?;
                for body in rows {
                    report.read += 1;
                    let mut state: State = serde_json::from_str(&body).map_err(|e| {
                        StoreError::Corrupt(format!("a snapshot in {snapshots}: {e}"))
                    })?;
                    if !resealer.state(&mut state)? {
                        continue;
                    }
                    let body = serde_json::to_string(&state).expect("states serialize");
                    // Only if the snapshot was not replaced meanwhile: a
                    // newer one is sealed under the current key already.
                    let seq = to_i64(&state.user_id, "snapshot seq", state.seq)?;
                    rewrite(&snapshots, &state.user_id, seq, body).await?;
                    report.rewritten += 1;
                }
            }
        }
        Ok(report)
    }
}

/// Rows a re-sealing reads at once.
const RESEAL_BATCH: i64 = 500;

//! The group-commit writers: a few tasks per database take whatever
//! appends and snapshot writes are queued, of all users, and commit them as
//! one transaction (see the module docs of `sql`, "Writes").

use super::statement::Statement;
use super::store::{events_table, snapshots_table, to_u64, Link};
use super::Dialect;
use crate::StoreError;
use sqlx::query_builder::QueryBuilder;
use sqlx::{ColumnIndex, Connection, Decode, Encode, Executor, IntoArguments, Row, Type};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, Mutex};

/// Requests waiting for a database's writers; beyond this, appenders wait.
const QUEUE: usize = 4096;
/// Requests per group commit; bounds the latency one transaction adds.
const MAX_BATCH: usize = 512;
/// Rows per multi-row INSERT, well under both servers' 65,535 bind limit.
const ROWS_PER_INSERT: usize = 1000;
/// Body bytes per multi-row INSERT, under MySQL's default 16 MiB packet.
const BYTES_PER_INSERT: usize = 4 << 20;

pub(super) type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

pub(super) enum Request {
    Append(Append),
    Snapshot(SnapshotRow, Reply<()>),
}

pub(super) struct Append {
    pub(super) user_id: String,
    pub(super) shard: u8,
    pub(super) expected: u64,
    pub(super) rows: Vec<EventRow>,
    pub(super) reply: Reply<u64>,
}

pub(super) struct EventRow {
    pub(super) seq: i64,
    pub(super) event_id: String,
    pub(super) ts_ms: i64,
    /// The event as JSON, as the SQLite backend stores it.
    pub(super) body: String,
}

pub(super) struct SnapshotRow {
    pub(super) user_id: String,
    pub(super) shard: u8,
    pub(super) seq: i64,
    pub(super) ts_ms: i64,
    pub(super) body: String,
    pub(super) hmac: String,
}

impl Append {
    pub(super) fn last(&self) -> u64 {
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

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
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
    /// Start `writers` tasks on this database; they end once the returned
    /// queue is dropped.
    pub(super) fn start_writers(self: &Arc<Self>, writers: u32) -> mpsc::Sender<Request> {
        let (requests, queue) = mpsc::channel(QUEUE);
        let queue = Arc::new(Mutex::new(queue));
        for _ in 0..writers {
            tokio::spawn(Arc::clone(self).write(Arc::clone(&queue)));
        }
        requests
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

    pub(super) async fn last_seq(
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

//! Embedded backend: one SQLite file in a data directory that this process
//! owns exclusively.
//!
//! All writes go through one writer thread doing group commit: it takes
//! whatever requests are queued (any users), applies them in one transaction
//! and pays one fsync for all of them before answering. Reads use a few
//! read-only connections, which WAL mode lets run alongside the writer.

use crate::seal::{ResealReport, Resealer};
use crate::writer_thread::{Reply, WriterThread};
use crate::{
    check_append, events_in_appends, ConversationStore, Snapshot, StoreError, WriterStats,
};
use async_trait::async_trait;
use colloquy_core::{Event, State};
use rusqlite::{
    ffi, params, Connection, ErrorCode, OpenFlags, OptionalExtension, TransactionBehavior,
};
use std::collections::HashMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;
use tokio::sync::{mpsc, Semaphore};

/// Schema migrations; entry `i` takes `PRAGMA user_version` from `i` to
/// `i + 1`. Append only: released entries must never change.
const MIGRATIONS: &[&str] = &[
    "
    CREATE TABLE events (
        user_id  TEXT    NOT NULL,
        seq      INTEGER NOT NULL,
        event_id TEXT    NOT NULL UNIQUE,
        ts_ms    INTEGER NOT NULL,
        body     TEXT    NOT NULL,
        PRIMARY KEY (user_id, seq)
    ) WITHOUT ROWID;
    CREATE INDEX events_user_ts ON events (user_id, ts_ms);
    CREATE TABLE snapshots (
        user_id TEXT    NOT NULL PRIMARY KEY,
        seq     INTEGER NOT NULL,
        ts_ms   INTEGER NOT NULL,
        body    TEXT    NOT NULL,
        hmac    TEXT    NOT NULL
    ) WITHOUT ROWID;
",
    "
    -- One row per append instead of one per event, in a rowid table: a
    -- commit then writes its rows at the end of the table and touches one
    -- index page per user, where v1 touched a random page of the global
    -- event-id index for every event (the write amplification that capped
    -- v1 and grew with the file).
    CREATE TABLE appends (
        id        INTEGER PRIMARY KEY,
        user_id   TEXT    NOT NULL,
        first_seq INTEGER NOT NULL,
        last_seq  INTEGER NOT NULL,
        ts_ms     INTEGER NOT NULL,
        body      TEXT    NOT NULL
    );
    INSERT INTO appends (user_id, first_seq, last_seq, ts_ms, body)
        SELECT user_id, seq, seq, ts_ms, '[' || body || ']' FROM events ORDER BY user_id, seq;
    CREATE UNIQUE INDEX appends_user_seq ON appends (user_id, last_seq);
    CREATE INDEX appends_user_ts ON appends (user_id, ts_ms);
    -- Event ids are unique within a user's log: clustered by user, so the
    -- ids of a turn share a page.
    CREATE TABLE event_ids (
        user_id  TEXT NOT NULL,
        event_id BLOB NOT NULL,
        PRIMARY KEY (user_id, event_id)
    ) WITHOUT ROWID;
    INSERT INTO event_ids (user_id, event_id)
        SELECT user_id, unhex(event_id, '-') FROM events;
    DROP TABLE events;
",
    "
    -- Nothing reads by time on SQLite, and each commit paid a random page of
    -- this index per user (a quarter of the WAL it wrote). The SQL backends
    -- keep their (user, ts) index for operators' queries.
    DROP INDEX appends_user_ts;
",
];

/// Schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Requests waiting for the writer; beyond this, appenders wait (backpressure).
const QUEUE: usize = 1024;
/// Requests per group commit; bounds the latency one transaction adds.
const MAX_BATCH: usize = 512;
/// Concurrent reads (and read-only connections kept open).
const READERS: usize = 4;
/// Users whose last seq the writer remembers; past this it starts over,
/// costing one indexed lookup per user on their next append.
const CACHED_USERS: usize = 100_000;
/// Page cache of the writer connection. Small on purpose: SQLite's cache
/// truncation at the end of each write transaction (`pcache1TruncateUnsafe`)
/// scans the cache, and under load it took 22% of the writer's time at
/// 64 MiB against 3.5% at 8 MiB, with more turns/s at 8 MiB.
const WRITER_CACHE_KIB: i64 = 8 * 1024;
/// WAL size (pages) at which the writer finishes a checkpoint, so that the
/// log starts over. Larger than SQLite's 1000 so that pages rewritten by
/// many commits are copied back once, not each time.
const CHECKPOINT_PAGES: i64 = 10_000;
/// How often the checkpointer thread copies new WAL pages into the file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(20);
/// How long a connection waits on a lock held by a checkpoint or recovery.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

pub struct SqliteStore {
    writer: WriterThread<Request>,
    /// Dropping the sender stops the checkpointer.
    checkpointer: Option<(std::sync::mpsc::Sender<()>, thread::JoinHandle<()>)>,
    readers: Arc<Readers>,
    stats: Arc<Stats>,
    /// Held (flock) for as long as the store is open; declared last so that
    /// it is released only after everything else has shut down.
    _lock: File,
}

impl SqliteStore {
    /// Open (creating if needed) the store in `dir`, i.e. `dir/colloquy.db`.
    /// Blocking: call it at startup or from a blocking task.
    pub fn open(dir: &Path) -> Result<SqliteStore, StoreError> {
        fs::create_dir_all(dir).map_err(|source| StoreError::Io {
            context: format!("creating data directory {}", dir.display()),
            source,
        })?;
        // Before touching the database, so that two processes never run
        // migrations or writers on the same file.
        let lock = colloquy_segments::lock_dir(dir, "colloquy.lock")?;
        let path = dir.join("colloquy.db");
        let mut conn = Connection::open(&path)?;
        let mode: String =
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Backend {
                message: format!("{} refuses WAL mode (got {mode})", path.display()),
                retryable: false,
            });
        }
        // FULL: in WAL mode this fsyncs the log on every commit, which is
        // what makes an acknowledged append durable.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // A group commit dirties pages all over the tables and indexes; a
        // cache that holds them avoids spilling and re-reading mid-batch.
        conn.pragma_update(None, "cache_size", -WRITER_CACHE_KIB)?;
        // Checkpoints are the checkpointer's (see `Checkpointer`): run on
        // the writer, each one stalled every append for tens of ms.
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        migrate(&mut conn, &path)?;

        let wal_frames = Arc::new(AtomicI64::new(0));
        let checkpointer = Checkpointer::open(&path, Arc::clone(&wal_frames))?;
        let (stop, stopped) = std::sync::mpsc::channel();
        let checkpointer = spawn("checkpoint", move || checkpointer.run(stopped))?;
        let stats = Arc::new(Stats::default());
        let writer = Writer {
            conn,
            last_seqs: HashMap::new(),
            stats: Arc::clone(&stats),
            wal_frames,
        };
        let writer = WriterThread::spawn(
            "the SQLite writer",
            "colloquy-sqlite-writer",
            QUEUE,
            move |queue| writer.run(queue),
        )?;
        Ok(SqliteStore {
            writer,
            checkpointer: Some((stop, checkpointer)),
            readers: Arc::new(Readers {
                path,
                idle: Mutex::new(Vec::new()),
                permits: Semaphore::new(READERS),
            }),
            stats,
            _lock: lock,
        })
    }

    pub fn stats(&self) -> WriterStats {
        WriterStats {
            commits: self.stats.commits.load(Ordering::Relaxed),
            requests: self.stats.requests.load(Ordering::Relaxed),
        }
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // The writer commits what is still queued before the checkpointer
        // stops and the lock is released.
        self.writer.close();
        if let Some((stop, checkpointer)) = self.checkpointer.take() {
            drop(stop);
            if checkpointer.join().is_err() {
                tracing::error!("the SQLite checkpoint thread panicked");
            }
        }
    }
}

/// Copies committed WAL pages back into the database file on a thread of its
/// own, so that the writer does not stop appending while they are copied. A
/// PASSIVE checkpoint never blocks the writer or readers, but under steady
/// writes it never catches up with the end of the log either, and the log
/// only starts over once a checkpoint has copied all of it. So the writer
/// finishes the job: when the log holds `CHECKPOINT_PAGES`, it checkpoints
/// what arrived since the last pass here (`CHECKPOINT_EVERY` worth of
/// commits), and its next transaction rewinds the log.
struct Checkpointer {
    conn: Connection,
    /// Frames in the WAL as of the last pass; read by the writer.
    wal_frames: Arc<AtomicI64>,
}

impl Checkpointer {
    fn open(path: &Path, wal_frames: Arc<AtomicI64>) -> Result<Checkpointer, StoreError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // The copied pages are fsynced before the log may be rewound.
        conn.pragma_update(None, "synchronous", "FULL")?;
        Ok(Checkpointer { conn, wal_frames })
    }

    fn run(self, stop: std::sync::mpsc::Receiver<()>) {
        while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
            stop.recv_timeout(CHECKPOINT_EVERY)
        {
            match checkpoint(&self.conn) {
                Ok(Some((frames, _))) => self.wal_frames.store(frames, Ordering::Relaxed),
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "SQLite background checkpoint failed"),
            }
        }
    }
}

/// Start the store's `role` thread (`colloquy-sqlite-<role>`).
fn spawn(
    role: &str,
    run: impl FnOnce() + Send + 'static,
) -> Result<thread::JoinHandle<()>, StoreError> {
    thread::Builder::new()
        .name(format!("colloquy-sqlite-{role}"))
        .spawn(run)
        .map_err(|source| StoreError::Io {
            context: format!("starting the SQLite {role} thread"),
            source,
        })
}

/// A PASSIVE checkpoint: frames in the WAL, and how many of them are now in
/// the database file; `None` if another connection was checkpointing.
fn checkpoint(conn: &Connection) -> rusqlite::Result<Option<(i64, i64)>> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
        let busy: i64 = row.get(0)?;
        Ok((busy == 0).then_some((row.get(1)?, row.get(2)?)))
    })
}

#[async_trait]
impl ConversationStore for SqliteStore {
    async fn append(
        &self,
        user_id: &str,
        expected_seq: u64,
        events: &[Event],
    ) -> Result<u64, StoreError> {
        check_append(user_id, expected_seq, events)?;
        // Encoded here, on the callers' threads, to keep the writer's
        // critical path to SQL alone.
        let body = serde_json::to_string(events).map_err(|e| StoreError::InvalidEvents {
            user_id: user_id.to_string(),
            reason: e.to_string(),
        })?;
        let row = AppendRow {
            user_id: user_id.to_string(),
            expected: expected_seq,
            last_seq: expected_seq + events.len() as u64,
            ts_ms: events[0].ts_ms,
            event_ids: events.iter().map(|e| *e.event_id.as_bytes()).collect(),
            body,
        };
        self.writer
            .call(|reply| Request::Append { row, reply })
            .await
    }

    async fn events_after(
        &self,
        user_id: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        let user_id = user_id.to_string();
        // Every row holds at least one event, so `limit` rows are enough.
        let rows = i64::try_from(limit).unwrap_or(i64::MAX);
        self.readers
            .read(move |conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT body FROM appends WHERE user_id = ?1 AND last_seq > ?2
                     ORDER BY last_seq LIMIT ?3",
                )?;
                let bodies = stmt.query_map(params![user_id, after_seq, rows], |row| {
                    row.get::<_, String>(0)
                })?;
                events_in_appends(
                    bodies.map(|b| b.map_err(StoreError::from)),
                    &user_id,
                    after_seq,
                    limit,
                )
            })
            .await
    }

    async fn last_seq(&self, user_id: &str) -> Result<u64, StoreError> {
        let user_id = user_id.to_string();
        self.readers
            .read(move |conn| Ok(last_seq(conn, &user_id)?))
            .await
    }

    async fn put_snapshot(&self, snapshot: &Snapshot) -> Result<(), StoreError> {
        let row = SnapshotRow {
            user_id: snapshot.user_id.clone(),
            seq: snapshot.seq,
            ts_ms: snapshot.ts_ms,
            body: serde_json::to_string(&snapshot.state).map_err(|e| {
                StoreError::InvalidEvents {
                    user_id: snapshot.user_id.clone(),
                    reason: format!("snapshot state: {e}"),
                }
            })?,
            hmac: snapshot.hmac.clone(),
        };
        self.writer
            .call(|reply| Request::Snapshot { row, reply })
            .await
    }

    async fn get_snapshot(&self, user_id: &str) -> Result<Option<Snapshot>, StoreError> {
        let user_id = user_id.to_string();
        self.readers
            .read(move |conn| {
                let row = conn
                    .prepare_cached(
                        "SELECT seq, ts_ms, body, hmac FROM snapshots WHERE user_id = ?1",
                    )?
                    .query_row([&user_id], |row| {
                        Ok((
                            row.get::<_, u64>(0)?,
                            row.get(1)?,
                            row.get::<_, String>(2)?,
                            row.get(3)?,
                        ))
                    })
                    .optional()?;
                let Some((seq, ts_ms, body, hmac)) = row else {
                    return Ok(None);
                };
                let state: State = serde_json::from_str(&body)
                    .map_err(|e| StoreError::Corrupt(format!("snapshot of user {user_id}: {e}")))?;
                Ok(Some(Snapshot {
                    user_id,
                    seq,
                    ts_ms,
                    state,
                    hmac,
                }))
            })
            .await
    }
    async fn reseal(&self, resealer: &Resealer) -> Result<ResealReport, StoreError> {
        // A maintenance run beside the writer, on its own connection: the
        // busy timeout orders its transaction among the group commits.
        let path = self.readers.path.clone();
        tokio::task::block_in_place(|| {
            let mut conn = Connection::open(&path)?;
            conn.busy_timeout(BUSY_TIMEOUT)?;
            conn.pragma_update(None, "synchronous", "FULL")?;
            let tx = conn.transaction()?;
            let mut report = ResealReport::default();
            reseal_rows(
                &tx,
                "appends",
                "id",
                &mut report,
                |id: &i64| format!("append {id}"),
                |events: &mut Vec<Event>| Ok(resealer.events(events)?),
            )?;
            reseal_rows(
                &tx,
                "snapshots",
                "user_id",
                &mut report,
                |user: &String| format!("snapshot of user {user}"),
                |state: &mut State| Ok(resealer.state(state)?),
            )?;
            tx.commit()?;
            Ok(report)
        })
    }
}

/// Re-seals, inside `tx`, the JSON `body` of every row of `table` that
/// holds a sealed value, writing back those `reseal` changed; `key` names
/// the row in the update and `what` in an error.
fn reseal_rows<K, T>(
    tx: &rusqlite::Transaction<'_>,
    table: &str,
    key: &str,
    report: &mut ResealReport,
    what: impl Fn(&K) -> String,
    mut reseal: impl FnMut(&mut T) -> Result<bool, StoreError>,
) -> Result<(), StoreError>
where
    K: rusqlite::types::FromSql + rusqlite::ToSql,
    T: serde::Serialize + serde::de::DeserializeOwned,
{
    let rows: Vec<(K, String)> = tx
        .prepare(&format!(
            "SELECT {key}, body FROM {table} WHERE body LIKE '%\"sealed\":%'"
        ))?
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<Result<_, _>>()?;
    for (id, body) in rows {
        report.read += 1;
        let mut value: T = serde_json::from_str(&body)
            .map_err(|e| StoreError::Corrupt(format!("{}: {e}", what(&id))))?;
        if reseal(&mut value)? {
            let body = serde_json::to_string(&value).expect("stored values serialize");
            tx.execute(
                &format!("UPDATE {table} SET body = ?1 WHERE {key} = ?2"),
                params![body, id],
            )?;
            report.rewritten += 1;
        }
    }
    Ok(())
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Backend {
            message: e.to_string(),
            retryable: is_busy(&e),
        }
    }
}

/// Lock contention passes; every other SQLite error needs a human.
fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let found: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            path: path.to_path_buf(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    for (version, sql) in (1..).zip(MIGRATIONS).skip(found.max(0) as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", version)?;
        tx.commit()?;
    }
    Ok(())
}

fn last_seq(conn: &Connection, user_id: &str) -> rusqlite::Result<u64> {
    conn.prepare_cached("SELECT COALESCE(MAX(last_seq), 0) FROM appends WHERE user_id = ?1")?
        .query_row([user_id], |row| row.get(0))
}

/// The read-only connections, handed out to blocking tasks.
struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    permits: Semaphore,
}

impl Readers {
    async fn read<T: Send + 'static>(
        self: &Arc<Self>,
        read: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .expect("the reader semaphore is never closed");
        let readers = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let idle = readers.idle.lock().expect("reader pool lock").pop();
            let conn = match idle {
                Some(conn) => conn,
                None => {
                    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
                    let conn = Connection::open_with_flags(&readers.path, flags)?;
                    conn.busy_timeout(BUSY_TIMEOUT)?;
                    conn
                }
            };
            let out = read(&conn);
            let mut idle = readers.idle.lock().expect("reader pool lock");
            // A cancelled caller frees its permit before its task ends, so
            // more connections than permits can briefly exist.
            if idle.len() < READERS {
                idle.push(conn);
            }
            out
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("read task did not finish: {e}")))?
    }
}

enum Request {
    Append { row: AppendRow, reply: Reply<u64> },
    Snapshot { row: SnapshotRow, reply: Reply<()> },
}

/// One append: its events as one JSON array, their ids for the duplicate
/// check.
struct AppendRow {
    user_id: String,
    expected: u64,
    last_seq: u64,
    /// Of the first event.
    ts_ms: i64,
    event_ids: Vec<[u8; 16]>,
    body: String,
}

struct SnapshotRow {
    user_id: String,
    seq: u64,
    ts_ms: i64,
    body: String,
    hmac: String,
}

#[derive(Default)]
struct Stats {
    commits: AtomicU64,
    requests: AtomicU64,
}

struct Writer {
    conn: Connection,
    /// Last seq per user as committed. Exact because this thread is the only
    /// writer of the file (the directory lock keeps other processes out).
    last_seqs: HashMap<String, u64>,
    stats: Arc<Stats>,
    /// See [`Checkpointer`].
    wal_frames: Arc<AtomicI64>,
}

impl Writer {
    fn run(mut self, mut queue: mpsc::Receiver<Request>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while let Some(first) = queue.blocking_recv() {
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match queue.try_recv() {
                    Ok(request) => batch.push(request),
                    Err(_) => break,
                }
            }
            self.group_commit(&mut batch);
            if self.wal_frames.load(Ordering::Relaxed) >= CHECKPOINT_PAGES {
                self.finish_checkpoint();
            }
        }
    }

    fn finish_checkpoint(&mut self) {
        match checkpoint(&self.conn) {
            Ok(Some((frames, copied))) => {
                // Until the next pass reports the rewound log.
                self.wal_frames.store(0, Ordering::Relaxed);
                if copied < frames {
                    tracing::debug!(frames, copied, "WAL checkpoint left pages a reader needs");
                }
            }
            // The background pass is on it; try again after the next group.
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "SQLite checkpoint failed"),
        }
    }

    /// Apply `batch` in one transaction and answer every request, only once
    /// the commit (and its fsync) is done.
    fn group_commit(&mut self, batch: &mut Vec<Request>) {
        let mut moved = HashMap::new();
        let results = match self.write(batch, &mut moved) {
            Ok(results) => {
                if self.last_seqs.len() + moved.len() > CACHED_USERS {
                    self.last_seqs.clear();
                }
                self.last_seqs.extend(moved);
                self.stats.commits.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .requests
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                results
            }
            Err(e) => {
                // Nothing of this batch is known to be durable, and what is
                // in the file is no longer known for sure: start afresh.
                tracing::error!(error = %e, requests = batch.len(), "SQLite group commit failed");
                self.last_seqs.clear();
                let (message, retryable) = (e.to_string(), is_busy(&e));
                batch
                    .iter()
                    .map(|_| {
                        Err(StoreError::Backend {
                            message: message.clone(),
                            retryable,
                        })
                    })
                    .collect()
            }
        };
        for (request, result) in batch.drain(..).zip(results) {
            // A caller that gave up no longer listens; its outcome stands.
            match request {
                Request::Append { reply, .. } => drop(reply.send(result)),
                Request::Snapshot { reply, .. } => drop(reply.send(result.map(drop))),
            }
        }
    }

    /// One result per request (a request that fails leaves no rows behind
    /// but does not stop the others), or the error that sank the whole
    /// transaction. `moved` collects the last seqs the transaction sets.
    fn write(
        &mut self,
        batch: &[Request],
        moved: &mut HashMap<String, u64>,
    ) -> rusqlite::Result<Vec<Result<u64, StoreError>>> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let results = batch
            .iter()
            .map(|request| match request {
                Request::Append { row, .. } => {
                    let known = moved
                        .get(&row.user_id)
                        .or_else(|| self.last_seqs.get(&row.user_id))
                        .copied();
                    let result = append(&tx, known, row)?;
                    if let Ok(last) = result {
                        moved.insert(row.user_id.clone(), last);
                    }
                    Ok(result)
                }
                // One statement: it either happens whole or not at all.
                Request::Snapshot { row, .. } => {
                    Ok(put_snapshot(&tx, row).map(|()| 0).map_err(StoreError::from))
                }
            })
            .collect::<rusqlite::Result<_>>()?;
        tx.commit()?;
        Ok(results)
    }
}

/// The outer error aborts the whole group: it comes from a step whose
/// failure could leave part of an append in the transaction.
fn append(
    tx: &Connection,
    known: Option<u64>,
    row: &AppendRow,
) -> rusqlite::Result<Result<u64, StoreError>> {
    let user_id = row.user_id.as_str();
    let actual = match known {
        Some(seq) => seq,
        None => last_seq(tx, user_id)?,
    };
    if actual != row.expected {
        return Ok(Err(StoreError::Conflict {
            user_id: user_id.to_string(),
            expected: row.expected,
            actual,
        }));
    }
    let mut ids = tx.prepare_cached("INSERT INTO event_ids (user_id, event_id) VALUES (?1, ?2)")?;
    for (i, id) in row.event_ids.iter().enumerate() {
        if let Err(e) = ids.execute(params![user_id, id]) {
            // The failed statement undid itself; take back this request's
            // earlier ids so that the rest of the group can still commit.
            // (Not a savepoint: those journal every page they touch, which
            // costs the whole group even when nothing fails.)
            let mut undo =
                tx.prepare_cached("DELETE FROM event_ids WHERE user_id = ?1 AND event_id = ?2")?;
            for id in &row.event_ids[..i] {
                undo.execute(params![user_id, id])?;
            }
            let duplicate = matches!(&e, rusqlite::Error::SqliteFailure(f, _)
                if f.extended_code == ffi::SQLITE_CONSTRAINT_PRIMARYKEY);
            return Ok(Err(if duplicate {
                StoreError::DuplicateEvent {
                    user_id: user_id.to_string(),
                }
            } else {
                e.into()
            }));
        }
    }
    // Cannot collide: the seq check above makes `last_seq` new for the user.
    tx.prepare_cached(
        "INSERT INTO appends (user_id, first_seq, last_seq, ts_ms, body)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        user_id,
        row.expected + 1,
        row.last_seq,
        row.ts_ms,
        row.body
    ])?;
    Ok(Ok(row.last_seq))
}

fn put_snapshot(tx: &Connection, s: &SnapshotRow) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO snapshots (user_id, seq, ts_ms, body, hmac) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (user_id) DO UPDATE
         SET seq = excluded.seq, ts_ms = excluded.ts_ms, body = excluded.body, hmac = excluded.hmac
         WHERE excluded.seq >= snapshots.seq",
    )?
    .execute(params![s.user_id, s.seq, s.ts_ms, s.body, s.hmac])?;
    Ok(())
}

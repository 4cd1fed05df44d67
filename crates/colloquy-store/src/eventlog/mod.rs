//! The embedded event log: the default store of `colloquy serve`, in a
//! directory this process owns exclusively.
//!
//! Records go to the end of append-only segment files (see [`format`]), so
//! a commit writes each append once, sequentially, instead of rewriting
//! B-tree pages per user; one writer thread takes whatever is queued (any
//! users), writes it with one `write` and pays one `fdatasync` for all of
//! it before answering (group commit).
//!
//! What is kept in memory, per user: the last seq, the position of the
//! last append and of the newest snapshot (about 70 bytes with the name).
//! Each append names the position of its user's previous one, so a user's
//! log is read by following that chain back from the newest append. The
//! ids of a user's events, which the duplicate check needs, are collected
//! from the chain on first use and cached up to
//! [`LogConfig::cached_ids`] ids in all; the least recently used users'
//! sets go first.
//!
//! On open every segment is scanned and checksummed to rebuild the index; a
//! group commit torn by a crash at the very end is cut off (it was never
//! acknowledged), any other damage is an error.

mod format;
mod segments;
mod writer;

use crate::writer_thread::WriterThread;
use crate::{
    check_append, events_in_appends, lock_dir, ConversationStore, Snapshot, StoreError, WriterStats,
};
use async_trait::async_trait;
use colloquy_core::{Event, State};
use format::{Body, NONE};
use segments::Segments;
use std::collections::HashMap;
use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use writer::{Request, Writer};

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A segment is closed and the next begun once it would grow past this.
    pub segment_bytes: u64,
    /// Event ids kept in memory for the duplicate check, over all users.
    pub cached_ids: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 256 << 20,
            cached_ids: 4 << 20,
        }
    }
}

impl LogConfig {
    /// What `open` refuses, checkable without opening anything (`colloquy
    /// check`).
    pub fn validate(&self) -> Result<(), StoreError> {
        if self.segment_bytes < 4096 || self.cached_ids == 0 {
            return Err(StoreError::Config(
                "event log segment_bytes must be at least 4096 and cached_ids at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// Requests waiting for the writer; beyond this, callers wait
/// (backpressure).
const QUEUE: usize = 4096;

/// Where a user's log stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UserPos {
    last_seq: u64,
    /// Position of the newest append, or [`NONE`].
    last: u64,
    snap_seq: u64,
    /// Position of the newest snapshot, or [`NONE`].
    snap: u64,
}

const EMPTY: UserPos = UserPos {
    last_seq: 0,
    last: NONE,
    snap_seq: 0,
    snap: NONE,
};

/// What the writer and the readers share.
struct Shared {
    segments: Segments,
    /// Durable state only: the writer updates it after the fsync.
    users: RwLock<HashMap<Box<str>, UserPos>>,
    /// Set after a failed write or fsync: what the files hold is no longer
    /// known, so nothing more is written until a reopen has scanned them.
    failed: AtomicBool,
    commits: AtomicU64,
    requests: AtomicU64,
}

impl Shared {
    fn user(&self, user: &str) -> UserPos {
        self.users
            .read()
            .expect("user index lock")
            .get(user)
            .copied()
            .unwrap_or(EMPTY)
    }
}

pub struct LogStore {
    shared: Arc<Shared>,
    writer: WriterThread<Request>,
    /// Held (flock) while open; declared after the writer, so that it is
    /// released only once the writer has committed what was queued.
    _lock: File,
}

impl LogStore {
    /// Open (creating if needed) the event log in `dir`. Blocking: call it
    /// at startup or from a blocking task.
    pub fn open(dir: &Path, cfg: LogConfig) -> Result<LogStore, StoreError> {
        cfg.validate()?;
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
            context: format!("creating {}", dir.display()),
            source,
        })?;
        let lock = lock_dir(dir, "LOCK")?;
        let mut bases = segments::list(dir)?;
        if bases.is_empty() {
            create_segment(dir, 0)?;
            bases.push(0);
        }
        let shared = Shared {
            segments: Segments::default(),
            users: RwLock::new(HashMap::new()),
            failed: AtomicBool::new(false),
            commits: AtomicU64::new(0),
            requests: AtomicU64::new(0),
        };
        let mut users = HashMap::new();
        let (mut expected_base, mut active) = (0, None);
        for (i, &base) in bases.iter().enumerate() {
            let path = segments::segment_path(dir, base);
            if base != expected_base {
                return Err(StoreError::Corrupt(format!(
                    "{}: expected a segment beginning at {expected_base}",
                    path.display()
                )));
            }
            let last = i + 1 == bases.len();
            let len = segments::scan(&path, base, last, &mut |pos, body| {
                index(&mut users, pos, body).map_err(|what| {
                    StoreError::Corrupt(format!("{}: record at {pos}: {what}", path.display()))
                })
            })?;
            let file = Arc::new(File::options().read(true).write(true).open(&path).map_err(
                |source| StoreError::Io {
                    context: format!("opening {}", path.display()),
                    source,
                },
            )?);
            shared.segments.push(base, Arc::clone(&file));
            expected_base = base + len;
            active = Some((file, base, len));
        }
        *shared.users.write().expect("user index lock") = users;
        let shared = Arc::new(shared);
        let (file, base, len) = active.expect("at least one segment");
        let writer = Writer::new(
            Arc::clone(&shared),
            dir.to_path_buf(),
            (file, base, len),
            cfg,
        );
        let writer = WriterThread::spawn(
            "the event log writer",
            "colloquy-eventlog",
            QUEUE,
            move |queue| writer.run(queue),
        )?;
        Ok(LogStore {
            shared,
            writer,
            _lock: lock,
        })
    }

    pub fn stats(&self) -> WriterStats {
        WriterStats {
            commits: self.shared.commits.load(Ordering::Relaxed),
            requests: self.shared.requests.load(Ordering::Relaxed),
        }
    }

    /// Run a blocking read of the files off the async threads.
    async fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Shared) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || read(&shared))
            .await
            .map_err(|e| StoreError::Unavailable(format!("read task did not finish: {e}")))?
    }
}

/// Fold one scanned record into the user index; the error says why the
/// record cannot be where it is.
fn index(users: &mut HashMap<Box<str>, UserPos>, pos: u64, body: &[u8]) -> Result<(), String> {
    let body = format::parse(body).ok_or("checksum matches but the fields do not add up")?;
    let user = users.entry(body.user().into()).or_insert(EMPTY);
    match body {
        Body::Append(a) => {
            if a.prev != user.last || a.first_seq != user.last_seq + 1 {
                return Err(format!(
                    "append of seqs {}..={} does not continue user {:?} at seq {}",
                    a.first_seq, a.last_seq, a.user, user.last_seq
                ));
            }
            user.last_seq = a.last_seq;
            user.last = pos;
        }
        Body::Snapshot(s) => {
            if user.snap == NONE || s.seq >= user.snap_seq {
                user.snap = pos;
                user.snap_seq = s.seq;
            }
        }
    }
    Ok(())
}

/// The appends of `user` holding seqs after `after_seq`, oldest first,
/// found by following the chain back from the newest. Blocking.
fn appends_after(
    shared: &Shared,
    user: &str,
    from: UserPos,
    after_seq: u64,
) -> Result<Vec<Vec<u8>>, StoreError> {
    let mut bodies = Vec::new();
    let (mut pos, mut want_last) = (from.last, from.last_seq);
    while pos != NONE && want_last > after_seq {
        let body = shared.segments.read(pos)?;
        let prev = match format::parse(&body) {
            Some(Body::Append(a))
                if a.user == user && a.last_seq == want_last && (a.prev == NONE || a.prev < pos) =>
            {
                want_last = a.first_seq - 1;
                a.prev
            }
            _ => {
                return Err(StoreError::Corrupt(format!(
                    "event log record at {pos} is not the append of user {user:?} ending at seq {want_last}"
                )))
            }
        };
        bodies.push(body);
        pos = prev;
    }
    bodies.reverse();
    Ok(bodies)
}

#[async_trait]
impl ConversationStore for LogStore {
    async fn append(
        &self,
        user_id: &str,
        expected_seq: u64,
        events: &[Event],
    ) -> Result<u64, StoreError> {
        check_append(user_id, expected_seq, events)?;
        let invalid = |reason: String| StoreError::InvalidEvents {
            user_id: user_id.to_string(),
            reason,
        };
        if user_id.len() > u16::MAX as usize || events.len() > u16::MAX as usize {
            return Err(invalid(
                "user ids and appends are limited to 65,535 bytes and events".into(),
            ));
        }
        // Encoded here, on the callers' threads, to keep the writer's
        // critical path to the write itself.
        let body = serde_json::to_vec(events).map_err(|e| invalid(e.to_string()))?;
        let request = writer::AppendRequest {
            user: user_id.to_string(),
            expected: expected_seq,
            ts_ms: events[0].ts_ms,
            ids: events.iter().map(|e| e.event_id.as_u128()).collect(),
            events: body,
        };
        self.writer
            .call(|reply| Request::Append { request, reply })
            .await
    }

    async fn events_after(
        &self,
        user_id: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        let from = self.shared.user(user_id);
        if from.last_seq <= after_seq || limit == 0 {
            return Ok(Vec::new());
        }
        let user = user_id.to_string();
        self.read(move |shared| {
            let bodies = appends_after(shared, &user, from, after_seq)?;
            let events = bodies.iter().map(|body| match format::parse(body) {
                Some(Body::Append(a)) => Ok(a.events),
                _ => Err(StoreError::Corrupt(format!(
                    "an append of user {user} is unreadable"
                ))),
            });
            events_in_appends(events, &user, after_seq, limit)
        })
        .await
    }

    async fn last_seq(&self, user_id: &str) -> Result<u64, StoreError> {
        Ok(self.shared.user(user_id).last_seq)
    }

    async fn put_snapshot(&self, snapshot: &Snapshot) -> Result<(), StoreError> {
        let invalid = |reason: String| StoreError::InvalidEvents {
            user_id: snapshot.user_id.clone(),
            reason,
        };
        if snapshot.user_id.len() > u16::MAX as usize || snapshot.hmac.len() > u16::MAX as usize {
            return Err(invalid("user id or hmac longer than 65,535 bytes".into()));
        }
        let request = writer::SnapshotRequest {
            user: snapshot.user_id.clone(),
            seq: snapshot.seq,
            ts_ms: snapshot.ts_ms,
            hmac: snapshot.hmac.clone(),
            state: serde_json::to_vec(&snapshot.state)
                .map_err(|e| invalid(format!("snapshot state: {e}")))?,
        };
        self.writer
            .call(|reply| Request::Snapshot { request, reply })
            .await
    }

    async fn get_snapshot(&self, user_id: &str) -> Result<Option<Snapshot>, StoreError> {
        let pos = self.shared.user(user_id).snap;
        if pos == NONE {
            return Ok(None);
        }
        let user = user_id.to_string();
        self.read(move |shared| {
            let body = shared.segments.read(pos)?;
            let Some(Body::Snapshot(s)) = format::parse(&body).filter(|b| b.user() == user) else {
                return Err(StoreError::Corrupt(format!(
                    "event log record at {pos} is not a snapshot of user {user:?}"
                )));
            };
            let state: State = serde_json::from_slice(s.state)
                .map_err(|e| StoreError::Corrupt(format!("snapshot of user {user}: {e}")))?;
            Ok(Some(Snapshot {
                user_id: user.clone(),
                seq: s.seq,
                ts_ms: s.ts_ms,
                state,
                hmac: s.hmac.to_string(),
            }))
        })
        .await
    }
}

/// Create an empty segment durably: its name must survive a crash before
/// any record in it is acknowledged.
fn create_segment(dir: &Path, base: u64) -> Result<File, StoreError> {
    let path = segments::segment_path(dir, base);
    let io = |source| StoreError::Io {
        context: format!("creating {}", path.display()),
        source,
    };
    let file = File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(io)?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
    Ok(file)
}

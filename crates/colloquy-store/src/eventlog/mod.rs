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
//! log is read by following that chain back from the newest append. So
//! that a read costs what it returns, not the whole log, users with long
//! logs also keep a sparse index: the position of one append every
//! [`STRIDE`] seqs, from which a read walks back only the stretch it needs.
//! The ids of a user's events, which the duplicate check needs, are
//! collected from the chain on first use, by the appending caller (never on
//! the writer thread that every user's commits wait for), and cached up to
//! [`LogConfig::cached_ids`] ids in all; the least recently used users'
//! sets go first.
//!
//! On open every segment is scanned and checksummed to rebuild the index; a
//! group commit torn by a crash at the very end is cut off (it was never
//! acknowledged), any other damage is an error.

mod format;
mod segments;
mod writer;

use crate::seal::{ResealReport, Resealer};
use crate::writer_thread::WriterThread;
use crate::{
    check_append, events_in_appends, ConversationStore, Snapshot, StoreError, WriterStats,
};
use async_trait::async_trait;
use colloquy_core::{Event, State};
use format::{Body, NONE};
use segments::Segments;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use writer::{IdCache, Request, Writer};

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

/// How a sealed value begins in a stored event or state.
const SEALED_FIELD: &[u8] = b"\"sealed\":";

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Replaces the one occurrence of `old` in `body` with `new`, which must be
/// as long: the record is rewritten where it lies.
fn replace_same_length(body: &mut [u8], old: &str, new: &str) -> Result<(), StoreError> {
    let (old, new) = (old.as_bytes(), new.as_bytes());
    if old.len() != new.len() {
        return Err(StoreError::Config(format!(
            "a value sealed again takes {} bytes where it took {}: the embedded event log re-seals in place, so the ring's key ids must all be as long (`colloquy keys rotate` names them k0001, k0002, …)",
            new.len(),
            old.len()
        )));
    }
    let at = body
        .windows(old.len())
        .position(|w| w == old)
        .ok_or_else(|| StoreError::Corrupt("a sealed value is not where it was read".into()))?;
    body[at..at + new.len()].copy_from_slice(new);
    Ok(())
}

/// Seqs between two entries of a user's sparse index: a read walks back at
/// most about this many events beyond those it returns.
pub(crate) const STRIDE: u64 = 128;

/// Bytes of appends one `events_after` reads at most (past the first
/// stretch): a page may come back shorter than its limit, never costlier.
const MAX_READ_BYTES: usize = 4 << 20;

/// Whether an append ending at `last_seq`, after a log ending at
/// `prev_seq`, gets an entry in its user's sparse index.
pub(crate) fn is_anchor(prev_seq: u64, last_seq: u64) -> bool {
    last_seq / STRIDE > prev_seq / STRIDE
}

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

/// Per user, (last seq, position) of the appends in the sparse index.
type Anchors = HashMap<Box<str>, Vec<(u64, u64)>>;

/// What the writer and the readers share.
struct Shared {
    segments: Segments,
    /// Durable state only: the writer updates it after the fsync.
    users: RwLock<HashMap<Box<str>, UserPos>>,
    /// The sparse index: (last seq, position) of every append that crossed
    /// a multiple of [`STRIDE`], per user, ascending; durable state only.
    anchors: RwLock<Anchors>,
    /// Event ids of users' logs for the duplicate check.
    ids: Mutex<IdCache>,
    /// Records read back from the segments, for tests and benchmarks.
    reads: AtomicU64,
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

    /// The body of the record at `pos`. Blocking.
    fn read_record(&self, pos: u64) -> Result<Vec<u8>, StoreError> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.segments.read(pos)
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
        let lock = colloquy_segments::lock_dir(dir, "LOCK")?;
        let mut bases = segments::list(dir)?;
        if bases.is_empty() {
            segments::create(dir, 0)?;
            bases.push(0);
        }
        let shared = Shared {
            segments: Segments::default(),
            users: RwLock::new(HashMap::new()),
            anchors: RwLock::new(HashMap::new()),
            ids: Mutex::new(IdCache::new(cfg.cached_ids)),
            reads: AtomicU64::new(0),
            failed: AtomicBool::new(false),
            commits: AtomicU64::new(0),
            requests: AtomicU64::new(0),
        };
        let mut users = HashMap::new();
        let mut anchors = HashMap::new();
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
                index(&mut users, &mut anchors, pos, body).map_err(|what| {
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
        *shared.anchors.write().expect("sparse index lock") = anchors;
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

    /// Records read back from the files since the store opened.
    pub fn records_read(&self) -> u64 {
        self.shared.reads.load(Ordering::Relaxed)
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
fn index(
    users: &mut HashMap<Box<str>, UserPos>,
    anchors: &mut Anchors,
    pos: u64,
    body: &[u8],
) -> Result<(), String> {
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
            if is_anchor(user.last_seq, a.last_seq) {
                anchors
                    .entry(a.user.into())
                    .or_default()
                    .push((a.last_seq, pos));
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

/// Walk `user`'s chain back from the append at `pos` (ending at seq
/// `last_seq`) through every append holding seqs after `stop_seq`, newest
/// first, handing each body to `visit`. Blocking.
fn walk_back(
    shared: &Shared,
    user: &str,
    (mut pos, mut want_last): (u64, u64),
    stop_seq: u64,
    visit: &mut dyn FnMut(Vec<u8>),
) -> Result<(), StoreError> {
    while pos != NONE && want_last > stop_seq {
        let body = shared.read_record(pos)?;
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
        visit(body);
        pos = prev;
    }
    Ok(())
}

/// Where the reads of the seqs after `after_seq` start: the (last seq,
/// position) of each append to walk back from, oldest first; each stretch
/// ends where the one before it began (the first, at `after_seq`). At most
/// `stretches` of them, the newest append closing the list.
fn stretches(
    anchors: &[(u64, u64)],
    newest: UserPos,
    after_seq: u64,
    stretches: usize,
) -> Vec<(u64, u64)> {
    let first = anchors.partition_point(|(last, _)| *last <= after_seq);
    let mut out: Vec<(u64, u64)> = anchors[first..].iter().take(stretches).copied().collect();
    if out.len() < stretches && out.last().is_none_or(|(last, _)| *last < newest.last_seq) {
        out.push((newest.last_seq, newest.last));
    }
    out
}

/// The appends of `user` holding seqs after `after_seq`, oldest first,
/// enough for `limit` events unless they pass [`MAX_READ_BYTES`]: read one
/// stretch of the sparse index at a time. Blocking.
fn appends_after(
    shared: &Shared,
    user: &str,
    starts: &[(u64, u64)],
    after_seq: u64,
    limit: usize,
) -> Result<Vec<Vec<u8>>, StoreError> {
    let (mut bodies, mut events, mut bytes) = (Vec::new(), 0u64, 0usize);
    let mut stop = after_seq;
    for &(last, pos) in starts {
        let mut stretch = Vec::new();
        walk_back(shared, user, (pos, last), stop, &mut |body| {
            stretch.push(body)
        })?;
        stretch.reverse();
        bytes += stretch.iter().map(Vec::len).sum::<usize>();
        events += last - stop;
        bodies.extend(stretch);
        stop = last;
        if events >= limit as u64 || bytes >= MAX_READ_BYTES {
            break;
        }
    }
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
        // A frame past the largest a scan accepts would be acknowledged and
        // then taken for damage on the next open.
        let size = format::append_len(user_id, events.len(), &body);
        if size - colloquy_segments::FRAME_HEADER > colloquy_segments::MAX_BODY {
            return Err(invalid(format!(
                "the append takes {size} bytes; at most {} fit in one record",
                colloquy_segments::MAX_BODY
            )));
        }
        // So is the duplicate check's first read of the user's ids (an empty
        // log has none to read, and appends to it keep their call order).
        let has_log = self.shared.user(user_id).last != NONE;
        if has_log
            && !self
                .shared
                .ids
                .lock()
                .expect("id cache lock")
                .holds(user_id)
        {
            let user = user_id.to_string();
            self.read(move |shared| load_ids(shared, &user)).await?;
        }
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
        // A stretch holds about STRIDE seqs; two more cover the partial
        // stretches at either end.
        let wanted = limit.div_ceil(STRIDE as usize).saturating_add(2);
        let starts = match self
            .shared
            .anchors
            .read()
            .expect("sparse index lock")
            .get(user_id)
        {
            Some(anchors) => stretches(anchors, from, after_seq, wanted),
            None => stretches(&[], from, after_seq, wanted),
        };
        let user = user_id.to_string();
        self.read(move |shared| {
            let bodies = appends_after(shared, &user, &starts, after_seq, limit)?;
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
        let state = serde_json::to_vec(&snapshot.state)
            .map_err(|e| invalid(format!("snapshot state: {e}")))?;
        let size = format::snapshot_len(&snapshot.user_id, &snapshot.hmac, &state);
        if size - colloquy_segments::FRAME_HEADER > colloquy_segments::MAX_BODY {
            return Err(invalid(format!(
                "the snapshot takes {size} bytes; at most {} fit in one record",
                colloquy_segments::MAX_BODY
            )));
        }
        let request = writer::SnapshotRequest {
            user: snapshot.user_id.clone(),
            seq: snapshot.seq,
            ts_ms: snapshot.ts_ms,
            hmac: snapshot.hmac.clone(),
            state,
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

    /// In place: a re-sealed value is exactly as long as the one it
    /// replaces when the keys' ids are (`colloquy keys rotate` names them
    /// so), so each record keeps its length and every position (the user
    /// chains, the sparse index) stays true. Records are rewritten one by
    /// one, each durably; a crash between two leaves some under the old
    /// key, which still opens, and a second run finishes the job. Snapshots
    /// a newer one replaced are not reachable and are left as they are.
    async fn reseal(&self, resealer: &Resealer) -> Result<ResealReport, StoreError> {
        let users: Vec<(Box<str>, UserPos)> = self
            .shared
            .users
            .read()
            .expect("user index lock")
            .iter()
            .map(|(u, p)| (u.clone(), *p))
            .collect();
        let segments = &self.shared.segments;
        tokio::task::block_in_place(|| {
            let mut report = ResealReport::default();
            for (user, at) in users {
                let corrupt = |pos: u64| {
                    StoreError::Corrupt(format!("event log record at {pos} of user {user}"))
                };
                let mut pos = at.last;
                while pos != NONE {
                    let body = segments.read(pos)?;
                    let Some(Body::Append(a)) = format::parse(&body) else {
                        return Err(corrupt(pos));
                    };
                    report.read += 1;
                    let next = a.prev;
                    if contains(a.events, SEALED_FIELD) {
                        let mut events: Vec<Event> =
                            serde_json::from_slice(a.events).map_err(|_| corrupt(pos))?;
                        let before: Vec<Option<Box<str>>> =
                            events.iter().map(|e| e.sealed.clone()).collect();
                        if resealer.events(&mut events)? {
                            let mut new = body.clone();
                            for (old, e) in before.iter().zip(&events) {
                                if let (Some(old), Some(sealed)) = (old, &e.sealed) {
                                    replace_same_length(&mut new, old, sealed)?;
                                }
                            }
                            segments.rewrite(pos, &new)?;
                            report.rewritten += 1;
                        }
                    }
                    pos = next;
                }
                if at.snap != NONE {
                    let body = segments.read(at.snap)?;
                    let Some(Body::Snapshot(s)) = format::parse(&body) else {
                        return Err(corrupt(at.snap));
                    };
                    report.read += 1;
                    if contains(s.state, SEALED_FIELD) {
                        let mut state: State =
                            serde_json::from_slice(s.state).map_err(|_| corrupt(at.snap))?;
                        let old = state.sealed.clone();
                        if resealer.state(&mut state)? {
                            let mut new = body.clone();
                            if let (Some(old), Some(sealed)) = (old, &state.sealed) {
                                replace_same_length(&mut new, &old, sealed)?;
                            }
                            segments.rewrite(at.snap, &new)?;
                            report.rewritten += 1;
                        }
                    }
                }
            }
            Ok(report)
        })
    }
}

/// Every event id of `user`'s durable log, read along the chain. Blocking.
fn collect_ids(
    shared: &Shared,
    user: &str,
    from: UserPos,
    after_seq: u64,
) -> Result<Vec<u128>, StoreError> {
    let mut ids = Vec::new();
    walk_back(
        shared,
        user,
        (from.last, from.last_seq),
        after_seq,
        &mut |body| {
            if let Some(Body::Append(a)) = format::parse(&body) {
                ids.extend(a.ids());
            }
        },
    )?;
    Ok(ids)
}

/// Put `user`'s ids into the cache, read off the writer thread. Commits
/// that land meanwhile are caught up under the cache's lock, which the
/// writer also takes to extend the sets it holds. Blocking.
fn load_ids(shared: &Shared, user: &str) -> Result<(), StoreError> {
    let from = shared.user(user);
    let ids = collect_ids(shared, user, from, 0)?;
    let mut cache = shared.ids.lock().expect("id cache lock");
    if cache.holds(user) {
        return Ok(());
    }
    let now = shared.user(user);
    let mut ids: HashSet<u128> = ids.into_iter().collect();
    if now.last_seq != from.last_seq {
        ids.extend(collect_ids(shared, user, now, from.last_seq)?);
    }
    cache.insert(user, ids, now.last_seq);
    Ok(())
}

//! The writer thread: checks, encodes and group-commits requests.

use super::format::{self, NONE};
use super::{is_anchor, segments, LogConfig, Shared, UserPos};
use crate::writer_thread::Reply;
use crate::StoreError;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::mpsc;

pub(super) enum Request {
    Append {
        request: AppendRequest,
        reply: Reply<u64>,
    },
    Snapshot {
        request: SnapshotRequest,
        reply: Reply<()>,
    },
}

pub(super) struct AppendRequest {
    pub user: String,
    pub expected: u64,
    /// Of the first event.
    pub ts_ms: i64,
    pub ids: Vec<u128>,
    /// The events as one JSON array.
    pub events: Vec<u8>,
}

pub(super) struct SnapshotRequest {
    pub user: String,
    pub seq: u64,
    pub ts_ms: i64,
    pub hmac: String,
    pub state: Vec<u8>,
}

/// Requests per group commit, and their bytes: bounds the latency one
/// commit adds and the buffer it needs.
const MAX_BATCH: usize = 1024;
const MAX_BATCH_BYTES: usize = 16 << 20;

pub(super) struct Writer {
    shared: Arc<Shared>,
    dir: PathBuf,
    /// The active (last) segment: its file, base position and length.
    file: Arc<File>,
    base: u64,
    len: u64,
    segment_bytes: u64,
}

impl Writer {
    pub fn new(
        shared: Arc<Shared>,
        dir: PathBuf,
        (file, base, len): (Arc<File>, u64, u64),
        cfg: LogConfig,
    ) -> Writer {
        Writer {
            shared,
            dir,
            file,
            base,
            len,
            segment_bytes: cfg.segment_bytes,
        }
    }

    pub fn run(mut self, mut queue: mpsc::Receiver<Request>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while let Some(first) = queue.blocking_recv() {
            let mut bytes = first.bytes();
            batch.push(first);
            while batch.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
                let Ok(request) = queue.try_recv() else { break };
                bytes += request.bytes();
                batch.push(request);
            }
            self.group_commit(&mut batch);
        }
    }

    /// Check and write `batch`, pay one fsync, publish the new state to
    /// readers and answer every request.
    fn group_commit(&mut self, batch: &mut Vec<Request>) {
        let mut commit = Commit::default();
        let checked: Vec<Checked> = batch
            .iter()
            .map(|request| self.check(request, &mut commit))
            .collect();
        let outcome = if commit.buf.is_empty() {
            Ok(())
        } else if self.shared.failed.load(Ordering::Acquire) {
            Err(failed())
        } else {
            self.write(&mut commit)
        };
        match &outcome {
            Ok(()) => {
                // The id cache before the user index, as load_ids takes them.
                let mut ids = self.shared.ids.lock().expect("id cache lock");
                let mut users = self.shared.users.write().expect("user index lock");
                for (user, (prev, new)) in commit.new_ids {
                    let last = commit.moved.get(&user).map_or(0, |p| p.last_seq);
                    ids.add(&user, new, prev, last);
                }
                for (user, pos) in commit.moved {
                    users.insert(user.into(), pos);
                }
                drop(users);
                drop(ids);
                if !commit.anchors.is_empty() {
                    let mut anchors = self.shared.anchors.write().expect("sparse index lock");
                    for (user, anchor) in commit.anchors {
                        anchors.entry(user.into()).or_default().push(anchor);
                    }
                }
                self.shared
                    .requests
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
            }
            // `write` stopped further writes.
            Err(e) => {
                tracing::error!(error = %e, requests = batch.len(), "event log group commit failed; the store takes no more writes until restarted");
            }
        }
        for (request, checked) in batch.drain(..).zip(checked) {
            let result = match (checked, &outcome) {
                (Checked::Refused(e), _) => Err(e),
                (Checked::Written(_), Err(_)) => Err(failed()),
                (Checked::Written(seq), Ok(())) => Ok(seq),
            };
            // A caller that gave up no longer listens; its outcome stands.
            match request {
                Request::Append { reply, .. } => drop(reply.send(result)),
                Request::Snapshot { reply, .. } => drop(reply.send(result.map(drop))),
            }
        }
    }

    /// Decide one request against the durable state plus what this batch
    /// already holds, and encode it if it is accepted.
    fn check(&mut self, request: &Request, commit: &mut Commit) -> Checked {
        match request {
            Request::Append { request: a, .. } => {
                let durable = self.shared.user(&a.user);
                let now = commit.moved.get(&a.user).copied().unwrap_or(durable);
                if now.last_seq != a.expected {
                    return Checked::Refused(StoreError::Conflict {
                        user_id: a.user.clone(),
                        expected: a.expected,
                        actual: now.last_seq,
                    });
                }
                match self.duplicate(&a.user, durable, &a.ids, commit) {
                    Ok(false) => {}
                    Ok(true) => {
                        return Checked::Refused(StoreError::DuplicateEvent {
                            user_id: a.user.clone(),
                        })
                    }
                    Err(e) => return Checked::Refused(e),
                }
                let ids: Vec<u8> = a.ids.iter().flat_map(|id| id.to_be_bytes()).collect();
                let last_seq = a.expected + a.ids.len() as u64;
                let size = format::append_len(&a.user, a.ids.len(), &a.events);
                let pos = match self.place(size, commit) {
                    Ok(pos) => pos,
                    Err(e) => return Checked::Refused(e),
                };
                format::encode_append(
                    &mut commit.buf,
                    &format::Append {
                        user: &a.user,
                        prev: now.last,
                        first_seq: a.expected + 1,
                        last_seq,
                        ts_ms: a.ts_ms,
                        ids: &ids,
                        events: &a.events,
                    },
                );
                commit.moved.insert(
                    a.user.clone(),
                    UserPos {
                        last_seq,
                        last: pos,
                        ..now
                    },
                );
                if is_anchor(now.last_seq, last_seq) {
                    commit.anchors.push((a.user.clone(), (last_seq, pos)));
                }
                commit
                    .new_ids
                    .entry(a.user.clone())
                    .or_insert_with(|| (durable.last_seq, Vec::new()))
                    .1
                    .extend(&a.ids);
                Checked::Written(last_seq)
            }
            Request::Snapshot { request: s, .. } => {
                let now = commit
                    .moved
                    .get(&s.user)
                    .copied()
                    .unwrap_or_else(|| self.shared.user(&s.user));
                // Snapshot writers may race; the newest must win.
                if now.snap != NONE && now.snap_seq > s.seq {
                    return Checked::Written(0);
                }
                let size = format::snapshot_len(&s.user, &s.hmac, &s.state);
                let pos = match self.place(size, commit) {
                    Ok(pos) => pos,
                    Err(e) => return Checked::Refused(e),
                };
                format::encode_snapshot(
                    &mut commit.buf,
                    &format::Snapshot {
                        user: &s.user,
                        seq: s.seq,
                        ts_ms: s.ts_ms,
                        hmac: &s.hmac,
                        state: &s.state,
                    },
                );
                commit.moved.insert(
                    s.user.clone(),
                    UserPos {
                        snap_seq: s.seq,
                        snap: pos,
                        ..now
                    },
                );
                Checked::Written(0)
            }
        }
    }

    /// Whether an id of the append is repeated in it, in the user's durable
    /// log or earlier in this batch.
    fn duplicate(
        &mut self,
        user: &str,
        durable: UserPos,
        ids: &[u128],
        commit: &Commit,
    ) -> Result<bool, StoreError> {
        let mut seen = HashSet::with_capacity(ids.len());
        if !ids.iter().all(|id| seen.insert(*id)) {
            return Ok(true);
        }
        if commit
            .new_ids
            .get(user)
            .is_some_and(|(_, batch)| batch.iter().any(|id| seen.contains(id)))
        {
            return Ok(true);
        }
        if let Some(held) = self
            .shared
            .ids
            .lock()
            .expect("id cache lock")
            .get(user, durable.last_seq)
        {
            return Ok(ids.iter().any(|id| held.contains(id)));
        }
        // The appending caller read the ids, but they were evicted since:
        // rare enough to read them again here.
        let held: HashSet<u128> = super::collect_ids(&self.shared, user, durable, 0)?
            .into_iter()
            .collect();
        let repeated = ids.iter().any(|id| held.contains(id));
        self.shared
            .ids
            .lock()
            .expect("id cache lock")
            .insert(user, held, durable.last_seq);
        Ok(repeated)
    }

    /// The position a record of `size` bytes gets: at the end of the active
    /// segment, or of a new one when it would grow past its limit.
    fn place(&mut self, size: usize, commit: &mut Commit) -> Result<u64, StoreError> {
        let used = self.len + commit.buf.len() as u64;
        if used > 0 && used + size as u64 > self.segment_bytes {
            self.roll(commit)?;
        }
        Ok(self.base + self.len + commit.buf.len() as u64)
    }

    /// Write what the batch holds so far to the full segment, make it
    /// durable and begin the next one. The new segment becomes readable at
    /// once; nothing points into it before the batch is durable.
    fn roll(&mut self, commit: &mut Commit) -> Result<(), StoreError> {
        if self.shared.failed.load(Ordering::Acquire) {
            return Err(failed());
        }
        self.write(commit)?;
        let base = self.base + self.len;
        let file = segments::create(&self.dir, base).inspect_err(|_| {
            self.shared.failed.store(true, Ordering::Release);
        })?;
        let file = Arc::new(file);
        self.shared.segments.push(base, Arc::clone(&file));
        (self.file, self.base, self.len) = (file, base, colloquy_segments::SEGMENT_START);
        Ok(())
    }

    /// Write the batch's encoded records at the end of the active segment
    /// and make them durable: one fsync, counted as a commit. A failure
    /// stops all further writes.
    fn write(&mut self, commit: &mut Commit) -> Result<(), StoreError> {
        if !commit.buf.is_empty() {
            colloquy_segments::commit(&mut commit.buf);
        }
        let written = self
            .file
            .write_all_at(&commit.buf, self.len)
            .and_then(|()| self.file.sync_data());
        if let Err(source) = written {
            self.shared.failed.store(true, Ordering::Release);
            return Err(StoreError::Io {
                context: "writing the event log".into(),
                source,
            });
        }
        self.len += commit.buf.len() as u64;
        commit.buf.clear();
        self.shared.commits.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

impl Request {
    fn bytes(&self) -> usize {
        match self {
            Request::Append { request, .. } => request.events.len(),
            Request::Snapshot { request, .. } => request.state.len(),
        }
    }
}

/// One group commit in the making.
#[derive(Default)]
struct Commit {
    /// Encoded records not yet written, at the end of the active segment.
    buf: Vec<u8>,
    /// Users whose position this batch moves, and where to.
    moved: HashMap<String, UserPos>,
    /// Ids this batch appends, per user, with the user's durable last seq
    /// before the batch.
    new_ids: HashMap<String, (u64, Vec<u128>)>,
    /// Entries of the sparse index this batch adds.
    anchors: Vec<(String, (u64, u64))>,
}

enum Checked {
    /// Accepted and encoded: the answer once the batch is durable.
    Written(u64),
    Refused(StoreError),
}

fn failed() -> StoreError {
    StoreError::Backend {
        message: "an earlier write to the event log failed; restart to recover".into(),
        retryable: false,
    }
}

/// The event ids of users' durable logs, for the duplicate check. A user's
/// set, once present, is complete up to the seq it is tagged with: it is
/// read from the whole chain on first use (by the appending caller) and
/// extended by every commit. Bounded by the number of ids over all users;
/// the least recently used sets go first.
pub(super) struct IdCache {
    budget: usize,
    held: usize,
    tick: u64,
    /// user → (ids, the last seq they cover, last use).
    users: HashMap<Box<str>, (HashSet<u128>, u64, u64)>,
}

impl IdCache {
    pub fn new(budget: usize) -> IdCache {
        IdCache {
            budget,
            held: 0,
            tick: 0,
            users: HashMap::new(),
        }
    }

    pub fn holds(&self, user: &str) -> bool {
        self.users.contains_key(user)
    }

    /// The ids of `user`'s log if the set covers it up to `last_seq`.
    pub fn get(&mut self, user: &str, last_seq: u64) -> Option<&HashSet<u128>> {
        self.tick += 1;
        let (ids, upto, used) = self.users.get_mut(user)?;
        if *upto != last_seq {
            return None;
        }
        *used = self.tick;
        Some(ids)
    }

    /// Keep `ids`, every id of `user`'s log up to `upto`.
    pub fn insert(&mut self, user: &str, ids: HashSet<u128>, upto: u64) {
        self.tick += 1;
        self.held += ids.len();
        if let Some((old, _, _)) = self.users.insert(user.into(), (ids, upto, self.tick)) {
            self.held -= old.len();
        }
        self.evict(user);
    }

    /// Record ids a commit made durable, taking `user`'s log from seq
    /// `prev` to `last`. A user without a set is left without; a set that
    /// already covers them (caught up by a caller) is left alone.
    pub fn add(&mut self, user: &str, ids: Vec<u128>, prev: u64, last: u64) {
        let Some((held, upto, _)) = self.users.get_mut(user) else {
            return;
        };
        if *upto == prev {
            self.held += ids.len();
            held.extend(ids);
            *upto = last;
            self.evict(user);
        } else if *upto < prev {
            // A gap: the set is no longer complete.
            let (gone, _, _) = self.users.remove(user).expect("present");
            self.held -= gone.len();
        }
    }

    /// Over budget: drop the least recently used quarter of the users (not
    /// `keep`), so that the scan is paid once per many insertions.
    fn evict(&mut self, keep: &str) {
        if self.held <= self.budget {
            return;
        }
        let mut ticks: Vec<u64> = self.users.values().map(|(_, _, t)| *t).collect();
        let cut = ticks.len() / 4;
        let (_, limit, _) = ticks.select_nth_unstable(cut);
        let limit = *limit;
        let mut held = 0;
        self.users.retain(|user, (ids, _, used)| {
            let stay = *used > limit || &**user == keep;
            held += if stay { ids.len() } else { 0 };
            stay
        });
        self.held = held;
    }
}

//! The embedded backend: a Kafka-like log in one process, durable on local
//! disk. The default, so that `colloquy serve` needs no servers.
//!
//! Layout under the data directory:
//!
//! ```text
//! LOCK                                   flock'd while open
//! topics/<topic>/topic.json              {"partitions": N}
//! topics/<topic>/<partition>/<base>.log  segments (see the `log` module)
//! groups/<group>.json                    committed offsets
//! ```
//!
//! Durability: a publish is answered once its record is fdatasync'd (group
//! commit, see `writer`); a commit once the group file has been replaced
//! atomically (temp file, fsync, rename, directory fsync). On open every
//! segment is scanned to rebuild the index: a torn write at the very end is
//! cut off with a warning, any other damage is an error.
//!
//! Retention is "consumed": a segment is deleted once every group that
//! consumes the topic has committed past it. A topic nobody consumes (a
//! dead-letter topic) keeps everything, up to `max_backlog` records.
//! Memory: 4 bytes of index per retained record, plus the tail caches.

mod groups;
mod log;
mod writer;

pub use writer::WriteStats;

use crate::{partition_for, Bus, BusError, Record, RecordPosition};
use async_trait::async_trait;
use groups::Groups;
use log::{encoded_len, segment_path, Index, Partition, Segment};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot, watch};
use writer::{Active, Append, Limits, WriteCounters};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmbeddedConfig {
    /// A segment is closed and a new one begun once it would grow past this
    /// (at most 1 GiB). Retention deletes whole segments.
    pub segment_bytes: u64,
    /// Unconsumed records a topic may hold (over all partitions, counted from
    /// the slowest group); a publish beyond it fails with
    /// [`BusError::Full`].
    pub max_backlog: u64,
    /// Publishes of one topic waiting for its writer; beyond it a publish
    /// fails with [`BusError::Overloaded`].
    pub max_queued: usize,
    /// The largest record (key, headers and payload), at most 64 MiB.
    pub max_record_bytes: usize,
    /// Newest records kept in memory per partition for consumers that keep
    /// up; 0 turns the cache off.
    pub tail_cache_bytes: usize,
}

impl Default for EmbeddedConfig {
    fn default() -> Self {
        EmbeddedConfig {
            segment_bytes: 64 << 20,
            max_backlog: 1_000_000,
            max_queued: 8192,
            max_record_bytes: 1 << 20,
            tail_cache_bytes: 1 << 20,
        }
    }
}

impl EmbeddedConfig {
    /// What is wrong with these settings, if anything.
    pub(crate) fn problem(&self) -> Option<String> {
        let fits = (1..=1 << 30).contains(&self.segment_bytes)
            && (1..=colloquy_segments::MAX_BODY).contains(&self.max_record_bytes);
        (!fits).then(|| "segment_bytes must be 1..=1 GiB and max_record_bytes 1..=64 MiB".into())
    }
}

/// See the [module docs](self).
pub struct EmbeddedBus {
    dir: PathBuf,
    cfg: EmbeddedConfig,
    topics: RwLock<HashMap<String, Arc<Topic>>>,
    /// Serializes topic creation.
    creating: tokio::sync::Mutex<()>,
    /// Serializes floor updates and segment deletion: a floor computed from
    /// older commits must not overwrite a newer one, and deletions must stay
    /// oldest-first across commits.
    retention: tokio::sync::Mutex<()>,
    groups: Groups,
    counters: Arc<WriteCounters>,
    writers: Mutex<Vec<std::thread::JoinHandle<()>>>,
    /// Held (flock) while open; declared last so that it is released only
    /// after everything else is gone.
    _lock: File,
}

struct Topic {
    partitions: Vec<Arc<Partition>>,
    queue: mpsc::Sender<Append>,
    /// Publishes queued but not yet written: counted in the backlog.
    queued: Arc<AtomicU64>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TopicMeta {
    partitions: u32,
}

impl EmbeddedBus {
    /// Open (or create) the bus stored under `dir`. Only one process may
    /// have a directory open at a time.
    pub fn open(dir: &Path, cfg: EmbeddedConfig) -> Result<EmbeddedBus, BusError> {
        if let Some(problem) = cfg.problem() {
            return Err(BusError::Config(problem));
        }
        let topics_dir = dir.join("topics");
        std::fs::create_dir_all(&topics_dir)
            .map_err(BusError::io(format!("create {}", topics_dir.display())))?;
        let lock = colloquy_segments::lock_dir(dir, "LOCK")?;
        let groups = Groups::open(&dir.join("groups"))?;
        let bus = EmbeddedBus {
            dir: dir.to_path_buf(),
            cfg,
            topics: RwLock::new(HashMap::new()),
            creating: tokio::sync::Mutex::new(()),
            retention: tokio::sync::Mutex::new(()),
            groups,
            counters: Arc::default(),
            writers: Mutex::new(Vec::new()),
            _lock: lock,
        };
        let entries = std::fs::read_dir(&topics_dir)
            .map_err(BusError::io(format!("list {}", topics_dir.display())))?;
        for entry in entries {
            let path = entry
                .map_err(BusError::io(format!("list {}", topics_dir.display())))?
                .path();
            let meta_path = path.join("topic.json");
            // A topic whose creation a crash interrupted has no meta yet; a
            // later ensure_topic completes it.
            let Ok(meta) = std::fs::read(&meta_path) else {
                continue;
            };
            let meta: TopicMeta = serde_json::from_slice(&meta)
                .map_err(|e| BusError::Corrupt(format!("{}: {e}", meta_path.display())))?;
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_string();
            bus.load_topic(&name, meta.partitions)?;
        }
        Ok(bus)
    }

    /// Group-commit counters since open.
    pub fn write_stats(&self) -> WriteStats {
        self.counters.snapshot()
    }

    fn topic(&self, name: &str) -> Result<Arc<Topic>, BusError> {
        let topics = self.topics.read().expect("topics lock");
        topics
            .get(name)
            .cloned()
            .ok_or_else(|| BusError::UnknownTopic(name.to_string()))
    }

    fn partition(&self, topic: &str, partition: u32) -> Result<Arc<Partition>, BusError> {
        let t = self.topic(topic)?;
        let p = t.partitions.get(partition as usize).cloned();
        p.ok_or_else(|| BusError::UnknownPartition {
            topic: topic.to_string(),
            partition,
        })
    }

    /// Scan a topic's partitions, start its writer and make it visible.
    fn load_topic(&self, name: &str, partitions: u32) -> Result<(), BusError> {
        let topic_dir = self.dir.join("topics").join(name);
        let mut loaded = Vec::new();
        let mut actives = Vec::new();
        for id in 0..partitions {
            let (partition, active) =
                self.load_partition(name, id, topic_dir.join(id.to_string()))?;
            loaded.push(partition);
            actives.push(active);
        }
        // Commits never pass the end, so a group ahead of it means records
        // acknowledged to a publisher are gone.
        for offsets in self.groups.consumers_of(name) {
            for (&id, &offset) in &offsets {
                let end = loaded.get(id as usize).map_or(0, |p| *p.end.borrow());
                if offset > end {
                    return Err(BusError::Corrupt(format!(
                        "topic {name} partition {id} ends at {end} but a group committed {offset}"
                    )));
                }
            }
        }
        let (queue, receiver) = mpsc::channel(self.cfg.max_queued.max(1));
        let topic = Topic {
            partitions: loaded,
            queue,
            queued: Arc::default(),
        };
        self.update_floors(name, &topic.partitions);
        let limits = Limits {
            segment_bytes: self.cfg.segment_bytes,
            tail_cache_bytes: self.cfg.tail_cache_bytes,
        };
        let (queued, counters) = (Arc::clone(&topic.queued), Arc::clone(&self.counters));
        let thread = std::thread::Builder::new()
            .name(format!("bus-writer-{name}"))
            .spawn(move || writer::run(actives, receiver, queued, limits, counters))
            .map_err(BusError::io("start a writer thread"))?;
        self.writers.lock().expect("writers lock").push(thread);
        self.topics
            .write()
            .expect("topics lock")
            .insert(name.to_string(), Arc::new(topic));
        Ok(())
    }

    fn load_partition(
        &self,
        topic: &str,
        id: u32,
        dir: PathBuf,
    ) -> Result<(Arc<Partition>, Active), BusError> {
        let bases = log::list(&dir)?;
        if bases.is_empty() {
            return Err(BusError::Corrupt(format!("{}: no segments", dir.display())));
        }
        let mut segments = Vec::new();
        for (i, &base) in bases.iter().enumerate() {
            let path = segment_path(&dir, base);
            let last = i + 1 == bases.len();
            if let Some(prev) = segments
                .last()
                .map(|s: &Segment| s.base + s.positions.len() as u64)
            {
                if prev != base {
                    return Err(BusError::Corrupt(format!(
                        "{}: expected a segment at offset {prev}",
                        path.display()
                    )));
                }
            }
            let scanned = log::scan(&path, base, last)?;
            let file = File::options()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(BusError::io(format!("open {}", path.display())))?;
            segments.push(Segment {
                base,
                path,
                file: Arc::new(file),
                positions: scanned.positions,
                len: scanned.len,
            });
        }
        let last = segments.last().expect("at least one segment");
        let end = last.base + last.positions.len() as u64;
        let (file, base, len) = (Arc::clone(&last.file), last.base, last.len);
        let partition = Arc::new(Partition {
            topic: topic.to_string(),
            id,
            dir,
            index: RwLock::new(Index {
                segments,
                tail: VecDeque::new(),
                tail_bytes: 0,
            }),
            end: watch::Sender::new(end),
            floor: AtomicU64::new(0),
            failed: AtomicBool::new(false),
        });
        let active = Active::new(Arc::clone(&partition), file, base, len, end);
        Ok((partition, active))
    }

    /// Recompute where retention and the backlog start for each partition:
    /// the slowest consuming group's durable offset.
    fn update_floors(&self, topic: &str, partitions: &[Arc<Partition>]) {
        let consumers = self.groups.consumers_of(topic);
        for p in partitions {
            let start = p.start();
            let floor = consumers
                .iter()
                .map(|c| c.get(&p.id).copied().unwrap_or(start))
                .min()
                .unwrap_or(start);
            p.floor.store(floor.max(start), Ordering::Release);
        }
    }

    async fn create_topic(&self, name: &str, partitions: u32) -> Result<(), BusError> {
        let create_dir = self.dir.join("topics").join(name);
        tokio::task::spawn_blocking(move || -> Result<(), BusError> {
            for id in 0..partitions {
                let dir = create_dir.join(id.to_string());
                std::fs::create_dir_all(&dir)
                    .map_err(BusError::io(format!("create {}", dir.display())))?;
                let path = segment_path(&dir, 0);
                File::options()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .and_then(|f| f.sync_all())
                    .and_then(|()| sync_dir(&dir))
                    .map_err(BusError::io(format!("create {}", path.display())))?;
            }
            sync_dir(&create_dir)
                .map_err(BusError::io(format!("sync {}", create_dir.display())))?;
            // The meta file is written last: a topic exists once it does.
            let meta = serde_json::to_vec(&TopicMeta { partitions }).expect("meta serializes");
            write_atomically(&create_dir.join("topic.json"), &meta)?;
            let topics_dir = create_dir.parent().expect("topics dir");
            sync_dir(topics_dir).map_err(BusError::io(format!("sync {}", topics_dir.display())))
        })
        .await
        .map_err(|_| BusError::Closed)??;
        self.load_topic(name, partitions)
    }

    /// Unconsumed records of the topic, including those queued for writing.
    fn backlog(topic: &Topic) -> u64 {
        let stored: u64 = topic
            .partitions
            .iter()
            .map(|p| {
                p.end
                    .borrow()
                    .saturating_sub(p.floor.load(Ordering::Acquire))
            })
            .sum();
        stored + topic.queued.load(Ordering::Acquire)
    }
}

#[async_trait]
impl Bus for EmbeddedBus {
    async fn ensure_topic(&self, topic: &str, partitions: u32) -> Result<(), BusError> {
        check_name(topic)?;
        if partitions == 0 {
            return Err(BusError::Config(format!(
                "topic {topic} needs at least one partition"
            )));
        }
        let _creating = self.creating.lock().await;
        match self.topic(topic) {
            Ok(existing) if existing.partitions.len() as u32 == partitions => Ok(()),
            Ok(existing) => Err(BusError::PartitionMismatch {
                topic: topic.to_string(),
                existing: existing.partitions.len() as u32,
                requested: partitions,
            }),
            Err(_) => self.create_topic(topic, partitions).await,
        }
    }

    async fn partitions(&self, topic: &str) -> Result<u32, BusError> {
        Ok(self.topic(topic)?.partitions.len() as u32)
    }

    async fn publish(
        &self,
        topic: &str,
        key: &str,
        payload: Vec<u8>,
        headers: Vec<(String, String)>,
    ) -> Result<RecordPosition, BusError> {
        let size = encoded_len(key, &headers, &payload) - colloquy_segments::FRAME_HEADER;
        if size > self.cfg.max_record_bytes {
            return Err(BusError::RecordTooLarge {
                size,
                max: self.cfg.max_record_bytes,
            });
        }
        let t = self.topic(topic)?;
        let backlog = Self::backlog(&t);
        if backlog >= self.cfg.max_backlog {
            return Err(BusError::Full {
                topic: topic.to_string(),
                backlog,
            });
        }
        let partition = partition_for(key, t.partitions.len() as u32);
        let (reply, answer) = oneshot::channel();
        let timestamp_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let append = Append {
            partition,
            key: key.to_string(),
            payload,
            headers,
            timestamp_ms,
            reply,
        };
        t.queued.fetch_add(1, Ordering::AcqRel);
        if let Err(error) = t.queue.try_send(append) {
            t.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(match error {
                TrySendError::Full(_) => BusError::Overloaded {
                    topic: topic.to_string(),
                },
                TrySendError::Closed(_) => BusError::Closed,
            });
        }
        answer.await.map_err(|_| BusError::Closed)?
    }

    async fn fetch(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        max_records: usize,
        wait: Duration,
    ) -> Result<Vec<Record>, BusError> {
        let p = self.partition(topic, partition)?;
        let mut end = p.end.subscribe();
        let (start, current) = (p.start(), *end.borrow_and_update());
        if from < start || from > current {
            return Err(BusError::OffsetOutOfRange {
                topic: topic.to_string(),
                partition,
                offset: from,
                start,
                end: current,
            });
        }
        if max_records == 0 {
            return Ok(Vec::new());
        }
        let current = if from == current {
            match tokio::time::timeout(wait, end.wait_for(|&e| e > from)).await {
                Ok(Ok(end)) => *end,
                Ok(Err(_)) => return Err(BusError::Closed),
                Err(_) => return Ok(Vec::new()),
            }
        } else {
            current
        };
        // The writer adds a batch to the tail cache just before it moves the
        // end: never hand out more than the end seen here, or the caller's
        // next fetch would start past the end and be refused.
        let max_records = max_records.min(usize::try_from(current - from).unwrap_or(usize::MAX));
        p.read(from, max_records).await
    }

    async fn commit(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
        next_offset: u64,
    ) -> Result<(), BusError> {
        check_name(group)?;
        let p = self.partition(topic, partition)?;
        let end = *p.end.borrow();
        if next_offset > end {
            return Err(BusError::OffsetOutOfRange {
                topic: topic.to_string(),
                partition,
                offset: next_offset,
                start: p.start(),
                end,
            });
        }
        self.groups
            .commit(group, topic, partition, next_offset)
            .await?;
        // Every partition: the write may have carried other commits of the
        // group, and a group's first commit lowers the floors it joins.
        let _retention = self.retention.lock().await;
        let partitions = self.topic(topic)?.partitions.clone();
        self.update_floors(topic, &partitions);
        for p in partitions {
            let consumed = p.release_consumed();
            if !consumed.is_empty() {
                let dir = p.dir.clone();
                tokio::task::spawn_blocking(move || delete_segments(&dir, &consumed))
                    .await
                    .map_err(|_| BusError::Closed)??;
            }
        }
        Ok(())
    }

    async fn committed(&self, group: &str, topic: &str, partition: u32) -> Result<u64, BusError> {
        let start = self.partition(topic, partition)?.start();
        Ok(self
            .groups
            .committed(group, topic, partition)
            .map_or(start, |c| c.max(start)))
    }

    async fn end_offset(&self, topic: &str, partition: u32) -> Result<u64, BusError> {
        Ok(*self.partition(topic, partition)?.end.borrow())
    }
}

impl Drop for EmbeddedBus {
    /// Stops the writer threads: dropping the topics closes their queues,
    /// and each thread finishes the batch at hand. Joined here so that the
    /// directory can be reopened as soon as the bus is gone.
    fn drop(&mut self) {
        self.topics.write().expect("topics lock").clear();
        for thread in self.writers.lock().expect("writers lock").drain(..) {
            let _ = thread.join();
        }
    }
}

/// Topic and group names become file names: Kafka's rules keep them safe
/// (and the Kafka backend checks topics by the same rules, before a broker
/// does).
pub(crate) fn check_name(name: &str) -> Result<(), BusError> {
    let reason = if name.is_empty() || name.len() > 249 {
        "must be 1 to 249 characters"
    } else if name == "." || name == ".." {
        "must not be . or .."
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        "may only hold ASCII letters, digits, '.', '_' and '-'"
    } else {
        return Ok(());
    };
    Err(BusError::InvalidName {
        name: name.to_string(),
        reason,
    })
}

/// Oldest first, each deletion made durable before the next, so that a
/// crash never leaves a gap in a partition's segments.
fn delete_segments(dir: &Path, paths: &[PathBuf]) -> Result<(), BusError> {
    for path in paths {
        std::fs::remove_file(path)
            .and_then(|()| sync_dir(dir))
            .map_err(BusError::io(format!("delete {}", path.display())))?;
    }
    Ok(())
}

pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Replace `path` with `data` so that a crash leaves either the old or the
/// new content, durably.
pub(crate) fn write_atomically(path: &Path, data: &[u8]) -> Result<(), BusError> {
    let tmp = path.with_extension("tmp");
    let dir = path.parent().expect("a file in a directory");
    std::fs::write(&tmp, data)
        .and_then(|()| File::open(&tmp)?.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path))
        .and_then(|()| sync_dir(dir))
        .map_err(BusError::io(format!("write {}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The writer puts a durable batch into the tail cache just before it
    /// moves the end offset. A fetch in between must stop at the end it saw:
    /// handing out the newer records made the caller's next fetch start past
    /// the end and fail (the stage then paused for 2 s).
    #[tokio::test]
    async fn a_fetch_stops_at_the_end_it_saw() {
        let dir = tempfile::tempdir().unwrap();
        let bus = EmbeddedBus::open(dir.path(), EmbeddedConfig::default()).unwrap();
        bus.ensure_topic("t", 1).await.unwrap();
        bus.publish("t", "k", b"0".to_vec(), vec![]).await.unwrap();
        let p = bus.partition("t", 0).unwrap();
        // The writer's window: record 1 in the tail, the end still at 1.
        let mut early = p.index.read().unwrap().tail[0].clone();
        early.offset = 1;
        p.index.write().unwrap().tail.push_back(early);
        let records = bus
            .fetch("t", 0, 0, 10, Duration::from_millis(10))
            .await
            .unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].offset, 0);
    }
}

//! The Kafka backend: [`Bus`] on a Kafka-compatible cluster through
//! librdkafka (bundled and built from source: Debian's older library fails
//! the handshake with some brokers).
//!
//! How the trait maps onto Kafka:
//! - A publish picks its partition itself with [`partition_for`], so a key
//!   lands where the embedded bus (and Java's default partitioner) puts it,
//!   and is answered only once the broker acknowledged it with `acks=all`.
//!   The producer is idempotent, so librdkafka's own retries never store a
//!   record twice.
//! - [`Bus::fetch`] reads through one consumer per partition, positioned with
//!   `assign()` and left where the last fetch stopped, so the runner's
//!   sequential fetches never seek. Partitions are handed out by the caller
//!   (a consistent-hash ring), never by `subscribe()`: the broker's group
//!   protocol, slow to rebalance, is not used at all.
//! - A group is only its committed offsets: one consumer per group, never
//!   assigned anything, commits explicit offsets synchronously. Nothing is
//!   committed or stored automatically; a consumer that does so commits
//!   records it prefetched but nobody handled when it is dropped.
//!
//! Each librdkafka client runs a few threads: this bus holds one producer,
//! one admin client, one consumer per partition it has fetched from and one
//! per group it has committed for, for as long as it lives.

mod errors;
mod reader;
#[cfg(feature = "conformance")]
pub mod testing;

use crate::embedded::check_name;
// Re-exported where it was defined before it moved out of this module, so
// that `colloquy_bus::kafka::KafkaConfig` keeps working.
pub use crate::config::KafkaConfig;
use crate::{partition_for, Bus, BusError, Record, RecordPosition};
use async_trait::async_trait;
use errors::{kafka_error, kind_of};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use reader::Reader;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

impl KafkaConfig {
    /// A client configuration: ours, then `settings`, then the operator's
    /// `properties` on top.
    fn client(&self, settings: &[(&str, &str)]) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", self.brokers.join(","))
            .set("client.id", &self.client_id)
            // Without this the admin client and producer ask the broker to
            // create any topic they look up, so a typo would make a topic.
            .set("allow.auto.create.topics", "false")
            // rdkafka derives the level from the `log` crate, which nothing
            // here configures; warnings and errors reach `tracing` instead.
            .set_log_level(RDKafkaLogLevel::Warning);
        for (key, value) in settings {
            config.set(*key, *value);
        }
        for (key, value) in &self.properties {
            config.set(key, value);
        }
        config
    }
}

/// Sends librdkafka's logs and client errors to `tracing`, with the rest of
/// colloquy's logs.
#[derive(Clone, Copy, Default)]
pub(crate) struct Logs;

impl ClientContext for Logs {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(target: "librdkafka", facility, "{message}")
            }
            RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", facility, "{message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", facility, "{message}")
            }
            RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", facility, "{message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(target: "librdkafka", %error, reason, "Kafka client error");
    }
}

impl ConsumerContext for Logs {}

/// How far a group is behind on one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionLag {
    pub partition: u32,
    /// The group's committed offset, or the oldest retained one if it never
    /// committed.
    pub committed: u64,
    pub end: u64,
}

impl PartitionLag {
    /// Records published and not committed.
    pub fn lag(&self) -> u64 {
        self.end.saturating_sub(self.committed)
    }
}

type Admin = AdminClient<Logs>;
type GroupConsumer = BaseConsumer<Logs>;

/// A group's committed offset of one partition as this bus last saw it:
/// `None` until read from the broker, then `Some(None)` if the group never
/// committed there.
type CommitSlot = Arc<tokio::sync::Mutex<Option<Option<u64>>>>;

/// A partition's reader; the lock makes fetches of one partition take
/// turns, since the consumer's position is shared.
type SharedReader = Arc<tokio::sync::Mutex<Reader>>;

/// See the [module docs](self).
pub struct KafkaBus {
    cfg: KafkaConfig,
    timeout: Duration,
    idle_reader: Duration,
    producer: FutureProducer<Logs>,
    admin: Arc<Admin>,
    /// Partition counts never change (see [`Bus::ensure_topic`]), so they are
    /// looked up once per topic.
    partitions: RwLock<HashMap<String, u32>>,
    /// The highest end offset seen per partition (from acknowledgements,
    /// fetched records and watermark queries): a fetch below it knows records
    /// are there to wait for, a commit at or below it needs no query.
    ends: Mutex<HashMap<(String, u32), u64>>,
    readers: Mutex<HashMap<(String, u32), SharedReader>>,
    /// When idle readers were last looked for.
    last_sweep: Mutex<Instant>,
    groups: Mutex<HashMap<String, Arc<GroupConsumer>>>,
    /// Keyed by (group, topic, partition); the lock also keeps two commits of
    /// one partition from racing past each other.
    commits: Mutex<HashMap<(String, String, u32), CommitSlot>>,
}

impl KafkaBus {
    /// Clients are created at once, connections on first use: an
    /// unreachable cluster shows as transient errors, not here.
    pub fn new(cfg: KafkaConfig) -> Result<KafkaBus, BusError> {
        if let Some(problem) = cfg.problem() {
            return Err(BusError::Config(problem));
        }
        let delivery_timeout = cfg.delivery_timeout_ms.to_string();
        let producer = cfg
            .client(&[
                ("enable.idempotence", "true"),
                ("acks", "all"),
                ("message.timeout.ms", &delivery_timeout),
            ])
            .create_with_context(Logs)
            .map_err(|e| kafka_error("create the Kafka producer", e))?;
        let admin = cfg
            .client(&[])
            .create_with_context(Logs)
            .map_err(|e| kafka_error("create the Kafka admin client", e))?;
        Ok(KafkaBus {
            timeout: Duration::from_millis(cfg.request_timeout_ms),
            idle_reader: Duration::from_millis(cfg.idle_reader_ms),
            cfg,
            producer,
            admin: Arc::new(admin),
            partitions: RwLock::default(),
            ends: Mutex::default(),
            readers: Mutex::default(),
            last_sweep: Mutex::new(Instant::now()),
            groups: Mutex::default(),
            commits: Mutex::default(),
        })
    }

    pub fn config(&self) -> &KafkaConfig {
        &self.cfg
    }

    /// The producer's bound on a record, `message.max.bytes` (librdkafka's
    /// default unless set in `properties`).
    fn max_record_bytes(&self) -> usize {
        self.cfg
            .properties
            .get("message.max.bytes")
            .and_then(|max| max.parse().ok())
            .unwrap_or(1_000_000)
    }

    /// Partition consumers open for fetching (a gauge: each holds its
    /// prefetch and a few librdkafka threads).
    pub fn open_readers(&self) -> usize {
        self.readers.lock().expect("readers lock").len()
    }

    /// Per partition of `topic`, how far `group` is behind: for a lag
    /// metric per partition (one offset request, plus one watermark request
    /// per partition).
    pub async fn partition_lag(
        &self,
        group: &str,
        topic: &str,
    ) -> Result<Vec<PartitionLag>, BusError> {
        let count = self.partition_count(topic).await?;
        let consumer = self.group_consumer(group)?;
        let (admin, timeout, name) = (Arc::clone(&self.admin), self.timeout, topic.to_string());
        let lags = blocking(move || {
            serve_events(&consumer);
            let mut tpl = TopicPartitionList::with_capacity(count as usize);
            for partition in 0..count {
                tpl.add_partition(&name, partition as i32);
            }
            let committed = consumer
                .committed_offsets(tpl, timeout)
                .map_err(|e| kafka_error(format!("read the offsets of {name}"), e))?;
            (0..count)
                .map(|partition| {
                    let (low, end) = watermarks(&admin, &name, partition, timeout)?;
                    let offset = committed
                        .find_partition(&name, partition as i32)
                        .and_then(|e| offset_of(e.offset()));
                    Ok(PartitionLag {
                        partition,
                        committed: offset.unwrap_or(low),
                        end,
                    })
                })
                .collect::<Result<Vec<_>, BusError>>()
        })
        .await??;
        Ok(lags
            .into_iter()
            .map(|lag| PartitionLag {
                end: self.saw_end(topic, lag.partition, lag.end),
                ..lag
            })
            .collect())
    }

    /// The partition count, from the cache or the broker's metadata.
    async fn partition_count(&self, topic: &str) -> Result<u32, BusError> {
        if let Some(&count) = self.partitions.read().expect("partitions lock").get(topic) {
            return Ok(count);
        }
        let count = self
            .metadata_partitions(topic)
            .await?
            .ok_or_else(|| BusError::UnknownTopic(topic.to_string()))?;
        self.partitions
            .write()
            .expect("partitions lock")
            .insert(topic.to_string(), count);
        Ok(count)
    }

    /// The partition count in the broker's metadata, `None` for no topic.
    async fn metadata_partitions(&self, topic: &str) -> Result<Option<u32>, BusError> {
        let (admin, timeout, name) = (Arc::clone(&self.admin), self.timeout, topic.to_string());
        blocking(move || {
            let metadata = admin
                .inner()
                .fetch_metadata(Some(&name), timeout)
                .map_err(|e| kafka_error(format!("look up topic {name}"), e))?;
            let Some(found) = metadata.topics().iter().find(|t| t.name() == name) else {
                return Ok(None);
            };
            match found.error() {
                None => Ok(Some(found.partitions().len() as u32)),
                Some(code) => match RDKafkaErrorCode::from(code) {
                    RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic => {
                        Ok(None)
                    }
                    code => Err(kafka_error(
                        format!("look up topic {name}"),
                        KafkaError::MetadataFetch(code),
                    )),
                },
            }
        })
        .await?
    }

    async fn check_partition(&self, topic: &str, partition: u32) -> Result<(), BusError> {
        if partition < self.partition_count(topic).await? {
            Ok(())
        } else {
            Err(BusError::UnknownPartition {
                topic: topic.to_string(),
                partition,
            })
        }
    }

    /// The partition's oldest retained offset and its end, from the broker.
    async fn watermarks(&self, topic: &str, partition: u32) -> Result<(u64, u64), BusError> {
        let (admin, timeout, name) = (Arc::clone(&self.admin), self.timeout, topic.to_string());
        let (low, end) = blocking(move || watermarks(&admin, &name, partition, timeout)).await??;
        Ok((low, self.saw_end(topic, partition, end)))
    }

    /// Note an end offset and return the highest one known. Ends only grow,
    /// so a watermark lower than an offset this bus was acknowledged is
    /// stale; tansu 0.6, for one, reports the base offset of the last batch
    /// plus one, not its last offset plus one.
    fn saw_end(&self, topic: &str, partition: u32, end: u64) -> u64 {
        let mut ends = self.ends.lock().expect("ends lock");
        let known = ends.entry((topic.to_string(), partition)).or_default();
        *known = (*known).max(end);
        *known
    }

    fn known_end(&self, topic: &str, partition: u32) -> u64 {
        let ends = self.ends.lock().expect("ends lock");
        ends.get(&(topic.to_string(), partition))
            .copied()
            .unwrap_or(0)
    }

    fn reader(&self, topic: &str, partition: u32) -> Result<SharedReader, BusError> {
        let mut readers = self.readers.lock().expect("readers lock");
        self.close_idle_readers(&mut readers);
        if let Some(reader) = readers.get(&(topic.to_string(), partition)) {
            return Ok(Arc::clone(reader));
        }
        let reader = Arc::new(tokio::sync::Mutex::new(Reader::new(&self.cfg)?));
        readers.insert((topic.to_string(), partition), Arc::clone(&reader));
        Ok(reader)
    }

    /// Close the readers of partitions nobody fetched from for
    /// `idle_reader_ms`: the partition went to another process or its stage
    /// stopped, and the consumer would go on holding its prefetch and
    /// threads. Checked at most twice per idle period.
    fn close_idle_readers(&self, readers: &mut HashMap<(String, u32), SharedReader>) {
        let now = Instant::now();
        {
            let mut last = self.last_sweep.lock().expect("sweep lock");
            if now.duration_since(*last) < self.idle_reader / 2 {
                return;
            }
            *last = now;
        }
        // A reader locked is in use; one that is not may still be about to
        // be (a fetch holding it before locking): that fetch then reads on
        // through the closed-over consumer and the next one opens anew.
        let idle: Vec<_> = readers
            .iter()
            .filter(|(_, reader)| {
                reader
                    .try_lock()
                    .is_ok_and(|r| now.duration_since(r.last_used()) >= self.idle_reader)
            })
            .map(|(key, _)| key.clone())
            .collect();
        let closed: Vec<_> = idle.iter().filter_map(|key| readers.remove(key)).collect();
        if !closed.is_empty() {
            tracing::debug!(readers = closed.len(), "closing idle Kafka readers");
            // Closing a consumer waits for librdkafka's threads to stop.
            tokio::task::spawn_blocking(move || drop(closed));
        }
    }

    fn group_consumer(&self, group: &str) -> Result<Arc<GroupConsumer>, BusError> {
        let mut groups = self.groups.lock().expect("groups lock");
        if let Some(consumer) = groups.get(group) {
            return Ok(Arc::clone(consumer));
        }
        let consumer: GroupConsumer = self
            .cfg
            .client(&[
                ("group.id", group),
                ("enable.auto.commit", "false"),
                ("enable.auto.offset.store", "false"),
            ])
            .create_with_context(Logs)
            .map_err(|e| kafka_error(format!("create the consumer of group {group}"), e))?;
        let consumer = Arc::new(consumer);
        groups.insert(group.to_string(), Arc::clone(&consumer));
        Ok(consumer)
    }

    fn commit_slot(&self, group: &str, topic: &str, partition: u32) -> CommitSlot {
        let mut commits = self.commits.lock().expect("commits lock");
        let key = (group.to_string(), topic.to_string(), partition);
        Arc::clone(commits.entry(key).or_default())
    }

    /// The group's committed offset from the broker; `None` if it never
    /// committed on this partition.
    async fn read_committed(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
    ) -> Result<Option<u64>, BusError> {
        let consumer = self.group_consumer(group)?;
        let (timeout, name) = (self.timeout, topic.to_string());
        let context = format!("read the offset of group {group} on {topic}/{partition}");
        blocking(move || {
            serve_events(&consumer);
            let mut tpl = TopicPartitionList::with_capacity(1);
            tpl.add_partition(&name, partition as i32);
            let committed = consumer
                .committed_offsets(tpl, timeout)
                .map_err(|e| kafka_error(context.clone(), e))?;
            let element = committed
                .find_partition(&name, partition as i32)
                .ok_or_else(|| BusError::UnknownPartition {
                    topic: name.clone(),
                    partition,
                })?;
            element.error().map_err(|e| kafka_error(context, e))?;
            Ok(offset_of(element.offset()))
        })
        .await?
    }
}

#[async_trait]
impl Bus for KafkaBus {
    async fn ensure_topic(&self, topic: &str, partitions: u32) -> Result<(), BusError> {
        check_name(topic)?;
        if partitions == 0 {
            return Err(BusError::Config(format!(
                "topic {topic} needs at least one partition"
            )));
        }
        let existing = match self.partition_count(topic).await {
            Ok(count) => count,
            Err(BusError::UnknownTopic(_)) => self.create_topic(topic, partitions).await?,
            Err(e) => return Err(e),
        };
        if existing == partitions {
            Ok(())
        } else {
            Err(BusError::PartitionMismatch {
                topic: topic.to_string(),
                existing,
                requested: partitions,
            })
        }
    }

    async fn partitions(&self, topic: &str) -> Result<u32, BusError> {
        self.partition_count(topic).await
    }

    async fn publish(
        &self,
        topic: &str,
        key: &str,
        payload: Vec<u8>,
        headers: Vec<(String, String)>,
    ) -> Result<RecordPosition, BusError> {
        let partition = partition_for(key, self.partition_count(topic).await?);
        let mut kafka_headers = OwnedHeaders::new_with_capacity(headers.len());
        for (name, value) in &headers {
            kafka_headers = kafka_headers.insert(Header {
                key: name,
                value: Some(value.as_str()),
            });
        }
        let record = FutureRecord::to(topic)
            .key(key)
            .payload(&payload)
            .partition(partition as i32)
            .headers(kafka_headers);
        // `send_result` fails at once when librdkafka's queue is full, where
        // `send` would wait: a full queue is the caller's cue to back off.
        let delivery = match self.producer.send_result(record) {
            Ok(delivery) => delivery,
            Err((e, _)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) => {
                return Err(BusError::Overloaded {
                    topic: topic.to_string(),
                });
            }
            Err((e, _))
                if e.rdkafka_error_code() == Some(RDKafkaErrorCode::MessageSizeTooLarge) =>
            {
                return Err(BusError::RecordTooLarge {
                    size: key.len()
                        + payload.len()
                        + headers
                            .iter()
                            .map(|(k, v)| k.len() + v.len())
                            .sum::<usize>(),
                    max: self.max_record_bytes(),
                });
            }
            Err((e, _)) => return Err(kafka_error(format!("publish to {topic}"), e)),
        };
        match delivery.await {
            Ok(Ok(delivered)) => {
                let offset = delivered.offset as u64;
                self.saw_end(topic, partition, offset + 1);
                Ok(RecordPosition { partition, offset })
            }
            Ok(Err((e, _))) => Err(kafka_error(format!("publish to {topic}/{partition}"), e)),
            // The producer went away with the record in its queue.
            Err(_) => Err(BusError::Closed),
        }
    }

    async fn fetch(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        max_records: usize,
        wait: Duration,
    ) -> Result<Vec<Record>, BusError> {
        self.check_partition(topic, partition).await?;
        let reader = self.reader(topic, partition)?;
        // One fetch per partition at a time: the consumer's position is
        // shared state. A fetch dropped half-way leaves the position at what
        // it took, and the next fetch repositions if it asks for less.
        let mut reader = reader.lock().await;
        if reader.position() != Some(from) {
            let (start, end) = self.watermarks(topic, partition).await?;
            if from < start || from > end {
                return Err(BusError::OffsetOutOfRange {
                    topic: topic.to_string(),
                    partition,
                    offset: from,
                    start,
                    end,
                });
            }
            reader.assign(topic, partition, from)?;
        }
        // Records known to be there are on their way: wait for them even if
        // the caller would not wait for new ones.
        let wait = if from < self.known_end(topic, partition) {
            wait.max(self.timeout)
        } else {
            wait
        };
        let records = reader
            .read(topic, partition, max_records, Instant::now() + wait)
            .await?;
        if let Some(last) = records.last() {
            self.saw_end(topic, partition, last.offset + 1);
        }
        Ok(records)
    }

    async fn commit(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
        next_offset: u64,
    ) -> Result<(), BusError> {
        check_name(group)?;
        self.check_partition(topic, partition).await?;
        let slot = self.commit_slot(group, topic, partition);
        let mut slot = slot.lock().await;
        let committed = match *slot {
            Some(committed) => committed,
            None => self.read_committed(group, topic, partition).await?,
        };
        *slot = Some(committed);
        if committed.is_some_and(|c| next_offset <= c) {
            return Ok(());
        }
        if next_offset > self.known_end(topic, partition) {
            let (start, end) = self.watermarks(topic, partition).await?;
            if next_offset > end {
                return Err(BusError::OffsetOutOfRange {
                    topic: topic.to_string(),
                    partition,
                    offset: next_offset,
                    start,
                    end,
                });
            }
        }
        let consumer = self.group_consumer(group)?;
        let name = topic.to_string();
        let context = format!("commit group {group} on {topic}/{partition}");
        blocking(move || {
            serve_events(&consumer);
            let mut tpl = TopicPartitionList::with_capacity(1);
            tpl.add_partition_offset(&name, partition as i32, Offset::Offset(next_offset as i64))
                .map_err(|e| kafka_error(context.clone(), e))?;
            consumer
                .commit(&tpl, CommitMode::Sync)
                .map_err(|e| kafka_error(context, e))
        })
        .await??;
        *slot = Some(Some(next_offset));
        Ok(())
    }

    async fn committed(&self, group: &str, topic: &str, partition: u32) -> Result<u64, BusError> {
        check_name(group)?;
        self.check_partition(topic, partition).await?;
        let slot = self.commit_slot(group, topic, partition);
        let mut slot = slot.lock().await;
        // Always from the broker: another process may have committed since
        // (the partition was elsewhere on the ring), and the cached value
        // guarding monotonic commits must not lag behind it.
        let committed = self.read_committed(group, topic, partition).await?;
        *slot = Some(committed);
        match committed {
            Some(offset) => Ok(offset),
            None => Ok(self.watermarks(topic, partition).await?.0),
        }
    }

    async fn end_offset(&self, topic: &str, partition: u32) -> Result<u64, BusError> {
        self.check_partition(topic, partition).await?;
        Ok(self.watermarks(topic, partition).await?.1)
    }

    async fn lag(&self, group: &str, topic: &str) -> Result<u64, BusError> {
        let lags = self.partition_lag(group, topic).await?;
        Ok(lags.iter().map(PartitionLag::lag).sum())
    }
}

impl KafkaBus {
    /// Create the topic and return its partition count as the broker then
    /// reports it (another process may have created it first, differently).
    async fn create_topic(&self, topic: &str, partitions: u32) -> Result<u32, BusError> {
        let replication = self.cfg.replication_factor.map_or(-1, i32::from);
        let mut new_topic = NewTopic::new(
            topic,
            partitions as i32,
            TopicReplication::Fixed(replication),
        );
        for (key, value) in &self.cfg.topic_config {
            new_topic = new_topic.set(key, value);
        }
        let options = AdminOptions::new()
            .operation_timeout(Some(self.timeout))
            .request_timeout(Some(self.timeout));
        let context = format!("create topic {topic}");
        let results = self
            .admin
            .create_topics([&new_topic], &options)
            .await
            .map_err(|e| kafka_error(context.clone(), e))?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((_, code)) => {
                    return Err(BusError::Kafka {
                        context,
                        kind: kind_of(code),
                        source: KafkaError::AdminOp(code),
                    })
                }
            }
        }
        // Metadata may trail the creation briefly.
        let deadline = Instant::now() + self.timeout;
        loop {
            if let Some(count) = self.metadata_partitions(topic).await? {
                self.partitions
                    .write()
                    .expect("partitions lock")
                    .insert(topic.to_string(), count);
                return Ok(count);
            }
            if Instant::now() >= deadline {
                return Err(BusError::Kafka {
                    context: format!("topic {topic} was created but is not in the metadata"),
                    kind: crate::ErrorKind::Transient,
                    source: KafkaError::MetadataFetch(RDKafkaErrorCode::UnknownTopicOrPartition),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Run a blocking librdkafka call off the async threads.
async fn blocking<T: Send + 'static>(
    call: impl FnOnce() -> T + Send + 'static,
) -> Result<T, BusError> {
    match tokio::task::spawn_blocking(call).await {
        Ok(value) => Ok(value),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // The runtime is shutting down.
        Err(_) => Err(BusError::Closed),
    }
}

fn watermarks(
    admin: &Admin,
    topic: &str,
    partition: u32,
    timeout: Duration,
) -> Result<(u64, u64), BusError> {
    let (low, high) = admin
        .inner()
        .fetch_watermarks(topic, partition as i32, timeout)
        .map_err(|e| kafka_error(format!("read the offsets of {topic}/{partition}"), e))?;
    Ok((low.max(0) as u64, high.max(0) as u64))
}

fn offset_of(offset: Offset) -> Option<u64> {
    match offset {
        Offset::Offset(n) if n >= 0 => Some(n as u64),
        _ => None,
    }
}

/// A group consumer is never assigned anything, so its queue only gathers
/// client events (errors); poll them out so they do not pile up. They were
/// logged through [`Logs`] already.
fn serve_events(consumer: &GroupConsumer) {
    while let Some(event) = consumer.poll(Duration::ZERO) {
        if let Err(error) = event {
            tracing::debug!(%error, "group consumer event");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_config_makes_no_bus() {
        let no_brokers = KafkaConfig {
            brokers: vec![],
            ..KafkaConfig::default()
        };
        assert!(matches!(
            KafkaBus::new(no_brokers),
            Err(BusError::Config(_))
        ));
    }

    #[test]
    fn lag_never_goes_negative() {
        let lag = PartitionLag {
            partition: 0,
            committed: 7,
            end: 5,
        };
        assert_eq!(lag.lag(), 0);
    }
}

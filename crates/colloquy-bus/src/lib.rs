//! colloquy-bus: the message bus between pipeline stages (gateway → nlu →
//! policy → replies).
//!
//! [`Bus`] is the contract every backend meets. It is shaped after Kafka on
//! purpose, so that the embedded backend (one process, durable on local
//! disk, the default) and a Kafka backend are interchangeable and tests on
//! either mean the same: topics of N partitions, a record's key picks its
//! partition by [`partition_for`], offsets per partition, consumer groups
//! whose committed offsets say where to resume, and redelivery of whatever
//! was not committed. The `conformance` feature holds the one test suite
//! every backend must pass.
//!
//! Backends: [`embedded`] (the default) and `kafka`, behind the cargo
//! feature of that name (on by default). [`BusConfig`] is the `[bus]`
//! section of colloquy's config file and [`open()`] makes the bus it names.
//!
//! [`runner`] turns a topic into a stage: it consumes as a group, runs a
//! [`runner::Handler`] per record (per-key order, bounded concurrency,
//! retries, dead-lettering) and commits what is done. It only uses the
//! trait, so it runs on any backend.
//!
//! [`trace`] carries a turn's trace context in record headers: publishers
//! inject it, the runner's per-record `consume` span continues from it.
//!
//! This crate must not know about dialogue (no dependency on colloquy-core):
//! payloads are opaque bytes, keys are opaque strings.

mod config;
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod embedded;
mod error;
#[cfg(feature = "kafka")]
pub mod kafka;
mod partitioner;
pub mod ring;
pub mod runner;
pub mod sealed;
pub mod trace;

pub use config::{open, BusBackend, BusConfig, KafkaConfig};
pub use embedded::{EmbeddedBus, EmbeddedConfig};
pub use error::{BusError, ErrorKind};
#[cfg(feature = "kafka")]
pub use kafka::{KafkaBus, PartitionLag};
pub use partitioner::{murmur2, partition_for};
pub use sealed::{PayloadCipher, SealedBus};

use async_trait::async_trait;
use std::time::Duration;

/// Where a published record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RecordPosition {
    pub partition: u32,
    pub offset: u64,
}

/// A record as consumers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
    pub key: String,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, String)>,
    /// Milliseconds since the Unix epoch, stamped by the bus at publish.
    pub timestamp_ms: i64,
}

impl Record {
    /// The value of the first header named `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A partitioned, durable log with consumer groups.
///
/// Offsets count records from 0 within each partition. A consumer group's
/// committed offset is the offset of the next record it wants: everything
/// below it is done and may be deleted once every group is past it.
/// Delivery is at-least-once: whatever a group has not committed is fetched
/// again after a restart, so consumers must be idempotent.
#[async_trait]
pub trait Bus: Send + Sync {
    /// Create `topic` with `partitions` partitions, or check that it already
    /// has that many. Changing a topic's partition count would move keys to
    /// other partitions and break per-key order, so a mismatch is an error.
    async fn ensure_topic(&self, topic: &str, partitions: u32) -> Result<(), BusError>;

    /// The number of partitions of `topic`.
    async fn partitions(&self, topic: &str) -> Result<u32, BusError>;

    /// Append a record to the partition [`partition_for`] picks for `key`.
    /// `Ok` means the record is durable. Fails with [`BusError::Full`] while
    /// the topic's unconsumed backlog is at its bound, and with
    /// [`BusError::Overloaded`] while too many publishes wait to be written:
    /// both say "retry later", neither has stored anything.
    async fn publish(
        &self,
        topic: &str,
        key: &str,
        payload: Vec<u8>,
        headers: Vec<(String, String)>,
    ) -> Result<RecordPosition, BusError>;

    /// Up to `max_records` records of one partition from offset `from` on,
    /// in offset order. If there are none yet, waits up to `wait` for one to
    /// be published and returns an empty list if none came (long poll).
    /// `from` may be anything from the partition's oldest retained offset up
    /// to its end offset.
    async fn fetch(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        max_records: usize,
        wait: Duration,
    ) -> Result<Vec<Record>, BusError>;

    /// Durably record that `group` is done with every record of the
    /// partition below `next_offset`. Commits never move backwards: an
    /// offset below the committed one is accepted and ignored.
    async fn commit(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
        next_offset: u64,
    ) -> Result<(), BusError>;

    /// The group's committed offset for the partition; for a group that
    /// never committed there, the partition's oldest retained offset (the
    /// group starts from the beginning).
    async fn committed(&self, group: &str, topic: &str, partition: u32) -> Result<u64, BusError>;

    /// The offset the next record published to the partition will get.
    async fn end_offset(&self, topic: &str, partition: u32) -> Result<u64, BusError>;

    /// Records of `topic` the group has not committed yet, over all
    /// partitions: the queue depth of a stage.
    async fn lag(&self, group: &str, topic: &str) -> Result<u64, BusError> {
        let mut lag = 0;
        for partition in 0..self.partitions(topic).await? {
            let end = self.end_offset(topic, partition).await?;
            lag += end.saturating_sub(self.committed(group, topic, partition).await?);
        }
        Ok(lag)
    }
}

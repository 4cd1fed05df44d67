//! A bus whose records are sealed: [`SealedBus`] seals every payload it
//! publishes and opens every payload it fetches, over any backend, with a
//! [`PayloadCipher`] the caller provides (the bus knows nothing of keys or
//! of what payloads hold). Stage messages carry user text, which the
//! gateway cannot yet tell personal or not, so every record is sealed: no
//! record on disk or in a Kafka topic holds a message in the clear.
//! Headers and keys (user ids) stay readable, as routing needs them.

use crate::{Bus, BusError, Record, RecordPosition};
use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;

/// Seals and opens payloads, bound to the record's key.
pub trait PayloadCipher: Send + Sync {
    fn seal(&self, key: &str, payload: &[u8]) -> Vec<u8>;

    /// The payload `seal` sealed; `Ok(None)` when `payload` was not sealed
    /// at all (a record published before sealing was on).
    fn open(&self, key: &str, payload: &[u8]) -> Result<Option<Vec<u8>>, String>;
}

pub struct SealedBus {
    inner: Arc<dyn Bus>,
    cipher: Arc<dyn PayloadCipher>,
}

impl SealedBus {
    pub fn new(inner: Arc<dyn Bus>, cipher: Arc<dyn PayloadCipher>) -> SealedBus {
        SealedBus { inner, cipher }
    }
}

#[async_trait]
impl Bus for SealedBus {
    async fn ensure_topic(&self, topic: &str, partitions: u32) -> Result<(), BusError> {
        self.inner.ensure_topic(topic, partitions).await
    }

    async fn partitions(&self, topic: &str) -> Result<u32, BusError> {
        self.inner.partitions(topic).await
    }

    async fn publish(
        &self,
        topic: &str,
        key: &str,
        payload: Vec<u8>,
        headers: Vec<(String, String)>,
    ) -> Result<RecordPosition, BusError> {
        let sealed = self.cipher.seal(key, &payload);
        self.inner.publish(topic, key, sealed, headers).await
    }

    async fn fetch(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        max_records: usize,
        wait: Duration,
    ) -> Result<Vec<Record>, BusError> {
        let mut records = self
            .inner
            .fetch(topic, partition, from, max_records, wait)
            .await?;
        for r in &mut records {
            match self.cipher.open(&r.key, &r.payload) {
                Ok(Some(clear)) => r.payload = clear,
                Ok(None) => {}
                // Left sealed: the handler cannot read it and dead-letters
                // it, so it is kept (still sealed) rather than lost, and
                // the partition goes on.
                Err(e) => tracing::warn!(
                    topic,
                    partition,
                    offset = r.offset,
                    error = %e,
                    "a record does not open"
                ),
            }
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
        self.inner
            .commit(group, topic, partition, next_offset)
            .await
    }

    async fn committed(&self, group: &str, topic: &str, partition: u32) -> Result<u64, BusError> {
        self.inner.committed(group, topic, partition).await
    }

    async fn end_offset(&self, topic: &str, partition: u32) -> Result<u64, BusError> {
        self.inner.end_offset(topic, partition).await
    }

    async fn lag(&self, group: &str, topic: &str) -> Result<u64, BusError> {
        self.inner.lag(group, topic).await
    }
}

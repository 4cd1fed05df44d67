//! The consumer behind [`Bus::fetch`](crate::Bus::fetch) for one partition:
//! assigned (not subscribed) and kept where the last fetch stopped, so that
//! a stage reading on sequentially costs no seek and no broker round trip
//! beyond librdkafka's own prefetching.

use super::errors::kafka_error;
use super::{KafkaConfig, Logs};
use crate::{BusError, Record};
use futures_util::FutureExt;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use std::time::Instant;

pub(crate) struct Reader {
    consumer: StreamConsumer<Logs>,
    /// The offset of the next record the consumer hands out: where it was
    /// assigned, or one past the last record taken. `None` before the first
    /// assignment.
    position: Option<u64>,
    /// When a fetch last finished with this reader.
    last_used: Instant,
}

impl Reader {
    pub(crate) fn new(cfg: &KafkaConfig) -> Result<Reader, BusError> {
        let prefetch = cfg.prefetch_kbytes.to_string();
        // librdkafka refuses assign() without a group id. This group never
        // joins (nothing subscribes) and never commits: offsets are
        // committed by the group consumers, and nothing here may ever commit
        // or store one on its own.
        let group = format!("{}.fetch", cfg.client_id);
        let consumer = cfg
            .client(&[
                ("group.id", &group),
                ("enable.auto.commit", "false"),
                ("enable.auto.offset.store", "false"),
                // Only reached when retention deleted what a position pointed
                // at: go on from the oldest record left (the runner treats
                // the skipped offsets as done, as with compaction).
                ("auto.offset.reset", "earliest"),
                // Bounded prefetch, per partition.
                ("queued.max.messages.kbytes", &prefetch),
                ("queued.min.messages", "10000"),
                // The broker holds an empty fetch this long; a publish in the
                // meantime answers it at once on brokers that support it.
                ("fetch.wait.max.ms", "100"),
            ])
            .create_with_context(Logs)
            .map_err(|e| kafka_error("create a Kafka consumer", e))?;
        Ok(Reader {
            consumer,
            position: None,
            last_used: Instant::now(),
        })
    }

    pub(crate) fn position(&self) -> Option<u64> {
        self.position
    }

    pub(crate) fn last_used(&self) -> Instant {
        self.last_used
    }

    /// Move to `from`. Replacing the assignment drops whatever was
    /// prefetched from the old position.
    pub(crate) fn assign(
        &mut self,
        topic: &str,
        partition: u32,
        from: u64,
    ) -> Result<(), BusError> {
        let context = format!("read {topic}/{partition} from {from}");
        let mut tpl = TopicPartitionList::with_capacity(1);
        tpl.add_partition_offset(topic, partition as i32, Offset::Offset(from as i64))
            .map_err(|e| kafka_error(context.clone(), e))?;
        // Until the assignment succeeds the position is unknown.
        self.position = None;
        self.consumer
            .assign(&tpl)
            .map_err(|e| kafka_error(context, e))?;
        self.position = Some(from);
        Ok(())
    }

    /// Up to `max` records from the position on: waits until `deadline` for
    /// the first, then takes only what is already prefetched.
    pub(crate) async fn read(
        &mut self,
        topic: &str,
        partition: u32,
        max: usize,
        deadline: Instant,
    ) -> Result<Vec<Record>, BusError> {
        let mut records = Vec::new();
        while records.len() < max {
            let next = if records.is_empty() {
                let deadline = tokio::time::Instant::from_std(deadline);
                match tokio::time::timeout_at(deadline, self.consumer.recv()).await {
                    Ok(next) => next,
                    Err(_) => break,
                }
            } else {
                match self.consumer.recv().now_or_never() {
                    Some(next) => next,
                    None => break,
                }
            };
            match next {
                Ok(message) => {
                    let position = self.position.unwrap_or(0);
                    // A leftover of an earlier assignment; librdkafka filters
                    // those, this only makes sure.
                    if message.offset() < position as i64 {
                        continue;
                    }
                    self.position = Some(message.offset() as u64 + 1);
                    records.push(to_record(topic, partition, &message));
                }
                // Consumer errors are mostly passing (a broker connection
                // dropped); librdkafka recovers by itself. Records already
                // taken are returned, the error shows on the next fetch if
                // it persists.
                Err(e) if records.is_empty() => {
                    return Err(kafka_error(format!("fetch from {topic}/{partition}"), e));
                }
                Err(e) => {
                    tracing::warn!(topic, partition, error = %e, "fetch error after records");
                    break;
                }
            }
        }
        self.last_used = Instant::now();
        Ok(records)
    }
}

fn to_record(topic: &str, partition: u32, message: &BorrowedMessage<'_>) -> Record {
    let text =
        |bytes: Option<&[u8]>| String::from_utf8_lossy(bytes.unwrap_or_default()).into_owned();
    let headers = message
        .headers()
        .map(|headers| {
            headers
                .iter()
                .map(|h| (h.key.to_string(), text(h.value)))
                .collect()
        })
        .unwrap_or_default();
    Record {
        topic: topic.to_string(),
        partition,
        offset: message.offset() as u64,
        key: text(message.key()),
        payload: message.payload().unwrap_or_default().to_vec(),
        headers,
        timestamp_ms: message.timestamp().to_millis().unwrap_or(0),
    }
}

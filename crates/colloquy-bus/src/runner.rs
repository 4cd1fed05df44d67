//! The stage runner: consume a topic as a consumer group and run a
//! [`Handler`] on every record, on any [`Bus`] backend.
//!
//! Per partition (one task each):
//! - records of one key are handled one at a time, in offset order; records
//!   of different keys run concurrently; fetching pauses while the records
//!   from the oldest unfinished one on number `max_in_flight`
//!   (backpressure);
//! - a failing record is retried with exponential backoff and jitter while
//!   its key waits; after `max_attempts` (at once for a permanent error) it
//!   is published to the dead-letter topic and counts as done — unless the
//!   error says a dependency is unavailable, which is retried until it
//!   comes back;
//! - the committed offset is the end of the contiguous run of done records,
//!   so it never passes one still in progress; commits are batched.
//!
//! Delivery is at-least-once: after a crash everything past the committed
//! offset is handled again, including records that had finished, so
//! handlers must be idempotent (the message's event id makes a repeat a
//! no-op).

use crate::{Bus, BusError, Record};
use async_trait::async_trait;
use futures_util::FutureExt;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tracing::Instrument;

/// The work of a stage.
#[async_trait]
pub trait Handler: Send + Sync {
    /// Handle one record. May run again for the same record (after a retry
    /// or a crash), so it must be idempotent.
    async fn handle(&self, record: &Record) -> Result<(), HandlerError>;
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandlerError {
    /// May succeed later (a store briefly unavailable): retried.
    #[error("{0}")]
    Retryable(String),
    /// Will fail again (a malformed payload): dead-lettered at once.
    #[error("{0}")]
    Permanent(String),
    /// Something the handler depends on is down (the database, the
    /// broker): the record is fine, so it is retried with backoff for as
    /// long as it takes and never dead-lettered. Its key waits meanwhile;
    /// other keys go on (and most likely wait too).
    #[error("{0}")]
    Unavailable(String),
}

impl HandlerError {
    pub fn is_permanent(&self) -> bool {
        matches!(self, HandlerError::Permanent(_))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// Delay after the first failure; doubled after each further one.
    pub base: Duration,
    pub max: Duration,
    /// Wait a random 50–100% of the delay, so that records failing together
    /// do not retry in lockstep.
    pub jitter: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            base: Duration::from_millis(50),
            max: Duration::from_secs(2),
            jitter: true,
        }
    }
}

impl RetryPolicy {
    /// The wait after the `failures`-th failure (1-based).
    pub fn delay(&self, failures: u32) -> Duration {
        let doubling = 2u32.saturating_pow(failures.saturating_sub(1));
        let delay = self.base.saturating_mul(doubling).min(self.max);
        if self.jitter {
            delay.mul_f64(0.5 + fastrand::f64() / 2.0)
        } else {
            delay
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageConfig {
    pub topic: String,
    pub group: String,
    /// Where records go after their last failed attempt; created with the
    /// source topic's partition count if missing.
    pub dlq_topic: String,
    /// The partitions this runner consumes; `None` for all of them.
    pub partitions: Option<Vec<u32>>,
    /// Per partition: how far fetching may run ahead of the oldest record
    /// not yet done (so at most this many records are in flight, and at most
    /// this many are redelivered after a crash) before it pauses.
    pub max_in_flight: usize,
    pub retry: RetryPolicy,
    /// Records asked for per fetch.
    pub fetch_batch: usize,
    /// How long a fetch waits for new records (long poll).
    pub poll_wait: Duration,
    /// Commit after this many records are done…
    pub commit_every: u64,
    /// …or this long after the first uncommitted one was.
    pub commit_interval: Duration,
    /// How long `shutdown` waits for running handlers before abandoning
    /// them (their records are redelivered).
    pub shutdown_timeout: Duration,
}

impl StageConfig {
    /// Defaults for consuming `topic` as `group`, dead-lettering to
    /// `<topic>.dlq`.
    pub fn new(topic: impl Into<String>, group: impl Into<String>) -> Self {
        let topic = topic.into();
        StageConfig {
            dlq_topic: format!("{topic}.dlq"),
            topic,
            group: group.into(),
            partitions: None,
            max_in_flight: 256,
            retry: RetryPolicy::default(),
            fetch_batch: 256,
            poll_wait: Duration::from_millis(500),
            commit_every: 256,
            commit_interval: Duration::from_millis(200),
            shutdown_timeout: Duration::from_secs(10),
        }
    }
}

/// Counters of a running stage, readable at any time (for metrics).
#[derive(Debug, Default)]
pub struct StageStats {
    handled: AtomicU64,
    retries: AtomicU64,
    dead_lettered: AtomicU64,
    in_flight: AtomicU64,
    handler_errors: AtomicU64,
    dlq_errors: AtomicU64,
    fetch_errors: AtomicU64,
    commit_errors: AtomicU64,
}

/// A reading of [`StageStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StageCounts {
    /// Records whose handler succeeded.
    pub handled: u64,
    /// Attempts after a failure.
    pub retries: u64,
    pub dead_lettered: u64,
    /// Records fetched and not yet done (running, waiting for their key, or
    /// backing off).
    pub in_flight: u64,
    /// Failed attempts, retried or not.
    pub handler_errors: u64,
    /// Failed publishes to the dead-letter topic (retried until they work).
    pub dlq_errors: u64,
    pub fetch_errors: u64,
    pub commit_errors: u64,
}

impl StageStats {
    pub fn snapshot(&self) -> StageCounts {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StageCounts {
            handled: get(&self.handled),
            retries: get(&self.retries),
            dead_lettered: get(&self.dead_lettered),
            in_flight: get(&self.in_flight),
            handler_errors: get(&self.handler_errors),
            dlq_errors: get(&self.dlq_errors),
            fetch_errors: get(&self.fetch_errors),
            commit_errors: get(&self.commit_errors),
        }
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Starts stages; see the [module docs](self).
pub struct StageRunner;

impl StageRunner {
    /// Start consuming: one task per partition, each resuming at the group's
    /// committed offset.
    pub async fn spawn(
        bus: Arc<dyn Bus>,
        cfg: StageConfig,
        handler: Arc<dyn Handler>,
    ) -> Result<StageHandle, BusError> {
        Self::spawn_counting(bus, cfg, handler, Arc::default()).await
    }

    /// As [`spawn`](Self::spawn), counting into `stats`: the runners of
    /// one stage that come and go with partition ownership report as one.
    pub async fn spawn_counting(
        bus: Arc<dyn Bus>,
        cfg: StageConfig,
        handler: Arc<dyn Handler>,
        stats: Arc<StageStats>,
    ) -> Result<StageHandle, BusError> {
        let count = bus.partitions(&cfg.topic).await?;
        match bus.partitions(&cfg.dlq_topic).await {
            Err(BusError::UnknownTopic(_)) => bus.ensure_topic(&cfg.dlq_topic, count).await?,
            other => {
                other?;
            }
        }
        let partitions = cfg
            .partitions
            .clone()
            .unwrap_or_else(|| (0..count).collect());
        if let Some(&partition) = partitions.iter().find(|&&p| p >= count) {
            return Err(BusError::UnknownPartition {
                topic: cfg.topic.clone(),
                partition,
            });
        }
        let mut workers = Vec::with_capacity(partitions.len());
        for &partition in &partitions {
            let committed = bus.committed(&cfg.group, &cfg.topic, partition).await?;
            // Commit where we start, so that the bus counts this group as a
            // consumer (for retention and backlog) before its first record.
            bus.commit(&cfg.group, &cfg.topic, partition, committed)
                .await?;
            workers.push((partition, committed));
        }
        let (stop, stopped) = watch::channel(false);
        let ctx = Arc::new(Ctx {
            bus,
            cfg,
            handler,
            stats: Arc::clone(&stats),
            stopped,
        });
        let tasks = workers
            .into_iter()
            .map(|(partition, committed)| {
                tokio::spawn(Worker::new(Arc::clone(&ctx), partition, committed).run())
            })
            .collect();
        Ok(StageHandle { stop, tasks, stats })
    }
}

/// A running stage. Dropping it without [`shutdown`](Self::shutdown) aborts
/// it like [`kill`](Self::kill), without waiting.
pub struct StageHandle {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    stats: Arc<StageStats>,
}

impl StageHandle {
    pub fn stats(&self) -> Arc<StageStats> {
        Arc::clone(&self.stats)
    }

    /// Stop fetching, let running handlers finish (up to the configured
    /// timeout), commit what is done, and return.
    pub async fn shutdown(mut self) {
        self.stop.send_replace(true);
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
    }

    /// Stop at once, like a crash: no draining, no final commit; whatever
    /// was not committed is redelivered to the next consumer.
    pub async fn kill(mut self) {
        for task in &self.tasks {
            task.abort();
        }
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
    }
}

impl Drop for StageHandle {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

struct Ctx {
    bus: Arc<dyn Bus>,
    cfg: StageConfig,
    handler: Arc<dyn Handler>,
    stats: Arc<StageStats>,
    stopped: watch::Receiver<bool>,
}

type Fetch = Pin<Box<dyn Future<Output = Result<Vec<Record>, BusError>> + Send>>;

/// The consumer of one partition.
struct Worker {
    ctx: Arc<Ctx>,
    partition: u32,
    next_fetch: u64,
    /// The lowest offset not yet done; `done[i]` is whether `low + i` is.
    low: u64,
    done: VecDeque<bool>,
    committed: u64,
    /// When the oldest done-but-uncommitted record finished.
    dirty_since: Option<Instant>,
    /// Keys with a record running → their records waiting behind it.
    waiting: HashMap<String, VecDeque<Record>>,
    running: JoinSet<(u64, String, bool)>,
    /// Records fetched and not finished.
    pending: usize,
}

impl Worker {
    fn new(ctx: Arc<Ctx>, partition: u32, committed: u64) -> Worker {
        Worker {
            ctx,
            partition,
            next_fetch: committed,
            low: committed,
            done: VecDeque::new(),
            committed,
            dirty_since: None,
            waiting: HashMap::new(),
            running: JoinSet::new(),
            pending: 0,
        }
    }

    async fn run(mut self) {
        let mut stopped = self.ctx.stopped.clone();
        let mut fetch: Option<Fetch> = None;
        let mut retry_fetch_at = None;
        loop {
            // The window from the oldest unfinished record to the newest
            // fetched one is bounded, not just the unfinished count: a slow
            // record must not let an unbounded run of done-but-uncommittable
            // records pile up behind it (all redelivered after a crash).
            let window = (self.next_fetch - self.low) as usize;
            let room = self
                .ctx
                .cfg
                .max_in_flight
                .saturating_sub(window)
                .min(self.ctx.cfg.fetch_batch);
            if fetch.is_none() && room > 0 {
                fetch = Some(self.fetch(room, retry_fetch_at.take()));
            }
            let commit_at = self.dirty_since.map(|t| t + self.ctx.cfg.commit_interval);
            tokio::select! {
                () = stop_requested(&mut stopped) => break,
                Some(joined) = self.running.join_next() => {
                    if let Ok((offset, key, done)) = joined {
                        self.finished(offset, key, done, true);
                    }
                }
                fetched = async { fetch.as_mut().expect("guarded").await }, if fetch.is_some() => {
                    fetch = None;
                    match fetched {
                        Ok(records) => self.accept(records),
                        Err(error) => {
                            bump(&self.ctx.stats.fetch_errors);
                            tracing::warn!(topic = %self.ctx.cfg.topic, partition = self.partition, %error, "fetch failed");
                            retry_fetch_at = Some(Instant::now() + self.ctx.cfg.retry.max);
                        }
                    }
                }
                _ = tokio::time::sleep_until(commit_at.unwrap_or_else(Instant::now)), if commit_at.is_some() => {
                    self.commit().await;
                }
            }
            if self.low - self.committed >= self.ctx.cfg.commit_every {
                self.commit().await;
            }
        }
        drop(fetch);
        // Drain: running handlers may finish (records waiting behind them
        // are left for redelivery), then commit what is done.
        let deadline = Instant::now() + self.ctx.cfg.shutdown_timeout;
        while let Ok(Some(joined)) =
            tokio::time::timeout_at(deadline, self.running.join_next()).await
        {
            if let Ok((offset, key, done)) = joined {
                self.finished(offset, key, done, false);
            }
        }
        if !self.running.is_empty() {
            tracing::warn!(
                topic = %self.ctx.cfg.topic,
                partition = self.partition,
                abandoned = self.running.len(),
                "shutdown timed out; abandoning running handlers"
            );
            self.running.abort_all();
        }
        self.commit().await;
        self.ctx
            .stats
            .in_flight
            .fetch_sub(self.pending as u64, Ordering::Relaxed);
    }

    fn fetch(&self, max: usize, not_before: Option<Instant>) -> Fetch {
        let (bus, topic) = (Arc::clone(&self.ctx.bus), self.ctx.cfg.topic.clone());
        let (partition, from, wait) = (self.partition, self.next_fetch, self.ctx.cfg.poll_wait);
        Box::pin(async move {
            if let Some(at) = not_before {
                tokio::time::sleep_until(at).await;
            }
            bus.fetch(&topic, partition, from, max, wait).await
        })
    }

    fn accept(&mut self, records: Vec<Record>) {
        for record in records {
            if record.offset < self.next_fetch {
                continue;
            }
            // Offsets a backend skips (Kafka compaction, transaction
            // markers) have nothing to wait for.
            let gap = record.offset - self.next_fetch;
            self.done.extend(std::iter::repeat_n(true, gap as usize));
            self.done.push_back(false);
            self.next_fetch = record.offset + 1;
            self.pending += 1;
            self.ctx.stats.in_flight.fetch_add(1, Ordering::Relaxed);
            match self.waiting.get_mut(&record.key) {
                Some(queue) => queue.push_back(record),
                None => {
                    self.waiting.insert(record.key.clone(), VecDeque::new());
                    self.start(record);
                }
            }
        }
        self.advance();
    }

    fn start(&mut self, record: Record) {
        let ctx = Arc::clone(&self.ctx);
        // One span per record, over every attempt and a dead-lettering,
        // continuing the trace of whoever published the record.
        let span = tracing::debug_span!(
            "consume",
            otel.name = format!("consume {}", record.topic),
            otel.kind = "consumer",
            messaging.destination.name = %record.topic,
            messaging.destination.partition.id = record.partition,
            messaging.kafka.offset = record.offset,
        );
        crate::trace::continue_from(&span, &record.headers);
        self.running.spawn(
            async move {
                let (offset, key) = (record.offset, record.key.clone());
                let done = process(&ctx, &record).await;
                (offset, key, done)
            }
            .instrument(span),
        );
    }

    /// A record's task ended; start the next of its key unless stopping.
    fn finished(&mut self, offset: u64, key: String, done: bool, start_next: bool) {
        self.pending -= 1;
        self.ctx.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
        if done {
            self.done[(offset - self.low) as usize] = true;
            self.advance();
        }
        if !start_next {
            return;
        }
        match self.waiting.get_mut(&key).and_then(VecDeque::pop_front) {
            Some(next) => self.start(next),
            None => {
                self.waiting.remove(&key);
            }
        }
    }

    fn advance(&mut self) {
        while self.done.front() == Some(&true) {
            self.done.pop_front();
            self.low += 1;
        }
        if self.low > self.committed && self.dirty_since.is_none() {
            self.dirty_since = Some(Instant::now());
        }
    }

    async fn commit(&mut self) {
        if self.low <= self.committed {
            return;
        }
        let cfg = &self.ctx.cfg;
        match self
            .ctx
            .bus
            .commit(&cfg.group, &cfg.topic, self.partition, self.low)
            .await
        {
            Ok(()) => {
                self.committed = self.low;
                self.dirty_since = None;
            }
            Err(error) => {
                bump(&self.ctx.stats.commit_errors);
                tracing::warn!(topic = %cfg.topic, partition = self.partition, %error, "commit failed");
                // Try again after another interval, not in a tight loop.
                self.dirty_since = Some(Instant::now());
            }
        }
    }
}

/// Handle a record to the end: success, or dead-lettered. `false` if the
/// stage stopped first (the record is then redelivered later).
async fn process(ctx: &Ctx, record: &Record) -> bool {
    let stats = &ctx.stats;
    let mut stopped = ctx.stopped.clone();
    let mut attempts = 0;
    let error = loop {
        attempts += 1;
        let outcome = AssertUnwindSafe(ctx.handler.handle(record))
            .catch_unwind()
            .await
            .unwrap_or_else(|panic| {
                Err(HandlerError::Permanent(format!(
                    "handler panicked: {}",
                    panic_text(&*panic)
                )))
            });
        match outcome {
            Ok(()) => {
                bump(&stats.handled);
                tracing::debug!(attempts, "handled");
                return true;
            }
            Err(error) => {
                bump(&stats.handler_errors);
                let unavailable = matches!(error, HandlerError::Unavailable(_));
                if error.is_permanent() || (attempts >= ctx.cfg.retry.max_attempts && !unavailable)
                {
                    break error;
                }
                if unavailable && attempts % 20 == 0 {
                    tracing::warn!(topic = %record.topic, partition = record.partition,
                        offset = record.offset, attempts, %error, "still waiting for a dependency");
                }
                bump(&stats.retries);
                if !pause(ctx.cfg.retry.delay(attempts), &mut stopped).await {
                    return false;
                }
            }
        }
    };
    tracing::warn!(
        topic = %record.topic,
        partition = record.partition,
        offset = record.offset,
        attempts,
        %error,
        "dead-lettering a record"
    );
    let mut headers = record.headers.clone();
    headers.extend([
        ("error".to_string(), error.to_string()),
        ("attempts".to_string(), attempts.to_string()),
        ("source.topic".to_string(), record.topic.clone()),
        ("source.partition".to_string(), record.partition.to_string()),
        ("source.offset".to_string(), record.offset.to_string()),
    ]);
    // A record is only done once it is safe in the dead-letter topic, so
    // keep trying (the topic may be full) unless the stage stops.
    loop {
        match ctx
            .bus
            .publish(
                &ctx.cfg.dlq_topic,
                &record.key,
                record.payload.clone(),
                headers.clone(),
            )
            .await
        {
            Ok(_) => {
                bump(&stats.dead_lettered);
                return true;
            }
            Err(error) => {
                bump(&stats.dlq_errors);
                tracing::error!(topic = %ctx.cfg.dlq_topic, %error, "dead-letter publish failed");
                if !pause(ctx.cfg.retry.max, &mut stopped).await {
                    return false;
                }
            }
        }
    }
}

/// Sleep, unless the stage stops first: then `false`.
async fn pause(delay: Duration, stopped: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(delay) => true,
        () = stop_requested(stopped) => false,
    }
}

/// Resolves once the stage is told to stop (or its handle is gone).
async fn stop_requested(stopped: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns must not live across awaits.
    let _ = stopped.wait_for(|&s| s).await;
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("non-string panic")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let policy = RetryPolicy {
            jitter: false,
            ..RetryPolicy::default()
        };
        let delays: Vec<_> = (1..=8).map(|n| policy.delay(n).as_millis()).collect();
        assert_eq!(delays, [50, 100, 200, 400, 800, 1600, 2000, 2000]);
        let jittered = RetryPolicy::default();
        for n in 1..=8 {
            let d = jittered.delay(n);
            assert!(d >= policy.delay(n) / 2 && d <= policy.delay(n), "{d:?}");
        }
    }
}

//! The behaviour every [`Bus`] backend must show, written once and run by
//! each backend's test file through [`run_all`], plus the stage runner's
//! semantics on top of that backend.
//!
//! What a backend legitimately does differently it declares in
//! [`Capabilities`]; a case that does not apply to it is skipped by name,
//! never left out of a list of its own.

use crate::runner::{Handler, HandlerError, RetryPolicy, StageConfig, StageHandle, StageRunner};
use crate::{partition_for, Bus, BusError, ErrorKind, Record};
use async_trait::async_trait;
use futures_util::FutureExt;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);
const NO_WAIT: Duration = Duration::ZERO;

/// What the backend under test does that not every backend does, and the
/// bounds it was opened with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// Unconsumed records a topic may hold before publishes fail with
    /// [`BusError::Full`], as the backend under test was opened with; it
    /// must be above the 600 records the runner cases put on one topic.
    /// `None` for a backend that bounds topics otherwise (Kafka: by the
    /// broker's retention, not by a backlog counted per group).
    pub max_backlog: Option<u64>,
    /// The largest record the backend under test accepts (key, headers and
    /// payload), as it was opened with.
    pub max_record_bytes: usize,
}

/// Runs every case, each on storage of its own: `fresh` makes new, empty
/// storage (a directory, a broker) and `open` opens a bus on it; a second
/// `open` on the same storage is a restart, which sees what the first bus
/// stored. Cases that reopen drop the bus they hold before opening another.
///
/// A failing case does not stop the others; the failures are listed at the
/// end, and each case's name is printed before it runs.
pub async fn run_all<S>(
    fresh: impl Fn() -> S,
    open: impl AsyncFn(&S) -> Arc<dyn Bus>,
    caps: Capabilities,
) {
    let mut outcome = Outcome::default();
    // A case on one bus of fresh storage.
    macro_rules! case {
        ($case:ident $(, $arg:expr)*) => {{
            let store = fresh();
            let bus = open(&store).await;
            outcome.run(stringify!($case), $case(bus $(, $arg)*)).await;
        }};
    }
    // A case that restarts the backend on its storage.
    macro_rules! reopening {
        ($case:ident) => {{
            let store = fresh();
            outcome.run(stringify!($case), $case(|| open(&store))).await;
        }};
    }

    case!(topics_are_created_once);
    case!(publish_fetch_round_trip);
    case!(same_key_same_partition_in_order);
    case!(offsets_contiguous_per_partition);
    case!(commit_is_monotonic);
    case!(limits_and_names_are_checked, caps.max_record_bytes);
    reopening!(reopen_keeps_records_and_offsets);
    match caps.max_backlog {
        Some(max_backlog) => case!(full_when_backlog_exceeded, max_backlog),
        None => outcome.skip(
            "full_when_backlog_exceeded",
            "the backend has no backlog bound",
        ),
    }
    case!(long_poll_wakes_on_publish);

    case!(runner_keeps_key_order_and_runs_keys_concurrently);
    case!(runner_retries_then_succeeds);
    case!(runner_waits_out_an_unavailable_dependency);
    case!(runner_dead_letters_after_max_attempts);
    case!(runner_commit_never_passes_unfinished);
    reopening!(runner_redelivers_uncommitted);
    case!(runner_consumes_only_its_partitions);
    case!(runner_dead_letters_panics);
    case!(runner_shutdown_abandons_stuck_handlers);

    outcome.finish();
}

#[derive(Default)]
struct Outcome {
    passed: usize,
    skipped: usize,
    failed: Vec<&'static str>,
}

impl Outcome {
    async fn run(&mut self, name: &'static str, case: impl Future<Output = ()>) {
        println!("conformance: {name} …");
        let started = Instant::now();
        // The panic hook has printed the assertion that failed, under the
        // name printed above.
        match AssertUnwindSafe(case).catch_unwind().await {
            Ok(()) => {
                self.passed += 1;
                println!("conformance: {name} ok in {:?}", started.elapsed());
            }
            Err(_) => {
                self.failed.push(name);
                println!("conformance: {name} FAILED");
            }
        }
    }

    fn skip(&mut self, name: &'static str, why: &str) {
        self.skipped += 1;
        println!("conformance: {name} skipped: {why}");
    }

    fn finish(self) {
        println!(
            "conformance: {} passed, {} skipped, {} failed",
            self.passed,
            self.skipped,
            self.failed.len()
        );
        assert!(
            self.failed.is_empty(),
            "conformance cases failed: {:?}",
            self.failed
        );
    }
}

/// A topic name no other check uses.
pub fn unique(name: &str) -> String {
    format!("{name}-{:016x}", fastrand::u64(..))
}

fn header(name: &str, value: &str) -> (String, String) {
    (name.to_string(), value.to_string())
}

/// Poll `condition` until it holds; panics with `what` after [`WAIT`].
pub async fn wait_until(what: &str, mut condition: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn topics_are_created_once(bus: Arc<dyn Bus>) {
    let topic = unique("topics");
    assert_eq!(
        bus.partitions(&topic).await.unwrap_err().kind(),
        ErrorKind::Invalid
    );
    bus.ensure_topic(&topic, 3).await.unwrap();
    bus.ensure_topic(&topic, 3).await.unwrap();
    assert_eq!(bus.partitions(&topic).await.unwrap(), 3);
    let mismatch = bus.ensure_topic(&topic, 4).await.unwrap_err();
    assert!(
        matches!(
            mismatch,
            BusError::PartitionMismatch {
                existing: 3,
                requested: 4,
                ..
            }
        ),
        "{mismatch}"
    );
    assert_eq!(bus.end_offset(&topic, 2).await.unwrap(), 0);
    assert!(bus.end_offset(&topic, 3).await.is_err());
    assert!(bus
        .publish(&unique("missing"), "k", vec![], vec![])
        .await
        .is_err());
}

async fn publish_fetch_round_trip(bus: Arc<dyn Bus>) {
    let topic = unique("round-trip");
    bus.ensure_topic(&topic, 4).await.unwrap();
    let headers = vec![header("trace-id", "abc"), header("empty", "")];
    let before = now_ms();
    let at = bus
        .publish(&topic, "user-1", b"hello".to_vec(), headers.clone())
        .await
        .unwrap();
    assert_eq!(at.partition, partition_for("user-1", 4));
    assert_eq!(at.offset, 0);
    let records = bus
        .fetch(&topic, at.partition, 0, 10, NO_WAIT)
        .await
        .unwrap();
    assert_eq!(records.len(), 1);
    let record = &records[0];
    assert_eq!(
        (record.topic.as_str(), record.partition, record.offset),
        (topic.as_str(), at.partition, 0)
    );
    assert_eq!(
        (record.key.as_str(), record.payload.as_slice()),
        ("user-1", &b"hello"[..])
    );
    assert_eq!(record.headers, headers);
    assert!(record.timestamp_ms >= before - 1000 && record.timestamp_ms <= now_ms() + 1000);
    // At the end: nothing yet; past it: an error.
    assert!(bus
        .fetch(&topic, at.partition, 1, 10, NO_WAIT)
        .await
        .unwrap()
        .is_empty());
    let past = bus
        .fetch(&topic, at.partition, 2, 10, NO_WAIT)
        .await
        .unwrap_err();
    assert!(matches!(past, BusError::OffsetOutOfRange { .. }), "{past}");
}

async fn same_key_same_partition_in_order(bus: Arc<dyn Bus>) {
    let topic = unique("key-order");
    bus.ensure_topic(&topic, 8).await.unwrap();
    let partition = partition_for("user-7", 8);
    for i in 0..50u32 {
        let at = bus
            .publish(&topic, "user-7", i.to_le_bytes().to_vec(), vec![])
            .await
            .unwrap();
        assert_eq!(at.partition, partition);
        assert_eq!(at.offset, u64::from(i));
    }
    let records = fetch_all(&*bus, &topic, partition, 0).await;
    let payloads: Vec<_> = records
        .iter()
        .map(|r| u32::from_le_bytes(r.payload[..].try_into().unwrap()))
        .collect();
    assert_eq!(payloads, (0..50).collect::<Vec<_>>());
}

/// Concurrent publishes get distinct, gapless offsets in every partition,
/// and each offset holds the record its publisher was told. Public for
/// backends that check more of concurrent publishes (the embedded bus: that
/// they share writes).
pub async fn offsets_contiguous_per_partition(bus: Arc<dyn Bus>) {
    let bus = &*bus;
    let topic = unique("contiguous");
    bus.ensure_topic(&topic, 4).await.unwrap();
    let publishes = (0..400).map(|i| {
        let topic = &topic;
        async move {
            let at = bus
                .publish(
                    topic,
                    &format!("key-{}", i % 37),
                    format!("{i}").into_bytes(),
                    vec![],
                )
                .await
                .unwrap();
            (at, i)
        }
    });
    let acked = futures_util::future::join_all(publishes).await;
    let mut total = 0;
    for partition in 0..4 {
        let mine: HashMap<u64, i32> = acked
            .iter()
            .filter(|(at, _)| at.partition == partition)
            .map(|(at, i)| (at.offset, *i))
            .collect();
        let records = fetch_all(bus, &topic, partition, 0).await;
        assert_eq!(records.len(), mine.len());
        assert_eq!(
            bus.end_offset(&topic, partition).await.unwrap(),
            mine.len() as u64
        );
        for (expected, record) in records.iter().enumerate() {
            assert_eq!(record.offset, expected as u64);
            assert_eq!(
                record.payload,
                mine[&record.offset].to_string().into_bytes()
            );
        }
        total += records.len();
    }
    assert_eq!(total, 400);
}

async fn commit_is_monotonic(bus: Arc<dyn Bus>) {
    let topic = unique("commit");
    bus.ensure_topic(&topic, 1).await.unwrap();
    for i in 0..10 {
        bus.publish(&topic, &format!("k{i}"), vec![], vec![])
            .await
            .unwrap();
    }
    assert_eq!(bus.committed("g", &topic, 0).await.unwrap(), 0);
    assert_eq!(bus.lag("g", &topic).await.unwrap(), 10);
    bus.commit("g", &topic, 0, 6).await.unwrap();
    bus.commit("g", &topic, 0, 3).await.unwrap();
    assert_eq!(bus.committed("g", &topic, 0).await.unwrap(), 6);
    assert_eq!(bus.lag("g", &topic).await.unwrap(), 4);
    // Groups are independent.
    assert_eq!(bus.committed("other", &topic, 0).await.unwrap(), 0);
    let past_end = bus.commit("g", &topic, 0, 11).await.unwrap_err();
    assert_eq!(past_end.kind(), ErrorKind::Invalid, "{past_end}");
    assert_eq!(bus.committed("g", &topic, 0).await.unwrap(), 6);
}

/// Names that could leave a directory are refused, and so are records over
/// the backend's bound, which it reports.
async fn limits_and_names_are_checked(bus: Arc<dyn Bus>, max_record_bytes: usize) {
    assert!(matches!(
        bus.ensure_topic("../escape", 1).await,
        Err(BusError::InvalidName { .. })
    ));
    let topic = unique("limits");
    bus.ensure_topic(&topic, 1).await.unwrap();
    assert!(matches!(
        bus.commit("a/b", &topic, 0, 0).await,
        Err(BusError::InvalidName { .. })
    ));
    let huge = bus
        .publish(&topic, "k", vec![0; 2 * max_record_bytes], vec![])
        .await
        .unwrap_err();
    assert!(
        matches!(huge, BusError::RecordTooLarge { max, .. } if max == max_record_bytes),
        "{huge}"
    );
    assert_eq!(huge.kind(), ErrorKind::Invalid);
    // Well within the bound is stored: the bound is the declared one.
    let at = bus
        .publish(&topic, "k", vec![0; max_record_bytes / 2], vec![])
        .await
        .unwrap();
    assert_eq!(at.offset, 0);
}

async fn reopen_keeps_records_and_offsets<F, Fut>(open: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Bus>>,
{
    let topic = unique("reopen");
    let bus = open().await;
    bus.ensure_topic(&topic, 2).await.unwrap();
    let mut acked = Vec::new();
    for i in 0..100 {
        let payload = vec![i as u8; i];
        let at = bus
            .publish(
                &topic,
                &format!("k{}", i % 7),
                payload.clone(),
                vec![header("i", &i.to_string())],
            )
            .await
            .unwrap();
        acked.push((at, payload));
    }
    bus.commit("g", &topic, 0, 5).await.unwrap();
    drop(bus);

    let bus = open().await;
    assert_eq!(bus.partitions(&topic).await.unwrap(), 2);
    assert_eq!(bus.committed("g", &topic, 0).await.unwrap(), 5);
    assert_eq!(bus.committed("g", &topic, 1).await.unwrap(), 0);
    for (at, payload) in &acked {
        let record = &bus
            .fetch(&topic, at.partition, at.offset, 1, NO_WAIT)
            .await
            .unwrap()[0];
        assert_eq!((record.offset, &record.payload), (at.offset, payload));
    }
    // Publishing goes on after the last offset.
    let at = bus.publish(&topic, "k0", vec![], vec![]).await.unwrap();
    let before = acked
        .iter()
        .filter(|(p, _)| p.partition == at.partition)
        .count();
    assert_eq!(at.offset, before as u64);
}

async fn full_when_backlog_exceeded(bus: Arc<dyn Bus>, max_backlog: u64) {
    let topic = unique("full");
    bus.ensure_topic(&topic, 2).await.unwrap();
    bus.commit("g", &topic, 0, 0).await.unwrap();
    bus.commit("g", &topic, 1, 0).await.unwrap();
    // A few at a time, so that a backend writing them together is quick
    // about it, but never more than a modest queue holds.
    let keys: Vec<_> = (0..max_backlog).map(|i| format!("k{i}")).collect();
    for some in keys.chunks(50) {
        let publishes = some
            .iter()
            .map(|key| bus.publish(&topic, key, vec![], vec![]));
        for published in futures_util::future::join_all(publishes).await {
            published.unwrap();
        }
    }
    let full = bus
        .publish(&topic, "one-more", vec![], vec![])
        .await
        .unwrap_err();
    assert!(
        matches!(&full, BusError::Full { backlog, .. } if *backlog >= max_backlog),
        "{full}"
    );
    assert_eq!(full.kind(), ErrorKind::Full);
    assert!(full.is_retryable());
    // Consuming one partition frees room.
    let end = bus.end_offset(&topic, 0).await.unwrap();
    bus.commit("g", &topic, 0, end).await.unwrap();
    if end > 0 {
        bus.publish(&topic, "one-more", vec![], vec![])
            .await
            .unwrap();
    }
    let end = bus.end_offset(&topic, 1).await.unwrap();
    bus.commit("g", &topic, 1, end).await.unwrap();
    bus.publish(&topic, "and-another", vec![], vec![])
        .await
        .unwrap();
}

async fn long_poll_wakes_on_publish(bus: Arc<dyn Bus>) {
    let topic = unique("long-poll");
    bus.ensure_topic(&topic, 1).await.unwrap();
    let started = Instant::now();
    assert!(bus
        .fetch(&topic, 0, 0, 10, Duration::from_millis(100))
        .await
        .unwrap()
        .is_empty());
    assert!(started.elapsed() >= Duration::from_millis(90));

    let poller = {
        let (bus, topic) = (Arc::clone(&bus), topic.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let records = bus
                .fetch(&topic, 0, 0, 10, Duration::from_secs(20))
                .await
                .unwrap();
            (records, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!poller.is_finished());
    bus.publish(&topic, "k", b"wake".to_vec(), vec![])
        .await
        .unwrap();
    let (records, waited) = poller.await.unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].payload, b"wake");
    assert!(waited < Duration::from_secs(5), "woke after {waited:?}");
}

async fn fetch_all(bus: &dyn Bus, topic: &str, partition: u32, from: u64) -> Vec<Record> {
    let end = bus.end_offset(topic, partition).await.unwrap();
    let mut records: Vec<Record> = Vec::new();
    while from + (records.len() as u64) < end {
        let at = from + records.len() as u64;
        records.extend(
            bus.fetch(topic, partition, at, 1000, NO_WAIT)
                .await
                .unwrap(),
        );
    }
    records
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

// ---- the stage runner on this backend ----

/// A config that reacts fast, for tests.
pub fn fast_stage(topic: &str) -> StageConfig {
    StageConfig {
        retry: RetryPolicy {
            base: Duration::from_millis(2),
            max: Duration::from_millis(10),
            ..RetryPolicy::default()
        },
        poll_wait: Duration::from_millis(50),
        commit_interval: Duration::from_millis(5),
        ..StageConfig::new(topic, "stage")
    }
}

async fn publish_keys(bus: &dyn Bus, topic: &str, keys: usize, per_key: usize) {
    for seq in 0..per_key {
        for k in 0..keys {
            bus.publish(
                topic,
                &format!("user-{k}"),
                seq.to_string().into_bytes(),
                vec![],
            )
            .await
            .unwrap();
        }
    }
}

async fn wait_until_handled(handle: &StageHandle, count: u64) {
    let stats = handle.stats();
    wait_until(&format!("{count} records are handled"), async || {
        stats.snapshot().handled >= count
    })
    .await;
}

/// A handler that checks per-key order and exclusivity and measures how many
/// records run at once.
#[derive(Default)]
struct OrderChecker {
    seen: Mutex<HashMap<String, Vec<usize>>>,
    active_keys: Mutex<HashSet<String>>,
    running: AtomicUsize,
    max_running: AtomicUsize,
}

#[async_trait]
impl Handler for OrderChecker {
    async fn handle(&self, record: &Record) -> Result<(), HandlerError> {
        assert!(
            self.active_keys.lock().unwrap().insert(record.key.clone()),
            "two records of {} at once",
            record.key
        );
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_running.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_micros(fastrand::u64(0..3000))).await;
        let seq = std::str::from_utf8(&record.payload)
            .unwrap()
            .parse()
            .unwrap();
        self.seen
            .lock()
            .unwrap()
            .entry(record.key.clone())
            .or_default()
            .push(seq);
        self.running.fetch_sub(1, Ordering::SeqCst);
        self.active_keys.lock().unwrap().remove(&record.key);
        Ok(())
    }
}

async fn runner_keeps_key_order_and_runs_keys_concurrently(bus: Arc<dyn Bus>) {
    let topic = unique("order");
    bus.ensure_topic(&topic, 4).await.unwrap();
    let (keys, per_key) = (24, 25);
    publish_keys(&*bus, &topic, keys, per_key).await;
    let checker = Arc::new(OrderChecker::default());
    let handle = StageRunner::spawn(
        Arc::clone(&bus),
        fast_stage(&topic),
        Arc::clone(&checker) as _,
    )
    .await
    .unwrap();
    wait_until_handled(&handle, (keys * per_key) as u64).await;
    let stats = handle.stats();
    handle.shutdown().await;
    let seen = checker.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), keys);
    for (key, seqs) in seen.iter() {
        assert_eq!(*seqs, (0..per_key).collect::<Vec<_>>(), "order of {key}");
    }
    assert!(
        checker.max_running.load(Ordering::SeqCst) > 1,
        "different keys never ran concurrently"
    );
    assert_eq!(stats.snapshot().in_flight, 0);
    assert_eq!(
        bus.lag("stage", &topic).await.unwrap(),
        0,
        "shutdown commits everything done"
    );
}

/// Fails each record's first `failures` attempts (retryably), or every
/// attempt of keys starting with "perm" (permanently).
struct Flaky {
    failures: u64,
    attempts: Mutex<HashMap<u64, u64>>,
}

#[async_trait]
impl Handler for Flaky {
    async fn handle(&self, record: &Record) -> Result<(), HandlerError> {
        if record.key.starts_with("perm") {
            return Err(HandlerError::Permanent("malformed".into()));
        }
        let mut attempts = self.attempts.lock().unwrap();
        let n = attempts.entry(record.offset).or_default();
        *n += 1;
        if *n <= self.failures && record.key.starts_with("down") {
            Err(HandlerError::Unavailable(format!("database away {n}")))
        } else if *n <= self.failures {
            Err(HandlerError::Retryable(format!("boom {n}")))
        } else {
            Ok(())
        }
    }
}

async fn runner_retries_then_succeeds(bus: Arc<dyn Bus>) {
    let topic = unique("retry");
    bus.ensure_topic(&topic, 1).await.unwrap();
    publish_keys(&*bus, &topic, 5, 1).await;
    let handler = Arc::new(Flaky {
        failures: 2,
        attempts: Mutex::default(),
    });
    let handle = StageRunner::spawn(
        Arc::clone(&bus),
        fast_stage(&topic),
        Arc::clone(&handler) as _,
    )
    .await
    .unwrap();
    wait_until_handled(&handle, 5).await;
    let stats = handle.stats();
    handle.shutdown().await;
    let counts = stats.snapshot();
    assert_eq!(
        (
            counts.handled,
            counts.retries,
            counts.handler_errors,
            counts.dead_lettered
        ),
        (5, 10, 10, 0)
    );
    assert!(handler.attempts.lock().unwrap().values().all(|&n| n == 3));
    assert_eq!(bus.lag("stage", &topic).await.unwrap(), 0);
}

/// A dependency that is down for longer than `max_attempts` allows: the
/// records wait it out instead of going to the dead-letter topic.
async fn runner_waits_out_an_unavailable_dependency(bus: Arc<dyn Bus>) {
    let topic = unique("unavailable");
    bus.ensure_topic(&topic, 1).await.unwrap();
    for k in 0..3 {
        bus.publish(&topic, &format!("down-{k}"), vec![], vec![])
            .await
            .unwrap();
    }
    let handler = Arc::new(Flaky {
        failures: 10,
        attempts: Mutex::default(),
    });
    let stage = fast_stage(&topic);
    assert!(stage.retry.max_attempts < 10);
    let handle = StageRunner::spawn(Arc::clone(&bus), stage, Arc::clone(&handler) as _)
        .await
        .unwrap();
    wait_until_handled(&handle, 3).await;
    let stats = handle.stats();
    handle.shutdown().await;
    let counts = stats.snapshot();
    assert_eq!((counts.handled, counts.dead_lettered), (3, 0));
    assert!(handler.attempts.lock().unwrap().values().all(|&n| n == 11));
    assert_eq!(bus.lag("stage", &topic).await.unwrap(), 0);
}

async fn runner_dead_letters_after_max_attempts(bus: Arc<dyn Bus>) {
    let topic = unique("dlq");
    bus.ensure_topic(&topic, 2).await.unwrap();
    bus.publish(
        &topic,
        "user-1",
        b"poison".to_vec(),
        vec![header("trace-id", "t1")],
    )
    .await
    .unwrap();
    let perm = bus
        .publish(&topic, "perm-1", b"bad".to_vec(), vec![])
        .await
        .unwrap();
    let handler = Arc::new(Flaky {
        failures: u64::MAX,
        attempts: Mutex::default(),
    });
    let cfg = fast_stage(&topic);
    let dlq = cfg.dlq_topic.clone();
    let handle = StageRunner::spawn(Arc::clone(&bus), cfg, Arc::clone(&handler) as _)
        .await
        .unwrap();
    let stats = handle.stats();
    wait_until("both records are dead-lettered", async || {
        stats.snapshot().dead_lettered == 2
    })
    .await;
    handle.shutdown().await;
    let counts = stats.snapshot();
    assert_eq!(
        (counts.handled, counts.retries, counts.handler_errors),
        (0, 2, 4)
    );
    assert_eq!(
        *handler.attempts.lock().unwrap().values().next().unwrap(),
        3
    );
    assert_eq!(
        bus.lag("stage", &topic).await.unwrap(),
        0,
        "dead-lettered records count as done"
    );

    assert_eq!(bus.partitions(&dlq).await.unwrap(), 2);
    let dead = bus
        .fetch(&dlq, partition_for("user-1", 2), 0, 10, NO_WAIT)
        .await
        .unwrap();
    let dead = dead.iter().find(|r| r.key == "user-1").unwrap();
    assert_eq!(
        (dead.key.as_str(), dead.payload.as_slice()),
        ("user-1", &b"poison"[..])
    );
    assert_eq!(dead.header("trace-id"), Some("t1"));
    assert_eq!(dead.header("error"), Some("boom 3"));
    assert_eq!(dead.header("attempts"), Some("3"));
    assert_eq!(dead.header("source.topic"), Some(topic.as_str()));
    let source_partition = partition_for("user-1", 2).to_string();
    assert_eq!(
        dead.header("source.partition"),
        Some(source_partition.as_str())
    );
    assert_eq!(dead.header("source.offset"), Some("0"));

    let dead = bus
        .fetch(&dlq, partition_for("perm-1", 2), 0, 10, NO_WAIT)
        .await
        .unwrap();
    let dead = dead.iter().find(|r| r.key == "perm-1").unwrap();
    assert_eq!(dead.header("error"), Some("malformed"));
    assert_eq!(dead.header("attempts"), Some("1"));
    assert_eq!(
        dead.header("source.offset"),
        Some(perm.offset.to_string().as_str())
    );
}

/// Blocks the record at offset 0 until released.
struct BlockFirst {
    release: tokio::sync::Semaphore,
}

#[async_trait]
impl Handler for BlockFirst {
    async fn handle(&self, record: &Record) -> Result<(), HandlerError> {
        if record.offset == 0 {
            self.release.acquire().await.unwrap().forget();
        }
        Ok(())
    }
}

async fn runner_commit_never_passes_unfinished(bus: Arc<dyn Bus>) {
    let topic = unique("unfinished");
    bus.ensure_topic(&topic, 1).await.unwrap();
    publish_keys(&*bus, &topic, 51, 1).await;
    let handler = Arc::new(BlockFirst {
        release: tokio::sync::Semaphore::new(0),
    });
    let cfg = StageConfig {
        commit_every: 1,
        ..fast_stage(&topic)
    };
    let handle = StageRunner::spawn(Arc::clone(&bus), cfg, Arc::clone(&handler) as _)
        .await
        .unwrap();
    wait_until_handled(&handle, 50).await;
    // Several commit intervals pass: offset 0 still holds everything back.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(bus.committed("stage", &topic, 0).await.unwrap(), 0);
    assert_eq!(handle.stats().snapshot().in_flight, 1);
    handler.release.add_permits(1);
    wait_until("the commit passes the released record", async || {
        bus.committed("stage", &topic, 0).await.unwrap() == 51
    })
    .await;
    handle.shutdown().await;
}

#[derive(Default)]
struct Counter {
    handled: Mutex<Vec<(u32, u64)>>,
    calls: AtomicU64,
}

#[async_trait]
impl Handler for Counter {
    async fn handle(&self, record: &Record) -> Result<(), HandlerError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.handled
            .lock()
            .unwrap()
            .push((record.partition, record.offset));
        Ok(())
    }
}

/// A stage that handled records but crashed before committing them: the
/// next one, after a reopen, gets them all again.
async fn runner_redelivers_uncommitted<F, Fut>(open: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Bus>>,
{
    let topic = unique("redeliver");
    let bus = open().await;
    bus.ensure_topic(&topic, 2).await.unwrap();
    publish_keys(&*bus, &topic, 10, 3).await;
    let first = Arc::new(Counter::default());
    let never_commit = StageConfig {
        commit_every: u64::MAX,
        commit_interval: Duration::from_secs(3600),
        ..fast_stage(&topic)
    };
    let handle = StageRunner::spawn(Arc::clone(&bus), never_commit, Arc::clone(&first) as _)
        .await
        .unwrap();
    wait_until_handled(&handle, 30).await;
    handle.kill().await;
    drop(bus);

    let bus = open().await;
    assert_eq!(bus.lag("stage", &topic).await.unwrap(), 30);
    let second = Arc::new(Counter::default());
    let handle = StageRunner::spawn(
        Arc::clone(&bus),
        fast_stage(&topic),
        Arc::clone(&second) as _,
    )
    .await
    .unwrap();
    wait_until_handled(&handle, 30).await;
    handle.shutdown().await;
    let sorted = |c: &Counter| {
        let mut v = c.handled.lock().unwrap().clone();
        v.sort_unstable();
        v
    };
    assert_eq!(sorted(&first), sorted(&second));
    assert_eq!(second.calls.load(Ordering::SeqCst), 30);
    assert_eq!(bus.lag("stage", &topic).await.unwrap(), 0);
}

/// A runner given a subset of partitions leaves the others alone.
async fn runner_consumes_only_its_partitions(bus: Arc<dyn Bus>) {
    let topic = unique("subset");
    bus.ensure_topic(&topic, 2).await.unwrap();
    publish_keys(&*bus, &topic, 20, 2).await;
    let mine = bus.end_offset(&topic, 0).await.unwrap();
    let counter = Arc::new(Counter::default());
    let cfg = StageConfig {
        partitions: Some(vec![0]),
        ..fast_stage(&topic)
    };
    let handle = StageRunner::spawn(Arc::clone(&bus), cfg, Arc::clone(&counter) as _)
        .await
        .unwrap();
    wait_until_handled(&handle, mine).await;
    handle.shutdown().await;
    assert!(counter.handled.lock().unwrap().iter().all(|&(p, _)| p == 0));
    assert_eq!(bus.committed("stage", &topic, 0).await.unwrap(), mine);
    assert_eq!(bus.committed("stage", &topic, 1).await.unwrap(), 0);
}

struct Panics;

#[async_trait]
impl Handler for Panics {
    async fn handle(&self, _record: &Record) -> Result<(), HandlerError> {
        panic!("handler bug");
    }
}

/// A panicking handler dead-letters its record instead of wedging its key.
async fn runner_dead_letters_panics(bus: Arc<dyn Bus>) {
    let topic = unique("panics");
    bus.ensure_topic(&topic, 1).await.unwrap();
    publish_keys(&*bus, &topic, 1, 2).await;
    let cfg = fast_stage(&topic);
    let dlq = cfg.dlq_topic.clone();
    let handle = StageRunner::spawn(Arc::clone(&bus), cfg, Arc::new(Panics))
        .await
        .unwrap();
    let stats = handle.stats();
    wait_until("both records are dead-lettered", async || {
        stats.snapshot().dead_lettered == 2
    })
    .await;
    handle.shutdown().await;
    let dead = bus.fetch(&dlq, 0, 0, 10, NO_WAIT).await.unwrap();
    assert_eq!(dead.len(), 2);
    assert_eq!(
        dead[0].header("error"),
        Some("handler panicked: handler bug")
    );
    assert_eq!(dead[0].header("attempts"), Some("1"));
}

/// Shutdown gives up on a handler that does not finish in time, and does
/// not commit past it.
async fn runner_shutdown_abandons_stuck_handlers(bus: Arc<dyn Bus>) {
    let topic = unique("stuck");
    bus.ensure_topic(&topic, 1).await.unwrap();
    publish_keys(&*bus, &topic, 5, 1).await;
    let never = Arc::new(BlockFirst {
        release: tokio::sync::Semaphore::new(0),
    });
    let cfg = StageConfig {
        shutdown_timeout: Duration::from_millis(100),
        ..fast_stage(&topic)
    };
    let handle = StageRunner::spawn(Arc::clone(&bus), cfg, never)
        .await
        .unwrap();
    wait_until_handled(&handle, 4).await;
    let started = Instant::now();
    handle.shutdown().await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(bus.committed("stage", &topic, 0).await.unwrap(), 0);
}

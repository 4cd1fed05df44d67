//! The conformance suite on the Kafka backend, against a real broker: each
//! case and each test starts its own tansu (memory storage, a free port)
//! and kills it at the end. Without tansu the tests fail, saying how to
//! install it.
#![cfg(feature = "kafka")]

use async_trait::async_trait;
use colloquy_bus::conformance::{self, fast_stage, unique, wait_until, Capabilities};
use colloquy_bus::kafka::testing::TestBroker;
use colloquy_bus::runner::{Handler, HandlerError, StageConfig, StageHandle, StageRunner};
use colloquy_bus::{
    Bus, BusBackend, BusConfig, BusError, ErrorKind, KafkaBus, KafkaConfig, Record,
};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn open(broker: &TestBroker) -> Arc<dyn Bus> {
    Arc::new(KafkaBus::new(broker.config()).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance() {
    conformance::run_all(
        TestBroker::start,
        async |broker: &TestBroker| open(broker),
        Capabilities {
            // Kafka bounds a topic by the broker's retention, not by a
            // backlog counted per group.
            max_backlog: None,
            // librdkafka's `message.max.bytes`, which the test broker's
            // config leaves alone.
            max_record_bytes: 1_000_000,
        },
    )
    .await;
}

// ---- the Kafka backend's own ----

#[tokio::test]
async fn partition_lag_is_per_partition() {
    let broker = TestBroker::start();
    let bus = KafkaBus::new(broker.config()).unwrap();
    let topic = unique("lag");
    bus.ensure_topic(&topic, 3).await.unwrap();
    for i in 0..30 {
        bus.publish(&topic, &format!("k{i}"), vec![], vec![])
            .await
            .unwrap();
    }
    let end0 = bus.end_offset(&topic, 0).await.unwrap();
    bus.commit("g", &topic, 0, end0).await.unwrap();
    let lags = bus.partition_lag("g", &topic).await.unwrap();
    assert_eq!(lags.len(), 3);
    assert_eq!((lags[0].partition, lags[0].lag()), (0, 0));
    let rest: u64 = lags[1..].iter().map(|l| l.lag()).sum();
    assert_eq!(rest, 30 - end0);
    assert_eq!(bus.lag("g", &topic).await.unwrap(), 30 - end0);
}

#[tokio::test]
async fn unreachable_broker_is_a_transient_error() {
    // Nothing listens on a port just freed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let bus = KafkaBus::new(KafkaConfig {
        brokers: vec![format!("127.0.0.1:{port}")],
        request_timeout_ms: 500,
        ..KafkaConfig::default()
    })
    .unwrap();
    let error = bus.publish("t", "k", vec![], vec![]).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Transient, "{error}");
    assert!(error.is_retryable());
}

/// Remembers every (partition, offset) handled.
#[derive(Default)]
struct Seen(Mutex<HashSet<(u32, u64)>>);

#[async_trait]
impl Handler for Seen {
    async fn handle(&self, record: &Record) -> Result<(), HandlerError> {
        tokio::time::sleep(Duration::from_micros(fastrand::u64(0..500))).await;
        self.0
            .lock()
            .unwrap()
            .insert((record.partition, record.offset));
        Ok(())
    }
}

/// Records are published while stages owning subsets of the partitions are
/// started and stopped over and over, each on its own bus (as separate
/// processes would), half of them killed without a final commit: every
/// acknowledged record is handled at least once, and in the end the
/// committed offsets reach the end offsets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_record_lost_while_consumers_come_and_go() {
    const PARTITIONS: u32 = 6;
    const RECORDS: usize = 3000;
    let broker = TestBroker::start();
    let topic = unique("churn");
    let admin = open(&broker);
    admin.ensure_topic(&topic, PARTITIONS).await.unwrap();

    let publisher = {
        // One publish at a time, unlingered: each is its own batch, so
        // tansu's end offsets stay right for the buses that did not publish
        // (it reports a batch's base offset + 1 as the end).
        let mut cfg = broker.config();
        cfg.properties.insert("linger.ms".into(), "0".into());
        let bus = KafkaBus::new(cfg).unwrap();
        let topic = topic.clone();
        tokio::spawn(async move {
            let mut acked = Vec::with_capacity(RECORDS);
            for i in 0..RECORDS {
                let at = bus
                    .publish(
                        &topic,
                        &format!("user-{}", i % 97),
                        i.to_string().into(),
                        vec![],
                    )
                    .await
                    .unwrap();
                acked.push((at.partition, at.offset));
                if i % 50 == 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            acked
        })
    };

    let seen = Arc::new(Seen::default());
    let stage = |partitions: Vec<u32>| StageConfig {
        partitions: Some(partitions),
        ..fast_stage(&topic)
    };
    let spawn = async |partitions: Vec<u32>| -> StageHandle {
        StageRunner::spawn(open(&broker), stage(partitions), Arc::clone(&seen) as _)
            .await
            .unwrap()
    };
    // Churn for as long as records come in, ten rounds at least.
    let mut rounds = 0u32;
    while rounds < 10 || !publisher.is_finished() {
        let round = rounds;
        rounds += 1;
        // Two owners split the partitions differently each round.
        let (mine, theirs): (Vec<u32>, Vec<u32>) =
            (0..PARTITIONS).partition(|p| (p + round).is_multiple_of(3));
        let first = spawn(mine).await;
        let second = spawn(theirs).await;
        tokio::time::sleep(Duration::from_millis(fastrand::u64(100..400))).await;
        if round.is_multiple_of(2) {
            first.shutdown().await;
            second.kill().await;
        } else {
            first.kill().await;
            second.shutdown().await;
        }
    }
    let acked = publisher.await.unwrap();
    println!("{rounds} rounds of churn");

    let last = spawn((0..PARTITIONS).collect()).await;
    wait_until("the last stage has committed everything", async || {
        admin.lag("stage", &topic).await.unwrap() == 0
    })
    .await;
    last.shutdown().await;
    let seen = seen.0.lock().unwrap().clone();
    let lost: Vec<_> = acked.iter().filter(|at| !seen.contains(at)).collect();
    assert!(
        lost.is_empty(),
        "{} records never handled: {lost:?}",
        lost.len()
    );
    for partition in 0..PARTITIONS {
        assert_eq!(
            admin.committed("stage", &topic, partition).await.unwrap(),
            admin.end_offset(&topic, partition).await.unwrap()
        );
    }
}

#[tokio::test]
async fn idle_readers_are_closed() {
    let broker = TestBroker::start();
    let bus = KafkaBus::new(KafkaConfig {
        idle_reader_ms: 200,
        ..broker.config()
    })
    .unwrap();
    let topic = unique("idle");
    bus.ensure_topic(&topic, 2).await.unwrap();
    bus.fetch(&topic, 0, 0, 1, Duration::ZERO).await.unwrap();
    assert_eq!(bus.open_readers(), 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Partition 1 is read on; partition 0 was left idle and goes.
    bus.fetch(&topic, 1, 0, 1, Duration::ZERO).await.unwrap();
    assert_eq!(bus.open_readers(), 1);
    // Coming back opens it again, at the offset asked for.
    let at = bus
        .publish(&topic, "k", b"x".to_vec(), vec![])
        .await
        .unwrap();
    let records = bus
        .fetch(&topic, at.partition, at.offset, 1, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(records[0].payload, b"x");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_producer_queue_is_overloaded() {
    let broker = TestBroker::start();
    let mut cfg = broker.config();
    // Room for a single record in librdkafka's queue, held there a while.
    cfg.properties
        .insert("queue.buffering.max.messages".into(), "1".into());
    cfg.properties.insert("linger.ms".into(), "200".into());
    let bus = KafkaBus::new(cfg).unwrap();
    let topic = unique("overload");
    bus.ensure_topic(&topic, 1).await.unwrap();
    let publishes = (0..20).map(|i| bus.publish(&topic, "k", vec![i], vec![]));
    let outcomes = futures_util::future::join_all(publishes).await;
    let overloaded = outcomes
        .iter()
        .filter(|o| matches!(o, Err(BusError::Overloaded { .. })))
        .count();
    let stored = outcomes.iter().filter(|o| o.is_ok()).count();
    assert!(overloaded > 0 && stored > 0, "{outcomes:?}");
    assert_eq!(overloaded + stored, 20, "{outcomes:?}");
    let error = outcomes.into_iter().find_map(Result::err).unwrap();
    assert_eq!(error.kind(), ErrorKind::Full);
}

/// Monotonic commits hold across processes: a bus that never saw the
/// group's commit still does not move it back.
#[tokio::test]
async fn commits_never_move_back_across_buses() {
    let broker = TestBroker::start();
    let topic = unique("commit-across");
    let first = open(&broker);
    first.ensure_topic(&topic, 1).await.unwrap();
    for i in 0..10 {
        first
            .publish(&topic, &format!("k{i}"), vec![], vec![])
            .await
            .unwrap();
    }
    first.commit("g", &topic, 0, 8).await.unwrap();
    let second = open(&broker);
    second.commit("g", &topic, 0, 4).await.unwrap();
    assert_eq!(second.committed("g", &topic, 0).await.unwrap(), 8);
    second.commit("g", &topic, 0, 10).await.unwrap();
    assert_eq!(first.committed("g", &topic, 0).await.unwrap(), 10);
}

#[tokio::test]
async fn open_makes_a_kafka_bus_of_the_section() {
    let broker = TestBroker::start();
    let config = BusConfig {
        backend: BusBackend::Kafka,
        kafka: broker.config(),
        ..BusConfig::default()
    };
    let data = tempfile::tempdir().unwrap();
    let bus = colloquy_bus::open(&config, data.path()).unwrap();
    let topic = unique("open");
    bus.ensure_topic(&topic, 2).await.unwrap();
    let at = bus
        .publish(&topic, "k", b"x".to_vec(), vec![])
        .await
        .unwrap();
    let records = bus
        .fetch(&topic, at.partition, at.offset, 1, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(records[0].payload, b"x");
    // Nothing of it is kept on this machine.
    assert_eq!(std::fs::read_dir(data.path()).unwrap().count(), 0);
}

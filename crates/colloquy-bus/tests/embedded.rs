//! The conformance suite on the embedded backend, plus what only it has:
//! files on disk (torn tails, corruption, retention) and its directory lock.

use colloquy_bus::{conformance, Bus, BusError, EmbeddedBus, EmbeddedConfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;

const MAX_BACKLOG: u64 = 50;

fn open(dir: &Path) -> Arc<dyn Bus> {
    Arc::new(EmbeddedBus::open(dir, EmbeddedConfig::default()).unwrap())
}

fn fresh() -> (tempfile::TempDir, Arc<dyn Bus>) {
    let dir = tempfile::tempdir().unwrap();
    let bus = open(dir.path());
    (dir, bus)
}

#[tokio::test]
async fn topics_are_created_once() {
    let (_dir, bus) = fresh();
    conformance::topics_are_created_once(&*bus).await;
}

#[tokio::test]
async fn publish_fetch_round_trip() {
    let (_dir, bus) = fresh();
    conformance::publish_fetch_round_trip(&*bus).await;
}

#[tokio::test]
async fn same_key_same_partition_in_order() {
    let (_dir, bus) = fresh();
    conformance::same_key_same_partition_in_order(&*bus).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_contiguous_per_partition() {
    let dir = tempfile::tempdir().unwrap();
    let bus = EmbeddedBus::open(dir.path(), EmbeddedConfig::default()).unwrap();
    conformance::offsets_contiguous_per_partition(&bus).await;
    let stats = bus.write_stats();
    assert_eq!(stats.records, 400);
    assert!(
        stats.batches < 400,
        "concurrent publishes share batches: {stats:?}"
    );
}

#[tokio::test]
async fn commit_is_monotonic() {
    let (_dir, bus) = fresh();
    conformance::commit_is_monotonic(&*bus).await;
}

#[tokio::test]
async fn reopen_keeps_records_and_offsets() {
    let dir = tempfile::tempdir().unwrap();
    conformance::reopen_keeps_records_and_offsets(async || open(dir.path())).await;
}

#[tokio::test]
async fn full_when_backlog_exceeded() {
    let dir = tempfile::tempdir().unwrap();
    let bus = EmbeddedBus::open(
        dir.path(),
        EmbeddedConfig {
            max_backlog: MAX_BACKLOG,
            ..EmbeddedConfig::default()
        },
    )
    .unwrap();
    conformance::full_when_backlog_exceeded(&bus, MAX_BACKLOG).await;
}

#[tokio::test]
async fn long_poll_wakes_on_publish() {
    let (_dir, bus) = fresh();
    conformance::long_poll_wakes_on_publish(bus).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runner_keeps_key_order_and_runs_keys_concurrently() {
    let (_dir, bus) = fresh();
    conformance::runner_keeps_key_order_and_runs_keys_concurrently(bus).await;
}

#[tokio::test]
async fn runner_retries_then_succeeds() {
    let (_dir, bus) = fresh();
    conformance::runner_retries_then_succeeds(bus).await;
}

#[tokio::test]
async fn runner_waits_out_an_unavailable_dependency() {
    let (_dir, bus) = fresh();
    conformance::runner_waits_out_an_unavailable_dependency(bus).await;
}

#[tokio::test]
async fn runner_dead_letters_after_max_attempts() {
    let (_dir, bus) = fresh();
    conformance::runner_dead_letters_after_max_attempts(bus).await;
}

#[tokio::test]
async fn runner_commit_never_passes_unfinished() {
    let (_dir, bus) = fresh();
    conformance::runner_commit_never_passes_unfinished(bus).await;
}

#[tokio::test]
async fn runner_redelivers_uncommitted() {
    let dir = tempfile::tempdir().unwrap();
    conformance::runner_redelivers_uncommitted(async || open(dir.path())).await;
}

// ---- the embedded backend's own ----

#[tokio::test]
async fn one_process_per_directory() {
    let (dir, _bus) = fresh();
    let second = EmbeddedBus::open(dir.path(), EmbeddedConfig::default());
    assert!(
        matches!(second, Err(BusError::DirInUse { .. })),
        "{:?}",
        second.err()
    );
}

fn segments(dir: &Path, topic: &str, partition: u32) -> Vec<PathBuf> {
    let mut files: Vec<_> =
        std::fs::read_dir(dir.join("topics").join(topic).join(partition.to_string()))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
    files.sort();
    files
}

#[tokio::test]
async fn torn_tail_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    {
        let bus = open(dir.path());
        bus.ensure_topic("t", 1).await.unwrap();
        for i in 0..3 {
            bus.publish("t", "k", vec![i; 100], vec![]).await.unwrap();
        }
    }
    let segment = &segments(dir.path(), "t", 0)[0];
    let whole = std::fs::read(segment).unwrap();
    // Half a record, as a crash during a write leaves it.
    let third = whole.len() / 3 * 2;
    let mut torn = whole.clone();
    torn.extend_from_slice(&whole[..whole.len() / 6]);
    std::fs::write(segment, &torn).unwrap();
    let bus = open(dir.path());
    assert_eq!(bus.end_offset("t", 0).await.unwrap(), 3);
    assert_eq!(
        std::fs::metadata(segment).unwrap().len(),
        whole.len() as u64
    );
    let at = bus.publish("t", "k", vec![9], vec![]).await.unwrap();
    assert_eq!(at.offset, 3);
    drop(bus);

    // Damage to the last record alone is a torn tail too…
    let mut damaged = std::fs::read(segment).unwrap();
    let last = damaged.len() - 1;
    damaged[last] ^= 0xff;
    std::fs::write(segment, &damaged).unwrap();
    let bus = open(dir.path());
    assert_eq!(bus.end_offset("t", 0).await.unwrap(), 3);
    drop(bus);

    // …but damage followed by valid records is corruption.
    let mut damaged = whole.clone();
    damaged[third - 1] ^= 0xff;
    std::fs::write(segment, &damaged).unwrap();
    let reopened = EmbeddedBus::open(dir.path(), EmbeddedConfig::default());
    assert!(
        matches!(reopened, Err(BusError::Corrupt(_))),
        "{:?}",
        reopened.err()
    );
}

#[tokio::test]
async fn consumed_segments_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = EmbeddedConfig {
        segment_bytes: 1024,
        tail_cache_bytes: 0,
        ..EmbeddedConfig::default()
    };
    let bus = EmbeddedBus::open(dir.path(), cfg.clone()).unwrap();
    bus.ensure_topic("t", 1).await.unwrap();
    bus.commit("a", "t", 0, 0).await.unwrap();
    bus.commit("b", "t", 0, 0).await.unwrap();
    for i in 0..40u8 {
        bus.publish("t", "k", vec![i; 200], vec![]).await.unwrap();
    }
    let rolled = segments(dir.path(), "t", 0).len();
    assert!(rolled >= 8, "{rolled} segments");
    // Reads cross segment boundaries (from disk: the tail cache is off).
    let mut offset = 0;
    while offset < 40 {
        let records = bus
            .fetch("t", 0, offset, 100, std::time::Duration::ZERO)
            .await
            .unwrap();
        for r in &records {
            assert_eq!((r.offset, r.payload[0]), (offset, offset as u8));
            offset += 1;
        }
    }
    // Only once both groups are past a segment does it go.
    bus.commit("a", "t", 0, 40).await.unwrap();
    assert_eq!(segments(dir.path(), "t", 0).len(), rolled);
    bus.commit("b", "t", 0, 20).await.unwrap();
    let left = segments(dir.path(), "t", 0).len();
    assert!(left < rolled && left > 1, "{left} of {rolled}");
    let start = bus.committed("new-group", "t", 0).await.unwrap();
    assert!(
        start > 0 && start <= 20,
        "a new group starts at the oldest retained record, not {start}"
    );
    assert!(bus
        .fetch("t", 0, 0, 1, std::time::Duration::ZERO)
        .await
        .is_err());
    assert_eq!(
        bus.fetch("t", 0, start, 1, std::time::Duration::ZERO)
            .await
            .unwrap()[0]
            .offset,
        start
    );
    drop(bus);

    let bus = EmbeddedBus::open(dir.path(), cfg).unwrap();
    assert_eq!(bus.committed("new-group", "t", 0).await.unwrap(), start);
    assert_eq!(bus.end_offset("t", 0).await.unwrap(), 40);
    assert_eq!(bus.committed("b", "t", 0).await.unwrap(), 20);
}

#[tokio::test]
async fn limits_and_names_are_checked() {
    let (_dir, bus) = fresh();
    assert!(matches!(
        bus.ensure_topic("../escape", 1).await,
        Err(BusError::InvalidName { .. })
    ));
    bus.ensure_topic("t", 1).await.unwrap();
    assert!(matches!(
        bus.commit("a/b", "t", 0, 0).await,
        Err(BusError::InvalidName { .. })
    ));
    let huge = bus
        .publish("t", "k", vec![0; 2 << 20], vec![])
        .await
        .unwrap_err();
    assert!(matches!(huge, BusError::RecordTooLarge { .. }), "{huge}");
}

#[tokio::test]
async fn runner_consumes_only_its_partitions() {
    let (_dir, bus) = fresh();
    conformance::runner_consumes_only_its_partitions(bus).await;
}

#[tokio::test]
async fn runner_dead_letters_panics() {
    let (_dir, bus) = fresh();
    conformance::runner_dead_letters_panics(bus).await;
}

#[tokio::test]
async fn runner_shutdown_abandons_stuck_handlers() {
    let (_dir, bus) = fresh();
    conformance::runner_shutdown_abandons_stuck_handlers(bus).await;
}

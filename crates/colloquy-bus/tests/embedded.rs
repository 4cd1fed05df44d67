//! The conformance suite on the embedded backend, plus what only it has:
//! files on disk (torn tails, corruption, retention), its directory lock,
//! shared writes, and where [`colloquy_bus::open`] puts it.

use colloquy_bus::conformance::{self, Capabilities};
use colloquy_bus::{Bus, BusConfig, BusError, EmbeddedBus, EmbeddedConfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Above the backlog any other case builds on one topic, so that only the
/// case about it reaches it.
const MAX_BACKLOG: u64 = 1_000;

fn config() -> EmbeddedConfig {
    EmbeddedConfig {
        max_backlog: MAX_BACKLOG,
        ..EmbeddedConfig::default()
    }
}

fn open(dir: &Path) -> Arc<dyn Bus> {
    Arc::new(EmbeddedBus::open(dir, EmbeddedConfig::default()).unwrap())
}

fn fresh() -> (tempfile::TempDir, Arc<dyn Bus>) {
    let dir = tempfile::tempdir().unwrap();
    let bus = open(dir.path());
    (dir, bus)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance() {
    conformance::run_all(
        || tempfile::tempdir().unwrap(),
        async |dir: &tempfile::TempDir| {
            Arc::new(EmbeddedBus::open(dir.path(), config()).unwrap()) as Arc<dyn Bus>
        },
        Capabilities {
            max_backlog: Some(MAX_BACKLOG),
            max_record_bytes: config().max_record_bytes,
        },
    )
    .await;
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
    let last = damaged.len() - colloquy_segments::MARK_LEN - 1;
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

/// One group commit that wrote two records, torn by a crash in its
/// middle: the second record and the write's commit mark reached the disk,
/// the first did not. Nothing of it was acknowledged, so the open cuts it
/// off by itself, where a whole record behind damage used to stop it.
#[tokio::test]
async fn a_write_torn_in_its_middle_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let mut ends = Vec::new();
    {
        let bus = open(dir.path());
        bus.ensure_topic("t", 1).await.unwrap();
        for i in 0..3 {
            bus.publish("t", "k", vec![i; 100], vec![]).await.unwrap();
            ends.push(
                std::fs::metadata(&segments(dir.path(), "t", 0)[0])
                    .unwrap()
                    .len() as usize,
            );
        }
    }
    let segment = &segments(dir.path(), "t", 0)[0];
    let data = std::fs::read(segment).unwrap();
    let mark = colloquy_segments::MARK_LEN;
    // Records 1 and 2 as one write: their frames, then one mark.
    let mut group = [
        &data[ends[0]..ends[1] - mark],
        &data[ends[1]..ends[2] - mark],
    ]
    .concat();
    colloquy_segments::commit(&mut group);
    group[20] ^= 0xff; // inside record 1
    std::fs::write(segment, [&data[..ends[0]], &group[..]].concat()).unwrap();

    let bus = open(dir.path());
    assert_eq!(bus.end_offset("t", 0).await.unwrap(), 1);
    let at = bus.publish("t", "k", vec![7], vec![]).await.unwrap();
    assert_eq!(at.offset, 1);
    drop(bus);
    let bus = open(dir.path());
    assert_eq!(bus.end_offset("t", 0).await.unwrap(), 2);
    let records = bus
        .fetch("t", 0, 0, 10, std::time::Duration::ZERO)
        .await
        .unwrap();
    let payloads: Vec<_> = records.iter().map(|r| r.payload.clone()).collect();
    assert_eq!(payloads, [vec![0; 100], vec![7]]);
    drop(bus);

    // The same damage with the records written apart is damage to an
    // acknowledged write: record 2's write is whole behind it.
    let mut damaged = data.clone();
    damaged[ends[0] + 20] ^= 0xff;
    std::fs::write(segment, &damaged).unwrap();
    let reopened = EmbeddedBus::open(dir.path(), EmbeddedConfig::default());
    assert!(
        matches!(&reopened, Err(BusError::Corrupt(e)) if e.contains("whole record follows")),
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishes_share_writes() {
    let dir = tempfile::tempdir().unwrap();
    let bus = Arc::new(EmbeddedBus::open(dir.path(), EmbeddedConfig::default()).unwrap());
    conformance::offsets_contiguous_per_partition(Arc::clone(&bus) as _).await;
    let stats = bus.write_stats();
    assert_eq!(stats.records, 400);
    assert!(
        stats.batches < 400,
        "concurrent publishes share batches: {stats:?}"
    );
}

#[tokio::test]
async fn open_keeps_the_bus_in_the_data_directory() {
    let data = tempfile::tempdir().unwrap();
    let bus = colloquy_bus::open(&BusConfig::default(), data.path()).unwrap();
    bus.ensure_topic("t", 2).await.unwrap();
    let at = bus.publish("t", "k", b"x".to_vec(), vec![]).await.unwrap();
    drop(bus);
    assert!(data.path().join("bus/topics/t").is_dir());
    // The section's embedded settings reach the bus.
    let small = BusConfig {
        embedded: EmbeddedConfig {
            max_record_bytes: 10,
            ..EmbeddedConfig::default()
        },
        ..BusConfig::default()
    };
    let bus = colloquy_bus::open(&small, data.path()).unwrap();
    assert_eq!(bus.end_offset("t", at.partition).await.unwrap(), 1);
    let big = bus
        .publish("t", "k", vec![0; 11], vec![])
        .await
        .unwrap_err();
    assert!(
        matches!(big, BusError::RecordTooLarge { max: 10, .. }),
        "{big}"
    );
    // A second process on the same data directory is refused.
    let second = colloquy_bus::open(&BusConfig::default(), data.path());
    assert!(
        matches!(second, Err(BusError::DirInUse { .. })),
        "{:?}",
        second.err()
    );
}

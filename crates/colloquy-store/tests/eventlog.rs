//! What only the embedded event log has: the directory lock, group commit,
//! segments, recovery on reopen and the id cache.

use colloquy_store::{conformance, ConversationStore, ErrorKind, LogConfig, LogStore, StoreError};
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn open(dir: &Path) -> LogStore {
    LogStore::open(dir, LogConfig::default()).unwrap()
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    files.sort();
    files
}

#[test]
fn a_directory_has_one_owner() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let err = LogStore::open(dir.path(), LogConfig::default())
        .err()
        .expect("second open must fail");
    assert!(matches!(err, StoreError::DirInUse { .. }), "{err}");
    assert_eq!(err.kind(), ErrorKind::Fatal);
    drop(store);
    open(dir.path());
}

/// Everything, including the duplicate check and snapshots, is rebuilt from
/// the files: logs spread over many segments read back whole after a
/// reopen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_survives_reopening_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        segment_bytes: 4096,
        ..LogConfig::default()
    };
    let mut logs = Vec::new();
    let snapshot;
    {
        let store = LogStore::open(dir.path(), cfg.clone()).unwrap();
        for user in ["alice", "bob", "carol"] {
            let mut log = Vec::new();
            for round in 0..20 {
                let batch = conformance::events(user, log.len() as u64, 3, round, "m");
                store.append(user, log.len() as u64, &batch).await.unwrap();
                log.extend(batch);
            }
            logs.push((user, log));
        }
        snapshot = conformance::key().sign(&colloquy_core::State::from_events("bob", &logs[1].1));
        store.put_snapshot(&snapshot).await.unwrap();
    }
    let count = segments(dir.path()).len();
    assert!(count > 5, "the log rolled over only {count} times");
    let store = LogStore::open(dir.path(), cfg).unwrap();
    for (user, log) in &logs {
        assert_eq!(&store.events_after(user, 0, usize::MAX).await.unwrap(), log);
        assert_eq!(store.last_seq(user).await.unwrap(), 60);
        assert_eq!(
            store.events_after(user, 31, 4).await.unwrap(),
            log[31..35],
            "a page from the middle of {user}'s log"
        );
    }
    assert_eq!(store.get_snapshot("bob").await.unwrap(), Some(snapshot));
    let err = store.append("alice", 0, &logs[0].1[..3]).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict { actual: 60, .. }),
        "{err}"
    );
    // The id set is read back from the oldest segment on first use.
    let mut again = logs[0].1[0].clone();
    again.seq = 61;
    let err = store.append("alice", 60, &[again]).await.unwrap_err();
    assert!(matches!(err, StoreError::DuplicateEvent { .. }), "{err}");
    let next = conformance::events("alice", 60, 2, 0, "next");
    assert_eq!(store.append("alice", 60, &next).await.unwrap(), 62);
}

/// A group commit torn by a crash was never acknowledged: reopening cuts
/// it off and the log goes on from the last whole record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_tail_is_cut_off_on_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let log = conformance::events("alice", 0, 3, 1, "m");
    {
        let store = open(dir.path());
        store.append("alice", 0, &log).await.unwrap();
    }
    let last = segments(dir.path()).pop().unwrap();
    let whole = std::fs::metadata(&last).unwrap().len();
    let mut data = std::fs::read(&last).unwrap();
    let torn = data[..data.len() / 2].to_vec();
    data.extend_from_slice(&torn);
    std::fs::write(&last, &data).unwrap();

    let store = open(dir.path());
    assert_eq!(std::fs::metadata(&last).unwrap().len(), whole);
    assert_eq!(store.events_after("alice", 0, 10).await.unwrap(), log);
    let next = conformance::events("alice", 3, 2, 0, "next");
    assert_eq!(store.append("alice", 3, &next).await.unwrap(), 5);
    drop(store);
    let store = open(dir.path());
    assert_eq!(store.last_seq("alice").await.unwrap(), 5);
}

/// A group commit that wrote two users' records, torn by a crash in its
/// middle: the second record and the write's commit mark reached the disk,
/// the first did not. Nothing of it was acknowledged, so the open cuts it
/// off by itself, where a whole record behind damage used to stop it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_torn_in_its_middle_is_cut_off_on_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut ends = Vec::new();
    let alice = conformance::events("alice", 0, 3, 1, "m");
    {
        let store = open(dir.path());
        for user in ["alice", "bob", "carol"] {
            store
                .append(user, 0, &conformance::events(user, 0, 3, 1, "m"))
                .await
                .unwrap();
            let last = segments(dir.path()).pop().unwrap();
            ends.push(std::fs::metadata(&last).unwrap().len() as usize);
        }
    }
    let last = segments(dir.path()).pop().unwrap();
    let data = std::fs::read(&last).unwrap();
    let mark = colloquy_segments::MARK_LEN;
    // Bob's and carol's records as one write: their frames, then one mark.
    let mut group = [
        &data[ends[0]..ends[1] - mark],
        &data[ends[1]..ends[2] - mark],
    ]
    .concat();
    colloquy_segments::commit(&mut group);
    group[20] ^= 0x40; // inside bob's record
    std::fs::write(&last, [&data[..ends[0]], &group[..]].concat()).unwrap();

    let store = open(dir.path());
    assert_eq!(store.events_after("alice", 0, 10).await.unwrap(), alice);
    for user in ["bob", "carol"] {
        assert_eq!(store.last_seq(user).await.unwrap(), 0, "{user}");
    }
    let bob = conformance::events("bob", 0, 2, 0, "again");
    assert_eq!(store.append("bob", 0, &bob).await.unwrap(), 2);
    drop(store);
    let store = open(dir.path());
    assert_eq!(store.events_after("bob", 0, 10).await.unwrap(), bob);
    drop(store);

    // The same damage with the records written apart is damage to an
    // acknowledged write: carol's write is whole behind it.
    let mut damaged = data.clone();
    damaged[ends[0] + 20] ^= 0x40;
    std::fs::write(&last, &damaged).unwrap();
    let err = LogStore::open(dir.path(), LogConfig::default())
        .err()
        .expect("damage before a whole write must fail the open");
    assert!(err.to_string().contains("a whole one follows"), "{err}");
}

/// Damage anywhere but the torn tail is damage to acknowledged records:
/// opening fails and names the file instead of serving a shortened log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damage_to_acknowledged_records_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        for seq in [0, 3] {
            let batch = conformance::events("alice", seq, 3, 1, "m");
            store.append("alice", seq, &batch).await.unwrap();
        }
    }
    let file = segments(dir.path()).pop().unwrap();
    let mut data = std::fs::read(&file).unwrap();
    data[20] ^= 0x40;
    std::fs::write(&file, &data).unwrap();
    let err = LogStore::open(dir.path(), LogConfig::default())
        .err()
        .expect("a damaged first record must fail the open");
    assert!(matches!(err, StoreError::Corrupt(_)), "{err}");
    assert!(
        err.to_string().contains(&file.display().to_string()),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_share_commits() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(dir.path()));
    conformance::concurrent_appends_share_commits(store.clone(), || store.stats()).await;
}

/// Appends of one user queued back to back (often in one group commit)
/// continue each other, and a repeat of ids the batch itself holds is
/// refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_appends_of_one_user_apply_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut n = 0;
    for _ in 0..50 {
        let (a, b) = (
            conformance::events("u", n, 3, 0, "m"),
            conformance::events("u", n + 3, 3, 0, "m"),
        );
        // The first append's first id again, right behind it.
        let mut repeat = a[0].clone();
        repeat.seq = n + 7;
        let repeat = [repeat];
        let (first, second, third) = tokio::join!(
            store.append("u", n, &a),
            store.append("u", n + 3, &b),
            store.append("u", n + 6, &repeat),
        );
        assert_eq!((first.unwrap(), second.unwrap()), (n + 3, n + 6));
        assert!(
            matches!(third, Err(StoreError::DuplicateEvent { .. })),
            "{third:?}"
        );
        n += 6;
    }
    assert_eq!(store.last_seq("u").await.unwrap(), 300);
    assert!(
        store.stats().commits < 100,
        "the appends never shared a commit: {:?}",
        store.stats()
    );
}

/// Reading a page of a long log used to walk (and load) every append of
/// the user; now it costs about what the page holds, after a reopen too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_cost_what_they_return_not_the_whole_log() {
    let dir = tempfile::tempdir().unwrap();
    let (appends, per) = (600u64, 10usize);
    let mut log = Vec::new();
    {
        let store = open(dir.path());
        for _ in 0..appends {
            let batch = conformance::events("long", log.len() as u64, per, 0, "m");
            store
                .append("long", log.len() as u64, &batch)
                .await
                .unwrap();
            log.extend(batch);
        }
        check_cheap_reads(&store, &log).await;
    }
    let store = open(dir.path());
    check_cheap_reads(&store, &log).await;

    // The duplicate check reads the user's ids once, then never again.
    let before = store.records_read();
    let repeat = conformance::events("long", log.len() as u64, 1, 0, "m");
    let mut dup = repeat.clone();
    dup[0].event_id = log[3].event_id;
    let err = store
        .append("long", log.len() as u64, &dup)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::DuplicateEvent { .. }), "{err}");
    assert_eq!(
        store.records_read() - before,
        appends,
        "one read of the chain"
    );
    let before = store.records_read();
    store
        .append("long", log.len() as u64, &repeat)
        .await
        .unwrap();
    assert_eq!(store.records_read(), before, "ids already cached");
}

async fn check_cheap_reads(store: &LogStore, log: &[colloquy_core::Event]) {
    // (after, limit) → appends a page may read: those it returns plus two
    // stretches of the sparse index (128 seqs = 13 appends of 10 events).
    for (after, limit) in [(0u64, 1usize), (2_990, 5), (5_990, 10), (1_000, 1000)] {
        let before = store.records_read();
        let page = store.events_after("long", after, limit).await.unwrap();
        let read = store.records_read() - before;
        let want: Vec<_> = log
            .iter()
            .filter(|e| e.seq > after)
            .take(limit)
            .cloned()
            .collect();
        assert_eq!(page, want, "after {after}, limit {limit}");
        let bound = (limit as u64).div_ceil(10) + 2 * 13 + 1;
        assert!(
            read <= bound,
            "after {after}, limit {limit}: {read} reads > {bound}"
        );
    }
}

/// A record past the largest a scan accepts used to be acknowledged and
/// then taken for damage on the next open: it is refused up front.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_too_large_for_one_record_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut batch = conformance::events("big", 0, 1, 0, "m");
    batch[0].kind = colloquy_core::EventKind::UserSaid {
        message_id: "m-0".into(),
        text: "a".repeat(colloquy_segments::MAX_BODY + 1),
    };
    let err = store.append("big", 0, &batch).await.unwrap_err();
    assert!(matches!(err, StoreError::InvalidEvents { .. }), "{err}");
    let fine = conformance::events("big", 0, 2, 0, "m");
    store.append("big", 0, &fine).await.unwrap();
    drop(store);
    let store = open(dir.path());
    assert_eq!(store.events_after("big", 0, 10).await.unwrap(), fine);
}

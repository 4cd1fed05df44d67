//! What only the SQLite backend has: the directory lock, the schema version,
//! group commit and persistence across reopening.

use colloquy_store::sqlite::SCHEMA_VERSION;
use colloquy_store::{conformance, ConversationStore, ErrorKind, SqliteStore, StoreError};
use std::sync::Arc;

#[test]
fn a_data_directory_has_one_owner() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let err = SqliteStore::open(dir.path())
        .err()
        .expect("second open must fail");
    assert!(matches!(err, StoreError::DirInUse { .. }), "{err}");
    assert!(
        err.to_string().contains("is in use by another process"),
        "{err}"
    );
    assert_eq!(err.kind(), ErrorKind::Fatal);
    drop(store);
    SqliteStore::open(dir.path()).expect("the lock is released on drop");
}

#[test]
fn newer_schemas_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(SqliteStore::open(dir.path()).unwrap());
    let db = rusqlite::Connection::open(dir.path().join("colloquy.db")).unwrap();
    db.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .unwrap();
    drop(db);
    let err = SqliteStore::open(dir.path())
        .err()
        .expect("newer schema must be refused");
    assert!(
        matches!(err, StoreError::SchemaTooNew { found, .. } if found == SCHEMA_VERSION + 1),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let events = conformance::events("alice", 0, 3, 1, "m");
    let snapshot = conformance::key().sign(&colloquy_core::State::from_events("alice", &events));
    {
        let store = SqliteStore::open(dir.path()).unwrap();
        store.append("alice", 0, &events).await.unwrap();
        store.put_snapshot(&snapshot).await.unwrap();
    }
    let store = SqliteStore::open(dir.path()).unwrap();
    assert_eq!(store.events_after("alice", 0, 10).await.unwrap(), events);
    assert_eq!(store.get_snapshot("alice").await.unwrap(), Some(snapshot));
    // The writer's seq cache starts empty: the conflict check must still see the file.
    let err = store.append("alice", 0, &events).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict { actual: 3, .. }),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_share_commits() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path()).unwrap());
    conformance::concurrent_appends_share_commits(store.clone(), || store.stats()).await;
}

/// The writer takes requests in order, so an append queued right behind
/// another of the same user (often in the same group commit) continues it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_appends_of_one_user_apply_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    for round in 0..50u64 {
        let n = round * 6;
        let (a, b) = (
            conformance::events("u", n, 3, 0, "m"),
            conformance::events("u", n + 3, 3, 0, "m"),
        );
        let (first, second) = tokio::join!(store.append("u", n, &a), store.append("u", n + 3, &b));
        assert_eq!((first.unwrap(), second.unwrap()), (n + 3, n + 6));
    }
    assert!(
        store.stats().commits < 100,
        "the pairs never shared a commit: {:?}",
        store.stats()
    );
}

/// A data directory written by schema v1 (one row per event) opens with
/// every event, snapshot and duplicate check intact after the upgrade.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_1_file_is_upgraded() {
    let dir = tempfile::tempdir().unwrap();
    let events = conformance::events("alice", 0, 3, 1, "m");
    let snapshot = conformance::key().sign(&colloquy_core::State::from_events("alice", &events));
    {
        // Schema v1 as released: frozen, so written out here.
        let db = rusqlite::Connection::open(dir.path().join("colloquy.db")).unwrap();
        db.execute_batch(
            "CREATE TABLE events (
                 user_id TEXT NOT NULL, seq INTEGER NOT NULL, event_id TEXT NOT NULL UNIQUE,
                 ts_ms INTEGER NOT NULL, body TEXT NOT NULL, PRIMARY KEY (user_id, seq)
             ) WITHOUT ROWID;
             CREATE INDEX events_user_ts ON events (user_id, ts_ms);
             CREATE TABLE snapshots (
                 user_id TEXT NOT NULL PRIMARY KEY, seq INTEGER NOT NULL, ts_ms INTEGER NOT NULL,
                 body TEXT NOT NULL, hmac TEXT NOT NULL
             ) WITHOUT ROWID;
             PRAGMA user_version = 1;",
        )
        .unwrap();
        for e in &events {
            db.execute(
                "INSERT INTO events VALUES (?1, ?2, ?3, ?4, ?5)",
                rusqlite::params![
                    e.user_id,
                    e.seq,
                    e.event_id.to_string(),
                    e.ts_ms,
                    serde_json::to_string(e).unwrap()
                ],
            )
            .unwrap();
        }
        db.execute(
            "INSERT INTO snapshots VALUES (?1, ?2, ?3, ?4, ?5)",
            rusqlite::params![
                snapshot.user_id,
                snapshot.seq,
                snapshot.ts_ms,
                serde_json::to_string(&snapshot.state).unwrap(),
                snapshot.hmac
            ],
        )
        .unwrap();
    }
    let store = SqliteStore::open(dir.path()).unwrap();
    let db = rusqlite::Connection::open(dir.path().join("colloquy.db")).unwrap();
    let version: i64 = db
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    let indexes: Vec<String> = db
        .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'appends'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        indexes,
        ["appends_user_seq"],
        "version 3 drops the (user, ts) index"
    );
    assert_eq!(store.events_after("alice", 0, 10).await.unwrap(), events);
    assert_eq!(
        store.events_after("alice", 1, 1).await.unwrap(),
        events[1..2]
    );
    assert_eq!(store.get_snapshot("alice").await.unwrap(), Some(snapshot));
    let mut again = events[0].clone();
    again.seq = 4;
    let err = store.append("alice", 3, &[again]).await.unwrap_err();
    assert!(matches!(err, StoreError::DuplicateEvent { .. }), "{err}");
    let next = conformance::events("alice", 3, 2, 0, "next");
    assert_eq!(store.append("alice", 3, &next).await.unwrap(), 5);
    assert_eq!(store.events_after("alice", 3, 10).await.unwrap(), next);
}

/// The writer never checkpoints on its own until the log is large; the
/// checkpoint thread copies committed pages into the database file while
/// the store stays open and busy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_pages_reach_the_file_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let file = dir.path().join("colloquy.db");
    let before = std::fs::metadata(&file).unwrap().len();
    for i in 0..200 {
        let user = format!("u{i}");
        let events = conformance::events(&user, 0, 3, 1, "m");
        store.append(&user, 0, &events).await.unwrap();
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::fs::metadata(&file).unwrap().len() <= before {
        assert!(
            std::time::Instant::now() < deadline,
            "no page reached {} in 10 s",
            file.display()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(store.events_after("u7", 0, 10).await.unwrap().len(), 3);
}

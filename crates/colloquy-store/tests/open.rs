//! `colloquy_store::open` on the embedded backends, in a data directory of
//! each test's own (the SQL backends: `mysql.rs`, `postgres.rs`).

use colloquy_store::{conformance, open, StoreBackend, StoreConfig, StoreError};
use std::path::Path;

fn config(backend: StoreBackend) -> StoreConfig {
    StoreConfig {
        backend,
        ..StoreConfig::default()
    }
}

/// What was appended through one opening is there in the next.
async fn keeps_what_it_was_given(config: &StoreConfig, data: &Path) {
    let events = conformance::events("alice", 0, 3, 1, "m");
    {
        let store = open(config, data).await.unwrap();
        assert_eq!(store.append("alice", 0, &events).await.unwrap(), 3);
    }
    let store = open(config, data).await.unwrap();
    assert_eq!(store.events_after("alice", 0, 10).await.unwrap(), events);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_log_is_the_default_and_lives_in_events() {
    let data = tempfile::tempdir().unwrap();
    keeps_what_it_was_given(&StoreConfig::default(), data.path()).await;
    assert!(data.path().join("events").is_dir());
    assert!(!data.path().join("colloquy.db").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_lives_in_the_data_directory() {
    let data = tempfile::tempdir().unwrap();
    keeps_what_it_was_given(&config(StoreBackend::Sqlite), data.path()).await;
    assert!(data.path().join("colloquy.db").is_file());
    assert!(!data.path().join("events").exists());
}

/// A data directory from before the event log holds its conversations in
/// SQLite: it is refused with the setting that keeps serving it, never
/// opened as if it were empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sqlite_data_directory_is_not_taken_for_an_empty_event_log() {
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("colloquy.db"), b"").unwrap();
    let err = open(&StoreConfig::default(), data.path())
        .await
        .err()
        .expect("refused");
    assert!(matches!(err, StoreError::Config(_)), "{err:?}");
    let err = err.to_string();
    assert!(
        err.contains("holds an SQLite store") && err.contains("backend = \"sqlite\""),
        "{err}"
    );
    assert!(!data.path().join("events").exists(), "nothing was created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_process_at_a_time_per_data_directory() {
    let data = tempfile::tempdir().unwrap();
    for backend in [StoreBackend::EventLog, StoreBackend::Sqlite] {
        let first = open(&config(backend), data.path()).await.unwrap();
        let err = open(&config(backend), data.path())
            .await
            .err()
            .expect("the second opening is refused");
        assert!(
            matches!(err, StoreError::DirInUse { .. }),
            "{backend:?}: {err}"
        );
        drop(first);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_setting_is_refused_before_anything_is_created() {
    let data = tempfile::tempdir().unwrap();
    let mut config = StoreConfig::default();
    config.eventlog.segment_bytes = 100;
    let err = open(&config, data.path()).await.err().expect("refused");
    assert!(err.to_string().contains("store.eventlog"), "{err}");
    assert!(!data.path().join("events").exists());
}

/// A build without an SQL backend refuses a configuration choosing it,
/// naming the feature, before it connects to anything.
#[cfg(not(feature = "mysql"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_mysql_feature_mysql_is_refused_by_name() {
    let data = tempfile::tempdir().unwrap();
    let mut config = config(StoreBackend::Mysql);
    config.sql = colloquy_store::SqlConfig::single("mysql://root@127.0.0.1:1/none");
    let err = open(&config, data.path()).await.err().expect("refused");
    assert!(matches!(err, StoreError::Config(_)), "{err:?}");
    assert!(err.to_string().contains("`mysql` cargo feature"), "{err}");
}

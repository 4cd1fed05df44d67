//! An acknowledged append survives the process being killed mid-stream.
//!
//! The test runs this binary again as a child that appends as fast as it
//! can and prints each acknowledgement, SIGKILLs it, and checks that every
//! acknowledged event is in the reopened store. A kill keeps the OS page
//! cache, so this catches acknowledging before the commit (or buffering in
//! the process), not a skipped fsync; that needs a power cut.

use colloquy_store::{conformance, ConversationStore, LogConfig, LogStore, SqliteStore};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

/// Set (to the data directory) only in the child process.
const CHILD_DIR: &str = "COLLOQUY_CRASH_CHILD_DIR";
/// The backend the child appends to: `sqlite` or `eventlog`.
const CHILD_BACKEND: &str = "COLLOQUY_CRASH_CHILD_BACKEND";
const USERS: usize = 16;
const ACKS_BEFORE_KILL: usize = 2_000;

/// The batch a user appends after `seq`: a pure function, so that the
/// parent knows exactly what must be stored.
fn batch(user: &str, seq: u64) -> Vec<colloquy_core::Event> {
    conformance::events(user, seq, 3, seq as i64, "crash")
}

/// The child's body; does nothing unless started by the test below.
#[test]
fn crash_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return;
    };
    let backend = std::env::var(CHILD_BACKEND).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = open(&backend, Path::new(&dir));
        let writers: Vec<_> = (0..USERS)
            .map(|u| {
                let store = Arc::clone(&store);
                tokio::spawn(async move {
                    let user = format!("user-{u}");
                    let mut seq = 0;
                    loop {
                        seq = store.append(&user, seq, &batch(&user, seq)).await.unwrap();
                        // Fails (and ends the child) once the parent is gone.
                        let mut out = std::io::stdout().lock();
                        writeln!(out, "acked {user} {seq}")
                            .and_then(|()| out.flush())
                            .unwrap();
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.await.unwrap();
        }
    });
}

fn open(backend: &str, dir: &Path) -> Arc<dyn ConversationStore> {
    match backend {
        "sqlite" => Arc::new(SqliteStore::open(dir).unwrap()),
        "eventlog" => Arc::new(LogStore::open(dir, LogConfig::default()).unwrap()),
        other => panic!("unknown backend {other}"),
    }
}

#[test]
fn acked_appends_survive_sigkill_sqlite() {
    acked_appends_survive_sigkill("sqlite");
}

#[test]
fn acked_appends_survive_sigkill_event_log() {
    acked_appends_survive_sigkill("eventlog");
}

fn acked_appends_survive_sigkill(backend: &str) {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR, dir.path())
        .env(CHILD_BACKEND, backend)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut acked = HashMap::<String, u64>::new();
    let mut record = |line: &str| {
        let Some(ack) = line.strip_prefix("acked ") else {
            return false;
        };
        let (user, seq) = ack.split_once(' ').expect("ack line");
        let seq: u64 = seq.parse().expect("acked seq");
        let best = acked.entry(user.to_string()).or_default();
        *best = seq.max(*best);
        true
    };
    let mut acks = 0;
    while acks < ACKS_BEFORE_KILL {
        let line = lines
            .next()
            .expect("child stopped before enough acks")
            .unwrap();
        acks += usize::from(record(&line));
    }
    child.kill().unwrap(); // SIGKILL: no destructor, no final commit.
    child.wait().unwrap();
    // Whatever the child acknowledged before dying counts as well.
    for line in lines {
        record(&line.unwrap());
    }

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = open(backend, dir.path());
        for u in 0..USERS {
            let user = format!("user-{u}");
            let log = store.events_after(&user, 0, usize::MAX).await.unwrap();
            let acked = acked.get(&user).copied().unwrap_or(0);
            assert!(
                log.len() as u64 >= acked,
                "{user}: acked up to seq {acked}, only {} stored",
                log.len()
            );
            assert_eq!(log.len() % 3, 0, "{user}: an append was stored in part");
            let expected: Vec<_> = (0..log.len() as u64)
                .step_by(3)
                .flat_map(|seq| batch(&user, seq))
                .collect();
            assert!(
                log == expected,
                "{user}: stored events differ from what was appended"
            );
        }
    });
}

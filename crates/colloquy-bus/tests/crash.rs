//! An acknowledged publish survives the process being killed mid-stream.
//!
//! The test runs this binary again as a child that publishes from many
//! tasks at once and prints each acknowledgement, SIGKILLs it, reopens the
//! bus and checks that every acknowledged record is at its position with its
//! payload; a write torn by the kill is cut off on open. A kill keeps the OS
//! page cache, so this catches acknowledging before the write (or batching
//! in the process), not a skipped fsync; that needs a power cut.

use colloquy_bus::{Bus, EmbeddedBus, EmbeddedConfig};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

/// Set (to the data directory) only in the child process.
const CHILD_DIR: &str = "COLLOQUY_BUS_CRASH_CHILD_DIR";
const TOPIC: &str = "crash";
const PUBLISHERS: u64 = 32;
const ACKS_BEFORE_KILL: usize = 2_000;

/// The payload of record `id`: a pure function, so the parent knows what
/// must be stored; sizes vary so that records straddle pages.
fn payload(id: u64) -> Vec<u8> {
    format!("payload-{id}-")
        .repeat(1 + (id % 13) as usize)
        .into_bytes()
}

/// The child's body; does nothing unless started by the test below.
#[test]
fn crash_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let cfg = EmbeddedConfig {
            max_backlog: u64::MAX,
            ..EmbeddedConfig::default()
        };
        let bus = Arc::new(EmbeddedBus::open(Path::new(&dir), cfg).unwrap());
        bus.ensure_topic(TOPIC, 4).await.unwrap();
        let publishers: Vec<_> = (0..PUBLISHERS)
            .map(|p| {
                let bus = Arc::clone(&bus);
                tokio::spawn(async move {
                    for id in (p..).step_by(PUBLISHERS as usize) {
                        let at = bus
                            .publish(TOPIC, &format!("user-{}", id % 100), payload(id), vec![])
                            .await
                            .unwrap();
                        // Fails (and ends the child) once the parent is gone.
                        let mut out = std::io::stdout().lock();
                        writeln!(out, "acked {} {} {id}", at.partition, at.offset)
                            .and_then(|()| out.flush())
                            .unwrap();
                    }
                })
            })
            .collect();
        for publisher in publishers {
            publisher.await.unwrap();
        }
    });
}

#[tokio::test]
async fn acked_publishes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR, dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut acked = Vec::new();
    let parse = |line: &str| {
        let ack = line.strip_prefix("acked ")?;
        let mut fields = ack.split(' ').map(|f| f.parse::<u64>().expect("ack field"));
        Some((fields.next()? as u32, fields.next()?, fields.next()?))
    };
    while acked.len() < ACKS_BEFORE_KILL {
        let line = lines
            .next()
            .expect("child stopped before enough acks")
            .unwrap();
        acked.extend(parse(&line));
    }
    child.kill().unwrap();
    // Acknowledgements already in the pipe count too.
    acked.extend(lines.map_while(Result::ok).filter_map(|l| parse(&l)));
    child.wait().unwrap();

    let bus = EmbeddedBus::open(dir.path(), EmbeddedConfig::default()).unwrap();
    for &(partition, offset, id) in &acked {
        let records = bus
            .fetch(TOPIC, partition, offset, 1, Duration::ZERO)
            .await
            .unwrap();
        let record = records
            .first()
            .unwrap_or_else(|| panic!("acked record {partition}/{offset} is gone"));
        assert_eq!(record.offset, offset);
        assert_eq!(record.payload, payload(id), "record {partition}/{offset}");
        assert_eq!(record.key, format!("user-{}", id % 100));
    }
    // And the log takes writes again after the point the kill cut.
    bus.publish(TOPIC, "after", b"restart".to_vec(), vec![])
        .await
        .unwrap();
    println!("{} acked records checked", acked.len());
}

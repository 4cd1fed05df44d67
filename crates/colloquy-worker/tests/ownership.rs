//! Partition ownership through Redis membership, against the machine's
//! Redis (`COLLOQUY_TEST_REDIS_URL`, default redis://127.0.0.1:6379) and
//! the embedded bus: joins, graceful leaves and crashes hand partitions
//! over, and no record is left unhandled.

#![cfg(feature = "redis")]

use async_trait::async_trait;
use colloquy_bus::runner::{Handler, HandlerError, StageConfig, StageStats};
use colloquy_bus::{Bus, EmbeddedBus, EmbeddedConfig, Record};
use colloquy_worker::ownership::{Member, OwnershipConfig, Stage};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PARTITIONS: u32 = 16;

fn redis_url() -> String {
    let url = std::env::var("COLLOQUY_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let reachable = redis::Client::open(url.as_str())
        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)))
        .is_ok();
    assert!(
        reachable,
        "Redis at {url} is not reachable: start it (redis-server --daemonize yes --port 6379) \
         or set COLLOQUY_TEST_REDIS_URL"
    );
    url
}

/// Which member handled each record, by (partition, offset).
#[derive(Default)]
struct Seen(Mutex<HashMap<(u32, u64), Vec<String>>>);

struct Recorder {
    member: String,
    seen: Arc<Seen>,
}

#[async_trait]
impl Handler for Recorder {
    async fn handle(&self, r: &Record) -> Result<(), HandlerError> {
        self.seen
            .0
            .lock()
            .unwrap()
            .entry((r.partition, r.offset))
            .or_default()
            .push(self.member.clone());
        Ok(())
    }
}

struct Group {
    bus: Arc<dyn Bus>,
    seen: Arc<Seen>,
    url: String,
    cfg: OwnershipConfig,
    group: String,
}

impl Group {
    async fn join(&self, id: &str) -> Member {
        let stage = Stage {
            bus: self.bus.clone(),
            config: StageConfig {
                commit_interval: Duration::from_millis(20),
                poll_wait: Duration::from_millis(50),
                ..StageConfig::new("work", self.group.clone())
            },
            handler: Arc::new(Recorder {
                member: id.to_string(),
                seen: self.seen.clone(),
            }),
            stats: Arc::new(StageStats::default()),
        };
        Member::join(&self.url, id.to_string(), stage, self.cfg.clone())
            .await
            .unwrap()
    }
}

/// Waits until the members own disjoint sets covering every partition;
/// returns how long that took.
async fn settled(members: &[&Member], what: &str) -> Duration {
    let started = Instant::now();
    loop {
        let sets: Vec<Vec<u32>> = members.iter().map(|m| m.owned()).collect();
        let all: BTreeSet<u32> = sets.iter().flatten().copied().collect();
        let total: usize = sets.iter().map(Vec::len).sum();
        if all.len() == PARTITIONS as usize
            && total == all.len()
            && sets.iter().all(|s| !s.is_empty())
        {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{what}: ownership did not settle: {sets:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn publish(bus: &dyn Bus, n: usize, tag: &str) {
    for i in 0..n {
        bus.publish("work", &format!("user-{tag}-{i}"), vec![1], Vec::new())
            .await
            .unwrap();
    }
}

async fn all_handled(g: &Group) {
    let mut end = 0;
    for p in 0..PARTITIONS {
        end += g.bus.end_offset("work", p).await.unwrap();
    }
    let started = Instant::now();
    loop {
        let handled = g.seen.0.lock().unwrap().len() as u64;
        if handled == end {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{handled} of {end} records handled"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_move_on_join_leave_and_crash_and_nothing_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let bus: Arc<dyn Bus> =
        Arc::new(EmbeddedBus::open(dir.path(), EmbeddedConfig::default()).unwrap());
    bus.ensure_topic("work", PARTITIONS).await.unwrap();
    let run = format!("t{}-{}", std::process::id(), fastrand_suffix());
    let g = Group {
        bus: bus.clone(),
        seen: Arc::default(),
        url: redis_url(),
        cfg: OwnershipConfig {
            prefix: format!("colloquy-test:{run}"),
            ..OwnershipConfig::default()
        },
        group: "workers".into(),
    };

    let a = g.join("a").await;
    publish(&*bus, 200, "1").await;
    let alone = settled(&[&a], "first member").await;
    all_handled(&g).await;

    let b = g.join("b").await;
    let join = settled(&[&a, &b], "join").await;
    publish(&*bus, 200, "2").await;
    all_handled(&g).await;

    b.leave().await;
    let leave = settled(&[&a], "graceful leave").await;
    publish(&*bus, 200, "3").await;
    all_handled(&g).await;

    let b = g.join("b").await;
    settled(&[&a, &b], "rejoin").await;
    drop(a); // a crash: no drain, no leave
    publish(&*bus, 200, "4").await;
    let crash = settled(&[&b], "crash").await;
    all_handled(&g).await;
    println!("settled: first {alone:?}, join {join:?}, leave {leave:?}, crash {crash:?}");

    // Handed over cleanly: a record is handled twice only if a crash cut
    // its commit short, never during a join or leave.
    let twice = g
        .seen
        .0
        .lock()
        .unwrap()
        .values()
        .filter(|v| v.len() > 1)
        .count();
    assert!(twice <= 200, "{twice} records handled more than once");
    b.leave().await;
}

fn fastrand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

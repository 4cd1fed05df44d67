//! Personal data on the distributed topology (a `colloquy gateway` and a
//! `colloquy worker` on Kafka, Redis and MariaDB): after conversations that
//! give phone numbers, no SQL row (a dump of the whole database), no Redis
//! value and no record of any topic holds one in the clear, and the
//! conversations still work, read back from the sealed copies.

#![cfg(all(feature = "kafka", feature = "redis", feature = "mysql"))]

mod cluster;
mod server;

use cluster::Cluster;
use colloquy_bus::{Bus, KafkaBus, KafkaConfig};
use server::say;
use std::process::Command;
use std::time::Duration;

const PHONE: &str = "13812345678";
const PASSING: &str = "13912345678";

fn assert_hidden(what: &str, bytes: &[u8]) {
    for s in [PHONE, PASSING] {
        assert!(
            !bytes.windows(s.len()).any(|w| w == s.as_bytes()),
            "{what} holds {s} in the clear"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_sql_row_redis_value_or_bus_record_holds_personal_data() {
    let cluster = Cluster::start();
    let (_gateway, addr) = cluster.gateway();
    let _worker = cluster.worker_with("w1", "nlu,policy,action", &[]);
    let base = format!("http://{addr}");
    let c = reqwest::Client::new();

    let passing = say(
        &c,
        &base,
        "ivan",
        &format!("我同事{PASSING}推荐的山岳,讲讲它的故事"),
    )
    .await;
    assert!(!passing.is_empty());
    let handed = say(&c, &base, "ivan", &format!("转人工,电话{PHONE}")).await;
    assert!(
        handed.iter().any(|r| r.contains("已为您转接")),
        "{handed:?}"
    );
    assert_eq!(say(&c, &base, "judy", "转人工").await.len(), 1);
    let judy = say(&c, &base, "judy", PHONE).await;
    assert!(judy.iter().any(|r| r.contains("已为您转接")), "{judy:?}");
    for r in passing.iter().chain(&handed).chain(&judy) {
        assert_hidden("a reply", r.as_bytes());
    }

    // Every SQL row: the whole database, dumped as text.
    let dump = Command::new("mariadb-dump")
        .args([
            "-h",
            "127.0.0.1",
            "-P",
            &cluster.db.port.to_string(),
            "-u",
            "root",
        ])
        .args(["--skip-comments", "colloquy"])
        .output()
        .expect("mariadb-dump (apt-get install mariadb-client)");
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let sql = String::from_utf8_lossy(&dump.stdout);
    assert!(sql.contains("sealed"), "the dump holds the sealed events");
    assert_hidden("the SQL dump", &dump.stdout);

    // Every Redis value (the L1's hot states among them).
    let port = cluster.redis.port.to_string();
    let redis = |args: &[&str]| {
        let out = Command::new("redis-cli")
            .args(["-p", &port, "--raw"])
            .args(args)
            .output()
            .expect("redis-cli");
        assert!(out.status.success());
        out.stdout
    };
    let keys = String::from_utf8(redis(&["--scan"])).unwrap();
    let states: Vec<&str> = keys.lines().filter(|k| k.contains(":state:")).collect();
    assert!(!states.is_empty(), "hot states are in Redis: {keys}");
    for key in keys.lines() {
        if String::from_utf8_lossy(&redis(&["TYPE", key])).trim() == "string" {
            assert_hidden(&format!("Redis {key}"), &redis(&["GET", key]));
        }
    }

    // Every record of every topic, as the broker holds it.
    let bus = KafkaBus::new(KafkaConfig {
        brokers: vec![cluster.broker.address().to_string()],
        ..KafkaConfig::default()
    })
    .unwrap();
    let mut records = 0;
    for topic in [
        "chat.in",
        "chat.out",
        "chat.nlu",
        "chat.action",
        "chat.in.dlq",
    ] {
        let Ok(partitions) = bus.partitions(topic).await else {
            continue;
        };
        for p in 0..partitions {
            let end = bus.end_offset(topic, p).await.unwrap();
            let mut from = 0;
            while from < end {
                let got = bus
                    .fetch(topic, p, from, 500, Duration::from_secs(2))
                    .await
                    .unwrap();
                assert!(!got.is_empty(), "{topic}/{p} from {from} to {end}");
                for r in &got {
                    assert_hidden(&format!("{topic}/{p}@{}", r.offset), &r.payload);
                    records += 1;
                }
                from = got.last().unwrap().offset + 1;
            }
        }
    }
    assert!(
        records >= 8,
        "the messages and outcomes were read: {records}"
    );
}

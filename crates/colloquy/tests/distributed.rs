//! End-to-end on the distributed topology: one `colloquy gateway` and two
//! `colloquy worker` processes on a Kafka-compatible broker (tansu), Redis
//! (L1 and membership) and MariaDB (L2). The conversations of the earlier
//! end-to-end tests run again, then the faults: a worker killed with -9
//! under load, Redis stopped and restarted, the database killed and
//! restarted. After each, every message that got a 202 has exactly one user
//! event and its replies in the log, with no manual action.

// The distributed topology runs on Kafka, Redis and MariaDB.
#![cfg(all(feature = "kafka", feature = "redis", feature = "mysql"))]

mod cluster;
mod server;

use cluster::Cluster;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use server::{load, token, wait_all_processed, Acked};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap()
}

/// Send one message and wait for the bot's replies.
async fn say(c: &reqwest::Client, base: &str, user: &str, id: &str, text: &str) -> Value {
    let r = c
        .post(format!(
            "{base}/v1/conversations/{user}/messages?wait_ms=10000"
        ))
        .bearer_auth(token(user, "chat"))
        .json(&json!({"text": text, "id": id}))
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    assert_eq!(status, 200, "{user} {text}: {body}");
    body
}

fn replies(v: &Value) -> String {
    v["replies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

/// One message per user in `users`, each waited for; how long until all
/// were answered.
async fn all_served(c: &reqwest::Client, base: &str, users: &[String], round: &str) -> Duration {
    let started = Instant::now();
    let mut pending: Vec<_> = users
        .iter()
        .map(|u| {
            let (c, base, u) = (c.clone(), base.to_string(), u.clone());
            let id = format!("{u}-{round}");
            tokio::spawn(async move { say(&c, &base, &u, &id, "星云跑鞋有39码吗").await })
        })
        .collect();
    for p in pending.drain(..) {
        let v = p.await.unwrap();
        assert!(replies(&v).contains("有货"), "{v}");
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distributed_topology_serves_and_survives_faults() {
    let mut cluster = Cluster::start();
    let (_gateway, addr) = cluster.gateway();
    let base = format!("http://{addr}");
    let _w1 = cluster.worker("w1");
    let mut w2 = cluster.worker("w2");
    let c = client();

    // The conversations, through whichever worker owns each user.
    let v = say(&c, &base, "alice", "a1", "星云跑鞋有39码吗").await;
    assert!(replies(&v).contains("星云跑鞋 39 码有货"), "{v}");
    let v = say(&c, &base, "bob", "b1", "疾风板鞋有39码吗").await;
    assert!(replies(&v).contains("缺货"), "{v}");
    let v = say(&c, &base, "frank", "f1", "我要抽奖").await;
    assert!(replies(&v).contains("第 1 轮抽奖结果"), "{v}");
    let v = say(&c, &base, "frank", "f2", "不要了").await;
    assert!(replies(&v).contains("剩下的机会随时可以回来抽"), "{v}");
    // The same client id again: the same answer, processed once.
    let again = say(&c, &base, "alice", "a1", "星云跑鞋有39码吗").await;
    assert_eq!(
        replies(&again),
        replies(&say(&c, &base, "alice", "a1", "星云跑鞋有39码吗").await)
    );

    // WebSocket: replies produced by a worker reach the gateway's socket.
    let (mut ws, _) = tokio_tungstenite::connect_async(format!(
        "ws://{addr}/v1/stream?token={}",
        token("carol", "chat")
    ))
    .await
    .unwrap();
    ws.send(Message::text(
        json!({"type": "message", "text": "星云跑鞋有40码吗", "id": "c1"}).to_string(),
    ))
    .await
    .unwrap();
    let done = loop {
        let m = tokio::time::timeout(Duration::from_secs(15), ws.next())
            .await
            .expect("a frame in time")
            .unwrap()
            .unwrap();
        let v: Value = serde_json::from_str(m.to_text().unwrap()).unwrap();
        if v["type"] == "done" {
            break v;
        }
        assert!(
            matches!(v["type"].as_str(), Some("accepted" | "reply")),
            "{v}"
        );
    };
    assert!(done["replies"].to_string().contains("40 码有货"), "{done}");

    let probes: Vec<String> = (0..16).map(|i| format!("probe{i}")).collect();
    let acked: Arc<Mutex<Acked>> = Arc::default();

    // Fault 1: a worker killed with -9 under load.
    let stop = Arc::new(AtomicBool::new(false));
    let senders = load(&base, 8, "k", acked.clone(), stop.clone());
    tokio::time::sleep(Duration::from_secs(1)).await;
    w2.kill9();
    let killed = all_served(&c, &base, &probes, "after-kill").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for s in senders {
        s.await.unwrap();
    }
    let snapshot = acked.lock().unwrap().clone();
    let caught_up = wait_all_processed(&c, &base, &snapshot, Duration::from_secs(180)).await;
    println!("worker killed: all users served again within {killed:?}; backlog processed {caught_up:?} later");
    let mut w2 = cluster.worker("w2");

    // Fault 2: Redis (L1 and membership) stopped and restarted.
    cluster.redis.stop();
    let without = all_served(&c, &base, &probes, "no-redis").await;
    cluster.redis.restart();
    let back = all_served(&c, &base, &probes, "redis-back").await;
    println!("redis stopped: served from L2 within {without:?}; after restart {back:?}");

    // Fault 3: the database killed and restarted while messages arrive.
    let stop = Arc::new(AtomicBool::new(false));
    let senders = load(&base, 4, "d", acked.clone(), stop.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.db.kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.db.restart();
    let restarted = Instant::now();
    let recovered = all_served(&c, &base, &probes, "db-back").await;
    stop.store(true, Ordering::Relaxed);
    for s in senders {
        s.await.unwrap();
    }
    let snapshot = acked.lock().unwrap().clone();
    wait_all_processed(&c, &base, &snapshot, Duration::from_secs(180)).await;
    println!(
        "database restarted: all users served {recovered:?} after it came back; every message processed {:?} after",
        restarted.elapsed()
    );
    let total: usize = acked.lock().unwrap().values().map(|s| s.len()).sum();
    assert!(total > 50, "the load got {total} messages acknowledged");
    assert_eq!(
        w2.terminate(),
        Some(0),
        "a worker leaves gracefully on SIGTERM"
    );
}

//! Kill -9 the server while clients send; after a restart every message
//! that got a 202 has exactly one user event and its replies in the log.

mod server;

use serde_json::json;
use server::{token, wait_all_processed, Server};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const USERS: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_message_survives_sigkill() {
    let data = tempfile::tempdir().unwrap();
    let mut s = Server::start(data.path(), &[]);
    let acked: Arc<Mutex<BTreeMap<String, BTreeSet<String>>>> = Arc::default();
    let c = reqwest::Client::builder()
        .http1_only()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut tasks = Vec::new();
    for u in 0..USERS {
        let (c, acked, url) = (
            c.clone(),
            acked.clone(),
            s.url(&format!("/v1/conversations/u{u}/messages")),
        );
        let tok = token(&format!("u{u}"), "chat");
        tasks.push(tokio::spawn(async move {
            for i in 0.. {
                let id = format!("u{u}-m{i}");
                let text = ["星云跑鞋有39码吗", "谢谢", "我要抽奖", "不要", "你好"][i % 5];
                match c
                    .post(&url)
                    .bearer_auth(&tok)
                    .json(&json!({"text": text, "id": id}))
                    .send()
                    .await
                {
                    Ok(r) if r.status() == 202 => {
                        acked
                            .lock()
                            .unwrap()
                            .entry(format!("u{u}"))
                            .or_default()
                            .insert(id);
                    }
                    Ok(r) => panic!("unexpected status {}", r.status()),
                    Err(_) => return, // the server is gone
                }
            }
        }));
    }
    let start = Instant::now();
    while acked
        .lock()
        .unwrap()
        .values()
        .map(BTreeSet::len)
        .sum::<usize>()
        < 400
    {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "clients made no progress"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    s.kill();
    for t in tasks {
        t.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();

    let s = Server::start(data.path(), &[]);
    wait_all_processed(&c, &s.url(""), &acked, Duration::from_secs(60)).await;
}

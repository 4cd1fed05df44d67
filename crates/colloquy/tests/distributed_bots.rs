//! Bot versions on the distributed topology: one `colloquy gateway` and
//! two `colloquy worker` processes sharing the registry in MariaDB. A push
//! and a rollout through the gateway's admin API reach both workers
//! without a restart; a rollback brings everyone back.

#![cfg(all(feature = "kafka", feature = "redis", feature = "mysql"))]

mod campaign_steps;
mod cluster;
mod server;

use cluster::Cluster;
use serde_json::{json, Value};
use server::{token, until_active, v2};
use std::time::{Duration, Instant};

async fn admin(
    c: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    body: Option<Value>,
) -> (u16, Value) {
    let mut r = c.request(method, url).bearer_auth(token("ops", "admin"));
    if let Some(b) = body {
        r = r.json(&b);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn greeting(c: &reqwest::Client, base: &str, user: &str, id: &str) -> String {
    let r = c
        .post(format!(
            "{base}/v1/conversations/{user}/messages?wait_ms=10000"
        ))
        .bearer_auth(token(user, "chat"))
        .json(&json!({"text": "你好", "id": id}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{user}");
    let v: Value = r.json().await.unwrap();
    v["replies"].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_reaches_every_worker_without_a_restart() {
    let cluster = Cluster::start();
    let (_gateway, addr) = cluster.gateway();
    let base = format!("http://{addr}");
    let _w1 = cluster.worker("w1");
    let _w2 = cluster.worker("w2");
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    use reqwest::Method;

    // Users spread over both workers: tail 0 will be the canary's, tail 5
    // stable's. `pinned` have tail 0 too but are mid-session on 1.0.0.
    let canary: Vec<String> = (0..8).map(|i| format!("user{i}0")).collect();
    let stable: Vec<String> = (0..8).map(|i| format!("user{i}5")).collect();
    let pinned: Vec<String> = (0..4).map(|i| format!("early{i}0")).collect();
    for u in stable.iter().chain(&pinned) {
        assert!(!greeting(&c, &base, u, "a").await.contains("V2"));
    }

    let (st, pushed) = admin(
        &c,
        Method::POST,
        format!("{base}/v1/bots"),
        Some(json!({"files": v2()})),
    )
    .await;
    assert_eq!(st, 201, "{pushed}");
    let asked = Instant::now();
    let (st, r) = admin(
        &c,
        Method::PUT,
        format!("{base}/v1/bots/shoe-store/rollout"),
        Some(json!({"stable": "1.0.0", "canary": {"version": "1.1.0", "tails": [0]}})),
    )
    .await;
    assert_eq!(st, 200, "{r}");
    let processes = until_active(
        &c,
        &base,
        "shoe-store",
        r["rollout"]["generation"].as_u64().unwrap(),
    )
    .await;
    let active = processes.iter().filter(|p| p["status"] == "active").count();
    assert_eq!(
        active, 2,
        "both workers activated the rollout: {processes:?}"
    );
    let activated = asked.elapsed();
    for u in &canary {
        let replies = greeting(&c, &base, u, "b").await;
        assert!(replies.contains("V2"), "{u}: {replies}");
    }
    println!(
        "distributed: both workers activated within {activated:?}; every canary user answered by 1.1.0 within {:?} of the admin call",
        asked.elapsed()
    );
    for u in stable.iter().chain(&pinned) {
        assert!(!greeting(&c, &base, u, "b").await.contains("V2"), "{u}");
    }

    let (st, r) = admin(
        &c,
        Method::POST,
        format!("{base}/v1/bots/shoe-store/rollback"),
        None,
    )
    .await;
    assert_eq!(st, 200, "{r}");
    for u in &canary {
        assert!(!greeting(&c, &base, u, "c").await.contains("V2"), "{u}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lottery_campaign_runs_on_the_distributed_topology() {
    let cluster = Cluster::start();
    let (_gateway, addr) = cluster.gateway();
    let _w1 = cluster.worker("w1");
    let _w2 = cluster.worker("w2");
    let shop = campaign_steps::Shop {
        c: reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap(),
        base: format!("http://{addr}"),
    };
    // The workers registered the shipped bot; the shop goes to 2.0.0, the
    // version without the lottery, through the admin API.
    use reqwest::Method;
    shop.admin(
        Method::POST,
        "/v1/bots",
        Some(json!({"files": campaign_steps::variant("2.0.0", false)})),
    )
    .await;
    let r = shop
        .admin(
            Method::PUT,
            "/v1/bots/shoe-store/rollout",
            Some(json!({"stable": "2.0.0"})),
        )
        .await;
    let generation = r["rollout"]["generation"].as_u64().unwrap();
    until_active(&shop.c, &shop.base, "shoe-store", generation).await;
    campaign_steps::run(&shop, generation).await;
}

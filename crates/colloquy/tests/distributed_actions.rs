//! Remote actions on the distributed topology: a `colloquy gateway`, a
//! worker running the nlu and policy stages, and an action worker
//! consuming `chat.action` (Kafka, Redis, MariaDB). A turn's replies from
//! after its action reach the waiting request; a user's next message waits
//! behind a pending action; and killing the action worker with -9 during
//! a call makes its successor repeat the call with the same key and apply
//! it once.

#![cfg(all(feature = "kafka", feature = "redis", feature = "mysql"))]

mod action_server;
mod cluster;
mod server;

use action_server::{counted_bot, counter};
use cluster::Cluster;
use serde_json::json;
use server::{events_after, of_type, say, token, until_events, write_bot};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_action_stage_runs_on_its_own_and_survives_kill_9() {
    let (counted, url) = counter().await;
    let cluster = Cluster::start();
    let bot = tempfile::tempdir().unwrap();
    write_bot(bot.path(), &counted_bot(&url));
    let bot_arg = ["--bot", bot.path().to_str().unwrap()];
    let (_gateway, addr) = cluster.gateway();
    let _policy = cluster.worker_with("policy-1", "nlu,policy", &bot_arg);
    let mut actions = cluster.worker_with("action-1", "action", &bot_arg);
    let base = format!("http://{addr}");
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();

    // The replies after the action reach the request waiting for them.
    assert_eq!(
        say(&c, &base, "w", "try the flaky one").await,
        vec!["checked", "7 left"]
    );
    assert_eq!(counted.calls("flaky").len(), 3, "two 503s, then the answer");

    // A call that never returns, and the user's next message behind it.
    for (id, text) in [("m1", "hang on please"), ("m2", "try the flaky one")] {
        let r = c
            .post(format!("{base}/v1/conversations/k/messages"))
            .bearer_auth(token("k", "chat"))
            .json(&json!({"text": text, "id": id}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
    }
    let started = Instant::now();
    while counted.calls("hang").is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the action worker never called"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let events = events_after(&c, &base, "k", &token("k", "chat"), 0).await;
    assert_eq!(
        of_type(&events, "user_said").len(),
        1,
        "the second message waits behind the pending action: {events:#?}"
    );
    actions.kill9();
    let _successor = cluster.worker_with("action-2", "action", &bot_arg);

    let events = until_events(
        &c,
        &base,
        "k",
        Duration::from_secs(90),
        "the call was not repeated",
        |e| of_type(e, "flow_ended").len() >= 2,
    )
    .await;
    let hang = counted.by_key("hang");
    assert_eq!(hang.len(), 1, "one key across the kill: {hang:?}");
    assert_eq!(
        hang.values().next(),
        Some(&2),
        "called before the kill and once after"
    );
    let kinds: Vec<&str> = events
        .iter()
        .filter_map(|e| e["type"].as_str())
        .filter(|t| ["user_said", "action_requested", "action_completed"].contains(t))
        .collect();
    assert_eq!(
        kinds,
        vec![
            "user_said",
            "action_requested",
            "action_completed",
            "user_said",
            "action_requested",
            "action_completed"
        ],
        "each action applied once, the second message after the first's action"
    );
}

//! Bot versions on a running `colloquy serve`: push through the admin API,
//! canary by user-id tail, promote with sessions pinned, roll back, and a
//! restart that keeps the rollout. No step restarts the server.

mod server;

use reqwest::StatusCode;
use serde_json::{json, Value};
use server::{shoe_store, token, until_active, v2, write_bot, Server};
use std::collections::BTreeMap;
use std::time::Instant;

fn client() -> reqwest::Client {
    reqwest::Client::builder().http1_only().build().unwrap()
}

async fn admin(
    c: &reqwest::Client,
    s: &Server,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut r = c
        .request(method, s.url(path))
        .bearer_auth(token("ops", "admin"));
    if let Some(b) = body {
        r = r.json(&b);
    }
    let r = r.send().await.unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn say(c: &reqwest::Client, s: &Server, user: &str, text: &str) -> Vec<String> {
    let r = c
        .post(s.url(&format!("/v1/conversations/{user}/messages?wait_ms=5000")))
        .bearer_auth(token(user, "chat"))
        .json(&json!({ "text": text }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{user}: {text}");
    let v: Value = r.json().await.unwrap();
    v["replies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect()
}

async fn route(c: &reqwest::Client, s: &Server, user: &str) -> Value {
    let r = c
        .get(s.url(&format!("/v1/conversations/{user}/state")))
        .bearer_auth(token(user, "chat"))
        .send()
        .await
        .unwrap();
    r.json::<Value>().await.unwrap()["route"].clone()
}

fn greeted_by_v2(replies: &[String]) -> bool {
    replies.iter().any(|r| r.starts_with("V2"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_roll_out_by_tail_pin_sessions_and_roll_back_without_a_restart() {
    let data = tempfile::tempdir().unwrap();
    let mut s = Server::start(data.path(), &[]);
    let c = client();
    use reqwest::Method;

    // The directory serve started with is registered and serves everyone.
    let (st, list) = admin(&c, &s, Method::GET, "/v1/bots", None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(list["versions"][0]["version"], "1.0.0");
    assert_eq!(list["versions"][0]["name"], "shoe-store");
    let chat = c
        .get(s.url("/v1/bots"))
        .bearer_auth(token("alice", "chat"))
        .send()
        .await
        .unwrap();
    assert_eq!(chat.status(), StatusCode::FORBIDDEN);

    // Push: new, repeated, changed under the same version, invalid.
    let files = v2();
    let (st, pushed) = admin(
        &c,
        &s,
        Method::POST,
        "/v1/bots",
        Some(json!({ "files": files })),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{pushed}");
    assert_eq!(pushed["pushed_by"], "ops");
    assert_eq!(pushed["hash"].as_str().unwrap().len(), 64);
    let (st, _) = admin(
        &c,
        &s,
        Method::POST,
        "/v1/bots",
        Some(json!({ "files": files })),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let mut changed = files.clone();
    changed
        .get_mut("responses.yaml")
        .unwrap()
        .push_str("\n  extra: 多余\n");
    let (st, e) = admin(
        &c,
        &s,
        Method::POST,
        "/v1/bots",
        Some(json!({ "files": changed })),
    )
    .await;
    assert_eq!(
        (st, e["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("version_exists"))
    );
    let mut broken = files.clone();
    let bot = broken.get_mut("bot.yaml").unwrap();
    *bot = bot.replace("fallback: fallback", "fallback: no_such_response");
    let (st, e) = admin(
        &c,
        &s,
        Method::POST,
        "/v1/bots",
        Some(json!({ "files": broken })),
    )
    .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    let first = &e["error"]["details"]["errors"][0];
    assert_eq!(first["file"], "bot.yaml");
    assert_eq!(first["field"], "bot.fallback");
    assert!(first["line"].as_u64().unwrap() > 0);
    let (st, listed) = admin(&c, &s, Method::GET, "/v1/bots?bot=shoe-store", None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        listed["versions"].as_array().unwrap().len(),
        2,
        "the refused pushes kept nothing"
    );
    let (st, shown) = admin(
        &c,
        &s,
        Method::GET,
        "/v1/bots/shoe-store/versions/1.1.0",
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(shown["files"]["bot.yaml"], files["bot.yaml"]);

    // Before the canary: a user on stable, in a session.
    assert!(!greeted_by_v2(&say(&c, &s, "u41", "你好").await));

    // Canary to tail 0.
    let asked = Instant::now();
    let (st, r) = admin(
        &c,
        &s,
        Method::PUT,
        "/v1/bots/shoe-store/rollout",
        Some(json!({"stable": "1.0.0", "canary": {"version": "1.1.0", "tails": [0]}})),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{r}");
    assert_eq!(r["rollout"]["generation"], 2);
    let processes = until_active(&c, &s.url(""), "shoe-store", 2).await;
    assert_eq!(processes.len(), 1, "{processes:?}");
    assert_eq!(processes[0]["status"], "active", "{processes:?}");
    assert!(greeted_by_v2(&say(&c, &s, "u10", "你好").await));
    println!("admin call to first canary reply: {:?}", asked.elapsed());
    assert_eq!(
        route(&c, &s, "u10").await,
        json!({"version": "1.1.0", "reason": "canary", "tail": 0})
    );
    assert!(!greeted_by_v2(&say(&c, &s, "u11", "你好").await));
    assert_eq!(route(&c, &s, "u11").await["reason"], "stable");

    // Promote: new users get 1.1.0; u41's session stays on 1.0.0.
    let (st, r) = admin(&c, &s, Method::POST, "/v1/bots/shoe-store/promote", None).await;
    assert_eq!(st, StatusCode::OK, "{r}");
    assert_eq!(r["rollout"]["rollout"]["stable"], "1.1.0");
    assert!(greeted_by_v2(&say(&c, &s, "u42", "你好").await));
    assert!(!greeted_by_v2(&say(&c, &s, "u41", "你好").await));
    assert_eq!(route(&c, &s, "u41").await["reason"], "pinned");

    // Roll back: 1.1.0 is withdrawn, its users are back on 1.0.0 at once.
    let (st, r) = admin(&c, &s, Method::POST, "/v1/bots/shoe-store/rollback", None).await;
    assert_eq!(st, StatusCode::OK, "{r}");
    assert_eq!(r["rollout"]["rollout"]["stable"], "1.0.0");
    assert_eq!(r["rollout"]["rollout"]["withdrawn"], json!(["1.1.0"]));
    assert!(!greeted_by_v2(&say(&c, &s, "u10", "你好").await));
    assert!(!greeted_by_v2(&say(&c, &s, "u42", "你好").await));
    assert_eq!(route(&c, &s, "u42").await["version"], "1.0.0");

    let (st, h) = admin(&c, &s, Method::GET, "/v1/bots/shoe-store/history", None).await;
    assert_eq!(st, StatusCode::OK);
    let actions: Vec<&str> = h["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["rollback", "promote", "set", "local"]);

    // Every admin action is in the audit log, refused ones too: who, from
    // where, what, how it went.
    let (st, a) = admin(&c, &s, Method::GET, "/v1/audit", None).await;
    assert_eq!(st, StatusCode::OK);
    let log: Vec<(String, String, String)> = a["audit"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            assert_eq!(e["by"], "ops", "{e}");
            assert!(e["from"].as_str().unwrap().starts_with("127.0.0.1:"), "{e}");
            (
                e["action"].as_str().unwrap().to_string(),
                e["bot"].as_str().unwrap().to_string(),
                e["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let outcomes: Vec<&str> = log.iter().map(|(_, _, o)| o.as_str()).collect();
    assert_eq!(
        outcomes,
        [
            "generation 4: stable 1.0.0",
            "generation 3: stable 1.1.0",
            "generation 2: stable 1.0.0, canary 1.1.0 for tails [0]",
            "refused: 422 invalid_bot",
            "refused: 409 version_exists",
            "1.1.0 unchanged",
            "1.1.0 created",
        ],
        "{log:?}"
    );
    assert_eq!(log[0].0, "rollback");
    assert_eq!(log[3].1, "?", "a bot that does not compile has no name yet");
    let chat = c
        .get(s.url("/v1/audit"))
        .bearer_auth(token("alice", "chat"))
        .send()
        .await
        .unwrap();
    assert_eq!(chat.status(), StatusCode::FORBIDDEN);

    // A restart keeps what the admin API set.
    assert_eq!(s.terminate(), Some(0));
    let s = Server::start(data.path(), &[]);
    let (_, r) = admin(&c, &s, Method::GET, "/v1/bots/shoe-store/rollout", None).await;
    assert_eq!(r["rollout"]["generation"], 4, "{r}");
    assert!(!greeted_by_v2(&say(&c, &s, "u10", "你好").await));
}

fn cli(s: &Server, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_colloquy"))
        .arg("bots")
        .args(args)
        .env("COLLOQUY_URL", s.url(""))
        .env("COLLOQUY_TOKEN", token("ops", "admin"))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bots_command_drives_a_rollout() {
    let data = tempfile::tempdir().unwrap();
    let s = Server::start(data.path(), &[]);
    let dir = tempfile::tempdir().unwrap();
    write_bot(dir.path(), &v2());
    let d = dir.path().to_str().unwrap();
    let (ok, out) = cli(&s, &["push", d]);
    assert!(ok, "{out}");
    assert!(out.contains("shoe-store 1.1.0 pushed"), "{out}");
    let (ok, out) = cli(&s, &["list", "shoe-store"]);
    assert!(
        ok && out.contains("1.0.0") && out.contains("1.1.0"),
        "{out}"
    );
    let (ok, out) = cli(
        &s,
        &[
            "rollout",
            "shoe-store",
            "--stable",
            "1.0.0",
            "--canary",
            "1.1.0",
            "--tails",
            "0,1",
        ],
    );
    assert!(ok, "{out}");
    assert!(out.contains("canary 1.1.0 for tails [0,1]"), "{out}");
    assert!(out.contains("/serve"), "the serve process is listed: {out}");
    let c = client();
    until_active(&c, &s.url(""), "shoe-store", 2).await;
    assert!(greeted_by_v2(&say(&c, &s, "u21", "你好").await));
    // `bots status` shows each version's last minute, as the processes
    // report it (every few seconds).
    let started = std::time::Instant::now();
    let status = loop {
        let (ok, out) = cli(&s, &["status", "shoe-store"]);
        assert!(ok, "{out}");
        if out.lines().any(|l| l.trim_start().starts_with("1.1.0 ")) {
            break out;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "{out}"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    assert!(
        status.contains("users") && status.contains("p99 ms"),
        "{status}"
    );
    let row: Vec<&str> = status
        .lines()
        .find(|l| l.trim_start().starts_with("1.1.0 "))
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(row[1], "1", "one canary user (u21): {status}");
    assert_eq!(row[2], "1", "one canary turn: {status}");
    assert_eq!(row[3], "0.0%", "a greeting is no fallback: {status}");
    let (ok, out) = cli(&s, &["rollout", "shoe-store", "--stable", "9.9.9"]);
    assert!(!ok && out.contains("unknown_version"), "{out}");
    let (ok, out) = cli(&s, &["promote", "shoe-store"]);
    assert!(ok && out.contains("stable 1.1.0"), "{out}");
    let (ok, out) = cli(&s, &["rollback", "shoe-store"]);
    assert!(
        ok && out.contains("stable 1.0.0") && out.contains("withdrawn"),
        "{out}"
    );
    let (ok, out) = cli(&s, &["history", "shoe-store"]);
    assert!(ok, "{out}");
    assert_eq!(out.lines().count(), 4, "{out}");
    // A bot that does not compile is refused with file, line and field.
    std::fs::write(
        dir.path().join("bot.yaml"),
        std::fs::read_to_string(dir.path().join("bot.yaml"))
            .unwrap()
            .replace("version: \"1.1.0\"", "version: \"1.2.0\"")
            .replace("fallback: fallback", "fallback: nope"),
    )
    .unwrap();
    let (ok, out) = cli(&s, &["push", d]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("422") && out.contains("bot.yaml:") && out.contains("bot.fallback"),
        "{out}"
    );
}

/// Version 1.2.0: a bad release whose classifier threshold (0.99) makes it
/// fall back on nearly everything.
fn bad_canary() -> BTreeMap<String, String> {
    let mut files = shoe_store();
    let bot = files.get_mut("bot.yaml").unwrap();
    *bot = bot
        .replace("version: \"1.0.0\"", "version: \"1.2.0\"")
        .replace("threshold: 0.4", "threshold: 0.99");
    files
}

/// The shoe store's fallback response, in either of its variants.
fn fell_back(replies: &[String]) -> bool {
    replies
        .iter()
        .any(|r| r.starts_with("抱歉,我没太听懂") || r.starts_with("这个问题我还不会回答"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_that_breaches_its_guard_is_rolled_back_by_itself() {
    let data = tempfile::tempdir().unwrap();
    let s = Server::start(data.path(), &[]);
    let c = client();
    use reqwest::Method;

    let (st, r) = admin(
        &c,
        &s,
        Method::POST,
        "/v1/bots",
        Some(json!({ "files": bad_canary() })),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{r}");
    // A guard that makes no sense is refused, and nothing changes.
    let (st, r) = admin(
        &c,
        &s,
        Method::PUT,
        "/v1/bots/shoe-store/rollout",
        Some(
            json!({"stable": "1.0.0", "canary": {"version": "1.2.0", "tails": [0]},
                    "guards": [{"metric": "fallback_rate", "max_increase": 0.2, "window": "2h"}]}),
        ),
    )
    .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{r}");
    let (st, r) = admin(
        &c,
        &s,
        Method::PUT,
        "/v1/bots/shoe-store/rollout",
        Some(json!({
            "stable": "1.0.0",
            "canary": {"version": "1.2.0", "tails": [0, 1, 2, 3, 4]},
            "guards": [{"metric": "fallback_rate", "max_increase": 0.3, "window": "60s", "min_turns": 10}],
        })),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{r}");
    assert_eq!(r["rollout"]["rollout"]["guards"][0]["min_turns"], 10, "{r}");
    let guarded_generation = r["rollout"]["generation"].as_u64().unwrap();

    // Many users, half of them on the canary, until the guard trips. Each
    // text is one stable understands (the right intent in `colloquy nlu
    // test`) and that falls back at 1.2.0's threshold of 0.99 (`nlu test`
    // on a copy with that threshold): training examples and near copies
    // of them pass even 0.99.
    let texts = ["亲在吗", "我的快递呢", "有货吗", "你们还有鞋吗"];
    let (mut canary_turns, mut canary_fallbacks) = (0, 0);
    let mut tripped_after = None;
    for i in 0..200 {
        let user = format!("guard-user-{i}");
        let replies = say(&c, &s, &user, texts[i % texts.len()]).await;
        if route(&c, &s, &user).await["version"] == "1.2.0" {
            canary_turns += 1;
            canary_fallbacks += usize::from(fell_back(&replies));
        } else {
            assert!(
                !fell_back(&replies),
                "stable user {user} fell back: {replies:?}"
            );
        }
        let (_, now) = admin(&c, &s, Method::GET, "/v1/bots/shoe-store/rollout", None).await;
        if now["rollout"]["generation"].as_u64() != Some(guarded_generation) {
            tripped_after = Some(i + 1);
            break;
        }
    }
    let turns = tripped_after.unwrap_or_else(|| {
        panic!(
            "the guard never tripped: {canary_fallbacks} of {canary_turns} canary turns fell back"
        )
    });
    println!("guard tripped after {turns} turns ({canary_fallbacks} of {canary_turns} canary turns fell back)");
    assert!(
        canary_turns >= 10,
        "tripped before min_turns: {canary_turns}"
    );
    assert!(
        canary_fallbacks * 2 > canary_turns,
        "the bad canary fell back on {canary_fallbacks} of {canary_turns}"
    );

    // Rolled back by the guard, with the figures in the history.
    let (_, h) = admin(&c, &s, Method::GET, "/v1/bots/shoe-store/history", None).await;
    let newest = &h["history"][0];
    assert_eq!(newest["action"], "guard", "{h}");
    let note = newest["note"].as_str().unwrap();
    assert!(
        note.starts_with("fallback_rate canary ") && note.contains(" vs stable 0.00 over 1m ("),
        "{note}"
    );
    let (_, r) = admin(&c, &s, Method::GET, "/v1/bots/shoe-store/rollout", None).await;
    let rollout = &r["rollout"]["rollout"];
    assert_eq!(rollout["stable"], "1.0.0", "{r}");
    assert!(rollout.get("canary").is_none(), "{r}");
    assert!(rollout.get("guards").is_none(), "{r}");
    assert_eq!(rollout["withdrawn"], json!(["1.2.0"]), "{r}");

    // Canary users are back on stable at their next turn; stable users
    // never saw a change.
    for user in ["guard-user-10", "guard-user-13", "guard-user-15"] {
        assert!(!fell_back(&say(&c, &s, user, "有货吗").await), "{user}");
        assert_eq!(route(&c, &s, user).await["version"], "1.0.0");
    }

    let m = c
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for needle in [
        "colloquy_turns_total{bot_version=\"1.0.0\"}",
        "colloquy_turns_total{bot_version=\"1.2.0\"}",
        "colloquy_handoffs_total{bot_version=\"1.2.0\"} 0",
        "colloquy_action_errors_total{bot_version=\"1.2.0\"} 0",
        "colloquy_turn_duration_seconds_count{bot_version=\"1.2.0\"}",
        "colloquy_rollout_guard_trips_total{bot=\"shoe-store\"} 1",
        "colloquy_fallbacks_total{bot_version=\"1.0.0\"} 0",
        &format!("colloquy_fallbacks_total{{bot_version=\"1.2.0\"}} {canary_fallbacks}"),
    ] {
        assert!(m.contains(needle), "{needle} not in\n{m}");
    }
}

/// Switches under load: while users keep talking, a canary is set,
/// promoted and rolled back. Every message the server acknowledged is
/// answered exactly once, and none is failed by a switch (the loader
/// panics on any answer but 202 and 503 "queue full").
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rollout_changes_under_load_lose_and_fail_no_turn() {
    use std::collections::BTreeSet;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    let data = tempfile::tempdir().unwrap();
    let s = Server::start(data.path(), &[]);
    let c = client();
    let base = s.url("");
    let acked: Arc<Mutex<server::Acked>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let senders = server::load(&base, 16, "load", acked.clone(), stop.clone());
    use reqwest::Method;
    let (st, _) = admin(
        &c,
        &s,
        Method::POST,
        "/v1/bots",
        Some(json!({"files": v2()})),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED);
    let canary =
        json!({"stable": "1.0.0", "canary": {"version": "1.1.0", "tails": [0, 1, 2, 3, 4]}});
    let (st, _) = admin(
        &c,
        &s,
        Method::PUT,
        "/v1/bots/shoe-store/rollout",
        Some(canary),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    until_active(&c, &base, "shoe-store", 2).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let (st, _) = admin(&c, &s, Method::POST, "/v1/bots/shoe-store/promote", None).await;
    assert_eq!(st, StatusCode::OK);
    until_active(&c, &base, "shoe-store", 3).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let (st, _) = admin(&c, &s, Method::POST, "/v1/bots/shoe-store/rollback", None).await;
    assert_eq!(st, StatusCode::OK);
    until_active(&c, &base, "shoe-store", 4).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for s in senders {
        s.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let total: usize = acked.values().map(BTreeSet::len).sum();
    assert!(total > 100, "the load ran: {total} messages");
    server::wait_all_processed(&c, &base, &acked, std::time::Duration::from_secs(60)).await;
}

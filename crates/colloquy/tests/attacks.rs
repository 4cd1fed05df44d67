//! Attacks on a running `colloquy serve` that once did harm, replayed
//! against the real server so that they stay harmless.

mod server;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use server::{token, Server};

fn client() -> reqwest::Client {
    reqwest::Client::builder().http1_only().build().unwrap()
}

async fn say(c: &reqwest::Client, s: &Server, user: &str, text: &str) -> (StatusCode, Value) {
    let r = c
        .post(s.url(&format!("/v1/conversations/{user}/messages?wait_ms=5000")))
        .bearer_auth(token(user, "chat"))
        .json(&json!({ "text": text }))
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn get(c: &reqwest::Client, s: &Server, user: &str, path: &str) -> (StatusCode, Value) {
    let r = c
        .get(s.url(&format!("/v1/conversations/{user}/{path}")))
        .bearer_auth(token(user, "chat"))
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn metrics(c: &reqwest::Client, s: &Server) -> String {
    c.get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Every request used to add a time series labelled with its raw method,
/// so unauthenticated requests with invented methods grew `/metrics` (and
/// the server) without bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invented_http_methods_do_not_grow_the_metrics() {
    let data = tempfile::tempdir().unwrap();
    let s = Server::start(data.path(), &[]);
    let c = client();
    let before = metrics(&c, &s).await.len();
    for i in 0..2000 {
        let method = Method::from_bytes(format!("ATTACK{i}").as_bytes()).unwrap();
        let r = c.request(method, s.url("/nowhere")).send().await.unwrap();
        assert_eq!(r.status(), 404);
    }
    let after = metrics(&c, &s).await;
    assert!(!after.contains("ATTACK"), "a raw method became a label");
    assert!(
        after.contains("method=\"other\""),
        "invented methods are not counted together:\n{after}"
    );
    // One new series for the 404s (plus the /metrics request itself), not
    // one per method: a few KB at most.
    assert!(
        after.len() < before + 8 * 1024,
        "/metrics grew from {before} to {} bytes",
        after.len()
    );
}

/// A long run of digits parsed to an infinite float, which was stored as
/// `null` and then could not be read: the user's events and state answered
/// 503 for good and, after a restart, every later message of theirs was
/// dead-lettered without a reply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbers_too_large_for_a_float_do_not_break_a_conversation() {
    let data = tempfile::tempdir().unwrap();
    let mut s = Server::start(data.path(), &[]);
    let c = client();
    let poison = [
        format!("我脚长{}cm", "9".repeat(400)),
        format!("我脚长一{}厘米", "亿".repeat(40)),
        format!("{}码有货吗", "9".repeat(400)),
    ];
    for text in &poison {
        let (st, v) = say(&c, &s, "dora", text).await;
        assert_eq!(st, 200, "{text}: {v}");
        assert!(
            !v["replies"].as_array().unwrap().is_empty(),
            "{text}: no reply: {v}"
        );
    }
    for path in ["events?after=0&limit=1000", "state"] {
        let (st, v) = get(&c, &s, "dora", path).await;
        assert_eq!(st, 200, "{path}: {v}");
    }
    assert_eq!(s.terminate(), Some(0));

    let s = Server::start(data.path(), &[]);
    let (st, v) = say(&c, &s, "dora", "星云跑鞋有39码吗").await;
    assert_eq!(st, 200, "after a restart: {v}");
    assert!(
        v["replies"][0].as_str().unwrap().contains("39"),
        "after a restart: {v}"
    );
    let (st, v) = get(&c, &s, "dora", "events?after=0&limit=1000").await;
    assert_eq!(st, 200, "{v}");
    assert!(
        !metrics(&c, &s)
            .await
            .contains("colloquy_dead_letters_total 1"),
        "a message was dead-lettered"
    );
}

/// Runs `colloquy ROLE` on a fresh data directory until it listens, then
/// stops it with SIGTERM; returns all it printed.
fn stdout_of_role(role: &str, secret: Option<&str>) -> String {
    use std::io::{BufRead, BufReader, Read};
    let data = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_colloquy"));
    cmd.current_dir(server::root())
        .args([role, "--listen", "127.0.0.1:0", "--data"])
        .arg(data.path())
        .env_remove("COLLOQUY_JWT_SECRET")
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped());
    if let Some(s) = secret {
        cmd.env("COLLOQUY_JWT_SECRET", s);
    }
    let mut child = cmd.spawn().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut printed = String::new();
    while !printed.contains(" on http://") {
        assert!(
            out.read_line(&mut printed).unwrap() > 0,
            "{role} exited: {printed}"
        );
    }
    server::terminate(&mut child, role, std::time::Duration::from_secs(10));
    out.read_to_string(&mut printed).unwrap();
    printed
}

/// Every HS256 gateway used to print a valid 24-hour chat token for
/// `alice`. Only `serve`, with a secret it generated for a developer,
/// prints one now.
#[test]
fn only_serve_with_its_own_secret_prints_a_development_token() {
    let printed = stdout_of_role("serve", None);
    assert!(
        printed.contains("development token for user alice"),
        "{printed}"
    );
    for (role, secret) in [
        ("serve", Some(server::SECRET)),
        ("gateway", None),
        ("gateway", Some(server::SECRET)),
    ] {
        let printed = stdout_of_role(role, secret);
        assert!(!printed.contains("token"), "{role}: {printed}");
        assert!(!printed.contains("eyJ"), "{role}: {printed}");
    }
}

/// Deny patterns used to be bypassed by splitting a word with invisible
/// characters the hand-written list did not know.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invisible_characters_do_not_bypass_deny_patterns() {
    let data = tempfile::tempdir().unwrap();
    let s = Server::start(
        data.path(),
        &[("COLLOQUY_LIMITS_DENY_PATTERNS", r#"["free\\s*money"]"#)],
    );
    let c = client();
    for hidden in ['\u{00AD}', '\u{2066}', '\u{034F}', '\u{E0020}', '\u{180E}'] {
        let (st, v) = say(&c, &s, "erin", &format!("free{hidden}mo{hidden}ney")).await;
        assert_eq!(st, 422, "U+{:04X}: {v}", hidden as u32);
        assert_eq!(v["error"]["code"], "text_denied");
    }
    let (st, _) = say(&c, &s, "erin", "星云跑鞋有39码吗").await;
    assert_eq!(st, 200);
}

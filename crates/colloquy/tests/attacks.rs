//! Attacks on a running `colloquy serve` that once did harm, replayed
//! against the real server so that they stay harmless.

mod server;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use server::{closed_with, metrics, open_ws, token, Server};

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

/// Every request used to add a time series labelled with its raw method,
/// so unauthenticated requests with invented methods grew `/metrics` (and
/// the server) without bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invented_http_methods_do_not_grow_the_metrics() {
    let data = tempfile::tempdir().unwrap();
    let s = Server::start(data.path(), &[]);
    let c = client();
    let before = metrics(&c, &s.url("")).await.len();
    for i in 0..2000 {
        let method = Method::from_bytes(format!("ATTACK{i}").as_bytes()).unwrap();
        let r = c.request(method, s.url("/nowhere")).send().await.unwrap();
        assert_eq!(r.status(), 404);
    }
    let after = metrics(&c, &s.url("")).await;
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
        !metrics(&c, &s.url(""))
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

/// Sessions used to give their connection slot back at the upgrade and had
/// no per-user cap: one chat token held 1,500 sockets past a limit of 20.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_sessions_hold_connection_slots_and_are_capped_per_user() {
    let data = tempfile::tempdir().unwrap();
    let s = Server::start(
        data.path(),
        &[
            ("COLLOQUY_SERVER_MAX_CONNECTIONS", "4"),
            ("COLLOQUY_LIMITS_MAX_SESSIONS_PER_USER", "2"),
        ],
    );
    let alice = token("alice", "chat");
    let mut held = vec![
        open_ws(&s, &alice).await.unwrap(),
        open_ws(&s, &alice).await.unwrap(),
    ];
    match open_ws(&s, &alice).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 429),
        other => panic!("a third session of alice: {other:?}"),
    }
    let bob = token("bob", "chat");
    held.push(open_ws(&s, &bob).await.unwrap());
    held.push(open_ws(&s, &bob).await.unwrap());
    // Four sessions hold all four slots: a new client waits in the backlog.
    let quick = reqwest::Client::builder()
        .http1_only()
        .timeout(std::time::Duration::from_millis(800))
        .build()
        .unwrap();
    assert!(
        quick.get(s.url("/healthz")).send().await.is_err(),
        "a fifth connection was served while four sessions were open"
    );
    let mut gone = held.pop().unwrap();
    gone.close(None).await.unwrap();
    drop(gone);
    let mut served = false;
    for _ in 0..20 {
        if quick.get(s.url("/healthz")).send().await.is_ok() {
            served = true;
            break;
        }
    }
    assert!(served, "a closed session never gave its slot back");
}

/// Idle sockets lived past every timeout, and a session outlived its token:
/// 8 s after the token expired it still took messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_sessions_end_when_idle_and_when_their_token_expires() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let data = tempfile::tempdir().unwrap();
    let s = Server::start(
        data.path(),
        &[
            ("COLLOQUY_LIMITS_WS_IDLE_TIMEOUT", "1s"),
            ("COLLOQUY_AUTH_LEEWAY_SECS", "0"),
        ],
    );
    let mut idle = open_ws(&s, &token("ivy", "chat")).await.unwrap();
    let started = std::time::Instant::now();
    assert_eq!(
        closed_with(&mut idle, std::time::Duration::from_secs(5)).await,
        (1000, "idle".to_string())
    );
    assert!(started.elapsed() >= std::time::Duration::from_millis(900));

    // The server first: a slow start must not eat the token's 3 seconds.
    let data = tempfile::tempdir().unwrap();
    let s = Server::start(data.path(), &[("COLLOQUY_AUTH_LEEWAY_SECS", "0")]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let short = server::jwt(
        "HS256",
        server::SECRET,
        json!({"sub": "tom", "scope": "chat", "iat": now, "exp": now + 3}),
    );
    let mut ws = open_ws(&s, &short).await.unwrap();
    ws.send(Message::text(r#"{"type":"message","text":"你好"}"#))
        .await
        .unwrap();
    assert_eq!(
        closed_with(&mut ws, std::time::Duration::from_secs(8)).await,
        (1008, "token expired".to_string())
    );
}

/// A peer that stops answering pings is dropped, without waiting for the
/// idle timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_peer_that_stops_answering_pings_is_dropped() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let data = tempfile::tempdir().unwrap();
    let s = Server::start(
        data.path(),
        &[
            ("COLLOQUY_LIMITS_WS_PING_INTERVAL", "500ms"),
            ("COLLOQUY_LIMITS_WS_IDLE_TIMEOUT", "1h"),
        ],
    );
    // A hand-made handshake, then silence: this client never answers.
    let mut tcp = tokio::net::TcpStream::connect(&s.addr).await.unwrap();
    let request = format!(
        "GET /v1/stream?token={} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        token("pat", "chat"),
        s.addr
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    let ended = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        let mut buf = [0u8; 1024];
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(
        String::from_utf8_lossy(&seen).starts_with("HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&seen)
    );
    assert!(ended.is_ok(), "the silent peer was never dropped");
}

/// 50 concurrent posts with one client id were all published: the message
/// was processed once, but classified and loaded 50 times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_repeats_of_one_client_id_are_published_once() {
    let data = tempfile::tempdir().unwrap();
    let s = Server::start(data.path(), &[]);
    let c = client();
    let tok = token("rita", "chat");
    let posts = (0..50).map(|_| {
        c.post(s.url("/v1/conversations/rita/messages"))
            .bearer_auth(&tok)
            .json(&json!({"text": "星云跑鞋有39码吗", "id": "same-id"}))
            .send()
    });
    let answers = futures_util::future::join_all(posts).await;
    let mut ids = std::collections::BTreeSet::new();
    for a in answers {
        let r = a.unwrap();
        assert_eq!(r.status(), 202);
        let v: Value = r.json().await.unwrap();
        ids.insert(v["event_id"].as_str().unwrap().to_string());
    }
    assert_eq!(ids.len(), 1, "{ids:?}");
    let mut handled = String::new();
    for _ in 0..50 {
        let m = metrics(&c, &s.url("")).await;
        if m.contains("colloquy_messages_total{stage=\"policy\",outcome=\"ok\"} 1") {
            handled = m;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        handled.contains("colloquy_messages_total{stage=\"nlu\",outcome=\"ok\"} 1\n"),
        "the message was classified more than once:\n{handled}"
    );
    assert!(!handled.contains("outcome=\"duplicate\""), "{handled}");
}

/// A client sending in a loop is held to its user's rate: 429 with
/// Retry-After, counted, and the refused messages never queued; an admin
/// token (a service acting for many users) is not held to a user's rate;
/// a WebSocket connection has its own budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_beyond_the_rate_limits_are_refused_and_not_queued() {
    let data = tempfile::tempdir().unwrap();
    let s = Server::start(
        data.path(),
        &[
            ("COLLOQUY_LIMITS_USER_RATE", "0.5"),
            ("COLLOQUY_LIMITS_USER_BURST", "3"),
            ("COLLOQUY_LIMITS_WS_MESSAGE_RATE", "0.5"),
            ("COLLOQUY_LIMITS_WS_MESSAGE_BURST", "2"),
        ],
    );
    let c = client();
    let post = |user: &str, text: &str, scope: &str| {
        c.post(s.url(&format!("/v1/conversations/{user}/messages")))
            .bearer_auth(token(if scope == "admin" { "ops" } else { user }, scope))
            .json(&json!({ "text": text }))
            .send()
    };
    for i in 0..3 {
        let r = post("mallory", &format!("你好 {i}"), "chat").await.unwrap();
        assert_eq!(
            r.status(),
            StatusCode::ACCEPTED,
            "message {i} is within the burst"
        );
    }
    let r = post("mallory", "你好 refused", "chat").await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    // Another user is not affected; an admin token acting for mallory is
    // held to its own (unlimited) budget, not hers.
    assert_eq!(
        post("trent", "你好", "chat").await.unwrap().status(),
        StatusCode::ACCEPTED
    );
    for i in 0..5 {
        let r = post("mallory", &format!("客服 {i}"), "admin")
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED);
    }
    let m = metrics(&c, &s.url("")).await;
    assert!(
        m.contains("colloquy_rate_limited_total{limit=\"user\"} 1"),
        "{m}"
    );
    // What was refused never reached the log.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let (_, events) = get(&c, &s, "mallory", "events?limit=1000").await;
    let log = events.to_string();
    assert!(
        log.contains("你好 2") && !log.contains("你好 refused"),
        "{log}"
    );

    // A WebSocket connection: two messages, then an error frame.
    let (mut ws, _) = tokio_tungstenite::connect_async(format!(
        "ws://{}/v1/stream?token={}",
        s.addr,
        token("peggy", "chat")
    ))
    .await
    .unwrap();
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let mut codes = Vec::new();
    for i in 0..3 {
        ws.send(Message::text(
            json!({"type": "message", "text": format!("你好 {i}")}).to_string(),
        ))
        .await
        .unwrap();
        loop {
            let m = ws.next().await.unwrap().unwrap();
            let v: Value = serde_json::from_str(m.to_text().unwrap()).unwrap();
            match v["type"].as_str() {
                Some("accepted") => {
                    codes.push("accepted".to_string());
                    break;
                }
                Some("error") => {
                    codes.push(v["error"]["code"].as_str().unwrap().to_string());
                    break;
                }
                _ => {}
            }
        }
    }
    assert_eq!(codes, ["accepted", "accepted", "rate_limited"]);
}

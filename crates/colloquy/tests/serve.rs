//! End-to-end: the real server on 127.0.0.1:0, spoken to over HTTP/1.1,
//! HTTP/2 and WebSocket.

mod server;

use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{json, Value};
use server::{expired, jwt, token, Server, SECRET};
use tokio_tungstenite::tungstenite::Message;

fn client() -> reqwest::Client {
    reqwest::Client::builder().http1_only().build().unwrap()
}

async fn post(
    c: &reqwest::Client,
    s: &Server,
    user: &str,
    tok: &str,
    body: Value,
    query: &str,
) -> (StatusCode, Value) {
    let r = c
        .post(s.url(&format!("/v1/conversations/{user}/messages{query}")))
        .bearer_auth(tok)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn events(c: &reqwest::Client, s: &Server, user: &str, tok: &str, after: u64) -> Vec<Value> {
    server::events_after(c, &s.url(""), user, tok, after).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_conversation_with_waits_idempotency_events_and_state() {
    let data = tempfile::tempdir().unwrap();
    let s = Server::start(data.path(), &[]);
    let c = client();
    let alice = token("alice", "chat");

    let (st, v) = post(
        &c,
        &s,
        "alice",
        &alice,
        json!({"text": "星云跑鞋有39码吗", "id": "m-1"}),
        "?wait_ms=5000",
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert!(
        v["replies"][0]
            .as_str()
            .unwrap()
            .contains("星云跑鞋 39 码有货"),
        "{v}"
    );
    let event_id = v["event_id"].clone();

    // The same client id again: same answer, processed once.
    let (st, again) = post(
        &c,
        &s,
        "alice",
        &alice,
        json!({"text": "星云跑鞋有39码吗", "id": "m-1"}),
        "?wait_ms=5000",
    )
    .await;
    assert_eq!(st, 200, "{again}");
    assert_eq!(again["event_id"], event_id);
    assert_eq!(again["replies"], v["replies"]);

    // Without waiting: 202 with the id of the event to be.
    let (st, acc) = post(&c, &s, "alice", &alice, json!({"text": "转人工"}), "").await;
    assert_eq!(st, 202, "{acc}");
    assert!(acc["event_id"].is_string() && acc["seq"].is_u64(), "{acc}");
    let (st, v) = post(
        &c,
        &s,
        "alice",
        &alice,
        json!({"text": "我的手机是13800138000"}),
        "?wait_ms=5000",
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert!(
        v["replies"][0].as_str().unwrap().contains("人工客服"),
        "{v}"
    );

    let log = events(&c, &s, "alice", &alice, 0).await;
    let said: Vec<&Value> = log
        .iter()
        .filter(|e| e["type"] == "user_said" && e["message_id"] == "m-1")
        .collect();
    assert_eq!(said.len(), 1, "m-1 was processed once");
    assert_eq!(said[0]["event_id"], event_id);
    let seqs: Vec<u64> = log.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    let text = serde_json::to_string(&log).unwrap();
    assert!(
        !text.contains("13800138000"),
        "sensitive value leaked: {text}"
    );
    assert!(text.contains("***"));

    // Pagination.
    let r: Value = c
        .get(s.url("/v1/conversations/alice/events?after=2&limit=3"))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["events"].as_array().unwrap().len(), 3);
    assert_eq!(r["events"][0]["seq"], 3);
    assert_eq!(r["next_after"], 5);

    let st: Value = c
        .get(s.url("/v1/conversations/alice/state"))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(st["slots"]["model"], "星云跑鞋");
    assert_eq!(st["slots"]["phone"], "***");
    assert_eq!(st["session"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_prior_knowledge_is_served_on_the_same_port() {
    let data = tempfile::tempdir().unwrap();
    let s = Server::start(data.path(), &[]);
    let c = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let r = c
        .post(s.url("/v1/conversations/bob/messages?wait_ms=5000"))
        .bearer_auth(token("bob", "chat"))
        .json(&json!({"text": "你好"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert!(v["replies"][0].as_str().unwrap().contains("您好"), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_pushes_replies_and_catches_up_after_reconnect() {
    let data = tempfile::tempdir().unwrap();
    let s = Server::start(data.path(), &[]);
    let tok = token("carol", "chat");
    let url = format!("ws://{}/v1/stream?token={tok}", s.addr);
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    ws.send(Message::text(
        json!({"type": "message", "text": "疾风板鞋39码有吗"}).to_string(),
    ))
    .await
    .unwrap();
    let mut replies = Vec::new();
    let mut accepted = false;
    let mut done = Value::Null;
    while done.is_null() {
        let m = tokio::time::timeout(std::time::Duration::from_secs(10), ws.next())
            .await
            .expect("a frame in time")
            .unwrap()
            .unwrap();
        let v: Value = serde_json::from_str(m.to_text().unwrap()).unwrap();
        match v["type"].as_str() {
            Some("accepted") => accepted = true,
            Some("reply") => replies.push(v),
            Some("done") => done = v,
            _ => panic!("unexpected frame {v}"),
        }
    }
    assert!(accepted);
    assert!(
        replies[0]["text"].as_str().unwrap().contains("缺货"),
        "{replies:?}"
    );
    let seen = replies[0]["seq"].as_u64().unwrap();
    ws.send(Message::text("{not json")).await.unwrap();
    let m = ws.next().await.unwrap().unwrap();
    assert!(m.to_text().unwrap().contains("invalid_json"), "{m}");
    ws.close(None).await.unwrap();

    // While disconnected, more replies are produced.
    let c = client();
    let (st, _) = post(
        &c,
        &s,
        "carol",
        &tok,
        json!({"text": "你好"}),
        "?wait_ms=5000",
    )
    .await;
    assert_eq!(st, 200);
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("{url}&after={seen}"))
        .await
        .unwrap();
    let m = tokio::time::timeout(std::time::Duration::from_secs(10), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let v: Value = serde_json::from_str(m.to_text().unwrap()).unwrap();
    assert_eq!(v["type"], "reply");
    assert!(v["text"].as_str().unwrap().contains("您好"), "{v}");
    assert!(v["seq"].as_u64().unwrap() > seen);

    // A token for someone else may not open carol's stream.
    let other = token("dave", "chat");
    let e = tokio_tungstenite::connect_async(format!(
        "ws://{}/v1/stream?token={other}&user=carol",
        s.addr
    ))
    .await;
    assert!(e.is_err(), "dave must not read carol's stream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_cases() {
    let data = tempfile::tempdir().unwrap();
    let s = Server::start(data.path(), &[]);
    let c = client();
    let body = json!({"text": "你好"});
    let url = s.url("/v1/conversations/erin/messages");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let cases: Vec<(&str, Option<String>, u16, &str)> = vec![
        ("no token", None, 401, "missing"),
        ("expired", Some(expired("erin")), 401, "expired"),
        (
            "wrong secret",
            Some(jwt(
                "HS256",
                "another-secret-0123456789abcdefghijkl",
                json!({"sub": "erin", "scope": "chat", "exp": now + 60}),
            )),
            401,
            "",
        ),
        (
            "alg none",
            Some(jwt(
                "none",
                SECRET,
                json!({"sub": "erin", "scope": "chat", "exp": now + 60}),
            )),
            401,
            "",
        ),
        (
            "other algorithm",
            Some(jwt(
                "HS512",
                SECRET,
                json!({"sub": "erin", "scope": "chat", "exp": now + 60}),
            )),
            401,
            "",
        ),
        (
            "no exp",
            Some(jwt(
                "HS256",
                SECRET,
                json!({"sub": "erin", "scope": "chat"}),
            )),
            401,
            "",
        ),
        (
            "someone else",
            Some(token("frank", "chat")),
            403,
            "forbidden",
        ),
        ("admin", Some(token("ops", "admin")), 202, ""),
        ("own", Some(token("erin", "chat")), 202, ""),
    ];
    for (name, tok, want, code) in cases {
        let mut r = c.post(&url).json(&body);
        if let Some(t) = &tok {
            r = r.bearer_auth(t);
        }
        let r = r.send().await.unwrap();
        let status = r.status().as_u16();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        assert_eq!(status, want, "{name}: {v}");
        if want >= 400 {
            assert!(
                v["error"]["code"].is_string() && v["error"]["message"].is_string(),
                "{name}: {v}"
            );
            assert!(
                v["error"]["code"].as_str().unwrap().contains(code),
                "{name}: {v}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_precise_4xx() {
    let data = tempfile::tempdir().unwrap();
    let s = Server::start(
        data.path(),
        &[("COLLOQUY_LIMITS_DENY_PATTERNS", "[\"free\\\\s*money\"]")],
    );
    let c = client();
    let tok = token("gina", "chat");
    let url = s.url("/v1/conversations/gina/messages");
    let raw = |body: Vec<u8>| {
        c.post(&url)
            .bearer_auth(&tok)
            .header("content-type", "application/json")
            .body(body)
    };
    let cases: Vec<(&str, reqwest::RequestBuilder, u16, &str)> = vec![
        (
            "malformed",
            raw(b"{\"text\": ".to_vec()),
            400,
            "invalid_json",
        ),
        ("missing field", raw(b"{}".to_vec()), 400, "invalid_json"),
        (
            "unknown field",
            raw(br#"{"text":"hi","colour":1}"#.to_vec()),
            400,
            "invalid_json",
        ),
        (
            "not utf-8",
            raw(vec![b'{', b'"', 0xff, 0xfe, b'"', b'}']),
            400,
            "invalid_utf8",
        ),
        (
            "too big",
            raw(format!("{{\"text\":\"{}\"}}", "a".repeat(70_000)).into_bytes()),
            413,
            "body_too_large",
        ),
        (
            "empty text",
            raw(br#"{"text":"  \u0000 "}"#.to_vec()),
            400,
            "empty_text",
        ),
        (
            "long text",
            raw(format!("{{\"text\":\"{}\"}}", "好".repeat(4001)).into_bytes()),
            400,
            "text_too_long",
        ),
        (
            "denied",
            raw(br#"{"text":"FREE money"}"#.to_vec()),
            422,
            "text_denied",
        ),
        (
            "bad id",
            raw(br#"{"text":"hi","id":"a b"}"#.to_vec()),
            400,
            "invalid_id",
        ),
        (
            "bad wait",
            c.post(s.url("/v1/conversations/gina/messages?wait_ms=soon"))
                .bearer_auth(&tok)
                .json(&json!({"text": "hi"})),
            400,
            "invalid_query",
        ),
        (
            "bad user",
            c.post(s.url("/v1/conversations/gi%2Fna/messages"))
                .bearer_auth(token("ops", "admin"))
                .json(&json!({"text": "hi"})),
            400,
            "invalid_user",
        ),
        (
            "unknown route",
            c.get(s.url("/v2/nothing")),
            404,
            "not_found",
        ),
    ];
    for (name, req, want, code) in cases {
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        assert_eq!(status, want, "{name}: {v}");
        assert_eq!(v["error"]["code"], code, "{name}: {v}");
    }
    // The server is still fine and nothing bad was queued.
    let (st, v) = post(
        &c,
        &s,
        "gina",
        &tok,
        json!({"text": "你好"}),
        "?wait_ms=5000",
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let log = events(&c, &s, "gina", &tok, 0).await;
    assert_eq!(log.iter().filter(|e| e["type"] == "user_said").count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_metrics_openapi_and_graceful_shutdown() {
    let data = tempfile::tempdir().unwrap();
    let mut s = Server::start(data.path(), &[]);
    let c = client();
    assert_eq!(c.get(s.url("/healthz")).send().await.unwrap().status(), 200);
    assert_eq!(c.get(s.url("/readyz")).send().await.unwrap().status(), 200);
    let (st, _) = post(
        &c,
        &s,
        "hank",
        &token("hank", "chat"),
        json!({"text": "你好"}),
        "?wait_ms=5000",
    )
    .await;
    assert_eq!(st, 200);
    let m = c
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for needle in [
        "colloquy_http_request_duration_seconds_bucket",
        "colloquy_messages_total{stage=\"policy\",outcome=\"ok\"} 1",
        "colloquy_intents_total{intent=\"greet\"} 1",
        "colloquy_queue_depth",
        "colloquy_dead_letters_total 0",
    ] {
        assert!(m.contains(needle), "{needle} missing from:\n{m}");
    }
    let doc: Value = c
        .get(s.url("/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["openapi"], "3.0.3");
    for p in [
        "/v1/conversations/{user}/messages",
        "/v1/conversations/{user}/events",
        "/v1/conversations/{user}/state",
        "/v1/stream",
        "/metrics",
    ] {
        assert!(doc["paths"][p].is_object(), "{p} not documented");
    }
    assert_eq!(s.terminate(), Some(0), "SIGTERM exits 0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_url_talks_to_the_server_over_websocket() {
    let data = tempfile::tempdir().unwrap();
    let s = Server::start(data.path(), &[]);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_colloquy"))
        .current_dir(server::root())
        .args([
            "chat",
            "--url",
            &s.url(""),
            "--user",
            "ivy",
            "--token",
            &token("ivy", "chat"),
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all("星云跑鞋有39码吗\n谢谢\n".as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("> 星云跑鞋有39码吗\n星云跑鞋 39 码有货"),
        "{text}"
    );
    assert!(text.contains("> 谢谢\n"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_503_with_retry_after_and_loses_nothing() {
    let data = tempfile::tempdir().unwrap();
    let config = data.path().join("small-queue.toml");
    std::fs::write(&config, "[bus.embedded]\nmax_backlog = 4\n").unwrap();
    let s = Server::start_with(data.path(), &[], &["--config", config.to_str().unwrap()]);
    let c = client();
    let admin = token("ops", "admin");
    let mut sends = Vec::new();
    for i in 0..200 {
        let (c, url, tok) = (
            c.clone(),
            s.url(&format!("/v1/conversations/q{}/messages", i % 50)),
            admin.clone(),
        );
        sends.push(tokio::spawn(async move {
            let r = c
                .post(url)
                .bearer_auth(tok)
                .json(&json!({"text": "星云跑鞋有39码吗", "id": format!("m{i}")}))
                .send()
                .await
                .unwrap();
            let retry_after = r
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string());
            (i, r.status(), retry_after, r.json::<Value>().await.unwrap())
        }));
    }
    let mut accepted = Vec::new();
    let mut rejected = 0;
    for send in sends {
        let (i, status, retry_after, body) = send.await.unwrap();
        match status.as_u16() {
            202 => accepted.push((i, body["event_id"].as_str().unwrap().to_string())),
            503 => {
                rejected += 1;
                assert_eq!(body["error"]["code"], "overloaded", "{body}");
                assert!(retry_after.is_some_and(|v| v.parse::<u64>().unwrap() >= 1));
            }
            other => panic!("message {i}: unexpected status {other}: {body}"),
        }
    }
    assert!(
        rejected > 0,
        "a burst of 200 over a queue of 4 must be refused in part"
    );
    assert!(!accepted.is_empty(), "some of the burst fits");
    // Every message that got a 202 is processed once, however full the queue was.
    for (i, event_id) in accepted {
        let user = format!("q{}", i % 50);
        let mut found = 0;
        for _ in 0..100 {
            found = events(&c, &s, &user, &admin, 0)
                .await
                .iter()
                .filter(|e| e["event_id"] == event_id.as_str())
                .count();
            if found > 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert_eq!(
            found, 1,
            "message m{i} ({event_id}) is in {user}'s log exactly once"
        );
    }
}

/// Reads until the server closes the connection; what it sent before.
async fn read_until_closed(
    stream: &mut tokio::net::TcpStream,
    within: std::time::Duration,
) -> String {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    tokio::time::timeout(within, stream.read_to_end(&mut got))
        .await
        .expect("the server closes the connection in time")
        .expect("read");
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_clients_are_cut_off() {
    use tokio::io::AsyncWriteExt;
    let data = tempfile::tempdir().unwrap();
    let s = Server::start(data.path(), &[("COLLOQUY_SERVER_HEADER_TIMEOUT", "1s")]);
    let limit = std::time::Duration::from_secs(6);

    // Connects and never sends a byte.
    let mut silent = tokio::net::TcpStream::connect(&s.addr).await.unwrap();
    // Trickles a request line, never finishes the headers.
    let mut slow = tokio::net::TcpStream::connect(&s.addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // Gets an answer, then idles on the keep-alive connection.
    let mut idle = tokio::net::TcpStream::connect(&s.addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();

    let started = std::time::Instant::now();
    read_until_closed(&mut silent, limit).await;
    read_until_closed(&mut slow, limit).await;
    let answered = read_until_closed(&mut idle, limit).await;
    assert!(
        answered.starts_with("HTTP/1.1 200"),
        "the idle client got its answer first: {answered}"
    );
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(900),
        "not cut off before the deadline"
    );

    // The server still serves new clients.
    let r = client().get(s.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

/// `colloquy bench` against a real server, over both transports: every
/// counted turn got its replies, the report says so in JSON, and nothing
/// failed.
#[test]
fn the_load_generator_holds_conversations_over_http_and_websocket() {
    let data = tempfile::tempdir().unwrap();
    let s = Server::start(data.path(), &[]);
    for transport in ["http", "ws"] {
        let json = data.path().join(format!("bench-{transport}.json"));
        let mut out = std::process::Command::new(env!("CARGO_BIN_EXE_colloquy"))
            .current_dir(server::root())
            .args([
                "bench",
                "--users",
                "4",
                "--turns",
                "40",
                "--transport",
                transport,
            ])
            .args(["--url", &s.url(""), "--data"])
            .arg(data.path())
            .arg("--json")
            .arg(&json)
            .env("COLLOQUY_JWT_SECRET", SECRET)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // A bench whose turns all fail would never reach --turns.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while out.try_wait().unwrap().is_none() {
            if std::time::Instant::now() > deadline {
                out.kill().unwrap();
                panic!("{transport}: the bench did not finish 40 turns in 60 s");
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let out = out.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{transport}: {stdout}");
        assert!(
            stdout.contains("errors          none"),
            "{transport}: {stdout}"
        );
        let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
        assert_eq!(report["transport"], transport);
        assert!(report["turns"].as_u64().unwrap() >= 40, "{report}");
        assert_eq!(report["errors"], json!({}), "{report}");
        let p50 = report["latency_ms"]["p50"].as_f64().unwrap();
        let p99 = report["latency_ms"]["p99"].as_f64().unwrap();
        assert!(p50 > 0.0 && p99 >= p50, "{report}");
    }
}

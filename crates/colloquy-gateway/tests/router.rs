//! The router as a whole, without a binary or a socket: a real `Gateway` on
//! an embedded bus in a temporary directory and the in-memory store, called
//! with `oneshot`. What a client sees (status, code, body) and what reaches
//! the bus are checked together.

use axum::body::{to_bytes, Body};
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use colloquy_bus::{Bus, EmbeddedBus, EmbeddedConfig, Record};
use colloquy_core::wire::{Inbound, Outcome, TOPIC_IN};
use colloquy_core::{seal, BotRef, EventKind, Value as SlotValue};
use colloquy_gateway::api::{router, Gateway};
use colloquy_gateway::auth::{AuthConfig, Issuer, Scope, Verifier};
use colloquy_gateway::hub::Hub;
use colloquy_gateway::input::Limits;
use colloquy_gateway::metrics::{Metrics, Sources};
use colloquy_store::{ConversationStore, Conversations, MemoryStore, SnapshotKey, SnapshotPolicy};
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;

const SECRET: &[u8] = b"router-tests-secret-0123456789abcdef";
const MAX_BODY: usize = 1024;
const PHONE: &str = "13800138000";

struct Harness {
    gw: Arc<Gateway>,
    app: Router,
    bus: Arc<EmbeddedBus>,
    store: Arc<MemoryStore>,
    _dir: tempfile::TempDir,
}

async fn harness() -> Harness {
    harness_on(EmbeddedConfig::default()).await
}

async fn harness_on(bus: EmbeddedConfig) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let bus = Arc::new(EmbeddedBus::open(dir.path(), bus).unwrap());
    bus.ensure_topic(TOPIC_IN, 4).await.unwrap();
    let store = Arc::new(MemoryStore::new());
    let conversations = Conversations::new(
        store.clone(),
        SnapshotKey::new(vec![7u8; 32]).unwrap(),
        SnapshotPolicy::default(),
    );
    let limits = Limits {
        max_body_bytes: MAX_BODY,
        deny_patterns: vec!["free\\s*money".into()],
        // The tests post far faster than a person types; the rate limits
        // are tested against the real server (colloquy's attacks.rs).
        user_rate: 0.0,
        token_rate: 0.0,
        ..Limits::default()
    };
    let sources = Sources {
        bus: bus.clone(),
        queues: Vec::new(),
        stages: Vec::new(),
        l1: None,
    };
    let gw = Arc::new(
        Gateway::new(
            Verifier::new(&AuthConfig::default(), Some(SECRET)).unwrap(),
            bus.clone(),
            Arc::new(conversations),
            Arc::new(Hub::default()),
            limits,
            Arc::new(Metrics::default()),
            sources,
        )
        .unwrap(),
    );
    Harness {
        app: router(gw.clone()),
        gw,
        bus,
        store,
        _dir: dir,
    }
}

fn token(user: &str, scope: Scope) -> String {
    Issuer::hs256(SECRET, None, None)
        .issue_now(user, scope, Duration::from_secs(3600))
        .unwrap()
}

struct Reply {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Value,
}

async fn call(app: &Router, req: Request<Body>) -> Reply {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = to_bytes(resp.into_body(), 1 << 20).await.unwrap();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    Reply {
        status,
        headers,
        body,
    }
}

fn post(user: &str, token: Option<&str>, body: impl Into<Body>) -> Request<Body> {
    let mut req = Request::post(format!("/v1/conversations/{user}/messages"))
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    req.body(body.into()).unwrap()
}

fn get(path: &str, token: Option<&str>) -> Request<Body> {
    let mut req = Request::get(path);
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    req.body(Body::empty()).unwrap()
}

fn error_code(r: &Reply) -> &str {
    r.body["error"]["code"].as_str().unwrap_or_else(|| {
        panic!("{} without an error body: {}", r.status, r.body);
    })
}

/// Every record of `chat.in`, over all partitions.
async fn inbound(bus: &dyn Bus) -> Vec<Record> {
    let mut records = Vec::new();
    for p in 0..bus.partitions(TOPIC_IN).await.unwrap() {
        let end = bus.end_offset(TOPIC_IN, p).await.unwrap();
        if end > 0 {
            let got = bus
                .fetch(TOPIC_IN, p, 0, 10_000, Duration::ZERO)
                .await
                .unwrap();
            assert_eq!(got.len() as u64, end, "partition {p}");
            records.extend(got);
        }
    }
    records
}

#[tokio::test]
async fn no_token_is_401_and_someone_elses_user_is_403() {
    let h = harness().await;
    let body = json!({"text": "你好"}).to_string();

    let r = call(&h.app, post("alice", None, body.clone())).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(&r), "token_missing");

    let r = call(&h.app, post("alice", Some("not.a.token"), body.clone())).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(&r), "invalid_token");

    let bob = token("bob", Scope::Chat);
    let r = call(&h.app, post("alice", Some(&bob), body.clone())).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(error_code(&r), "forbidden");
    for path in [
        "/v1/conversations/alice/events",
        "/v1/conversations/alice/state",
    ] {
        let r = call(&h.app, get(path, Some(&bob))).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{path}");
        let r = call(&h.app, get(path, None)).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{path}");
    }

    // A bad user id is the request's fault whoever asks, once the token
    // is good.
    let admin = token("ops", Scope::Admin);
    let r = call(&h.app, post("a%2Fb", Some(&admin), body)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&r), "invalid_user");

    assert!(inbound(h.bus.as_ref()).await.is_empty());
}

#[tokio::test]
async fn bad_bodies_get_a_precise_4xx_and_publish_nothing() {
    let h = harness().await;
    let t = token("alice", Scope::Chat);
    let cases: Vec<(&str, Body, StatusCode, &str)> = vec![
        (
            "malformed JSON",
            Body::from("{\"text\": "),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "unknown field",
            Body::from(json!({"text": "hi", "colour": "red"}).to_string()),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "not UTF-8",
            Body::from(&b"{\"text\": \"\xff\"}"[..]),
            StatusCode::BAD_REQUEST,
            "invalid_utf8",
        ),
        (
            "oversized",
            Body::from(json!({"text": "好".repeat(MAX_BODY)}).to_string()),
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
        ),
        (
            "denied",
            Body::from(json!({"text": "FREE   money now"}).to_string()),
            StatusCode::UNPROCESSABLE_ENTITY,
            "text_denied",
        ),
        (
            "empty text",
            Body::from(json!({"text": " \u{200B} "}).to_string()),
            StatusCode::BAD_REQUEST,
            "empty_text",
        ),
        (
            "bad client id",
            Body::from(json!({"text": "hi", "id": "a b"}).to_string()),
            StatusCode::BAD_REQUEST,
            "invalid_id",
        ),
    ];
    for (name, body, status, code) in cases {
        let r = call(&h.app, post("alice", Some(&t), body)).await;
        assert_eq!(r.status, status, "{name}: {}", r.body);
        assert_eq!(error_code(&r), code, "{name}");
        assert!(r.body["error"]["message"].is_string(), "{name}");
    }
    assert!(inbound(h.bus.as_ref()).await.is_empty());
}

#[tokio::test]
async fn an_accepted_message_is_one_inbound_record() {
    let h = harness().await;
    let t = token("alice", Scope::Chat);
    let r = call(
        &h.app,
        post(
            "alice",
            Some(&t),
            json!({"text": " ３９码\n有吗 "}).to_string(),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let message_id = r.body["message_id"].as_str().unwrap();
    let event_id: uuid::Uuid = r.body["event_id"].as_str().unwrap().parse().unwrap();
    assert_eq!(event_id, colloquy_core::user_event_id("alice", message_id));

    let records = inbound(h.bus.as_ref()).await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].key, "alice");
    assert_eq!(r.body["seq"], records[0].offset);
    let msg: Inbound = serde_json::from_slice(&records[0].payload).unwrap();
    assert_eq!(msg.user, "alice");
    assert_eq!(msg.message_id, message_id);
    assert_eq!(msg.text, "39码 有吗");
}

#[tokio::test]
async fn the_same_client_id_twice_is_one_record_and_one_answer() {
    let h = harness().await;
    let t = token("alice", Scope::Chat);
    let body = json!({"text": "你好", "id": "client-7"}).to_string();
    let first = call(&h.app, post("alice", Some(&t), body.clone())).await;
    let second = call(&h.app, post("alice", Some(&t), body)).await;
    assert_eq!(first.status, StatusCode::ACCEPTED);
    assert_eq!(second.status, StatusCode::ACCEPTED);
    assert_eq!(first.body, second.body);
    assert_eq!(first.body["message_id"], "client-7");
    assert_eq!(inbound(h.bus.as_ref()).await.len(), 1);

    // Ids are per user: bob's client-7 is another message.
    let bob = token("bob", Scope::Chat);
    let other = call(
        &h.app,
        post(
            "bob",
            Some(&bob),
            json!({"text": "你好", "id": "client-7"}).to_string(),
        ),
    )
    .await;
    assert_eq!(other.status, StatusCode::ACCEPTED);
    assert_ne!(other.body["event_id"], first.body["event_id"]);
    assert_eq!(inbound(h.bus.as_ref()).await.len(), 2);
}

#[tokio::test]
async fn a_waiting_post_gets_the_replies_the_pipeline_pushes() {
    let h = harness().await;
    let t = token("alice", Scope::Chat);
    // Stands in for the stages: answers the first inbound record.
    let (bus, hub) = (h.bus.clone(), h.gw.hub.clone());
    let worker = tokio::spawn(async move {
        loop {
            if let Some(r) = inbound(bus.as_ref()).await.pop() {
                let msg: Inbound = serde_json::from_slice(&r.payload).unwrap();
                hub.push(Outcome {
                    user: msg.user,
                    message_id: msg.message_id,
                    replies: vec!["您好".into()],
                    events: Vec::new(),
                    seq: 3,
                });
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    let req = Request::post("/v1/conversations/alice/messages?wait_ms=5000")
        .header(header::AUTHORIZATION, format!("Bearer {t}"))
        .body(Body::from(json!({"text": "你好", "id": "w-1"}).to_string()))
        .unwrap();
    let r = call(&h.app, req).await;
    worker.await.unwrap();
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["message_id"], "w-1");
    assert_eq!(r.body["log_seq"], 3);
    assert_eq!(r.body["replies"], json!(["您好"]));

    // Nobody answers this one: the wait ends in a 202 and leaves no waiter.
    let req = Request::post("/v1/conversations/alice/messages?wait_ms=20")
        .header(header::AUTHORIZATION, format!("Bearer {t}"))
        .body(Body::from(json!({"text": "还在吗"}).to_string()))
        .unwrap();
    let r = call(&h.app, req).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(h.gw.hub.waiting(), 0);

    let req = Request::post("/v1/conversations/alice/messages?wait=1")
        .header(header::AUTHORIZATION, format!("Bearer {t}"))
        .body(Body::from(json!({"text": "hi"}).to_string()))
        .unwrap();
    let r = call(&h.app, req).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&r), "invalid_query");
}

#[tokio::test]
async fn events_and_state_mask_sensitive_values() {
    let h = harness().await;
    let bot = BotRef {
        name: "shop".into(),
        version: "1".into(),
    };
    let events = seal(
        vec![
            EventKind::UserSaid {
                message_id: "m1".into(),
                text: format!("我的电话是{PHONE}"),
            },
            EventKind::SlotSet {
                slot: "phone".into(),
                value: SlotValue::Text(PHONE.into()),
                sensitive: true,
            },
            EventKind::SlotSet {
                slot: "size".into(),
                value: SlotValue::Int(39),
                sensitive: false,
            },
            EventKind::BotSaid {
                text: format!("好的, 我们会打 {PHONE}"),
                response: None,
                payload: None,
                shown: None,
            },
        ],
        "alice",
        0,
        1_700_000_000_000,
        &bot,
        "m1",
    );
    h.store.append("alice", 0, &events).await.unwrap();
    let t = token("alice", Scope::Chat);

    let r = call(&h.app, get("/v1/conversations/alice/events", Some(&t))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(!r.body.to_string().contains(PHONE), "{}", r.body);
    let page = r.body["events"].as_array().unwrap();
    assert_eq!(page.len(), 4);
    assert_eq!(page[0]["text"], "我的电话是***");
    assert_eq!(page[1]["value"], "***");
    assert_eq!(page[2]["value"], 39);
    assert_eq!(page[3]["text"], "好的, 我们会打 ***");
    assert_eq!(r.body["next_after"], Value::Null);

    let r = call(
        &h.app,
        get("/v1/conversations/alice/events?after=1&limit=2", Some(&t)),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["events"][0]["seq"], 2);
    assert_eq!(r.body["next_after"], 3);
    let r = call(
        &h.app,
        get("/v1/conversations/alice/events?limit=0", Some(&t)),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&r), "invalid_query");

    let r = call(&h.app, get("/v1/conversations/alice/state", Some(&t))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(!r.body.to_string().contains(PHONE), "{}", r.body);
    assert_eq!(r.body["user"], "alice");
    assert_eq!(r.body["seq"], 4);
    assert_eq!(r.body["slots"], json!({"phone": "***", "size": 39}));
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let h = harness().await;
    let r = call(&h.app, get("/healthz", None)).await;
    assert_eq!(
        (r.status, r.body.clone()),
        (StatusCode::OK, json!({"status": "ok"}))
    );

    let r = call(&h.app, get("/readyz", None)).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(error_code(&r), "not_ready");
    h.gw.ready.store(true, Ordering::Relaxed);
    let r = call(&h.app, get("/readyz", None)).await;
    assert_eq!(
        (r.status, r.body),
        (StatusCode::OK, json!({"status": "ready"}))
    );

    let r = call(&h.app, get("/metrics", None)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.headers[header::CONTENT_TYPE],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let text = r.body.as_str().unwrap();
    assert!(
        text.contains("colloquy_http_request_duration_seconds"),
        "{text}"
    );
    assert!(text.trim_end().ends_with("# EOF"), "{text}");
}

#[tokio::test]
async fn unknown_routes_and_methods_get_json_errors() {
    let h = harness().await;
    let r = call(&h.app, get("/v2/nothing", None)).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&r), "not_found");

    let req = Request::builder()
        .method(Method::DELETE)
        .uri("/v1/conversations/alice/messages")
        .body(Body::empty())
        .unwrap();
    let r = call(&h.app, req).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(error_code(&r), "method_not_allowed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_posts_with_one_client_id_publish_once() {
    let h = harness().await;
    let t = token("alice", Scope::Chat);
    let body = json!({"text": "抢购", "id": "flash-1"}).to_string();
    let posts: Vec<_> = (0..50)
        .map(|_| {
            let (app, req) = (h.app.clone(), post("alice", Some(&t), body.clone()));
            tokio::spawn(async move { call(&app, req).await })
        })
        .collect();
    let mut answers = Vec::new();
    for p in posts {
        let r = p.await.unwrap();
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
        answers.push(r.body);
    }
    let records = inbound(h.bus.as_ref()).await;
    assert_eq!(records.len(), 1, "one message, published once");
    let expected = json!({
        "event_id": colloquy_core::user_event_id("alice", "flash-1"),
        "message_id": "flash-1",
        "seq": records[0].offset,
    });
    assert!(answers.iter().all(|a| *a == expected), "{answers:?}");
}

#[tokio::test]
async fn a_full_queue_is_503_with_retry_after_and_leaves_no_waiter() {
    let h = harness_on(EmbeddedConfig {
        max_backlog: 0,
        ..EmbeddedConfig::default()
    })
    .await;
    let t = token("alice", Scope::Chat);
    let req = Request::post("/v1/conversations/alice/messages?wait_ms=1000")
        .header(header::AUTHORIZATION, format!("Bearer {t}"))
        .body(Body::from(
            json!({"text": "你好", "id": "full-1"}).to_string(),
        ))
        .unwrap();
    let r = call(&h.app, req).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.body);
    assert_eq!(error_code(&r), "overloaded");
    assert_eq!(r.headers[header::RETRY_AFTER], "1");
    assert_eq!(h.gw.hub.waiting(), 0, "nothing will ever answer it");
    // The id was not taken by the failed attempt: a retry tries again.
    let r = call(
        &h.app,
        post(
            "alice",
            Some(&t),
            json!({"text": "你好", "id": "full-1"}).to_string(),
        ),
    )
    .await;
    assert_eq!(error_code(&r), "overloaded");
    assert!(inbound(h.bus.as_ref()).await.is_empty());
}

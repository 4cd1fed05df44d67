//! Action servers for the remote-action tests: a rasa-sdk server running
//! a Python actions module, and a Rust one that counts calls by
//! idempotency key. `test_actions.py` beside this file holds the actions
//! written for the tests.

#![allow(dead_code)] // each test binary uses a different part of this harness

use crate::server::{free_port, root};
use axum::extract::{Path as UrlPath, State as Shared};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A rasa-sdk action server serving the actions module `module` of `dir`,
/// started with the Python environment `scripts/action-server install`
/// makes (which `scripts/test` runs).
pub struct RasaSdk {
    child: Child,
    pub url: String,
    pub port: u16,
}

impl RasaSdk {
    pub async fn start(dir: &std::path::Path, module: &str) -> RasaSdk {
        RasaSdk::start_on(dir, module, free_port()).await
    }

    /// As [`RasaSdk::start`], on `port` (e.g. the port of one stopped).
    pub async fn start_on(dir: &std::path::Path, module: &str, port: u16) -> RasaSdk {
        let out = Command::new(root().join("scripts/action-server"))
            .arg("python")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "no rasa-sdk environment: run scripts/action-server install ({})",
            String::from_utf8_lossy(&out.stderr)
        );
        let python = String::from_utf8(out.stdout).unwrap().trim().to_string();
        // Its own process group: sanic runs the server in a child process,
        // and stopping it must stop both.
        let child = Command::new(python)
            .process_group(0)
            .current_dir(dir)
            .args(["-m", "rasa_sdk", "--actions", module, "--port"])
            .arg(port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let s = RasaSdk {
            child,
            url: format!("http://127.0.0.1:{port}/webhook"),
            port,
        };
        let c = reqwest::Client::new();
        let started = Instant::now();
        loop {
            let up = c
                .get(format!("http://127.0.0.1:{port}/actions"))
                .send()
                .await;
            if up.is_ok_and(|r| r.status() == 200) {
                return s;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the rasa-sdk action server did not come up on port {port}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-9", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for RasaSdk {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An action server that counts calls by idempotency key and behaves by
/// path: `ok` answers, `hang` never answers a key's first call, `flaky`
/// fails a key's first two calls with 503, `throttled` answers a key's
/// first call with 429 and `Retry-After: 1`, `rejected` says 400, `down`
/// always 500.
#[derive(Clone, Default)]
pub struct Counter {
    calls: Arc<Mutex<Vec<(String, String, Instant)>>>,
}

impl Counter {
    pub fn calls(&self, path: &str) -> Vec<(String, Instant)> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, ..)| p == path)
            .map(|(_, k, at)| (k.clone(), *at))
            .collect()
    }

    pub fn by_key(&self, path: &str) -> HashMap<String, usize> {
        let mut out = HashMap::new();
        for (k, _) in self.calls(path) {
            *out.entry(k).or_default() += 1;
        }
        out
    }
}

async fn counted(
    Shared(counter): Shared<Counter>,
    UrlPath(path): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("none")
        .to_string();
    let nth = {
        let mut calls = counter.calls.lock().unwrap();
        calls.push((path.clone(), key.clone(), Instant::now()));
        calls
            .iter()
            .filter(|(p, k, _)| *p == path && *k == key)
            .count()
    };
    let answer = || {
        axum::Json(json!({
            "events": [{"event": "slot", "name": "stock", "value": 7}],
            "responses": [{"text": "checked"}]
        }))
        .into_response()
    };
    match (path.as_str(), nth) {
        ("hang", 1) => {
            tokio::time::sleep(Duration::from_secs(600)).await;
            answer()
        }
        ("flaky", 1 | 2) => (StatusCode::SERVICE_UNAVAILABLE, "busy").into_response(),
        ("throttled", 1) => (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "1")],
            "slow down",
        )
            .into_response(),
        ("rejected", _) => (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "bad order", "action_name": "x"})),
        )
            .into_response(),
        ("down", _) => (StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response(),
        _ => answer(),
    }
}

pub async fn counter() -> (Counter, String) {
    let counter = Counter::default();
    let app = axum::Router::new()
        .route("/{path}", axum::routing::post(counted))
        .with_state(counter.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (counter, base)
}

/// A bot with one flow per behaviour of the counting server.
pub fn counted_bot(base: &str) -> BTreeMap<String, String> {
    let mut yaml = format!(
        r#"
bot: {{name: counted, version: "1", language: en, fallback: fallback, action_failed: failed}}
slots:
  stock: {{type: int}}
responses:
  fallback: sorry
  failed: could not check
  left: "{{stock}} left"
actions:
  hang: {{webhook: {{url: "{base}/hang", timeout: 60s}}}}
  flaky: {{webhook: {{url: "{base}/flaky", timeout: 5s, retries: 2}}}}
  throttled: {{webhook: {{url: "{base}/throttled", timeout: 5s, retries: 1}}}}
  rejected: {{webhook: {{url: "{base}/rejected", timeout: 5s, retries: 3}}}}
  down: {{webhook: {{url: "{base}/down", timeout: 5s, retries: 2, breaker: {{failures: 3, open_for: 30s}}}}}}
intents:
"#
    );
    let examples = [
        ("hang", "hang on please"),
        ("flaky", "try the flaky one"),
        ("throttled", "go slow now"),
        ("rejected", "reject my order"),
        ("down", "the broken thing"),
    ];
    for (name, example) in examples {
        yaml.push_str(&format!("  {name}: {{examples: [\"{example}\"]}}\n"));
    }
    yaml.push_str("flows:\n");
    for (name, _) in examples {
        yaml.push_str(&format!(
            "  {name}:\n    intents: [{name}]\n    steps:\n      - action: {name}\n      - say: left\n"
        ));
    }
    BTreeMap::from([("bot.yaml".to_string(), yaml)])
}

/// A payment service for the red packet saga, speaking Rasa's protocol on
/// `/webhook`: `reserve_budget`, `grant_red_packet`, `notify_winner` and
/// the compensations `release_budget`, `revoke_red_packet`. Each effect
/// is keyed by the call's idempotency key (a repeated key gets the first
/// answer and changes nothing), as a real payment API is. `fail` makes an
/// action answer 500 every time; `hang` makes an action's first call never
/// answer (to kill the caller during it).
#[derive(Clone, Default)]
pub struct Payments {
    pub ledger: Arc<Mutex<Ledger>>,
}

#[derive(Default)]
pub struct Ledger {
    /// (action, idempotency key) of every call, in order.
    pub calls: Vec<(String, String)>,
    answers: HashMap<String, serde_json::Value>,
    /// Reservation → amount, and how often each was released.
    pub reserved: BTreeMap<String, i64>,
    pub released: BTreeMap<String, u32>,
    /// Red packet → amount, and how often each was revoked.
    pub granted: BTreeMap<String, i64>,
    pub revoked: BTreeMap<String, u32>,
    pub notified: BTreeMap<String, u32>,
    pub fail: std::collections::BTreeSet<String>,
    pub hang: Option<String>,
    hung: bool,
}

impl Ledger {
    /// Budget reserved and not released.
    pub fn spent(&self) -> i64 {
        self.reserved
            .iter()
            .filter(|(r, _)| !self.released.contains_key(*r))
            .map(|(_, a)| a)
            .sum()
    }

    /// Money in red packets granted and not revoked.
    pub fn paid(&self) -> i64 {
        self.granted
            .iter()
            .filter(|(p, _)| !self.revoked.contains_key(*p))
            .map(|(_, a)| a)
            .sum()
    }

    /// Let the next call of `hang` hang again.
    pub fn reset_hang(&mut self) {
        self.hung = false;
    }

    pub fn calls_of(&self, action: &str) -> Vec<String> {
        self.calls
            .iter()
            .filter(|(a, _)| a == action)
            .map(|(_, k)| k.clone())
            .collect()
    }
}

async fn pay(
    Shared(payments): Shared<Payments>,
    headers: HeaderMap,
    axum::Json(call): axum::Json<serde_json::Value>,
) -> Response {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let action = call["next_action"].as_str().unwrap_or_default().to_string();
    let slot = |name: &str| call["tracker"]["slots"][name].as_str().map(String::from);
    let hang = {
        let mut l = payments.ledger.lock().unwrap();
        l.calls.push((action.clone(), key.clone()));
        if l.fail.contains(&action) {
            return (StatusCode::INTERNAL_SERVER_ERROR, "payments down").into_response();
        }
        let hang = l.hang.as_deref() == Some(action.as_str()) && !l.hung;
        l.hung |= hang;
        hang
    };
    if hang {
        tokio::time::sleep(Duration::from_secs(600)).await;
    }
    let mut l = payments.ledger.lock().unwrap();
    if let Some(first) = l.answers.get(&key) {
        return axum::Json(first.clone()).into_response();
    }
    let set = |name: &str, value: serde_json::Value| json!({"event": "slot", "name": name, "value": value});
    let answer = match action.as_str() {
        "reserve_budget" => {
            let id = format!("r-{key}");
            l.reserved.insert(id.clone(), 10);
            json!({"events": [set("reservation", json!(id)), set("amount", json!(10))]})
        }
        "grant_red_packet" => {
            let id = format!("p-{key}");
            let amount = call["tracker"]["slots"]["amount"].as_i64().unwrap_or(0);
            l.granted.insert(id.clone(), amount);
            json!({"events": [set("packet", json!(id))]})
        }
        "notify_winner" => {
            *l.notified
                .entry(slot("packet").unwrap_or_default())
                .or_default() += 1;
            json!({"responses": [{"text": "红包已到账"}]})
        }
        "release_budget" => {
            if let Some(r) = slot("reservation") {
                *l.released.entry(r).or_default() += 1;
            }
            json!({"events": [set("reservation", json!(null))]})
        }
        "revoke_red_packet" => {
            if let Some(p) = slot("packet") {
                *l.revoked.entry(p).or_default() += 1;
            }
            json!({"events": [set("packet", json!(null))]})
        }
        other => {
            return (
                StatusCode::NOT_FOUND,
                axum::Json(json!({"error": format!("no action {other}"), "action_name": other})),
            )
                .into_response()
        }
    };
    l.answers.insert(key, answer.clone());
    axum::Json(answer).into_response()
}

/// The payment service on a free port; returns it and its webhook URL.
pub async fn payments() -> (Payments, String) {
    let payments = Payments::default();
    let app = axum::Router::new()
        .route("/webhook", axum::routing::post(pay))
        .with_state(payments.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/webhook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (payments, url)
}

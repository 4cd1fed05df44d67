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
}

impl RasaSdk {
    pub async fn start(dir: &std::path::Path, module: &str) -> RasaSdk {
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
        let port = free_port();
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
  down: {{webhook: {{url: "{base}/down", timeout: 5s, retries: 2}}}}
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

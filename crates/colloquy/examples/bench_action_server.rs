//! A fast action server for `scripts/bench-actions`: answers the shoe
//! store's `check_stock` and `find_order` over Rasa's action server
//! protocol with fixed values, so a benchmark of turns that call webhooks
//! measures colloquy rather than Python. Prints its address, then serves
//! until killed; `GET /stats` gives the calls answered and the mean time
//! spent answering one (µs).
//!
//!     cargo run --release -p colloquy --example bench_action_server [ADDR]

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

#[derive(Default)]
struct Stats {
    calls: AtomicU64,
    nanos: AtomicU64,
}

async fn webhook(State(stats): State<Arc<Stats>>, Json(call): Json<Value>) -> Json<Value> {
    let started = Instant::now();
    let slot = |name: &str, value: Value| json!({"event": "slot", "name": name, "value": value});
    let answer = match call["next_action"].as_str() {
        Some("check_stock") => {
            json!({"events": [slot("stock", json!(5)), slot("price", json!(399))]})
        }
        Some("find_order") => json!({"events": [
            slot("order_status", json!("已发货")),
            slot("order_eta", json!("预计 11 月 26 日送达")),
        ]}),
        _ => json!({"events": []}),
    };
    stats.calls.fetch_add(1, Ordering::Relaxed);
    stats
        .nanos
        .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
    Json(answer)
}

async fn report(State(stats): State<Arc<Stats>>) -> Json<Value> {
    let calls = stats.calls.load(Ordering::Relaxed);
    let nanos = stats.nanos.load(Ordering::Relaxed);
    Json(json!({
        "calls": calls,
        "mean_handler_us": if calls == 0 { 0.0 } else { nanos as f64 / calls as f64 / 1000.0 },
    }))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".to_string());
    let stats = Arc::new(Stats::default());
    let app = axum::Router::new()
        .route("/webhook", axum::routing::post(webhook))
        .route("/stats", axum::routing::get(report))
        .with_state(stats);
    let listener = tokio::net::TcpListener::bind(&addr).await.expect("bind");
    println!("action server on http://{}", listener.local_addr().unwrap());
    axum::serve(listener, app).await.expect("serve");
}

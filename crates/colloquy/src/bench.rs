//! `colloquy bench`: a load generator. Simulated users hold multi-turn
//! conversations with the shoe-store bot over HTTP or WebSocket; latency is
//! recorded in an HDR histogram, errors by kind.

use crate::serve::{hs_secret, load_config, ServeArgs};
use anyhow::Context;
use colloquy_gateway::auth::{Issuer, Scope};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    Http,
    Ws,
}

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Base URL of the server.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Concurrent simulated users.
    #[arg(long, default_value_t = 64)]
    users: usize,
    /// How long to run (e.g. 30s, 2m); ignored when --turns is given.
    #[arg(long, default_value = "20s")]
    duration: String,
    /// Stop after this many turns instead of after --duration.
    #[arg(long)]
    turns: Option<u64>,
    #[arg(long, value_enum, default_value_t = Transport::Http)]
    transport: Transport,
    /// Bearer token with scope admin; by default one is minted from the
    /// server's settings (same --config / --data as the server).
    #[arg(long)]
    token: Option<String>,
    /// Also write the results as JSON here.
    #[arg(long, value_name = "OUT")]
    json: Option<PathBuf>,
    #[command(flatten)]
    server: ServeArgs,
}

/// Conversations the simulated users hold, turn by turn.
const SCRIPTS: &[&[&str]] = &[
    &["你好", "星云跑鞋有39码吗", "疾风板鞋呢", "谢谢"],
    &["查一下订单", "2026110101", "谢谢"],
    &["我该穿多大码", "24.6厘米", "那款鞋还有40码吗", "再见"],
    &["疾风板鞋有货吗", "41", "我要抽奖", "要", "不要了"],
];

struct Shared {
    latency: Mutex<Histogram<u64>>,
    errors: Mutex<BTreeMap<String, u64>>,
    turns: AtomicU64,
    stop: AtomicBool,
}

impl Shared {
    fn error(&self, kind: impl Into<String>) {
        *self
            .errors
            .lock()
            .expect("errors lock")
            .entry(kind.into())
            .or_default() += 1;
    }

    fn done(&self, started: Instant, limit: Option<u64>) -> bool {
        let n = self.turns.fetch_add(1, Ordering::Relaxed) + 1;
        self.latency
            .lock()
            .expect("histogram lock")
            .saturating_record(started.elapsed().as_micros() as u64);
        if limit.is_some_and(|l| n >= l) {
            self.stop.store(true, Ordering::Relaxed);
        }
        self.stop.load(Ordering::Relaxed)
    }
}

pub fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(bench(args))
}

async fn bench(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let token = match &args.token {
        Some(t) => t.clone(),
        None => {
            let cfg = load_config(&args.server)?;
            let issuer = Issuer::hs256(
                &hs_secret(&cfg)?,
                cfg.auth.issuer.clone(),
                cfg.auth.audience.clone(),
            );
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_secs();
            issuer.issue("bench", Scope::Admin, Duration::from_secs(24 * 3600), now)?
        }
    };
    let duration = Duration::from_millis(
        colloquy_core::bot::parse_duration_ms(&args.duration)
            .with_context(|| format!("--duration: `{}` is not a duration", args.duration))?
            as u64,
    );
    let shared = Arc::new(Shared {
        latency: Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 3)?),
        errors: Mutex::default(),
        turns: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    let run_id = uuid::Uuid::now_v7().simple().to_string();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.users)
        .build()?;
    let bar = match args.turns {
        Some(n) => indicatif::ProgressBar::new(n),
        None => indicatif::ProgressBar::new(duration.as_secs().max(1)),
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}")
            .expect("valid template"),
    );
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..args.users {
        let user = format!("bench-{}-{i}", &run_id[..12]);
        let (shared, client, token, url) = (
            shared.clone(),
            client.clone(),
            token.clone(),
            args.url.clone(),
        );
        let limit = args.turns;
        let transport = args.transport;
        tasks.push(tokio::spawn(async move {
            let script = SCRIPTS[i % SCRIPTS.len()];
            match transport {
                Transport::Http => {
                    http_user(&client, &url, &token, &user, script, &shared, limit).await
                }
                Transport::Ws => ws_user(&url, &token, &user, script, &shared, limit).await,
            }
        }));
    }
    while !shared.stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let turns = shared.turns.load(Ordering::Relaxed);
        let secs = start.elapsed().as_secs_f64();
        bar.set_message(format!("{:.0} turns/s", turns as f64 / secs));
        match args.turns {
            Some(_) => bar.set_position(turns),
            None => {
                bar.set_position(start.elapsed().as_secs());
                if start.elapsed() >= duration {
                    shared.stop.store(true, Ordering::Relaxed);
                }
            }
        }
    }
    for t in tasks {
        t.await?;
    }
    bar.finish_and_clear();
    let secs = start.elapsed().as_secs_f64();
    let h = shared.latency.lock().expect("histogram lock").clone();
    let errors = shared.errors.lock().expect("errors lock").clone();
    let turns = shared.turns.load(Ordering::Relaxed);
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let report = json!({
        "transport": if args.transport == Transport::Http { "http" } else { "ws" },
        "users": args.users,
        "seconds": secs,
        "turns": turns,
        "turns_per_second": turns as f64 / secs,
        "latency_ms": {"p50": ms(0.5), "p90": ms(0.9), "p99": ms(0.99), "p99_9": ms(0.999), "max": h.max() as f64 / 1000.0, "mean": h.mean() / 1000.0},
        "errors": errors,
    });
    println!(
        "turns           {turns} in {secs:.1} s ({:.0} turns/s) with {} users over {}",
        turns as f64 / secs,
        args.users,
        report["transport"].as_str().unwrap_or_default()
    );
    println!(
        "latency (ms)    p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
        ms(0.5),
        ms(0.9),
        ms(0.99),
        ms(0.999),
        h.max() as f64 / 1000.0
    );
    if errors.is_empty() {
        println!("errors          none");
    } else {
        for (k, v) in &errors {
            println!("errors          {k}: {v}");
        }
    }
    if let Some(path) = &args.json {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

async fn http_user(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    user: &str,
    script: &[&str],
    shared: &Shared,
    limit: Option<u64>,
) {
    let endpoint = format!("{url}/v1/conversations/{user}/messages?wait_ms=10000");
    for text in script.iter().cycle() {
        if shared.stop.load(Ordering::Relaxed) {
            return;
        }
        let started = Instant::now();
        match client
            .post(&endpoint)
            .bearer_auth(token)
            .json(&json!({"text": text}))
            .send()
            .await
        {
            Ok(r) if r.status() == 200 => {
                // Read the body: the turn is over when the replies arrived.
                if r.bytes().await.is_err() {
                    shared.error("body");
                    continue;
                }
                if shared.done(started, limit) {
                    return;
                }
            }
            Ok(r) if r.status() == 202 => shared.error("no reply within wait_ms"),
            Ok(r) => {
                shared.error(format!("http {}", r.status().as_u16()));
                if r.status() == 503 {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            Err(e) => {
                shared.error(if e.is_connect() { "connect" } else { "request" });
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn ws_user(
    url: &str,
    token: &str,
    user: &str,
    script: &[&str],
    shared: &Shared,
    limit: Option<u64>,
) {
    let ws_url = format!(
        "{}/v1/stream?token={token}&user={user}",
        url.replacen("http", "ws", 1)
    );
    let mut ws = match tokio_tungstenite::connect_async(&ws_url).await {
        Ok((ws, _)) => ws,
        Err(_) => {
            shared.error("ws connect");
            return;
        }
    };
    let mut n = 0u64;
    for text in script.iter().cycle() {
        if shared.stop.load(Ordering::Relaxed) {
            return;
        }
        n += 1;
        let id = format!("{user}-{n}");
        let started = Instant::now();
        let frame = json!({"type": "message", "text": text, "id": id}).to_string();
        if ws.send(Message::text(frame)).await.is_err() {
            shared.error("ws send");
            return;
        }
        // The turn ends with the first reply to this message.
        loop {
            let next = tokio::time::timeout(Duration::from_secs(10), ws.next()).await;
            let Ok(Some(Ok(m))) = next else {
                shared.error("ws closed or timed out");
                return;
            };
            let Ok(v) = serde_json::from_str::<Value>(m.to_text().unwrap_or_default()) else {
                continue;
            };
            match v["type"].as_str() {
                Some("reply") if v["message_id"] == id.as_str() => break,
                Some("error") => {
                    shared.error(format!(
                        "ws {}",
                        v["error"]["code"].as_str().unwrap_or("error")
                    ));
                    break;
                }
                _ => {}
            }
        }
        if shared.done(started, limit) {
            return;
        }
    }
}

//! `colloquy bench`: a load generator. Simulated users hold multi-turn
//! conversations with the shoe-store bot over HTTP or WebSocket; latency is
//! recorded in an HDR histogram, errors by kind.
//!
//! It usually runs on the same machine as the server it measures, so every
//! microsecond of CPU it spends on a turn is taken from the server. Hence a
//! lean HTTP/1.1 client (one keep-alive hyper connection per user, requests
//! pre-built from shared buffers) and measurements kept per user, with no
//! lock on the path of a turn.

use crate::config::{Config, ConfigArgs};
use anyhow::Context;
use bytes::Bytes;
use colloquy_gateway::auth::Scope;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{HeaderMap, Method, Request, Uri};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::json;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
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
    server: ConfigArgs,
}

/// Conversations the simulated users hold, turn by turn.
const SCRIPTS: &[&[&str]] = &[
    &["你好", "星云跑鞋有39码吗", "疾风板鞋呢", "谢谢"],
    &["查一下订单", "2026110101", "谢谢"],
    &["我该穿多大码", "24.6厘米", "那款鞋还有40码吗", "再见"],
    &["疾风板鞋有货吗", "41", "我要抽奖", "要", "不要了"],
];

/// Latencies above this (in µs) are recorded as this.
const MAX_LATENCY_US: u64 = 60_000_000;

/// What all users share: only the turn count (for the progress bar and
/// --turns) and the stop flag, both atomics.
struct Shared {
    turns: AtomicU64,
    stop: AtomicBool,
    limit: Option<u64>,
}

impl Shared {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Count a finished turn; true when the user should stop.
    fn done(&self, tally: &mut Tally, started: Instant) -> bool {
        tally.record(started);
        let n = self.turns.fetch_add(1, Ordering::Relaxed) + 1;
        if self.limit.is_some_and(|l| n >= l) {
            self.stop.store(true, Ordering::Relaxed);
        }
        self.stopped()
    }
}

/// What one simulated user measured. Each user task owns its tally and
/// returns it; they are merged once at the end. A shared histogram behind a
/// lock cost a lock round trip on every turn, and contention (with its cache
/// lines moving between cores) whenever more than one thread ran users.
struct Tally {
    latency: Histogram<u64>,
    errors: BTreeMap<Cow<'static, str>, u64>,
}

impl Tally {
    fn new() -> anyhow::Result<Self> {
        // Auto-resizing, so it grows only as far as the latencies seen: a
        // fixed range up to MAX_LATENCY_US would hold ~140 KB per user.
        Ok(Tally {
            latency: Histogram::new(3)?,
            errors: BTreeMap::new(),
        })
    }

    fn record(&mut self, started: Instant) {
        let us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        // Recording into an auto-resizing histogram fails only if it cannot
        // grow, which a value of at most MAX_LATENCY_US never needs.
        let _ = self.latency.record(us.min(MAX_LATENCY_US));
    }

    fn error(&mut self, kind: impl Into<Cow<'static, str>>) {
        *self.errors.entry(kind.into()).or_default() += 1;
    }
}

pub fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    // One thread: at the server's pace the users need a fraction of a core,
    // and more workers would only add wake-ups and work stealing, and take
    // a second core from the server being measured. Measured against the
    // multi-threaded runtime: about a tenth less CPU per turn.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(bench(args))
}

async fn bench(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let token = match &args.token {
        Some(t) => t.clone(),
        None => {
            let cfg = Config::from_args(&args.server)?;
            crate::token::issuer(&cfg)?.issue_now(
                "bench",
                Scope::Admin,
                Duration::from_secs(24 * 3600),
            )?
        }
    };
    let duration = Duration::from_millis(
        colloquy_core::duration::parse_ms(&args.duration)
            .with_context(|| format!("--duration: `{}` is not a duration", args.duration))?
            as u64,
    );
    let shared = Arc::new(Shared {
        turns: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        limit: args.turns,
    });
    let run_id = uuid::Uuid::now_v7().simple().to_string();
    let http = match args.transport {
        Transport::Http => Some(Arc::new(HttpTarget::new(&args.url, &token)?)),
        Transport::Ws => None,
    };
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
        let (shared, http, token, url) = (
            shared.clone(),
            http.clone(),
            token.clone(),
            args.url.clone(),
        );
        let tally = Tally::new()?;
        let script = i % SCRIPTS.len();
        tasks.push(match http {
            Some(target) => {
                let uri = target.uri(&user)?;
                tokio::spawn(async move { http_user(&target, uri, script, &shared, tally).await })
            }
            None => tokio::spawn(async move {
                ws_user(&url, &token, &user, SCRIPTS[script], &shared, tally).await
            }),
        });
    }
    while !shared.stopped() {
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
    let mut h = Histogram::<u64>::new_with_bounds(1, MAX_LATENCY_US, 3)?;
    let mut errors = BTreeMap::<String, u64>::new();
    for t in tasks {
        let tally = t.await?;
        h.add(&tally.latency)?;
        for (kind, n) in tally.errors {
            *errors.entry(kind.into_owned()).or_default() += n;
        }
    }
    bar.finish_and_clear();
    let secs = start.elapsed().as_secs_f64();
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

/// What every HTTP request has in common, built once: a turn then only
/// clones reference-counted handles instead of formatting a URL, a bearer
/// header and a JSON body each time.
struct HttpTarget {
    /// `host:port` to connect to.
    addr: String,
    /// Path before `/v1/...` if the URL has one, without a trailing slash.
    prefix: String,
    /// Host, Authorization and Content-Type.
    headers: HeaderMap,
    /// The JSON body of each line of each script, as `SCRIPTS`.
    bodies: Vec<Vec<Bytes>>,
}

type Sender = SendRequest<Full<Bytes>>;

impl HttpTarget {
    fn new(url: &str, token: &str) -> anyhow::Result<Self> {
        let base: Uri = url
            .parse()
            .with_context(|| format!("--url: `{url}` is not a URL"))?;
        // Plain HTTP only: the server behind a TLS proxy is not what this
        // measures (and no TLS stack is linked in).
        anyhow::ensure!(
            base.scheme_str() == Some("http"),
            "--url: `{url}` must start with http://"
        );
        let authority = base
            .authority()
            .with_context(|| format!("--url: `{url}` has no host"))?;
        let mut headers = HeaderMap::with_capacity(3);
        headers.insert(HOST, HeaderValue::from_str(authority.as_str())?);
        headers.insert(
            AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}"))
                .context("--token: not a valid header value")?,
        );
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let bodies = SCRIPTS
            .iter()
            .map(|script| {
                script
                    .iter()
                    .map(|text| Ok(Bytes::from(serde_json::to_vec(&json!({"text": text}))?)))
                    .collect::<anyhow::Result<Vec<_>>>()
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(HttpTarget {
            addr: format!(
                "{}:{}",
                authority.host(),
                authority.port_u16().unwrap_or(80)
            ),
            prefix: base.path().trim_end_matches('/').to_string(),
            headers,
            bodies,
        })
    }

    /// Where `user` posts messages, waiting for the replies.
    fn uri(&self, user: &str) -> anyhow::Result<Uri> {
        let uri = format!(
            "{}/v1/conversations/{user}/messages?wait_ms=10000",
            self.prefix
        );
        Ok(uri.parse()?)
    }

    fn request(&self, uri: &Uri, body: &Bytes) -> Request<Full<Bytes>> {
        let mut req = Request::new(Full::new(body.clone()));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = uri.clone();
        *req.headers_mut() = self.headers.clone();
        req
    }

    /// A new keep-alive connection. Nagle's algorithm is off: a request is
    /// one small write, which it could hold back until the server acknowledged
    /// the previous segment (up to a delayed-ACK timeout), adding to the
    /// latency measured.
    async fn connect(&self) -> anyhow::Result<Sender> {
        let tcp = tokio::net::TcpStream::connect(&self.addr).await?;
        tcp.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
        // Drives the socket; ends when the sender is dropped or the server
        // closes the connection (the sender then reports it).
        tokio::spawn(conn);
        Ok(sender)
    }

    /// The user's connection, ready for a request. One the server closed
    /// between turns is replaced without counting an error, as a connection
    /// pool would do; only failing to open one is an error.
    async fn ready<'c>(&self, conn: &'c mut Option<Sender>) -> anyhow::Result<&'c mut Sender> {
        let mut sender = match conn.take() {
            Some(s) => s,
            None => self.connect().await?,
        };
        if sender.ready().await.is_err() {
            sender = self.connect().await?;
        }
        Ok(conn.insert(sender))
    }
}

async fn http_user(
    target: &HttpTarget,
    uri: Uri,
    script: usize,
    shared: &Shared,
    mut tally: Tally,
) -> Tally {
    let mut conn = None;
    for body in target.bodies[script].iter().cycle() {
        if shared.stopped() {
            break;
        }
        let started = Instant::now();
        let sender = match target.ready(&mut conn).await {
            Ok(s) => s,
            Err(_) => {
                tally.error("connect");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let response = match sender.send_request(target.request(&uri, body)).await {
            Ok(r) => r,
            Err(_) => {
                conn = None;
                tally.error("request");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let status = response.status().as_u16();
        // Read the whole body, whatever the status: for a 200 the turn is
        // over when the replies arrived, and a body left unread would leave
        // the connection unusable for the next request.
        let read = response.into_body().collect().await;
        if read.is_err() {
            conn = None;
        }
        match status {
            200 if read.is_err() => tally.error("body"),
            200 => {
                if shared.done(&mut tally, started) {
                    break;
                }
            }
            202 => tally.error("no reply within wait_ms"),
            s => {
                tally.error(format!("http {s}"));
                if s == 503 {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
    tally
}

/// The fields of a server frame the bench looks at; the others (the reply
/// text, seq, ...) are skipped without being built. `Cow` borrows from the
/// frame unless a string has escapes.
#[derive(Deserialize)]
struct ServerFrame<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    /// Null for replies to no message of this session (catch-up).
    #[serde(default, borrow)]
    message_id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    error: Option<FrameError<'a>>,
}

#[derive(Deserialize)]
struct FrameError<'a> {
    #[serde(default, borrow)]
    code: Option<Cow<'a, str>>,
}

async fn ws_user(
    url: &str,
    token: &str,
    user: &str,
    script: &[&str],
    shared: &Shared,
    mut tally: Tally,
) -> Tally {
    let ws_url = format!(
        "{}/v1/stream?token={token}&user={user}",
        url.replacen("http", "ws", 1)
    );
    let mut ws = match tokio_tungstenite::connect_async(&ws_url).await {
        Ok((ws, _)) => ws,
        Err(_) => {
            tally.error("ws connect");
            return tally;
        }
    };
    // Each line JSON-escaped once; the frame around it is formatted per turn
    // because the message id changes.
    let texts: Vec<String> = script
        .iter()
        .map(|t| serde_json::to_string(t).expect("a string serializes"))
        .collect();
    let mut n = 0u64;
    for text in texts.iter().cycle() {
        if shared.stopped() {
            break;
        }
        n += 1;
        // The user name is `bench-<hex>-<n>`, so the id needs no escaping.
        let id = format!("{user}-{n}");
        let started = Instant::now();
        let frame = format!(r#"{{"type":"message","text":{text},"id":"{id}"}}"#);
        if ws.send(Message::text(frame)).await.is_err() {
            tally.error("ws send");
            break;
        }
        // The turn ends with the first reply to this message.
        loop {
            let next = tokio::time::timeout(Duration::from_secs(10), ws.next()).await;
            let Ok(Some(Ok(m))) = next else {
                tally.error("ws closed or timed out");
                return tally;
            };
            let Message::Text(m) = m else { continue };
            let Ok(f) = serde_json::from_str::<ServerFrame>(m.as_str()) else {
                continue;
            };
            match &*f.kind {
                "reply" if f.message_id.as_deref() == Some(id.as_str()) => break,
                "error" => {
                    let code = f.error.and_then(|e| e.code);
                    tally.error(format!("ws {}", code.as_deref().unwrap_or("error")));
                    break;
                }
                _ => {}
            }
        }
        if shared.done(&mut tally, started) {
            break;
        }
    }
    tally
}

//! Starting the real `colloquy serve` for end-to-end tests.

#![allow(dead_code)] // each test binary uses a different part of this harness

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The tests drive one user far faster than a person types; the rate
/// limits are tested on their own (attacks.rs), with these left out.
pub const UNLIMITED: [(&str, &str); 3] = [
    ("COLLOQUY_LIMITS_USER_RATE", "0"),
    ("COLLOQUY_LIMITS_TOKEN_RATE", "0"),
    ("COLLOQUY_LIMITS_WS_MESSAGE_RATE", "0"),
];

pub const SECRET: &str = "e2e-test-secret-0123456789abcdefghijklmnop";

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub struct Server {
    pub child: Child,
    pub addr: String,
    pub data: PathBuf,
}

impl Server {
    /// Start `colloquy serve` on 127.0.0.1:0 over `data`, wait until it
    /// prints its address.
    pub fn start(data: &Path, extra_env: &[(&str, &str)]) -> Server {
        Server::start_with(data, extra_env, &[])
    }

    /// As [`Server::start`], with more arguments for `colloquy serve`.
    pub fn start_with(data: &Path, extra_env: &[(&str, &str)], args: &[&str]) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_colloquy"));
        cmd.current_dir(root())
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(data)
            .args(args)
            .env("COLLOQUY_JWT_SECRET", SECRET)
            .env_remove("RUST_LOG")
            .envs(UNLIMITED)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        Server::spawn(cmd, data)
    }

    /// Run `cmd` (a `colloquy serve` with its stdout piped) and wait until
    /// it prints its address.
    pub fn spawn(mut cmd: Command, data: &Path) -> Server {
        let mut child = cmd.spawn().expect("spawn colloquy serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let mut addr = None;
        for line in lines.by_ref() {
            let line = line.expect("read stdout");
            if let Some(rest) = line.split(" on http://").nth(1) {
                addr = Some(rest.trim().to_string());
                break;
            }
        }
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let addr = addr.unwrap_or_else(|| {
            panic!("colloquy serve exited before listening: {:?}", child.wait())
        });
        Server {
            child,
            addr,
            data: data.to_path_buf(),
        }
    }

    /// `colloquy serve` on `data` with the bot in `bot`.
    pub fn with_bot(data: &Path, bot: &Path) -> Server {
        Server::start_with(data, &[], &["--bot", bot.to_str().unwrap()])
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        terminate(&mut self.child, "colloquy serve", Duration::from_secs(10))
    }
}

/// SIGTERM `child`, then its exit code; panics if it is still running
/// after `within`.
pub fn terminate(child: &mut Child, what: &str, within: Duration) -> Option<i32> {
    let pid = child.id().to_string();
    Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill -TERM");
    let started = Instant::now();
    while started.elapsed() < within {
        if let Some(s) = child.try_wait().expect("try_wait") {
            return s.code();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{what} did not stop within {within:?} of SIGTERM");
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Base64url without padding, as JWTs and JWKs write bytes.
pub fn b64(data: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A JWT signed with `secret` (HS256) or unsigned (`alg: none`).
pub fn jwt(alg: &str, secret: &str, claims: serde_json::Value) -> String {
    let header = b64(serde_json::json!({"alg": alg, "typ": "JWT"})
        .to_string()
        .as_bytes());
    let body = b64(claims.to_string().as_bytes());
    let signing = format!("{header}.{body}");
    let sig = if alg == "none" {
        String::new()
    } else {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(signing.as_bytes());
        b64(&mac.finalize().into_bytes())
    };
    format!("{signing}.{sig}")
}

pub fn token(user: &str, scope: &str) -> String {
    jwt(
        "HS256",
        SECRET,
        serde_json::json!({"sub": user, "scope": scope, "exp": now() + 3600, "iat": now()}),
    )
}

pub fn expired(user: &str) -> String {
    jwt(
        "HS256",
        SECRET,
        serde_json::json!({"sub": user, "scope": "chat", "exp": now() - 3600, "iat": now() - 7200}),
    )
}

/// The JSON body of an authenticated GET.
pub async fn get_json(c: &reqwest::Client, url: &str, token: &str) -> Value {
    c.get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The user's whole event log after `after`, read through the server at
/// `base` page by page.
pub async fn events_after(
    c: &reqwest::Client,
    base: &str,
    user: &str,
    token: &str,
    after: u64,
) -> Vec<Value> {
    let (mut events, mut after) = (Vec::new(), after);
    loop {
        let r = c
            .get(format!(
                "{base}/v1/conversations/{user}/events?limit=1000&after={after}"
            ))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        events.extend(v["events"].as_array().unwrap().iter().cloned());
        match v["next_after"].as_u64() {
            Some(next) => after = next,
            None => return events,
        }
    }
}

/// Message ids that got a 202, by user.
pub type Acked = BTreeMap<String, BTreeSet<String>>;

/// Wait until every acknowledged message has exactly one user event and a
/// reply in its user's log (read through the server at `base`); panics on a
/// duplicate or a message without reply, or if some are still missing
/// after `within`. Returns how long it took.
pub async fn wait_all_processed(
    c: &reqwest::Client,
    base: &str,
    acked: &Acked,
    within: Duration,
) -> Duration {
    let admin = token("ops", "admin");
    let started = Instant::now();
    let total: usize = acked.values().map(BTreeSet::len).sum();
    loop {
        let mut missing = 0;
        let mut problems = Vec::new();
        for (user, ids) in acked {
            let events = events_after(c, base, user, &admin, 0).await;
            let mut said: BTreeMap<String, usize> = BTreeMap::new();
            let mut replied: BTreeSet<String> = BTreeSet::new();
            let mut current = None;
            for e in &events {
                match e["type"].as_str().unwrap() {
                    "user_said" => {
                        let m = e["message_id"].as_str().unwrap().to_string();
                        *said.entry(m.clone()).or_default() += 1;
                        current = Some(m);
                    }
                    "bot_said" => {
                        replied.insert(current.clone().expect("a reply follows a message"));
                    }
                    _ => {}
                }
            }
            for id in ids {
                match said.get(id) {
                    None => missing += 1,
                    Some(1) if replied.contains(id) => {}
                    Some(1) => problems.push(format!("{id}: no reply")),
                    Some(n) => problems.push(format!("{id}: {n} user events")),
                }
            }
        }
        assert!(problems.is_empty(), "{problems:?}");
        if missing == 0 {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "{missing} of {total} acknowledged messages never processed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The shoe store's files, as `colloquy bots push` sends them.
pub fn shoe_store() -> BTreeMap<String, String> {
    bot_dir("bots/shoe-store")
}

/// A bot directory's YAML files (symlinks followed, scenarios left out),
/// by path inside it.
pub fn bot_dir(dir: &str) -> BTreeMap<String, String> {
    let dir = root().join(dir);
    let mut files = BTreeMap::new();
    let mut todo = vec![dir.clone()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_str().unwrap().to_string();
            if p.is_dir() {
                if name != "scenarios" {
                    todo.push(p);
                }
            } else if name.ends_with(".yaml") {
                let rel = p.strip_prefix(&dir).unwrap().to_str().unwrap().to_string();
                files.insert(rel, std::fs::read_to_string(&p).unwrap());
            }
        }
    }
    files
}

/// An HTTP/1.1 client that gives up after 30 s.
pub fn http1_client() -> reqwest::Client {
    reqwest::Client::builder()
        .http1_only()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// The events of one `type` among `events`.
pub fn of_type<'a>(events: &'a [Value], t: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == t).collect()
}

/// The server's `/metrics` text; `base` is its URL.
pub async fn metrics(c: &reqwest::Client, base: &str) -> String {
    c.get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// `user`'s whole log once `done` holds for it, read through the server
/// at `base` every 100 ms; panics with `what` after `within`.
pub async fn until_events(
    c: &reqwest::Client,
    base: &str,
    user: &str,
    within: Duration,
    what: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let started = Instant::now();
    loop {
        let events = events_after(c, base, user, &token(user, "chat"), 0).await;
        if done(&events) {
            return events;
        }
        assert!(started.elapsed() < within, "{user}: {what}: {events:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Write a bot's files under `dir`.
pub fn write_bot(dir: &Path, files: &BTreeMap<String, String>) {
    for (path, text) in files {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
}

/// Send `text` as `user` and wait for the replies (200).
pub async fn say(c: &reqwest::Client, base: &str, user: &str, text: &str) -> Vec<String> {
    let r = c
        .post(format!(
            "{base}/v1/conversations/{user}/messages?wait_ms=10000"
        ))
        .bearer_auth(token(user, "chat"))
        .json(&json!({ "text": text }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{user}: {text}");
    let v: Value = r.json().await.unwrap();
    v["replies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect()
}

/// Version 1.1.0: the same bot, greeting with a marker.
pub fn v2() -> BTreeMap<String, String> {
    let mut files = shoe_store();
    let bot = files.get_mut("bot.yaml").unwrap();
    *bot = bot.replace("version: \"1.0.0\"", "version: \"1.1.0\"");
    let responses = files.get_mut("responses.yaml").unwrap();
    *responses = responses.replacen("  greet:\n", "  greet:\n    - V2 您好!\n", 1);
    let responses = files.get_mut("responses.yaml").unwrap();
    // Only the marked variant, so every greeting of 1.1.0 shows it.
    let start = responses.find("    - V2 您好!\n").unwrap() + "    - V2 您好!\n".len();
    let end = responses[start..].find("  thanks:").unwrap() + start;
    responses.replace_range(start..end, "");
    files
}

/// Wait until every live process of the server at `base` serves rollout
/// generation `generation` of `bot`. An admin call waits for that only up
/// to 3 s, and training a version takes longer than that on a busy
/// machine with a debug build; how fast it is belongs to a benchmark.
/// Returns the processes' statuses.
pub async fn until_active(
    c: &reqwest::Client,
    base: &str,
    bot: &str,
    generation: u64,
) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r: Value = c
            .get(format!("{base}/v1/bots/{bot}/rollout"))
            .bearer_auth(token("ops", "admin"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let processes = r["processes"].as_array().cloned().unwrap_or_default();
        let at = |p: &Value| p["generation"].as_u64().unwrap_or(0) >= generation;
        if !processes.is_empty() && processes.iter().all(at) {
            return processes;
        }
        assert!(
            Instant::now() < deadline,
            "generation {generation} not active in time: {r}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Users sending messages without waiting for replies, recording what got
/// a 202, until `stop` is set.
pub fn load(
    base: &str,
    users: usize,
    tag: &str,
    acked: Arc<Mutex<Acked>>,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..users)
        .map(|u| {
            let c = reqwest::Client::builder()
                .timeout(Duration::from_secs(15))
                .build()
                .unwrap();
            let (acked, stop) = (acked.clone(), stop.clone());
            let user = format!("{tag}{u}");
            let url = format!("{base}/v1/conversations/{user}/messages");
            let tok = token(&user, "chat");
            tokio::spawn(async move {
                for i in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let id = format!("{user}-m{i}");
                    let text = ["星云跑鞋有39码吗", "谢谢", "你好", "疾风板鞋有40码吗"][i % 4];
                    let r = c
                        .post(&url)
                        .bearer_auth(&tok)
                        .json(&json!({"text": text, "id": id}))
                        .send()
                        .await;
                    match r.map(|r| r.status().as_u16()) {
                        Ok(202) => {
                            acked
                                .lock()
                                .unwrap()
                                .entry(user.clone())
                                .or_default()
                                .insert(id);
                        }
                        Ok(503) => tokio::time::sleep(Duration::from_millis(100)).await,
                        other => panic!("{user}: unexpected answer {other:?}"),
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
        })
        .collect()
}

/// A WebSocket session with a server of these tests.
pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub async fn open_ws(s: &Server, token: &str) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    let url = format!("ws://{}/v1/stream?token={token}", s.addr);
    tokio_tungstenite::connect_async(url)
        .await
        .map(|(ws, _)| ws)
}

/// The close frame the server ends `ws` with, waiting at most `within`.
pub async fn closed_with(ws: &mut Ws, within: std::time::Duration) -> (u16, String) {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let next = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("the server did not close the session in time");
        match next {
            Some(Ok(Message::Close(Some(frame)))) => {
                return (frame.code.into(), frame.reason.to_string())
            }
            Some(Ok(_)) => continue,
            other => panic!("session ended without a close frame: {other:?}"),
        }
    }
}

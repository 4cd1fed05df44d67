//! Personal data sealed where it is stored, and masked wherever it is
//! shown, through the real `colloquy serve`: users give a delivery address
//! and a phone number (one also mentions a number outside its prompt).
//! Every page of the log (one event at a time), the state, the replies of
//! the request and of the WebSocket (live and caught up), `/metrics` and
//! the server's own debug log hold none of the values; neither does any
//! byte of the data directory (event log, snapshots, bus). The data opens
//! with the ring and survives a restart, `colloquy keys rotate` takes
//! effect without one, and `colloquy keys reencrypt` leaves every value
//! under the new key, so a ring without the old key still reads it all.

mod server;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use server::{
    events_after, get_json, http1_client, metrics, say, token, write_bot, Server, SECRET, UNLIMITED,
};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

const ADDRESS: &str = "上海市浦东新区世纪大道100号";
const PHONE: &str = "13800138000";
const PASSING: &str = "13912345678";

const BOT: &str = r#"
bot:
  name: courier
  version: "1"
  language: zh
  threshold: 0.3
  fallback: fallback
entities:
  phone:
    regex: '(?:^|[^0-9])(1[3-9][0-9]{9})(?:[^0-9]|$)'
intents:
  ship:
    examples: [我要寄快递, 寄个包裹, 我想寄东西, 帮我寄快递, 下单寄件]
  contact:
    examples: [你们会打哪个号码, 联系电话是多少, 留的电话是哪个, 你们怎么联系我]
    response: contact
  greet:
    examples: [你好, 在吗, 您好]
    response: hello
slots:
  address: {type: text, sensitive: true}
  phone:
    type: text
    sensitive: true
    remember: true
    from: [{entity: phone, when: asked}]
    pattern: '1[3-9][0-9]{9}'
responses:
  fallback: 没听懂
  hello: 您好,要寄快递吗?
  ask_address: 寄到哪里?
  ask_phone: 收件人电话?
  done: "好的,寄到 {address},联系电话 {phone}"
  contact: "我们会打 {phone} 联系您"
flows:
  ship:
    intents: [ship]
    steps:
      - ask: address
        prompt: ask_address
      - ask: phone
        prompt: ask_phone
      - say: done
"#;

fn bot(dir: &Path) {
    write_bot(
        dir,
        &BTreeMap::from([("bot.yaml".to_string(), BOT.to_string())]),
    );
}

/// `colloquy serve` with its debug log (JSON) in `log`.
fn serve_logged(data: &Path, bot: &Path, log: &Path) -> Server {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_colloquy"));
    cmd.current_dir(server::root())
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .arg("--bot")
        .arg(bot)
        .env("COLLOQUY_JWT_SECRET", SECRET)
        .env("RUST_LOG", "debug")
        .env("COLLOQUY_LOG_FORMAT", "json")
        .envs(UNLIMITED)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap());
    Server::spawn(cmd, data)
}

/// `colloquy keys COMMAND --data DATA`, which must succeed; its stdout.
fn keys(command: &str, data: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_colloquy"))
        .args(["keys", command, "--data"])
        .arg(data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "keys {command}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn secrets() -> [&'static str; 3] {
    [ADDRESS, PHONE, PASSING]
}

fn assert_hidden(what: &str, text: &str) {
    for s in secrets() {
        assert!(!text.contains(s), "{what} shows {s}: {text}");
    }
}

/// Every file under `dir`, as bytes, searched for every value.
fn assert_no_bytes(dir: &Path) -> usize {
    let mut files = 0;
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
                continue;
            }
            files += 1;
            let bytes = std::fs::read(&p).unwrap();
            for s in secrets() {
                assert!(
                    !bytes.windows(s.len()).any(|w| w == s.as_bytes()),
                    "{} holds {s} in the clear",
                    p.display()
                );
            }
        }
    }
    files
}

async fn ws_say(addr: &str, user: &str, text: &str, after: Option<u64>) -> Vec<String> {
    let mut url = format!("ws://{addr}/v1/stream?token={}", token(user, "chat"));
    if let Some(a) = after {
        url.push_str(&format!("&after={a}"));
    }
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let mut frames = Vec::new();
    if after.is_some() {
        // Caught up first: the frames already in the log.
        while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(1), ws.next()).await {
            frames.push(m.to_text().unwrap().to_string());
        }
    }
    ws.send(Message::text(
        json!({"type": "message", "text": text}).to_string(),
    ))
    .await
    .unwrap();
    loop {
        let m = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a frame in time")
            .unwrap()
            .unwrap();
        let text = m.to_text().unwrap().to_string();
        let done = text.contains(r#""type":"done""#);
        frames.push(text);
        if done {
            return frames;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn personal_data_is_sealed_at_rest_and_masked_everywhere_it_is_shown() {
    let dir = tempfile::tempdir().unwrap();
    let (data, bot_dir, log) = (
        dir.path().join("data"),
        dir.path().join("bot"),
        dir.path().join("serve.log"),
    );
    bot(&bot_dir);
    let mut s = serve_logged(&data, &bot_dir, &log);
    let base = s.url("");
    let c = http1_client();

    assert_eq!(say(&c, &base, "alice", "我要寄快递").await, ["寄到哪里?"]);
    assert_eq!(say(&c, &base, "alice", ADDRESS).await, ["收件人电话?"]);
    let done = say(&c, &base, "alice", PHONE).await;
    assert_eq!(done, ["好的,寄到 ***,联系电话 ***"], "the reply is masked");
    // A number mentioned outside its prompt is not kept, and not shown.
    let passing = say(&c, &base, "bob", &format!("我同事{PASSING}让我寄快递")).await;
    assert_eq!(passing, ["寄到哪里?"]);

    // Live WebSocket frames, then a reconnect that catches up from seq 0.
    let frames = ws_say(&s.addr, "alice", "你们会打哪个号码", None).await;
    assert!(
        frames.iter().any(|f| f.contains("我们会打 *** 联系您")),
        "{frames:?}"
    );
    let caught_up = ws_say(&s.addr, "alice", "你好", Some(0)).await;
    assert!(
        caught_up.iter().any(|f| f.contains("联系电话 ***")),
        "{caught_up:?}"
    );
    for f in frames.iter().chain(&caught_up) {
        assert_hidden("a WebSocket frame", f);
    }

    // Every page, one event at a time, for both users.
    for user in ["alice", "bob"] {
        let all = events_after(&c, &base, user, &token(user, "chat"), 0).await;
        assert!(all.len() >= 7, "{all:?}");
        for after in 0..all.len() as u64 {
            let page = get_json(
                &c,
                &format!("{base}/v1/conversations/{user}/events?after={after}&limit=1"),
                &token(user, "chat"),
            )
            .await;
            assert_hidden(&format!("{user}'s page after {after}"), &page.to_string());
        }
        let personal = all.iter().filter(|e| e["personal"] == true).count();
        assert!(
            personal >= 2,
            "{user}: the personal events are marked: {all:#?}"
        );
    }
    let state = get_json(
        &c,
        &format!("{base}/v1/conversations/alice/state"),
        &token("alice", "chat"),
    )
    .await;
    assert_eq!(state["slots"]["phone"], "***", "{state}");
    assert_eq!(state["slots"]["address"], "***", "{state}");
    assert_hidden("/metrics", &metrics(&c, &base).await);

    // A restart reads the sealed state back: the flow goes on with it.
    assert_eq!(s.terminate(), Some(0));
    let mut s = serve_logged(&data, &bot_dir, &log.with_extension("2.log"));
    let base = s.url("");
    assert_eq!(
        say(&c, &base, "alice", "联系电话是多少").await,
        ["我们会打 *** 联系您"]
    );
    assert_eq!(
        say(&c, &base, "bob", "北京市朝阳区建国路1号").await,
        ["收件人电话?"]
    );

    // Rotation without a restart: new records are sealed under the new key.
    let stdout = keys("rotate", &data);
    assert!(stdout.contains("k0002 is now the current key"), "{stdout}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(say(&c, &base, "carol", "我要寄快递").await, ["寄到哪里?"]);
    assert_eq!(say(&c, &base, "carol", ADDRESS).await, ["收件人电话?"]);
    assert_eq!(s.terminate(), Some(0));

    for l in [&log, &log.with_extension("2.log")] {
        let text = std::fs::read_to_string(l).unwrap();
        assert!(
            text.lines().count() >= 3,
            "the debug log was written: {text}"
        );
        assert_hidden("the server's debug log", &text);
    }
    let files = assert_no_bytes(&data);
    assert!(files >= 4, "the event log, the bus and the keys are there");

    // What the stores hold opens with the ring: the values are all there.
    let ring_path = data.join("keys/sealing.json");
    let ring = std::sync::Arc::new(colloquy_store::KeyRing::open_or_create(&ring_path).unwrap());
    let opened = |ring: std::sync::Arc<colloquy_store::KeyRing>| {
        let data = data.clone();
        async move {
            let store = colloquy_store::open(&Default::default(), &data)
                .await
                .unwrap();
            let sealed = colloquy_store::Sealed::new(store, ring);
            let mut texts = String::new();
            for user in ["alice", "bob", "carol"] {
                let events =
                    colloquy_store::ConversationStore::events_after(&sealed, user, 0, 1000)
                        .await
                        .unwrap();
                texts.push_str(&serde_json::to_string(&events).unwrap());
            }
            texts
        }
    };
    let texts = opened(ring.clone()).await;
    for s in secrets() {
        assert!(texts.contains(s), "{s} is in the log, sealed");
    }

    // Re-encryption, then a ring without the first key reads everything.
    let stdout = keys("reencrypt", &data);
    assert!(stdout.contains("rewritten under key k0002"), "{stdout}");
    let mut file: Value =
        serde_json::from_str(&std::fs::read_to_string(&ring_path).unwrap()).unwrap();
    file["keys"].as_object_mut().unwrap().remove("k0001");
    let newest = colloquy_store::KeyRing::from_json(&file.to_string(), "test").unwrap();
    assert_eq!(opened(std::sync::Arc::new(newest)).await, texts);
    assert_no_bytes(&data);
}

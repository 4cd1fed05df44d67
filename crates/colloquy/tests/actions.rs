//! Remote actions on a running `colloquy serve`: an unmodified rasa-sdk
//! action server answers the shoe store; responses, followups and
//! rejections follow Rasa's protocol; calls are retried only when a retry
//! can help, with one idempotency key, behind a breaker; and a call cut by
//! kill -9 is repeated with its key after the restart and applied once.

mod action_server;
mod server;

use action_server::{counted_bot, counter, RasaSdk};
use serde_json::{json, Value};
use server::{
    bot_dir, events_after, http1_client, metrics, of_type, root, say, token, until_events,
    write_bot, Server,
};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// `serve` on `data` with the bot `files`, written to `bot`.
fn serve(
    data: &std::path::Path,
    bot: &std::path::Path,
    files: &BTreeMap<String, String>,
) -> Server {
    write_bot(bot, files);
    Server::with_bot(data, bot)
}

fn completed_actions(events: &[Value]) -> Vec<&str> {
    of_type(events, "action_completed")
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_action_server_answers_the_shoe_store_unchanged() {
    let actions = RasaSdk::start(&root().join("examples/action-server"), "actions").await;
    let mut files = bot_dir("bots/shoe-store-actions");
    let bot = files.get_mut("bot.yaml").unwrap();
    *bot = bot.replace("http://127.0.0.1:5055/webhook", &actions.url);
    let (data, dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let s = serve(data.path(), dir.path(), &files);
    let (c, base) = (http1_client(), s.url(""));

    assert_eq!(
        say(&c, &base, "ann", "星云跑鞋有39码吗").await,
        vec!["星云跑鞋 39 码有货,库存 5 双,售价 399 元。"]
    );
    assert_eq!(
        say(&c, &base, "ann", "疾风板鞋有40码吗").await,
        vec!["抱歉,疾风板鞋 40 码目前缺货,可以看看其他尺码或款式。"]
    );
    assert_eq!(
        say(&c, &base, "ann", "帮我查一下订单").await,
        vec!["请提供您的 10 位订单号。"]
    );
    assert_eq!(
        say(&c, &base, "ann", "2026110101").await,
        vec!["订单 2026110101:已发货,预计 11 月 26 日送达。"]
    );
    let events = events_after(&c, &base, "ann", &token("ann", "chat"), 0).await;
    let requested = of_type(&events, "action_requested");
    let completed = of_type(&events, "action_completed");
    assert_eq!(requested.len(), 3, "two stock checks and an order lookup");
    assert_eq!(
        requested.iter().map(|e| &e["key"]).collect::<Vec<_>>(),
        completed.iter().map(|e| &e["key"]).collect::<Vec<_>>()
    );
    assert_eq!(requested[2]["slots"], json!({"order_id": "2026110101"}));

    // The lottery's cash red packet, paid by the example's payment
    // actions as a saga. Draws are seeded by user and message: look for a
    // user whose first draw wins it.
    let mut winner = None;
    for i in 0..300 {
        let user = format!("lucky{i}");
        let r = say(&c, &base, &user, "我要抽奖").await;
        if r[0].contains("10 元现金红包") {
            winner = Some(user);
            break;
        }
    }
    let winner = winner.expect("someone wins the cash red packet in 300 draws");
    assert_eq!(
        say(&c, &base, &winner, "领红包").await,
        vec!["10 元现金红包已发放,请查收。"]
    );
    assert_eq!(
        say(&c, &base, &winner, "领红包").await,
        vec!["您还没有抽中现金红包哦,说\"抽奖\"试试手气。"],
        "a claimed prize is not paid twice"
    );
    let events = events_after(&c, &base, &winner, &token(&winner, "chat"), 0).await;
    assert_eq!(
        completed_actions(&events),
        vec!["reserve_budget", "grant_red_packet", "notify_winner"]
    );
    assert_eq!(of_type(&events, "saga_ended")[0]["outcome"], "completed");

    // A restarted action server has lost the domain it was sent, and asks
    // for it (449): it is sent again and the call answered.
    let port = actions.port;
    drop(actions);
    let mut actions =
        RasaSdk::start_on(&root().join("examples/action-server"), "actions", port).await;
    assert_eq!(
        say(&c, &base, "ann", "星云跑鞋有40码吗").await,
        vec!["星云跑鞋 40 码有货,库存 2 双,售价 399 元。"]
    );
    let m = metrics(&c, &s.url("")).await;
    assert!(
        m.contains(
            "colloquy_action_calls_total{action=\"check_stock\",outcome=\"needs_domain\"} 1"
        ),
        "{m}"
    );

    // The action server goes away: the user still gets an answer, and
    // the failure is an event.
    actions.stop();
    assert_eq!(
        say(&c, &base, "bob", "星云跑鞋有39码吗").await,
        vec!["抱歉,系统暂时查询不到,请稍后再试。"]
    );
    let events = events_after(&c, &base, "bob", &token("bob", "chat"), 0).await;
    let failed = of_type(&events, "action_failed");
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["attempts"], 3, "retries: 2 in the bot");
    assert!(
        failed[0]["reason"]
            .as_str()
            .unwrap()
            .contains("Connection refused"),
        "{}",
        failed[0]
    );
    let m = metrics(&c, &s.url("")).await;
    assert!(
        m.contains("colloquy_action_calls_total{action=\"check_stock\",outcome=\"ok\"} 3"),
        "{m}"
    );
    assert!(
        m.contains("colloquy_action_calls_total{action=\"check_stock\",outcome=\"error\"} 3"),
        "{m}"
    );
    assert!(m.contains("colloquy_action_duration_seconds_count{action=\"find_order\"} 1"));
}

const PROTOCOL_BOT: &str = r#"
bot:
  name: protocol
  version: "1"
  language: en
  fallback: fallback
  action_endpoint: {url: "URL", timeout: 5s}
intents:
  quote: {examples: [give me a quote, how much is it, price please, what does it cost]}
  reject: {examples: [reject this, refuse it, turn it down, say no to it]}
entities:
  model: {lookup: {nebula: [], breeze: []}}
slots:
  model: {type: text}
  price: {type: int}
  noted: {type: bool}
responses:
  fallback: sorry
  utter_price: "{model} costs {price}"
  done: "done, noted {noted}"
  refused: the action refused
actions:
  quote: {webhook: {}}
  note: {webhook: {}}
  reject_me: {webhook: {retries: 3}}
flows:
  quote:
    intents: [quote]
    steps:
      - action: quote
      - say: done
  reject:
    intents: [reject]
    steps:
      - action: reject_me
        on_error: refused
      - end: true
      - label: refused
        say: refused
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rasa_sdk_responses_followups_and_rejections_are_applied() {
    let actions = RasaSdk::start(
        &root().join("crates/colloquy/tests/action_server"),
        "test_actions",
    )
    .await;
    let files = BTreeMap::from([(
        "bot.yaml".to_string(),
        PROTOCOL_BOT.replace("URL", &actions.url),
    )]);
    let (data, dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let s = serve(data.path(), dir.path(), &files);
    let (c, base) = (http1_client(), s.url(""));

    assert_eq!(
        say(&c, &base, "cy", "give me a quote for nebula").await,
        vec!["nebula costs 399", "nebula for quote?", "done, noted true"],
        "a named response with a variable, text with buttons, then the followup before the flow went on"
    );
    let events = events_after(&c, &base, "cy", &token("cy", "chat"), 0).await;
    let requested: Vec<&Value> = of_type(&events, "action_requested");
    assert_eq!(
        requested
            .iter()
            .map(|e| e["action"].as_str().unwrap())
            .collect::<Vec<_>>(),
        vec!["quote", "note"]
    );
    let said = of_type(&events, "bot_said");
    let card = said
        .iter()
        .find(|e| e["text"] == "nebula for quote?")
        .unwrap();
    assert_eq!(
        card["payload"],
        json!({"buttons": [{"title": "yes", "payload": "/affirm"}], "custom": {"card": "nebula"}})
    );

    assert_eq!(
        say(&c, &base, "cy", "reject this").await,
        vec!["the action refused"]
    );
    let events = events_after(&c, &base, "cy", &token("cy", "chat"), 0).await;
    let failed = of_type(&events, "action_failed");
    assert_eq!(failed.len(), 1);
    assert_eq!(
        failed[0]["attempts"], 1,
        "a 400 is never retried: {}",
        failed[0]
    );
    assert!(failed[0]["reason"].as_str().unwrap().contains("not today"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_keep_the_key_honour_retry_after_skip_rejections_and_trip_the_breaker() {
    let (counter, url) = counter().await;
    let (data, dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let s = serve(data.path(), dir.path(), &counted_bot(&url));
    let (c, base) = (http1_client(), s.url(""));

    assert_eq!(
        say(&c, &base, "f", "try the flaky one").await,
        vec!["checked", "7 left"]
    );
    let flaky = counter.by_key("flaky");
    assert_eq!(flaky.len(), 1, "one key for every attempt: {flaky:?}");
    assert_eq!(flaky.values().next(), Some(&3), "two 503s, then the answer");
    let events = events_after(&c, &base, "f", &token("f", "chat"), 0).await;
    assert_eq!(
        of_type(&events, "action_requested")[0]["key"]
            .as_str()
            .unwrap(),
        flaky.keys().next().unwrap(),
        "the key is the action_requested event's"
    );

    assert_eq!(
        say(&c, &base, "t", "go slow now").await,
        vec!["checked", "7 left"]
    );
    let throttled = counter.calls("throttled");
    assert_eq!(throttled.len(), 2);
    let gap = throttled[1].1 - throttled[0].1;
    assert!(
        gap >= Duration::from_millis(950),
        "Retry-After: 1 honoured, waited {gap:?}"
    );

    assert_eq!(
        say(&c, &base, "r", "reject my order").await,
        vec!["could not check"]
    );
    assert_eq!(counter.calls("rejected").len(), 1, "a 400 is not retried");

    // 3 attempts per turn; the endpoint's breaker (`failures: 3` in the
    // bot) opens at the third failure in a row, so d2 and d3 get their
    // answer without a call.
    assert_eq!(
        say(&c, &base, "d1", "the broken thing").await,
        vec!["could not check"]
    );
    assert_eq!(counter.calls("down").len(), 3);
    for user in ["d2", "d3"] {
        assert_eq!(
            say(&c, &base, user, "the broken thing").await,
            vec!["could not check"]
        );
    }
    assert_eq!(
        counter.calls("down").len(),
        3,
        "an open breaker calls nobody"
    );
    let events = events_after(&c, &base, "d3", &token("d3", "chat"), 0).await;
    let failed = of_type(&events, "action_failed");
    assert!(
        failed[0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("circuit open"),
        "{}",
        failed[0]
    );
    let m = metrics(&c, &s.url("")).await;
    assert!(
        m.contains(&format!(
            "colloquy_action_breaker_state{{endpoint=\"{url}/down\"}} 2"
        )),
        "{m}"
    );
    assert!(
        m.contains("colloquy_action_calls_total{action=\"down\",outcome=\"circuit_open\"} 2"),
        "{m}"
    );
    assert!(
        m.contains("colloquy_action_errors_total{bot_version=\"1\"} 4"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_cut_by_kill_9_is_repeated_with_its_key_and_applied_once() {
    let (counter, url) = counter().await;
    let (data, dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut s = serve(data.path(), dir.path(), &counted_bot(&url));
    let c = http1_client();
    let r = c
        .post(s.url("/v1/conversations/k/messages"))
        .bearer_auth(token("k", "chat"))
        .json(&json!({"text": "hang on please", "id": "m1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let started = Instant::now();
    while counter.calls("hang").is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the action was never called"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.kill();

    let s = Server::with_bot(data.path(), dir.path());
    let base = s.url("");
    let events = until_events(
        &c,
        &base,
        "k",
        Duration::from_secs(60),
        "the call was not repeated",
        |e| !of_type(e, "action_completed").is_empty(),
    )
    .await;
    let calls = counter.by_key("hang");
    assert_eq!(calls.len(), 1, "one key across the crash: {calls:?}");
    let (key, n) = calls.iter().next().unwrap();
    assert_eq!(*n, 2, "called before the kill and once after");
    let requested = of_type(&events, "action_requested");
    assert_eq!(requested.len(), 1);
    assert_eq!(requested[0]["key"], *key);
    assert_eq!(
        of_type(&events, "action_completed").len(),
        1,
        "applied once"
    );
    assert_eq!(of_type(&events, "user_said").len(), 1);
    let said: Vec<&Value> = of_type(&events, "bot_said")
        .into_iter()
        .map(|e| &e["text"])
        .collect();
    assert_eq!(said, vec!["checked", "7 left"]);

    // The same message again: answered from the log, nothing called.
    let r: Value = c
        .post(s.url("/v1/conversations/k/messages?wait_ms=5000"))
        .bearer_auth(token("k", "chat"))
        .json(&json!({"text": "hang on please", "id": "m1"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["replies"], json!(["checked", "7 left"]));
    assert_eq!(counter.calls("hang").len(), 2);
}

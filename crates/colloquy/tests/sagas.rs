//! The red packet saga (reserve budget, grant the red packet, notify the
//! winner) against a payment service that keys every effect by its
//! idempotency key, on a running `colloquy serve`: a failure injected at
//! every step, and a kill -9 during every step and every compensation.
//! Afterwards money paid equals budget spent, no red packet is paid twice,
//! and every compensation ran exactly once.

mod action_server;
mod server;

use action_server::{payments, Ledger, Payments};
use serde_json::{json, Value};
use server::{
    events_after, http1_client, metrics, of_type, say, token, until_events, write_bot, Server,
};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const BOT: &str = r#"
bot:
  name: red-packet
  version: "1"
  language: zh
  fallback: fallback
  action_failed: failed
  action_endpoint: {url: "URL", timeout: 3s, retries: 1}
intents:
  claim: {examples: [领红包, 我要领取现金红包, 领取我的奖励, 红包呢, 发红包给我]}
  greet: {examples: [你好, 在吗], response: greet}
slots:
  reservation: {type: text}
  amount: {type: int}
  packet: {type: text}
responses:
  fallback: 没听懂
  greet: 您好
  failed: 系统繁忙
  paid: "红包 {amount} 元已发放"
  not_paid: 红包发放失败,预算已退回
actions:
  reserve_budget: {webhook: {}}
  grant_red_packet: {webhook: {}}
  notify_winner: {webhook: {}}
  release_budget: {webhook: {}}
  revoke_red_packet: {webhook: {}}
sagas:
  red_packet:
    compensation_rounds: 3
    compensation_backoff: 100ms
    steps:
      - {action: reserve_budget, compensate: release_budget}
      - {action: grant_red_packet, compensate: revoke_red_packet}
      - {action: notify_winner}
flows:
  claim:
    intents: [claim]
    steps:
      - saga: red_packet
        on_error: refunded
      - say: paid
      - end: true
      - label: refunded
        say: not_paid
"#;

/// The payment service, a data directory, and the red packet bot
/// calling the service, in its own directory.
async fn red_packet_bot() -> (Payments, tempfile::TempDir, tempfile::TempDir) {
    let (pay, url) = payments().await;
    let (data, bot) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write_bot(
        bot.path(),
        &BTreeMap::from([("bot.yaml".into(), BOT.replace("URL", &url))]),
    );
    (pay, data, bot)
}

/// Money and effects add up over everything the service did.
fn check_books(l: &Ledger) {
    assert_eq!(l.paid(), l.spent(), "money paid equals budget spent");
    assert!(
        l.released
            .values()
            .chain(l.revoked.values())
            .all(|n| *n == 1),
        "every compensation took effect once: released {:?}, revoked {:?}",
        l.released,
        l.revoked
    );
}

/// A user's completed and compensation calls in the log, by action.
fn completed(events: &[Value]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for e in of_type(events, "action_completed") {
        *out.entry(e["action"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    out
}

/// A user, the actions that fail, the calls that complete, the replies.
type Case<'a> = (&'a str, &'a [&'a str], &'a [&'a str], Vec<&'a str>);

fn setup(p: &Payments, fail: &[&str], hang: Option<&str>) {
    let mut l = p.ledger.lock().unwrap();
    l.fail = fail.iter().map(|s| s.to_string()).collect();
    l.hang = hang.map(String::from);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_at_every_step_is_compensated_once() {
    let (pay, data, bot) = red_packet_bot().await;
    let s = Server::with_bot(data.path(), bot.path());
    let (c, base) = (http1_client(), s.url(""));

    let cases: [Case; 4] = [
        (
            "ok",
            &[],
            &["reserve_budget", "grant_red_packet", "notify_winner"],
            vec!["红包已到账", "红包 10 元已发放"],
        ),
        (
            "f-reserve",
            &["reserve_budget"],
            &[],
            vec!["红包发放失败,预算已退回"],
        ),
        (
            "f-grant",
            &["grant_red_packet"],
            &["reserve_budget", "release_budget"],
            vec!["红包发放失败,预算已退回"],
        ),
        (
            "f-notify",
            &["notify_winner"],
            &[
                "reserve_budget",
                "grant_red_packet",
                "revoke_red_packet",
                "release_budget",
            ],
            vec!["红包发放失败,预算已退回"],
        ),
    ];
    for (user, fail, done, replies) in cases {
        setup(&pay, fail, None);
        assert_eq!(say(&c, &base, user, "领红包").await, replies, "{user}");
        let events = events_after(&c, &base, user, &token(user, "chat"), 0).await;
        let want: BTreeMap<String, usize> = done.iter().map(|a| (a.to_string(), 1)).collect();
        assert_eq!(
            completed(&events),
            want,
            "{user}: each step and compensation once"
        );
        let ended = of_type(&events, "saga_ended");
        assert_eq!(ended.len(), 1);
        let outcome = if fail.is_empty() {
            "completed"
        } else {
            "compensated"
        };
        assert_eq!(ended[0]["outcome"], outcome, "{user}");
        check_books(&pay.ledger.lock().unwrap());
    }
    let l = pay.ledger.lock().unwrap();
    assert_eq!(
        l.granted.len(),
        2,
        "ok and f-notify were granted a packet: {:?}",
        l.granted
    );
    assert_eq!(l.paid(), 10, "one packet kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compensation_that_keeps_failing_is_set_aside_with_a_metric() {
    let (pay, data, bot) = red_packet_bot().await;
    let s = Server::with_bot(data.path(), bot.path());
    let (c, base) = (http1_client(), s.url(""));
    setup(&pay, &["grant_red_packet", "release_budget"], None);
    assert_eq!(
        say(&c, &base, "stuck", "领红包").await,
        vec!["红包发放失败,预算已退回"]
    );
    let events = events_after(&c, &base, "stuck", &token("stuck", "chat"), 0).await;
    let abandoned = of_type(&events, "compensation_abandoned");
    assert_eq!(abandoned.len(), 1);
    assert_eq!(abandoned[0]["action"], "release_budget");
    assert_eq!(abandoned[0]["call"]["round"], 3);
    assert_eq!(of_type(&events, "saga_ended")[0]["outcome"], "stuck");
    let failed: Vec<&Value> = of_type(&events, "action_failed")
        .into_iter()
        .filter(|e| e["action"] == "release_budget")
        .collect();
    assert_eq!(failed.len(), 3, "requested in 3 rounds");
    {
        let l = pay.ledger.lock().unwrap();
        // The endpoint's breaker opens on the way, so not every round
        // reaches the service; every one that does carries the same key.
        let keys = l.calls_of("release_budget");
        assert!(
            !keys.is_empty() && keys.iter().all(|k| *k == keys[0]),
            "{keys:?}"
        );
        assert_eq!(l.spent(), 10, "the reservation is left for a person");
    }
    let m = metrics(&c, &s.url("")).await;
    assert!(
        m.contains("colloquy_saga_compensations_abandoned_total{saga=\"red_packet\"} 1"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_during_every_step_and_compensation_resumes_the_saga_once() {
    let (pay, data, bot) = red_packet_bot().await;
    let c = http1_client();
    let cases: [(&str, &[&str], &str, &str); 5] = [
        ("k-reserve", &[], "reserve_budget", "completed"),
        ("k-grant", &[], "grant_red_packet", "completed"),
        ("k-notify", &[], "notify_winner", "completed"),
        (
            "k-release",
            &["grant_red_packet"],
            "release_budget",
            "compensated",
        ),
        (
            "k-revoke",
            &["notify_winner"],
            "revoke_red_packet",
            "compensated",
        ),
    ];
    for (user, fail, hang, outcome) in cases {
        setup(&pay, fail, Some(hang));
        let before = {
            let mut l = pay.ledger.lock().unwrap();
            l.reset_hang();
            l.calls_of(hang).len()
        };
        let mut s = Server::with_bot(data.path(), bot.path());
        let r = c
            .post(s.url(&format!("/v1/conversations/{user}/messages")))
            .bearer_auth(token(user, "chat"))
            .json(&json!({"text": "领红包", "id": "m1"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        let started = Instant::now();
        while pay.ledger.lock().unwrap().calls_of(hang).len() == before {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{user}: {hang} never called"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        s.kill();

        let s = Server::with_bot(data.path(), bot.path());
        let base = s.url("");
        let events = until_events(
            &c,
            &base,
            user,
            Duration::from_secs(60),
            "the saga did not resume",
            |e| !of_type(e, "saga_ended").is_empty(),
        )
        .await;
        assert_eq!(
            of_type(&events, "saga_ended")[0]["outcome"],
            outcome,
            "{user}: {:#?}",
            of_type(&events, "action_failed")
        );
        let l = pay.ledger.lock().unwrap();
        let keys = &l.calls_of(hang)[before..];
        assert_eq!(
            keys.len(),
            2,
            "{user}: {hang} called once before the kill and once after"
        );
        assert_eq!(keys[0], keys[1], "{user}: with the same key");
        assert!(
            completed(&events).values().all(|n| *n == 1),
            "{user}: every step applied once: {:?}",
            completed(&events)
        );
        check_books(&l);
        drop(l);
        drop(s);
    }
    let l = pay.ledger.lock().unwrap();
    assert_eq!(
        l.granted.len(),
        4,
        "one packet for each of the four runs that got to grant: {:?}",
        l.granted
    );
}

//! The campaign scenario of issue 12, shared by `serve` (campaign.rs) and
//! the distributed topology (distributed_bots.rs): the shoe store runs
//! 2.0.0 without the lottery; the lottery ships as 2.1.0 with only YAML
//! changes, is canaried to user-id tails 0 and 1, promoted and rolled
//! back, with conversations in the middle of a flow at every switch.

#![allow(dead_code)] // each test binary uses a different part

use crate::server::{shoe_store, token, until_active};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// The shipped shoe store under `version`, with or without its lottery,
/// saying `campaign_over` to a user whose lottery is withdrawn.
pub fn variant(version: &str, lottery: bool) -> BTreeMap<String, String> {
    let mut files = shoe_store();
    if !lottery {
        files
            .remove("flows/lottery.yaml")
            .expect("the lottery is its own file");
    }
    let bot = files.get_mut("bot.yaml").unwrap();
    *bot = bot
        .replace("version: \"1.0.0\"", &format!("version: \"{version}\""))
        .replace(
            "  abandon: abandon\n",
            "  abandon: abandon\n  withdrawn: campaign_over\n",
        );
    let responses = files.get_mut("responses.yaml").unwrap();
    *responses = responses.replacen(
        "responses:\n",
        "responses:\n  campaign_over: 抽奖活动已结束,感谢参与!还有什么可以帮您?\n",
        1,
    );
    files
}

pub fn write(dir: &std::path::Path, files: &BTreeMap<String, String>) {
    for (path, text) in files {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
}

pub struct Shop {
    pub c: reqwest::Client,
    /// The server's base URL (`serve`, or a gateway).
    pub base: String,
}

impl Shop {
    pub async fn say(&self, user: &str, text: &str) -> String {
        let r = self
            .c
            .post(format!(
                "{}/v1/conversations/{user}/messages?wait_ms=10000",
                self.base
            ))
            .bearer_auth(token(user, "chat"))
            .json(&json!({ "text": text }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{user}: {text}");
        let v: Value = r.json().await.unwrap();
        v["replies"].to_string()
    }

    pub async fn admin(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut r = self
            .c
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token("ops", "admin"));
        if let Some(b) = body {
            r = r.json(&b);
        }
        let r = r.send().await.unwrap();
        assert!(r.status().is_success(), "{path}: {}", r.status());
        r.json().await.unwrap()
    }

    pub async fn version_of(&self, user: &str) -> String {
        let r = self
            .c
            .get(format!("{}/v1/conversations/{user}/state", self.base))
            .bearer_auth(token(user, "chat"))
            .send()
            .await
            .unwrap();
        let v: Value = r.json().await.unwrap();
        v["route"]["version"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

pub fn drew(replies: &str) -> bool {
    replies.contains("轮抽奖结果")
}

/// The campaign, on a server whose rollout is at `generation` and serves
/// 2.0.0 to everyone.
pub async fn run(shop: &Shop, generation: u64) {
    use reqwest::Method;
    // Before the campaign nobody can draw; u52 is mid-flow (asked which model).
    assert!(!drew(&shop.say("u40", "我要抽奖").await));
    let asked = shop.say("u52", "有39码的吗").await;
    assert!(asked.contains("哪一款"), "{asked}");

    // The lottery ships as the next version: YAML only, canary to tails 0 and 1.
    shop.admin(
        Method::POST,
        "/v1/bots",
        Some(json!({"files": variant("2.1.0", true)})),
    )
    .await;
    let r = shop
        .admin(
            Method::PUT,
            "/v1/bots/shoe-store/rollout",
            Some(json!({"stable": "2.0.0", "canary": {"version": "2.1.0", "tails": [0, 1]}})),
        )
        .await;
    assert_eq!(r["rollout"]["generation"], generation + 1, "{r}");
    until_active(&shop.c, &shop.base, "shoe-store", generation + 1).await;
    // The flow in progress finishes where it started.
    let answered = shop.say("u52", "星云跑鞋").await;
    assert!(answered.contains("星云跑鞋 39 码"), "{answered}");
    assert_eq!(shop.version_of("u52").await, "2.0.0");
    // New users ending in 0 or 1 can draw; the others get what they got before.
    assert!(drew(&shop.say("u60", "我要抽奖").await));
    assert!(drew(&shop.say("u71", "我要抽奖").await));
    assert!(!drew(&shop.say("u62", "我要抽奖").await));
    assert!(!drew(&shop.say("u93", "我要抽奖").await));
    // u40 talked before the canary: its session stays on 2.0.0.
    assert!(!drew(&shop.say("u40", "我要抽奖").await));

    // Promote while u60 is asked whether to draw again: it goes on.
    shop.admin(Method::POST, "/v1/bots/shoe-store/promote", None)
        .await;
    let again = shop.say("u60", "要").await;
    assert!(again.contains("第 2 轮抽奖结果"), "{again}");
    assert!(
        drew(&shop.say("u84", "我要抽奖").await),
        "everyone new draws"
    );

    // Roll back while u71 is asked whether to draw again: its lottery is
    // withdrawn and ends with the response the bot defines for that.
    let r = shop
        .admin(Method::POST, "/v1/bots/shoe-store/rollback", None)
        .await;
    assert_eq!(r["rollout"]["rollout"]["stable"], "2.0.0", "{r}");
    let ended = shop.say("u71", "要").await;
    assert!(ended.contains("抽奖活动已结束"), "{ended}");
    assert!(!drew(&ended));
    assert_eq!(shop.version_of("u71").await, "2.0.0");
    assert!(!drew(&shop.say("u84", "我要抽奖").await));
    assert!(!drew(&shop.say("u60", "我要抽奖").await));
}

//! The one test suite every [`BotRegistry`] backend passes. `fresh()` must
//! give an empty registry each call; bot names are the caller's so that
//! runs against a shared server do not meet.

use super::*;
use colloquy_core::Canary;

fn files(text: &str) -> BotFiles {
    BotFiles::from([("bot.yaml".to_string(), text.to_string())])
}

fn version(name: &str, v: &str, text: &str, at: i64) -> StoredVersion {
    StoredVersion::new(name, v, files(text), at, "admin-1")
}

fn change(rollout: Rollout, action: RolloutAction) -> RolloutChange {
    RolloutChange {
        rollout,
        action,
        by: "admin-1".into(),
        at_ms: 1_000,
        note: None,
    }
}

/// Run every check on the registry `reg`, using bot names that start with
/// `prefix` (unique per run).
pub async fn run_all(reg: &dyn BotRegistry, prefix: &str) {
    versions_are_immutable(reg, &format!("{prefix}-imm")).await;
    rollouts_need_known_versions_and_count_generations(reg, &format!("{prefix}-ro")).await;
    concurrent_rollout_changes_do_not_both_win(reg, &format!("{prefix}-cas")).await;
    activations_keep_the_newest_per_process(reg, &format!("{prefix}-act")).await;
    the_audit_log_keeps_every_entry_newest_first(reg, &format!("{prefix}-aud")).await;
}

async fn the_audit_log_keeps_every_entry_newest_first(reg: &dyn BotRegistry, bot: &str) {
    let entry = |i: i64| AuditEntry {
        at_ms: i,
        by: "admin-1".into(),
        from: Some("127.0.0.1:5000".into()),
        action: "push".into(),
        bot: bot.into(),
        outcome: format!("{i} created"),
    };
    for i in 1..=3 {
        reg.audit(entry(i)).await.unwrap();
    }
    let mine: Vec<AuditEntry> = reg
        .audit_log(1000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.bot == bot)
        .collect();
    assert_eq!(mine, [entry(3), entry(2), entry(1)]);
    assert_eq!(reg.audit_log(1).await.unwrap().len(), 1);
}

async fn versions_are_immutable(reg: &dyn BotRegistry, bot: &str) {
    let v1 = version(bot, "1.0.0", "a: 1", 10);
    assert_eq!(reg.push(v1.clone()).await.unwrap(), Pushed::Created);
    assert_eq!(reg.push(v1.clone()).await.unwrap(), Pushed::Unchanged);
    let other = version(bot, "1.0.0", "a: 2", 11);
    match reg.push(other).await {
        Err(RegistryError::VersionExists { existing, .. }) => assert_eq!(existing, v1.info.hash),
        other => panic!("pushing other files under 1.0.0 gave {other:?}"),
    }
    assert_eq!(reg.version(bot, "1.0.0").await.unwrap(), Some(v1.clone()));
    assert_eq!(reg.version(bot, "9").await.unwrap(), None);
    reg.push(version(bot, "1.1.0", "a: 3", 12)).await.unwrap();
    let listed: Vec<String> = reg
        .versions(Some(bot))
        .await
        .unwrap()
        .into_iter()
        .map(|v| v.version)
        .collect();
    assert_eq!(listed, ["1.0.0", "1.1.0"]);
    let all = reg.versions(None).await.unwrap();
    assert!(all.iter().any(|v| v.name == bot && v.version == "1.1.0"));
    let mut tampered = version(bot, "2", "a: 4", 13);
    tampered.info.hash = "00".repeat(32);
    assert!(matches!(
        reg.push(tampered).await,
        Err(RegistryError::Invalid(_))
    ));
}

async fn rollouts_need_known_versions_and_count_generations(reg: &dyn BotRegistry, bot: &str) {
    assert_eq!(reg.rollout(bot).await.unwrap(), None);
    assert!(matches!(
        reg.set_rollout(bot, 0, change(Rollout::stable("1"), RolloutAction::Set))
            .await,
        Err(RegistryError::UnknownVersion { .. })
    ));
    reg.push(version(bot, "1", "a: 1", 1)).await.unwrap();
    reg.push(version(bot, "2", "a: 2", 2)).await.unwrap();
    let first = reg
        .set_rollout(bot, 0, change(Rollout::stable("1"), RolloutAction::Set))
        .await
        .unwrap();
    assert_eq!(first.generation, 1);
    let canary = Rollout {
        stable: "1".into(),
        canary: Some(Canary {
            version: "2".into(),
            tails: vec![1, 0, 1],
        }),
        withdrawn: vec![],
        guards: vec![],
    };
    let second = reg
        .set_rollout(bot, 1, change(canary, RolloutAction::Set))
        .await
        .unwrap();
    assert_eq!(second.generation, 2);
    assert_eq!(second.rollout.canary.as_ref().unwrap().tails, [0, 1]);
    let canary_is_stable = Rollout {
        stable: "1".into(),
        canary: Some(Canary {
            version: "1".into(),
            tails: vec![1],
        }),
        withdrawn: vec![],
        guards: vec![],
    };
    assert!(matches!(
        reg.set_rollout(bot, 2, change(canary_is_stable, RolloutAction::Set))
            .await,
        Err(RegistryError::Invalid(_))
    ));
    let mut back = Rollout::stable("1");
    back.withdrawn.push("2".into());
    reg.set_rollout(bot, 2, change(back.clone(), RolloutAction::Rollback))
        .await
        .unwrap();
    let now = reg.rollout(bot).await.unwrap().unwrap();
    assert_eq!((now.generation, &now.rollout), (3, &back));
    assert_eq!(now.action, RolloutAction::Rollback);
    let history: Vec<u64> = reg
        .history(bot, 10)
        .await
        .unwrap()
        .iter()
        .map(|r| r.generation)
        .collect();
    assert_eq!(history, [3, 2, 1]);
    assert_eq!(reg.history(bot, 1).await.unwrap().len(), 1);
}

async fn concurrent_rollout_changes_do_not_both_win(reg: &dyn BotRegistry, bot: &str) {
    reg.push(version(bot, "1", "a: 1", 1)).await.unwrap();
    reg.push(version(bot, "2", "a: 2", 2)).await.unwrap();
    let (a, b) = tokio::join!(
        reg.set_rollout(bot, 0, change(Rollout::stable("1"), RolloutAction::Set)),
        reg.set_rollout(bot, 0, change(Rollout::stable("2"), RolloutAction::Set)),
    );
    let won = [a.is_ok(), b.is_ok()];
    assert_eq!(won.iter().filter(|w| **w).count(), 1, "{a:?} {b:?}");
    let loser = if a.is_ok() { b } else { a };
    assert!(matches!(
        loser,
        Err(RegistryError::Stale { current: 1, .. })
    ));
}

async fn activations_keep_the_newest_per_process(reg: &dyn BotRegistry, bot: &str) {
    let report = |process: &str, generation, error: Option<&str>| Activation {
        process: process.into(),
        generation,
        error: error.map(String::from),
        at_ms: generation as i64,
        figures: if error.is_none() {
            BTreeMap::from([(
                "1".to_string(),
                Figures {
                    users: 2,
                    turns: 5,
                    fallbacks: 1,
                    handoffs: 0,
                    action_errors: 0,
                    latency: vec![0, 3, 2],
                },
            )])
        } else {
            BTreeMap::new()
        },
    };
    reg.report(bot, report("w1", 1, None)).await.unwrap();
    reg.report(bot, report("w2", 1, Some("boom")))
        .await
        .unwrap();
    reg.report(bot, report("w1", 2, None)).await.unwrap();
    let mut got = reg.activations(bot).await.unwrap();
    got.sort_by(|a, b| a.process.cmp(&b.process));
    assert_eq!(got, [report("w1", 2, None), report("w2", 1, Some("boom"))]);
}

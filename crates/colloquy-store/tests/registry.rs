//! The embedded bot registry: the conformance suite, and what survives a
//! restart or a crash.

use colloquy_core::Rollout;
use colloquy_store::registry::{
    conformance, embedded::EmbeddedRegistry, BotFiles, BotRegistry, Pushed, RegistryError,
    RolloutAction, RolloutChange, StoredVersion,
};
use std::fs;

#[tokio::test]
async fn embedded_registry_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let reg = EmbeddedRegistry::open(dir.path()).unwrap();
    conformance::run_all(&reg, "bot").await;
}

fn version(v: &str, text: &str) -> StoredVersion {
    let files = BotFiles::from([("bot.yaml".to_string(), text.to_string())]);
    StoredVersion::new("shop", v, files, 5, "ops")
}

fn set(rollout: Rollout) -> RolloutChange {
    RolloutChange {
        rollout,
        action: RolloutAction::Set,
        by: "ops".into(),
        at_ms: 7,
        note: Some("why".into()),
    }
}

#[tokio::test]
async fn versions_and_history_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    {
        let reg = EmbeddedRegistry::open(dir.path()).unwrap();
        reg.push(version("1", "a")).await.unwrap();
        reg.push(version("2", "b")).await.unwrap();
        reg.set_rollout("shop", 0, set(Rollout::stable("1")))
            .await
            .unwrap();
        reg.set_rollout("shop", 1, set(Rollout::stable("2")))
            .await
            .unwrap();
    }
    let reg = EmbeddedRegistry::open(dir.path()).unwrap();
    assert_eq!(
        reg.push(version("1", "a")).await.unwrap(),
        Pushed::Unchanged
    );
    assert!(matches!(
        reg.push(version("2", "other")).await,
        Err(RegistryError::VersionExists { .. })
    ));
    let now = reg.rollout("shop").await.unwrap().unwrap();
    assert_eq!((now.generation, now.rollout.stable.as_str()), (2, "2"));
    assert_eq!(now.note.as_deref(), Some("why"));
    assert_eq!(reg.history("shop", 9).await.unwrap().len(), 2);
}

#[tokio::test]
async fn a_history_line_cut_short_by_a_crash_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    {
        let reg = EmbeddedRegistry::open(dir.path()).unwrap();
        reg.push(version("1", "a")).await.unwrap();
        reg.set_rollout("shop", 0, set(Rollout::stable("1")))
            .await
            .unwrap();
    }
    let file = dir.path().join("rollouts/shop.jsonl");
    let mut text = fs::read_to_string(&file).unwrap();
    text.push_str("{\"name\":\"shop\",\"generation\":2,\"rollo");
    fs::write(&file, &text).unwrap();
    let reg = EmbeddedRegistry::open(dir.path()).unwrap();
    assert_eq!(reg.rollout("shop").await.unwrap().unwrap().generation, 1);
    // The cut line is gone from the file too: the next one appends cleanly.
    reg.set_rollout("shop", 1, set(Rollout::stable("1")))
        .await
        .unwrap();
    drop(reg);
    let reg = EmbeddedRegistry::open(dir.path()).unwrap();
    assert_eq!(reg.rollout("shop").await.unwrap().unwrap().generation, 2);
}

#[tokio::test]
async fn damage_before_the_end_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let reg = EmbeddedRegistry::open(dir.path()).unwrap();
        reg.push(version("1", "a")).await.unwrap();
        for g in 0..2 {
            reg.set_rollout("shop", g, set(Rollout::stable("1")))
                .await
                .unwrap();
        }
    }
    let file = dir.path().join("rollouts/shop.jsonl");
    let text =
        fs::read_to_string(&file)
            .unwrap()
            .replacen("\"generation\":1", "\"generation\":x", 1);
    fs::write(&file, text).unwrap();
    match EmbeddedRegistry::open(dir.path()) {
        Err(RegistryError::Corrupt(m)) => assert!(m.contains("shop.jsonl:1"), "{m}"),
        Err(e) => panic!("expected a corrupt history, got {e}"),
        Ok(_) => panic!("a damaged history opened"),
    }
}

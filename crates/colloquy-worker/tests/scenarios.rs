//! Runs every `bots/*/scenarios/*.yaml` against its bot on the embedded
//! store: NLU, policy and event log together, as `colloquy chat` uses them.

use colloquy_store::{sqlite::SqliteStore, Conversations, SnapshotKey, SnapshotPolicy};
use colloquy_worker::{load_bot, scenario, Engine};
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn bots_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bots")
}

fn sorted_entries(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .collect();
    v.sort();
    v
}

async fn run_bot(dir: &Path) -> (usize, Vec<String>) {
    let bot = Arc::new(load_bot(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())));
    let data = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(data.path()).expect("open store");
    // Snapshot often so that scenarios also exercise snapshot + replay.
    let policy = SnapshotPolicy {
        every_events: 7,
        every_ms: 30_000,
    };
    let conversations = Conversations::new(
        Arc::new(store),
        SnapshotKey::new(b"scenario-test-key-0123456789abcdef".to_vec()).unwrap(),
        policy,
    );
    let engine = Engine::new(bot, conversations);
    let mut failures = Vec::new();
    let files = sorted_entries(&dir.join("scenarios"));
    assert!(
        !files.is_empty(),
        "{}: a bot ships with scenarios",
        dir.display()
    );
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read scenario");
        let sc = scenario::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        for f in scenario::run(&engine, &sc).await.expect("engine error") {
            failures.push(format!("{}: {f}", file.display()));
        }
    }
    (files.len(), failures)
}

#[tokio::test]
async fn every_example_bot_passes_its_scenarios() {
    let mut all = Vec::new();
    let mut bots = 0;
    for dir in sorted_entries(&bots_dir()) {
        if dir.is_dir() {
            let (n, failures) = run_bot(&dir).await;
            eprintln!(
                "{}: {n} scenarios, {} failures",
                dir.display(),
                failures.len()
            );
            all.extend(failures);
            bots += 1;
        }
    }
    assert!(
        bots >= 2,
        "expected the two example bots in {}",
        bots_dir().display()
    );
    assert!(all.is_empty(), "scenario failures:\n{}", all.join("\n"));
}

#[tokio::test]
async fn the_issue_scenarios_are_present() {
    // The cross-session memory and the full lottery are the acceptance
    // scenarios of the shoe store; make sure nobody deletes them quietly.
    let dir = bots_dir().join("shoe-store/scenarios");
    for name in ["cross-session.yaml", "lottery.yaml"] {
        assert!(dir.join(name).is_file(), "missing {name}");
    }
}

#[tokio::test]
async fn a_failing_expectation_is_reported() {
    let bot = Arc::new(load_bot(&bots_dir().join("shoe-store")).expect("load"));
    let store = colloquy_store::memory::MemoryStore::new();
    let conversations = Conversations::new(
        Arc::new(store),
        SnapshotKey::new(b"another-test-key-0123456789abcdef".to_vec()).unwrap(),
        SnapshotPolicy::default(),
    );
    let engine = Engine::new(bot, conversations);
    let sc = scenario::parse("name: x\nuser: u\nturns:\n  - say: 你好\n    expect: [缺货]\n    slots: {model: 星云跑鞋}\n    flow: stock\n").unwrap();
    let failures = scenario::run(&engine, &sc).await.unwrap();
    assert_eq!(failures.len(), 3, "{failures:?}");
}

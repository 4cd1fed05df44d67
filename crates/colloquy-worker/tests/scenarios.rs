//! Runs every `bots/*/scenarios/*.yaml` against its bot: NLU, policy and
//! event log together, on the embedded store as `colloquy chat` uses them,
//! and on the distributed backends (MariaDB or PostgreSQL as L2, Redis as
//! L1) as `colloquy worker` uses them.

use colloquy_store::l1::{HotStates, RedisHotStates, RedisL1Config};
use colloquy_store::sql::SqlConfig;
use colloquy_store::{
    ConversationStore, Conversations, LogConfig, LogStore, SnapshotKey, SnapshotPolicy,
};
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

/// Where a scenario run keeps its conversations.
enum Backend {
    /// The embedded event log, as `colloquy chat` and `serve` use it.
    EventLog,
    /// A SQL store at this server URL (no database part) with Redis L1.
    Distributed(String),
}

fn key() -> SnapshotKey {
    SnapshotKey::new(b"scenario-test-key-0123456789abcdef".to_vec()).unwrap()
}

async fn run_bot(dir: &Path, backend: &Backend) -> (usize, Vec<String>) {
    let bot = Arc::new(load_bot(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())));
    let data = tempfile::tempdir().expect("tempdir");
    let scratch = format!(
        "colloquy_scen_{}_{}",
        std::process::id(),
        nanos() % 1_000_000_000
    );
    // Snapshot often so that scenarios also exercise snapshot + replay.
    let policy = SnapshotPolicy {
        every_events: 7,
        every_ms: 30_000,
    };
    let engine = match backend {
        Backend::EventLog => {
            let store = LogStore::open(data.path(), LogConfig::default()).expect("open store");
            Engine::new(bot, Conversations::new(Arc::new(store), key(), policy))
        }
        Backend::Distributed(server) => {
            let store = scratch_sql_store(server, &scratch).await;
            let run = format!("scenarios-{}-{}:", std::process::id(), nanos());
            let hot: Arc<dyn HotStates> = Arc::new(
                RedisHotStates::new(
                    &RedisL1Config {
                        url: redis_url(),
                        key_prefix: run,
                        ..RedisL1Config::default()
                    },
                    key(),
                )
                .unwrap(),
            );
            Engine::with_hot_states(bot, Conversations::new(store, key(), policy), hot)
        }
    };
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
    drop(engine);
    if let Backend::Distributed(server) = backend {
        let force = if server.starts_with("postgres") {
            " WITH (FORCE)"
        } else {
            ""
        };
        admin(server, format!("DROP DATABASE {scratch}{force}")).await;
    }
    (files.len(), failures)
}

fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

fn redis_url() -> String {
    std::env::var("COLLOQUY_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// Run one statement on `server` (mysql://… or postgres://… without a
/// database name); fails loudly when the server is away.
async fn admin(server: &str, sql: String) {
    use sqlx::Connection;
    let how =
        "start it (scripts/services) or set COLLOQUY_TEST_MYSQL_URL / COLLOQUY_TEST_POSTGRES_URL";
    let sql = sqlx::AssertSqlSafe(sql);
    if server.starts_with("mysql") {
        let mut c = sqlx::MySqlConnection::connect(server)
            .await
            .unwrap_or_else(|e| panic!("cannot reach {server}: {e}; {how}"));
        sqlx::raw_sql(sql).execute(&mut c).await.unwrap();
    } else {
        let mut c = sqlx::PgConnection::connect(&format!("{server}/postgres"))
            .await
            .unwrap_or_else(|e| panic!("cannot reach {server}: {e}; {how}"));
        sqlx::raw_sql(sql).execute(&mut c).await.unwrap();
    }
}

/// A fresh, migrated database `name` on `server`.
async fn scratch_sql_store(server: &str, name: &str) -> Arc<dyn ConversationStore> {
    admin(server, format!("CREATE DATABASE {name}")).await;
    let config = SqlConfig::single(format!("{server}/{name}"));
    colloquy_store::sql::migrate(&config).await.unwrap();
    colloquy_store::sql::connect(&config).await.unwrap()
}

/// Compiled only: training the bot's NLU here would be done again by
/// `run_bot`.
fn calls_an_action_server(dir: &Path) -> bool {
    let files =
        colloquy_worker::read_sources(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let bot =
        colloquy_core::bot::compile(&files).unwrap_or_else(|e| panic!("{}: {e:?}", dir.display()));
    bot.actions
        .values()
        .any(|a| matches!(a, colloquy_core::bot::Action::Webhook(_)))
}

async fn every_bot_passes(backend: Backend) {
    let mut all = Vec::new();
    let mut bots = 0;
    for dir in sorted_entries(&bots_dir()) {
        // A variant that answers from an action server (shoe-store-actions)
        // shares its scenarios' flows with an offline bot, which runs them;
        // its own conversations are in crates/colloquy/tests/actions.rs.
        if dir.is_dir() && !calls_an_action_server(&dir) {
            let (n, failures) = run_bot(&dir, &backend).await;
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
async fn every_example_bot_passes_its_scenarios() {
    every_bot_passes(Backend::EventLog).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenarios_pass_on_mariadb_with_redis_l1() {
    let server = std::env::var("COLLOQUY_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into());
    every_bot_passes(Backend::Distributed(server)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenarios_pass_on_postgresql_with_redis_l1() {
    let server = std::env::var("COLLOQUY_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
    every_bot_passes(Backend::Distributed(server)).await;
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

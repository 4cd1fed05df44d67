//! Append throughput and latency of a store under concurrent users, each
//! appending 3-event messages back to back, as workers would.
//!
//! `cargo bench -p colloquy-store --bench append -- [eventlog|sqlite|mysql|postgres]`
//! (or `COLLOQUY_BENCH_BACKEND`; default eventlog, the embedded default). The SQL servers are the
//! ones of the tests (`COLLOQUY_TEST_MYSQL_URL`, `COLLOQUY_TEST_POSTGRES_URL`):
//! the bench creates a scratch database there and drops it afterwards.
//! Results also go to `bench-results/store-<backend>.json` under the
//! workspace root, or under the directory
//! in `COLLOQUY_BENCH_OUT`.

#[path = "../../../benches/report.rs"]
mod report;

use colloquy_store::sql::{self, SqlConfig};
use colloquy_store::WriterStats;
use colloquy_store::{
    conformance, ConversationStore, LogConfig, LogStore, MySqlStore, PgStore, SqliteStore,
};
use serde_json::json;
use sqlx::{Connection, MySqlConnection, PgConnection};
use std::sync::Arc;
use std::time::{Duration, Instant};

const USERS: [usize; 4] = [1, 64, 512, 2048];
const EVENTS_PER_APPEND: usize = 3;
const RUN_FOR: Duration = Duration::from_secs(3);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Backend {
    EventLog,
    Sqlite,
    MySql,
    Postgres,
}

impl Backend {
    fn from_args() -> Backend {
        // `cargo bench` adds `--bench`; the backend is the one plain word.
        let name = std::env::args()
            .skip(1)
            .find(|a| !a.starts_with('-'))
            .or_else(|| std::env::var("COLLOQUY_BENCH_BACKEND").ok())
            .unwrap_or_else(|| "eventlog".into());
        match name.as_str() {
            "eventlog" => Backend::EventLog,
            "sqlite" => Backend::Sqlite,
            "mysql" | "mariadb" => Backend::MySql,
            "postgres" | "postgresql" => Backend::Postgres,
            other => panic!("unknown backend {other:?}: eventlog, sqlite, mysql or postgres"),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Backend::EventLog => "eventlog",
            Backend::Sqlite => "sqlite",
            Backend::MySql => "mysql",
            Backend::Postgres => "postgres",
        }
    }

    /// The server's admin URL (no database) for the SQL backends.
    fn server(self) -> String {
        let (env, default) = match self {
            Backend::EventLog | Backend::Sqlite => unreachable!("embedded: no server"),
            Backend::MySql => ("COLLOQUY_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306"),
            Backend::Postgres => (
                "COLLOQUY_TEST_POSTGRES_URL",
                "postgres://postgres@127.0.0.1:5432",
            ),
        };
        std::env::var(env)
            .unwrap_or_else(|_| default.into())
            .trim_end_matches('/')
            .to_string()
    }

    async fn admin(self, sql: String) {
        let server = self.server();
        let sql = sqlx::AssertSqlSafe(sql);
        let done = match self {
            Backend::EventLog | Backend::Sqlite => unreachable!("embedded: no server"),
            Backend::MySql => match MySqlConnection::connect(&server).await {
                Ok(mut conn) => sqlx::raw_sql(sql).execute(&mut conn).await.map(drop),
                Err(e) => Err(e),
            },
            Backend::Postgres => match PgConnection::connect(&format!("{server}/postgres")).await {
                Ok(mut conn) => sqlx::raw_sql(sql).execute(&mut conn).await.map(drop),
                Err(e) => Err(e),
            },
        };
        if let Err(e) = done {
            panic!("{} at {server}: {e}", self.name());
        }
    }
}

/// A store of the backend under test, empty, and what removes it.
enum Bench {
    EventLog(Arc<LogStore>, tempfile::TempDir),
    Sqlite(Arc<SqliteStore>, tempfile::TempDir),
    MySql(Arc<MySqlStore>, String),
    Postgres(Arc<PgStore>, String),
}

impl Bench {
    async fn open(backend: Backend, run: usize) -> Bench {
        if backend == Backend::EventLog {
            let dir = tempfile::tempdir().expect("temp dir");
            let store = LogStore::open(dir.path(), LogConfig::default()).expect("open store");
            return Bench::EventLog(Arc::new(store), dir);
        }
        if backend == Backend::Sqlite {
            let dir = tempfile::tempdir().expect("temp dir");
            let store = SqliteStore::open(dir.path()).expect("open store");
            return Bench::Sqlite(Arc::new(store), dir);
        }
        let name = format!("colloquy_bench_{}_{run}", std::process::id());
        backend.admin(format!("CREATE DATABASE {name}")).await;
        let config = SqlConfig::single(format!("{}/{name}", backend.server()));
        sql::migrate(&config).await.expect("migrate");
        match backend {
            Backend::MySql => Bench::MySql(
                Arc::new(MySqlStore::connect(&config).await.expect("connect")),
                name,
            ),
            _ => Bench::Postgres(
                Arc::new(PgStore::connect(&config).await.expect("connect")),
                name,
            ),
        }
    }

    fn store(&self) -> Arc<dyn ConversationStore> {
        match self {
            Bench::EventLog(s, _) => s.clone(),
            Bench::Sqlite(s, _) => s.clone(),
            Bench::MySql(s, _) => s.clone(),
            Bench::Postgres(s, _) => s.clone(),
        }
    }

    fn stats(&self) -> WriterStats {
        match self {
            Bench::EventLog(s, _) => s.stats(),
            Bench::Sqlite(s, _) => s.stats(),
            Bench::MySql(s, _) => s.stats(),
            Bench::Postgres(s, _) => s.stats(),
        }
    }

    async fn close(self) {
        match self {
            // The store's writer must be gone before its directory is.
            Bench::EventLog(store, dir) => {
                drop(store);
                drop(dir);
            }
            Bench::Sqlite(store, dir) => {
                drop(store);
                drop(dir);
            }
            Bench::MySql(store, name) => {
                drop(store);
                Backend::MySql.admin(format!("DROP DATABASE {name}")).await;
            }
            Bench::Postgres(store, name) => {
                drop(store);
                Backend::Postgres
                    .admin(format!("DROP DATABASE {name} WITH (FORCE)"))
                    .await;
            }
        }
    }
}

fn main() {
    let backend = Backend::from_args();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let results: Vec<_> = USERS
        .iter()
        .enumerate()
        .map(|(run, &users)| runtime.block_on(run_one(backend, run, users)))
        .collect();
    let report = json!({
        "bench": "store_append",
        "backend": backend.name(),
        "events_per_append": EVENTS_PER_APPEND,
        "seconds_per_run": RUN_FOR.as_secs_f64(),
        "results": results,
    });
    report::write(&format!("store-{}.json", backend.name()), &report);
}

async fn run_one(backend: Backend, run: usize, users: usize) -> serde_json::Value {
    let bench = Bench::open(backend, run).await;
    let store = bench.store();
    let start = Instant::now();
    let deadline = start + RUN_FOR;
    let tasks: Vec<_> = (0..users)
        .map(|u| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let user = format!("bench-user-{u}");
                let (mut seq, mut latencies) = (0, Vec::new());
                while Instant::now() < deadline {
                    let batch =
                        conformance::events(&user, seq, EVENTS_PER_APPEND, seq as i64, "bench");
                    let sent = Instant::now();
                    seq = store.append(&user, seq, &batch).await.expect("append");
                    latencies.push(sent.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.expect("appender task"));
    }
    let elapsed = start.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let ms = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e3;
    let stats = bench.stats();
    drop(store);
    bench.close().await;
    let appends = latencies.len() as f64;
    let result = json!({
        "users": users,
        "appends": latencies.len(),
        "appends_per_s": appends / elapsed,
        "events_per_s": appends * EVENTS_PER_APPEND as f64 / elapsed,
        "commits": stats.commits,
        "mean_batch": stats.requests as f64 / stats.commits as f64,
        "p50_ms": ms(0.50),
        "p99_ms": ms(0.99),
    });
    println!(
        "{:>8} users {users:>4}: {:>8.0} appends/s {:>8.0} events/s  {} commits (mean batch {:.1})  p50 {:.2} ms  p99 {:.2} ms",
        backend.name(),
        appends / elapsed,
        appends * EVENTS_PER_APPEND as f64 / elapsed,
        stats.commits,
        stats.requests as f64 / stats.commits as f64,
        ms(0.50),
        ms(0.99),
    );
    result
}

//! What the MySQL and PostgreSQL test files share: scratch databases on the
//! real server, the tests that do not depend on the dialect, and a TCP proxy
//! that can "take the server away" without touching the machine's server.

use colloquy_store::sql::{self, Dialect, ShardRoute, SqlConfig, SHARDS};
use colloquy_store::{conformance, ErrorKind, StoreError};
use colloquy_store::{StoreBackend, StoreConfig};
use sqlx::Connection;
#[cfg(feature = "mysql")]
use sqlx::MySqlConnection;
#[cfg(feature = "postgres")]
use sqlx::PgConnection;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

// Each test binary speaks one dialect, so the other variant is unused there.
#[allow(dead_code)]
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    #[cfg(feature = "mysql")]
    MySql,
    #[cfg(feature = "postgres")]
    Postgres,
}

/// The server under test, reached through its admin URL (no database).
pub struct Server {
    kind: Kind,
    base: String,
    created: Mutex<Vec<String>>,
}

static NEXT_DB: AtomicUsize = AtomicUsize::new(0);

impl Server {
    /// The server from `env` (or `default`); panics, naming the URL and how
    /// to start the server, if it does not answer: a test that cannot reach
    /// its server must fail, not pass.
    pub async fn from_env(kind: Kind, env: &str, default: &str) -> Server {
        let base = std::env::var(env)
            .unwrap_or_else(|_| default.to_string())
            .trim_end_matches('/')
            .to_string();
        let server = Server {
            kind,
            base,
            created: Mutex::new(Vec::new()),
        };
        let start = match kind {
            #[cfg(feature = "mysql")]
            Kind::MySql => {
                "start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd"
            }
            #[cfg(feature = "postgres")]
            Kind::Postgres => {
                "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
            }
        };
        let reached = tokio::time::timeout(
            Duration::from_secs(10),
            server.admin("SELECT 1".to_string()),
        )
        .await;
        if !matches!(reached, Ok(Ok(()))) {
            panic!(
                "cannot reach the test server at {} (set {env} to another URL, or start it: `{start}`): {:?}",
                server.base, reached
            );
        }
        server
    }

    pub fn url(&self, database: &str) -> String {
        format!("{}/{database}", self.base)
    }

    /// A statement on the server's maintenance database.
    async fn admin(&self, sql: String) -> Result<(), sqlx::Error> {
        match self.kind {
            #[cfg(feature = "mysql")]
            Kind::MySql => {
                let mut conn = MySqlConnection::connect(&self.base).await?;
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                    .execute(&mut conn)
                    .await?;
                conn.close().await
            }
            #[cfg(feature = "postgres")]
            Kind::Postgres => {
                let mut conn = PgConnection::connect(&self.url("postgres")).await?;
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                    .execute(&mut conn)
                    .await?;
                conn.close().await
            }
        }
    }

    /// A fresh, empty database, dropped by [`Server::cleanup`].
    pub async fn scratch(&self) -> String {
        let name = format!(
            "colloquy_t_{}_{}",
            std::process::id(),
            NEXT_DB.fetch_add(1, Ordering::Relaxed)
        );
        self.admin(format!("CREATE DATABASE {name}"))
            .await
            .expect("create a scratch database");
        self.created.lock().unwrap().push(name.clone());
        name
    }

    pub async fn cleanup(&self) {
        let names = std::mem::take(&mut *self.created.lock().unwrap());
        for name in names {
            let sql = match self.kind {
                #[cfg(feature = "mysql")]
                Kind::MySql => format!("DROP DATABASE IF EXISTS {name}"),
                #[cfg(feature = "postgres")]
                Kind::Postgres => format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            };
            self.admin(sql).await.expect("drop a scratch database");
        }
    }

    /// A statement on one database (e.g. to look at or damage its tables).
    pub async fn run(&self, database: &str, sql: &str) -> i64 {
        let sql = sqlx::AssertSqlSafe(sql.to_string());
        match self.kind {
            #[cfg(feature = "mysql")]
            Kind::MySql => {
                let mut conn = MySqlConnection::connect(&self.url(database)).await.unwrap();
                let n: Option<i64> = sqlx::query_scalar(sql)
                    .fetch_optional(&mut conn)
                    .await
                    .unwrap();
                n.unwrap_or(0)
            }
            #[cfg(feature = "postgres")]
            Kind::Postgres => {
                let mut conn = PgConnection::connect(&self.url(database)).await.unwrap();
                let n: Option<i64> = sqlx::query_scalar(sql)
                    .fetch_optional(&mut conn)
                    .await
                    .unwrap();
                n.unwrap_or(0)
            }
        }
    }

    /// Statements run one after another on one connection to `database`.
    pub async fn script(&self, database: &str, statements: &[String]) {
        async fn each<C: Connection>(conn: &mut C, statements: &[String])
        where
            for<'c> &'c mut C: sqlx::Executor<'c, Database = C::Database>,
        {
            for sql in statements {
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql.clone()))
                    .execute(&mut *conn)
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e}"));
            }
        }
        match self.kind {
            #[cfg(feature = "mysql")]
            Kind::MySql => {
                let mut conn = MySqlConnection::connect(&self.url(database)).await.unwrap();
                each(&mut conn, statements).await;
            }
            #[cfg(feature = "postgres")]
            Kind::Postgres => {
                let mut conn = PgConnection::connect(&self.url(database)).await.unwrap();
                each(&mut conn, statements).await;
            }
        }
    }

    pub async fn has_table(&self, database: &str, table: &str) -> bool {
        let current = match self.kind {
            #[cfg(feature = "mysql")]
            Kind::MySql => "table_schema = DATABASE()",
            #[cfg(feature = "postgres")]
            Kind::Postgres => "table_catalog = current_database()",
        };
        let sql = format!(
            "SELECT COUNT(*) FROM information_schema.tables WHERE {current} AND table_name = '{table}'"
        );
        self.run(database, &sql).await == 1
    }

    /// A migrated database with all shards, and its config.
    pub async fn migrated(&self) -> (String, SqlConfig) {
        let name = self.scratch().await;
        let config = SqlConfig::single(self.url(&name));
        sql::migrate(&config).await.expect("migrate");
        (name, config)
    }
}

pub async fn conforms(server: &Server) {
    let handle = tokio::runtime::Handle::current();
    conformance::run_all(|| {
        tokio::task::block_in_place(|| {
            handle.block_on(async {
                let (_, config) = server.migrated().await;
                sql::connect(&config).await.expect("connect")
            })
        })
    })
    .await;
    server.cleanup().await;
}

pub async fn shards_spread_over_two_databases(server: &Server) {
    let (low, high) = (server.scratch().await, server.scratch().await);
    let route = |range: &str, db: &str| ShardRoute {
        range: range.into(),
        url: server.url(db),
    };
    let config = SqlConfig {
        url: None,
        shards: vec![route("0-31", &low), route("32-63", &high)],
        ..SqlConfig::single("")
    };
    let report = sql::migrate(&config).await.unwrap();
    assert_eq!(report.upgraded.len(), SHARDS as usize);
    let store = sql::connect(&config).await.unwrap();
    let users: Vec<String> = (0..40).map(|i| format!("spread-{i}")).collect();
    for user in &users {
        store
            .append(user, 0, &conformance::events(user, 0, 2, 1, "m"))
            .await
            .unwrap();
        store
            .put_snapshot(&conformance::key().sign(&colloquy_core::State::from_events(
                user,
                &conformance::events(user, 0, 2, 1, "m"),
            )))
            .await
            .unwrap();
    }
    let mut seen = [0, 0];
    for user in &users {
        let shard = sql::shard_of(user);
        let (home, other) = if shard < 32 {
            (&low, &high)
        } else {
            (&high, &low)
        };
        seen[usize::from(shard >= 32)] += 1;
        for table in ["events", "snapshots"] {
            let count = |db: &str| {
                let sql =
                    format!("SELECT COUNT(*) FROM {table}_{shard:02} WHERE user_id = '{user}'");
                let db = db.to_string();
                async move { server.run(&db, &sql).await }
            };
            let expected = if table == "events" { 2 } else { 1 };
            assert_eq!(
                count(home).await,
                expected,
                "{user} (shard {shard}) {table} at home"
            );
            let elsewhere = format!("{table}_{shard:02}");
            assert!(
                !server.has_table(other, &elsewhere).await,
                "{elsewhere} exists in the database of the other half"
            );
        }
        assert_eq!(store.last_seq(user).await.unwrap(), 2);
    }
    assert!(seen[0] > 0 && seen[1] > 0, "the users cover both halves");
    drop(store);
    server.cleanup().await;
}

pub async fn migrating_twice_changes_nothing(server: &Server) {
    let (name, config) = server.migrated().await;
    let store = sql::connect(&config).await.unwrap();
    let events = conformance::events("alice", 0, 3, 1, "m");
    store.append("alice", 0, &events).await.unwrap();
    let again = sql::migrate(&config).await.unwrap();
    assert!(again.upgraded.is_empty(), "{again:?}");
    assert_eq!(again.current, SHARDS as usize);
    assert_eq!(
        server
            .run(&name, "SELECT COUNT(*) FROM colloquy_schema")
            .await,
        i64::from(SHARDS)
    );
    assert_eq!(store.events_after("alice", 0, 10).await.unwrap(), events);
    drop(store);
    server.cleanup().await;
}

/// A database written by schema version 1 (every shard's tables and the
/// database-wide `event_ids`, laid down from the released statements, with
/// alice's log in it) is upgraded in place: the log reads back, the ids it
/// holds still refuse a second use by alice but not by bob, and `event_ids`
/// is gone. Shard 00 got its version-2 index before a "crash" that kept
/// its version at 1: the rerun must take that in its stride.
pub async fn a_version_1_database_is_upgraded(server: &Server) {
    let name = server.scratch().await;
    let (create_schema, v1, v2) = match server.kind {
        #[cfg(feature = "mysql")]
        Kind::MySql => (
            <sqlx::MySql as Dialect>::CREATE_SCHEMA_TABLE,
            <sqlx::MySql as Dialect>::MIGRATIONS[0],
            <sqlx::MySql as Dialect>::MIGRATIONS[1],
        ),
        #[cfg(feature = "postgres")]
        Kind::Postgres => (
            <sqlx::Postgres as Dialect>::CREATE_SCHEMA_TABLE,
            <sqlx::Postgres as Dialect>::MIGRATIONS[0],
            <sqlx::Postgres as Dialect>::MIGRATIONS[1],
        ),
    };
    let mut script = vec![create_schema.to_string()];
    for shard in 0..SHARDS {
        let nn = format!("{shard:02}");
        script.extend(v1.iter().map(|s| s.replace("{shard}", &nn)));
        script.push(format!(
            "INSERT INTO colloquy_schema (shard, version) VALUES ({shard}, 1)"
        ));
    }
    script.push(v2[0].replace("{shard}", "00"));
    let stored = conformance::events("alice", 0, 3, 1, "m");
    let shard = sql::shard_of("alice");
    for e in &stored {
        let body = serde_json::to_string(e).unwrap();
        assert!(!body.contains(['\\', '\'']), "{body}");
        script.push(format!(
            "INSERT INTO events_{shard:02} (user_id, seq, event_id, ts_ms, body) \
             VALUES ('alice', {}, '{}', {}, '{body}')",
            e.seq, e.event_id, e.ts_ms
        ));
        script.push(format!(
            "INSERT INTO event_ids (event_id, user_id) VALUES ('{}', 'alice')",
            e.event_id
        ));
    }
    server.script(&name, &script).await;
    let config = SqlConfig::single(server.url(&name));
    assert!(matches!(
        sql::connect(&config).await.err(),
        Some(StoreError::NotMigrated { .. })
    ));

    let report = sql::migrate(&config).await.unwrap();
    assert_eq!(report.upgraded.len(), SHARDS as usize, "{report:?}");
    assert!(report.upgraded.iter().all(|u| (u.from, u.to) == (1, 2)));
    assert!(!server.has_table(&name, "event_ids").await);

    let store = sql::connect(&config).await.unwrap();
    assert_eq!(store.events_after("alice", 0, 10).await.unwrap(), stored);
    let mut again = conformance::events("alice", 3, 1, 1, "again");
    again[0].event_id = stored[1].event_id;
    let err = store.append("alice", 3, &again).await.unwrap_err();
    assert!(matches!(err, StoreError::DuplicateEvent { .. }), "{err}");
    let mut bobs = conformance::events("bob", 0, 1, 1, "m");
    bobs[0].event_id = stored[1].event_id;
    assert_eq!(store.append("bob", 0, &bobs).await.unwrap(), 1);
    drop(store);
    server.cleanup().await;
}

pub async fn unmigrated_and_newer_schemas_are_refused(server: &Server) {
    let name = server.scratch().await;
    let config = SqlConfig::single(server.url(&name));
    let err = sql::connect(&config).await.err().expect("unmigrated");
    assert!(matches!(err, StoreError::NotMigrated { .. }), "{err}");
    assert!(err.to_string().contains("run `colloquy migrate`"), "{err}");
    assert_eq!(err.kind(), ErrorKind::Fatal);

    sql::migrate(&config).await.unwrap();
    server
        .run(
            &name,
            "UPDATE colloquy_schema SET version = 99 WHERE shard = 5",
        )
        .await;
    for err in [
        sql::connect(&config).await.err().expect("newer, connect"),
        sql::migrate(&config).await.expect_err("newer, migrate"),
    ] {
        assert!(
            matches!(err, StoreError::SchemaTooNew { found: 99, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("shard 05"), "{err}");
    }
    server.cleanup().await;
}

/// Values the writers inline as literals come back byte for byte, and
/// user ids are told apart exactly (no case folding, no trailing-space
/// padding), with the NUL that neither server keys on refused up front.
pub async fn awkward_user_ids_stay_apart(server: &Server) {
    let (_, config) = server.migrated().await;
    let store = sql::connect(&config).await.unwrap();
    let users = [
        "alice",
        "Alice",
        "alice ",
        "o'brien\\",
        "x'); DROP TABLE events_00; --",
        "E'\\'' || '",
        "用户-😀",
    ];
    for (i, user) in users.iter().enumerate() {
        let events = conformance::events(user, 0, i + 1, 1, "m");
        store.append(user, 0, &events).await.unwrap();
        let state = colloquy_core::State::from_events(user, &events);
        store
            .put_snapshot(&conformance::key().sign(&state))
            .await
            .unwrap();
    }
    for (i, user) in users.iter().enumerate() {
        let events = conformance::events(user, 0, i + 1, 1, "m");
        assert_eq!(
            store.events_after(user, 0, 100).await.unwrap(),
            events,
            "{user:?}"
        );
        let snapshot = store.get_snapshot(user).await.unwrap().expect("snapshot");
        assert_eq!(snapshot.user_id, *user);
        assert_eq!(snapshot.seq, i as u64 + 1, "{user:?}");
    }
    let nul = "a\0b";
    let err = store
        .append(nul, 0, &conformance::events(nul, 0, 1, 1, "m"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Invalid, "{err}");
    let long = "u".repeat(256);
    let err = store
        .append(&long, 0, &conformance::events(&long, 0, 1, 1, "m"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Invalid, "{err}");
    drop(store);
    server.cleanup().await;
}

/// Appends sent at once share group commits; one of them reusing an event
/// id its user already stored must fail alone (the group is redone append
/// by append), and a stale one must conflict alone, while the rest commit,
/// among them one carrying an id that only another user's log holds.
pub async fn one_bad_append_spares_its_group(server: &Server) {
    let (_, config) = server.migrated().await;
    let store = sql::connect(&config).await.unwrap();
    let stored = conformance::events("alice", 0, 2, 1, "m");
    store.append("alice", 0, &stored).await.unwrap();
    let alices = stored[0].event_id;
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let user = format!("group-{i}");
                let mut events = conformance::events(&user, 0, 3, 1, "m");
                match i {
                    20 => {
                        let mut again = conformance::events("alice", 2, 1, 1, "again");
                        again[0].event_id = alices;
                        return store.append("alice", 2, &again).await;
                    }
                    30 => events[1].event_id = alices,
                    40 => {
                        return store
                            .append("alice", 0, &conformance::events("alice", 0, 1, 1, "late"))
                            .await
                    }
                    _ => {}
                }
                store.append(&user, 0, &events).await
            })
        })
        .collect();
    for (i, task) in tasks.into_iter().enumerate() {
        let result = task.await.unwrap();
        match i {
            20 => assert!(
                matches!(result, Err(StoreError::DuplicateEvent { .. })),
                "{result:?}"
            ),
            40 => assert!(
                matches!(result, Err(StoreError::Conflict { actual: 2, .. })),
                "{result:?}"
            ),
            _ => assert_eq!(result.unwrap(), 3, "append {i}"),
        }
        let user = format!("group-{i}");
        let expected = if i == 20 || i == 40 { 0 } else { 3 };
        let log = store.events_after(&user, 0, 10).await.unwrap();
        assert_eq!(log.len(), expected, "{user}");
    }
    assert_eq!(store.events_after("alice", 0, 10).await.unwrap(), stored);
    drop(store);
    server.cleanup().await;
}

/// Two stores on one database, as two worker processes would be: of
/// concurrent appends for one user exactly one wins, and the loser sees the
/// winner's seq, even though neither store's writer knows of the other.
pub async fn two_processes_one_log(server: &Server) {
    let (_, config) = server.migrated().await;
    let stores = [
        sql::connect(&config).await.unwrap(),
        sql::connect(&config).await.unwrap(),
    ];
    for round in 0..10u64 {
        let expected = round * 2;
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let store = Arc::clone(&stores[i % 2]);
                tokio::spawn(async move {
                    let batch =
                        conformance::events("alice", expected, 2, 1, &format!("p{i}-{round}"));
                    store.append("alice", expected, &batch).await
                })
            })
            .collect();
        let mut wins = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(last) => {
                    assert_eq!(last, expected + 2);
                    wins += 1;
                }
                Err(StoreError::Conflict { actual, .. }) => assert_eq!(actual, expected + 2),
                Err(e) => panic!("round {round}: {e}"),
            }
        }
        assert_eq!(wins, 1, "round {round}");
    }
    let log = stores[1].events_after("alice", 0, 100).await.unwrap();
    assert_eq!(log.len(), 20);
    assert!(log.iter().zip(1..).all(|(e, seq)| e.seq == seq));
    drop(stores);
    server.cleanup().await;
}

/// A forwarder to the server that can be stopped (every connection cut, the
/// port closed) and started again on the same port.
struct Proxy {
    port: u16,
    target: String,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Proxy {
    async fn start(target: String, port: u16) -> Proxy {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let tasks: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let conns = Arc::clone(&tasks);
        let to = target.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let to = to.clone();
                conns.lock().unwrap().push(tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(&to).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                }));
            }
        });
        tasks.lock().unwrap().push(accept);
        Proxy {
            port,
            target,
            tasks,
        }
    }

    fn stop(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

/// `host:port` of a URL like `scheme://user@host:port`.
fn host_port(base: &str) -> String {
    let rest = base.split_once("://").unwrap().1;
    let authority = rest.split('/').next().unwrap();
    authority.rsplit('@').next().unwrap().to_string()
}

pub async fn lost_server_is_transient_and_comes_back(server: &Server) {
    let (name, _) = server.migrated().await;
    let proxy = Proxy::start(host_port(&server.base), 0).await;
    let through = server.url(&name).replace(
        &host_port(&server.base),
        &format!("127.0.0.1:{}", proxy.port),
    );
    let config = SqlConfig {
        connect_timeout: Duration::from_millis(500),
        query_timeout: Duration::from_secs(2),
        ..SqlConfig::single(through)
    };
    let store = sql::connect(&config).await.unwrap();
    let events = |after| conformance::events("alice", after, 2, 1, "m");
    assert_eq!(store.append("alice", 0, &events(0)).await.unwrap(), 2);

    proxy.stop();
    let err = store.append("alice", 2, &events(2)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transient, "append: {err}");
    let err = store.events_after("alice", 0, 10).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transient, "read: {err}");
    let err = store.last_seq("alice").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transient, "last_seq: {err}");

    let proxy = Proxy::start(proxy.target.clone(), proxy.port).await;
    // The retry a worker would make: the store serves again, and the log is
    // whole (the failed append either happened or not, never in part).
    let mut last = None;
    for _ in 0..50 {
        match store.last_seq("alice").await {
            Ok(seq) => {
                last = Some(seq);
                break;
            }
            Err(e) => assert_eq!(e.kind(), ErrorKind::Transient, "{e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let last = last.expect("the store serves again once the server is back");
    assert!(last == 2 || last == 4, "{last}");
    assert_eq!(
        store.append("alice", last, &events(last)).await.unwrap(),
        last + 2
    );
    proxy.stop();
    drop(store);
    server.cleanup().await;
}

/// `colloquy_store::open` picks this server's backend from a `[store]`
/// section naming it, refuses a database that was not migrated, and serves
/// one that was, leaving the data directory alone.
pub async fn opens_from_the_store_config(server: &Server) {
    let backend = match server.kind {
        #[cfg(feature = "mysql")]
        Kind::MySql => StoreBackend::Mysql,
        #[cfg(feature = "postgres")]
        Kind::Postgres => StoreBackend::Postgres,
    };
    let data = tempfile::tempdir().unwrap();
    let name = server.scratch().await;
    let config = StoreConfig {
        backend,
        sql: SqlConfig::single(server.url(&name)),
        ..StoreConfig::default()
    };
    config.validate().unwrap();
    let err = colloquy_store::open(&config, data.path())
        .await
        .err()
        .expect("a database that was not migrated");
    assert!(matches!(err, StoreError::NotMigrated { .. }), "{err}");
    sql::migrate(&config.sql).await.unwrap();
    let store = colloquy_store::open(&config, data.path()).await.unwrap();
    let events = conformance::events("alice", 0, 2, 1, "m");
    assert_eq!(store.append("alice", 0, &events).await.unwrap(), 2);
    assert_eq!(store.events_after("alice", 0, 10).await.unwrap(), events);
    assert!(
        std::fs::read_dir(data.path()).unwrap().next().is_none(),
        "nothing written to the data directory"
    );
    drop(store);
    server.cleanup().await;
}

/// The bot registry on this server: the conformance suite; a database that
/// was never migrated is refused with the command to run.
pub async fn registry_conforms(server: &Server) {
    let bare = server.scratch().await;
    match colloquy_store::sql::open_registry(&SqlConfig::single(server.url(&bare))).await {
        Err(e) => assert!(e.to_string().contains("colloquy migrate"), "{e}"),
        Ok(_) => panic!("a registry opened on an unmigrated database"),
    }
    let (_, config) = server.migrated().await;
    let reg = colloquy_store::sql::open_registry(&config)
        .await
        .expect("registry");
    colloquy_store::registry::conformance::run_all(reg.as_ref(), "bot").await;
    // A second process sees what the first wrote.
    let other = colloquy_store::sql::open_registry(&config)
        .await
        .expect("registry");
    assert_eq!(
        other.rollout("bot-ro").await.unwrap().unwrap().generation,
        3
    );
    server.cleanup().await;
}

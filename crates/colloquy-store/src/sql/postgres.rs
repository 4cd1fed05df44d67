//! PostgreSQL. Writers run at READ COMMITTED (the usual default); text
//! columns use the "C" collation, which compares bytes (users are told
//! apart exactly) and keeps the key indexes cheap.

use super::{Dialect, DialectKind, SqlStore};
use sqlx::error::DatabaseError;
use sqlx::postgres::PgConnectOptions;
use sqlx::Postgres;
use std::str::FromStr;

/// The store on PostgreSQL; build it with [`SqlStore::connect`] after
/// [`SqlStore::migrate`].
pub type PgStore = SqlStore<Postgres>;

impl Dialect for Postgres {
    const KIND: DialectKind = DialectKind::Postgres;
    // The server's default, unless someone changed it: the conflict check
    // must see other processes' commits, not a snapshot.
    const SESSION_SETUP: &'static [&'static str] =
        &["SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL READ COMMITTED"];
    const CREATE_SCHEMA_TABLE: &'static str = "
        CREATE TABLE IF NOT EXISTS colloquy_schema (
            shard   BIGINT NOT NULL PRIMARY KEY,
            version BIGINT NOT NULL
        )";
    const MIGRATIONS: &'static [&'static [&'static str]] = &[
        &[
            r#"CREATE TABLE IF NOT EXISTS events_{shard} (
            user_id  TEXT COLLATE "C" NOT NULL,
            seq      BIGINT NOT NULL,
            event_id TEXT COLLATE "C" NOT NULL,
            ts_ms    BIGINT NOT NULL,
            body     TEXT NOT NULL,
            PRIMARY KEY (user_id, seq)
        )"#,
            "CREATE INDEX IF NOT EXISTS events_{shard}_user_ts ON events_{shard} (user_id, ts_ms)",
            r#"CREATE TABLE IF NOT EXISTS snapshots_{shard} (
            user_id TEXT COLLATE "C" NOT NULL PRIMARY KEY,
            seq     BIGINT NOT NULL,
            ts_ms   BIGINT NOT NULL,
            body    TEXT NOT NULL,
            hmac    TEXT NOT NULL
        )"#,
            // Version 1 kept event ids unique per database through this table;
            // version 2 drops it (see the module docs of `sql`).
            r#"CREATE TABLE IF NOT EXISTS event_ids (
            event_id TEXT COLLATE "C" NOT NULL PRIMARY KEY,
            user_id  TEXT COLLATE "C" NOT NULL
        )"#,
        ],
        &[
            "CREATE UNIQUE INDEX IF NOT EXISTS events_{shard}_user_event
                ON events_{shard} (user_id, event_id)",
            // Shared by the database's shards: the first shard to reach
            // version 2 drops it. Nothing reads it any more, and a database
            // with any shard at version 2 is refused by a version-1 build.
            "DROP TABLE IF EXISTS event_ids",
        ],
    ];
    const REGISTRY_TABLES: &'static [&'static str] = &[
        "CREATE TABLE IF NOT EXISTS bot_versions (
            name         TEXT NOT NULL,
            version      TEXT NOT NULL,
            hash         TEXT NOT NULL,
            files        TEXT NOT NULL,
            pushed_at_ms BIGINT NOT NULL,
            pushed_by    TEXT NOT NULL,
            PRIMARY KEY (name, version)
        )",
        "CREATE TABLE IF NOT EXISTS bot_rollouts (
            name       TEXT NOT NULL,
            generation BIGINT NOT NULL,
            record     TEXT NOT NULL,
            PRIMARY KEY (name, generation)
        )",
        "CREATE TABLE IF NOT EXISTS bot_activations (
            name       TEXT NOT NULL,
            process    TEXT NOT NULL,
            generation BIGINT NOT NULL,
            error      TEXT,
            at_ms      BIGINT NOT NULL,
            figures    TEXT,
            PRIMARY KEY (name, process)
        )",
        "CREATE TABLE IF NOT EXISTS admin_audit (
            id    BIGSERIAL PRIMARY KEY,
            at_ms BIGINT NOT NULL,
            entry TEXT NOT NULL
        )",
    ];
    const VERSION_UPSERT: &'static str =
        "ON CONFLICT (shard) DO UPDATE SET version = EXCLUDED.version";
    const SNAPSHOT_UPSERT: &'static str = "ON CONFLICT (user_id) DO UPDATE
        SET seq = EXCLUDED.seq, ts_ms = EXCLUDED.ts_ms, body = EXCLUDED.body, hmac = EXCLUDED.hmac
        WHERE EXCLUDED.seq >= {table}.seq";
    // A constant of this crate's own ("colloquy" in ASCII) as the key.
    const LOCK: &'static str =
        "SELECT CAST(1 AS BIGINT) FROM (SELECT pg_advisory_lock(7165064745151722873)) AS l";
    const UNLOCK: &'static str = "SELECT pg_advisory_unlock(7165064745151722873)";

    // An escape string (E'..') treats backslashes the same whatever
    // standard_conforming_strings says; doubling both it and the quote
    // leaves nothing special inside.
    fn literal(sql: &mut String, value: &str) {
        sql.push_str("E'");
        for c in value.chars() {
            match c {
                '\\' => sql.push_str("\\\\"),
                '\'' => sql.push_str("''"),
                c => sql.push(c),
            }
        }
        sql.push('\'');
    }

    // PostgreSQL plans every scalar subquery separately (500 of them took
    // 50-80 ms), so one correlated subquery per shard table runs over the
    // shard's users as an array: one index probe per user, few plans.
    fn last_seqs(sql: &mut String, users: &[(u8, &str)]) {
        let mut start = 0;
        while start < users.len() {
            let shard = users[start].0;
            let end = start + users[start..].iter().take_while(|u| u.0 == shard).count();
            if start > 0 {
                sql.push_str(" UNION ALL ");
            }
            sql.push_str(&format!(
                "SELECT u.i, (SELECT MAX(e.seq) FROM events_{shard:02} e WHERE e.user_id = u.id) \
                 FROM unnest(ARRAY["
            ));
            for (k, (_, user)) in users[start..end].iter().enumerate() {
                if k > 0 {
                    sql.push_str(", ");
                }
                Self::literal(sql, user);
            }
            sql.push_str("]::text[], ARRAY[");
            let positions: Vec<String> = (start..end).map(|i| i.to_string()).collect();
            sql.push_str(&positions.join(", "));
            sql.push_str("]::bigint[]) AS u(id, i)");
            start = end;
        }
    }

    fn options(url: &str) -> Result<PgConnectOptions, sqlx::Error> {
        // Room for the per-shard statements of all 64 shards.
        Ok(PgConnectOptions::from_str(url)?.statement_cache_capacity(512))
    }

    fn is_transient(e: &dyn DatabaseError) -> bool {
        let Some(code) = e.code() else {
            return false;
        };
        // Connection exceptions, serialization failures and deadlocks,
        // insufficient resources (e.g. too many connections), shutdowns and
        // recovery, read-only replicas during a failover.
        code.starts_with("08")
            || code.starts_with("40")
            || code.starts_with("53")
            || code.starts_with("57P")
            || code == "25006"
    }

    fn is_missing_table(e: &dyn DatabaseError) -> bool {
        e.code().is_some_and(|c| c == "42P01")
    }

    // Never needed: the DDL is transactional and says IF NOT EXISTS, and an
    // error would abort the step's transaction anyway.
    fn is_existing_index(_: &dyn DatabaseError) -> bool {
        false
    }
}

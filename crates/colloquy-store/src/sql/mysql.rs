//! MySQL and MariaDB (InnoDB). Writers run at READ COMMITTED, so that the
//! conflict check of a group sees what other processes committed and takes
//! no gap locks. User ids are VARBINARY: MySQL's text collations would take
//! `Alice` for `alice`, or ignore trailing spaces, and merge two users' logs.

use super::{Dialect, DialectKind, SqlStore};
use sqlx::error::DatabaseError;
use sqlx::mysql::{MySqlConnectOptions, MySqlDatabaseError};
use sqlx::MySql;
use std::str::FromStr;

/// The store on MySQL/MariaDB; build it with [`SqlStore::connect`] after
/// [`SqlStore::migrate`].
pub type MySqlStore = SqlStore<MySql>;

const CREATE_EVENTS: &str = "
    CREATE TABLE IF NOT EXISTS events_{shard} (
        user_id  VARBINARY(255) NOT NULL,
        seq      BIGINT NOT NULL,
        event_id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
        ts_ms    BIGINT NOT NULL,
        body     LONGTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
        PRIMARY KEY (user_id, seq),
        KEY events_{shard}_user_ts (user_id, ts_ms)
    ) ENGINE = InnoDB";

const CREATE_SNAPSHOTS: &str = "
    CREATE TABLE IF NOT EXISTS snapshots_{shard} (
        user_id VARBINARY(255) NOT NULL PRIMARY KEY,
        seq     BIGINT NOT NULL,
        ts_ms   BIGINT NOT NULL,
        body    LONGTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
        hmac    VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL
    ) ENGINE = InnoDB";

/// Version 1 kept event ids unique per database through this table; version
/// 2 drops it (see the module docs of `sql`).
const CREATE_EVENT_IDS: &str = "
    CREATE TABLE IF NOT EXISTS event_ids (
        event_id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
        user_id  VARBINARY(255) NOT NULL
    ) ENGINE = InnoDB";

impl Dialect for MySql {
    const KIND: DialectKind = DialectKind::MySql;
    const SESSION_SETUP: &'static [&'static str] = &[
        "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
        // An over-long value must fail, never be silently truncated.
        "SET SESSION sql_mode = CONCAT(@@sql_mode, ',STRICT_ALL_TABLES')",
    ];
    const CREATE_SCHEMA_TABLE: &'static str = "
        CREATE TABLE IF NOT EXISTS colloquy_schema (
            shard   BIGINT NOT NULL PRIMARY KEY,
            version BIGINT NOT NULL
        ) ENGINE = InnoDB";
    const MIGRATIONS: &'static [&'static [&'static str]] = &[
        &[CREATE_EVENTS, CREATE_SNAPSHOTS, CREATE_EVENT_IDS],
        &[
            // MySQL has no IF NOT EXISTS here: a rerun after a crash that
            // left the key in place meets error 1061 (`is_existing_index`).
            "ALTER TABLE events_{shard}
                ADD UNIQUE KEY events_{shard}_user_event (user_id, event_id)",
            // Shared by the database's shards: the first shard to reach
            // version 2 drops it. Nothing reads it any more, and a database
            // with any shard at version 2 is refused by a version-1 build.
            "DROP TABLE IF EXISTS event_ids",
        ],
    ];
    const REGISTRY_TABLES: &'static [&'static str] = &[
        "CREATE TABLE IF NOT EXISTS bot_versions (
            name         VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
            version      VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
            hash         CHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
            files        LONGTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
            pushed_at_ms BIGINT NOT NULL,
            pushed_by    VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
            PRIMARY KEY (name, version)
        ) ENGINE = InnoDB",
        "CREATE TABLE IF NOT EXISTS bot_rollouts (
            name       VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
            generation BIGINT NOT NULL,
            record     LONGTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
            PRIMARY KEY (name, generation)
        ) ENGINE = InnoDB",
        "CREATE TABLE IF NOT EXISTS bot_activations (
            name       VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
            process    VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
            generation BIGINT NOT NULL,
            error      LONGTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
            at_ms      BIGINT NOT NULL,
            figures    LONGTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
            PRIMARY KEY (name, process)
        ) ENGINE = InnoDB",
        "CREATE TABLE IF NOT EXISTS admin_audit (
            id    BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
            at_ms BIGINT NOT NULL,
            entry LONGTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL
        ) ENGINE = InnoDB",
    ];
    const VERSION_UPSERT: &'static str = "ON DUPLICATE KEY UPDATE version = VALUES(version)";
    // Assignments run left to right on the updated row: seq goes last so
    // that the others still compare against the stored one.
    const SNAPSHOT_UPSERT: &'static str = "ON DUPLICATE KEY UPDATE
        ts_ms = IF(VALUES(seq) >= seq, VALUES(ts_ms), ts_ms),
        body  = IF(VALUES(seq) >= seq, VALUES(body), body),
        hmac  = IF(VALUES(seq) >= seq, VALUES(hmac), hmac),
        seq   = IF(VALUES(seq) >= seq, VALUES(seq), seq)";
    const LOCK: &'static str = "SELECT GET_LOCK('colloquy_migrate', 60)";
    const UNLOCK: &'static str = "SELECT RELEASE_LOCK('colloquy_migrate')";

    // Hex digits only: immune to sql_mode (NO_BACKSLASH_ESCAPES) and to the
    // connection's character set.
    fn literal(sql: &mut String, value: &str) {
        sql.push_str("X'");
        sql.push_str(&hex::encode(value));
        sql.push('\'');
    }

    // A scalar subquery per user: MySQL turns each into a single index
    // probe and plans hundreds of them in about a millisecond.
    fn last_seqs(sql: &mut String, users: &[(u8, &str)]) {
        for (i, (shard, user)) in users.iter().enumerate() {
            if i > 0 {
                sql.push_str(" UNION ALL ");
            }
            sql.push_str(&format!(
                "SELECT CAST({i} AS SIGNED), (SELECT MAX(seq) FROM events_{shard:02} WHERE user_id = "
            ));
            Self::literal(sql, user);
            sql.push(')');
        }
    }

    fn options(url: &str) -> Result<MySqlConnectOptions, sqlx::Error> {
        // Room for the per-shard statements of all 64 shards.
        Ok(MySqlConnectOptions::from_str(url)?.statement_cache_capacity(512))
    }

    fn is_transient(e: &dyn DatabaseError) -> bool {
        let Some(e) = e.try_downcast_ref::<MySqlDatabaseError>() else {
            return false;
        };
        matches!(
            e.number(),
            1040 // too many connections
            | 1053 // server shutdown in progress
            | 1205 // lock wait timeout
            | 1213 // deadlock
            | 1290 | 1836 // read-only (a replica during failover)
            | 1317 // query interrupted
            | 1927 // connection killed (MariaDB)
            | 4031 // disconnected by the server for inactivity
        )
    }

    fn is_missing_table(e: &dyn DatabaseError) -> bool {
        e.try_downcast_ref::<MySqlDatabaseError>()
            .is_some_and(|e| e.number() == 1146)
    }

    fn is_existing_index(e: &dyn DatabaseError) -> bool {
        e.try_downcast_ref::<MySqlDatabaseError>()
            .is_some_and(|e| e.number() == 1061)
    }
}

//! The one trait through which the shared SQL code meets a server: its
//! DDL, upserts, literals, locks and error codes. [`super::mysql`] and
//! [`super::postgres`] implement it, each behind its cargo feature.

use super::{DialectKind, SCHEMA_VERSION};
use sqlx::database::HasStatementCache;
use sqlx::error::DatabaseError;
use sqlx::Connection;

mod sealed {
    pub trait Sealed {}
    #[cfg(feature = "mysql")]
    impl Sealed for sqlx::MySql {}
    #[cfg(feature = "postgres")]
    impl Sealed for sqlx::Postgres {}
}

/// What differs between the servers; implemented for [`sqlx::MySql`] and
/// [`sqlx::Postgres`] only. Statements are templates: `{shard}` stands for
/// the two-digit shard number, `{table}` for the table written to.
pub trait Dialect: sqlx::Database + HasStatementCache + sealed::Sealed {
    const KIND: DialectKind;
    /// Run on every new connection.
    const SESSION_SETUP: &'static [&'static str];
    const CREATE_SCHEMA_TABLE: &'static str;
    /// Entry `i` takes a shard from version `i` to `i + 1`, one statement
    /// each. Append only: released entries must never change.
    const MIGRATIONS: &'static [&'static [&'static str]];
    /// The bot registry's tables, in the database of shard 00; `CREATE
    /// TABLE IF NOT EXISTS`, run by every migration.
    const REGISTRY_TABLES: &'static [&'static str];
    /// Follows `INSERT INTO colloquy_schema (shard, version) VALUES (..)`.
    const VERSION_UPSERT: &'static str;
    /// Follows `INSERT INTO {table} (user_id, seq, ts_ms, body, hmac)
    /// VALUES ..`: keep the row with the higher seq, the new one on a tie.
    const SNAPSHOT_UPSERT: &'static str;
    /// Serializes migrations of one database across processes; a query
    /// returning 1 once the session holds the lock.
    const LOCK: &'static str;
    const UNLOCK: &'static str;

    /// Append `value` to `sql` as a string literal that nothing in it can
    /// break out of, whatever the session's settings. `value` has no NUL
    /// (callers check), which PostgreSQL would cut the query at.
    fn literal(sql: &mut String, value: &str);
    /// Append to `sql` a query with a row `(i, MAX(seq))` for every user
    /// `i` of `users` (shard, user id; sorted): NULL for an empty log.
    fn last_seqs(sql: &mut String, users: &[(u8, &str)]);

    fn options(url: &str) -> Result<<Self::Connection as Connection>::Options, sqlx::Error>;
    /// Server error codes that pass: lost connections, shutdowns,
    /// deadlocks, lock timeouts, too many connections.
    fn is_transient(e: &dyn DatabaseError) -> bool;
    fn is_missing_table(e: &dyn DatabaseError) -> bool;
    /// A migration's index is already there: a step that crashed after its
    /// DDL committed (MySQL commits each) is being rerun.
    fn is_existing_index(e: &dyn DatabaseError) -> bool;
}

// The compile-time check that every dialect knows every schema version.
#[cfg(feature = "mysql")]
const _: () = assert!(<sqlx::MySql as Dialect>::MIGRATIONS.len() as i64 == SCHEMA_VERSION);
#[cfg(feature = "postgres")]
const _: () = assert!(<sqlx::Postgres as Dialect>::MIGRATIONS.len() as i64 == SCHEMA_VERSION);

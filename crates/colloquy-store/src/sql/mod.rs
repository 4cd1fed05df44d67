//! L2 backends on SQL servers: MySQL/MariaDB (`mysql`, behind the cargo
//! feature of that name) and PostgreSQL (`postgres`, likewise), through
//! sqlx. Everything but the SQL dialect is shared, one concern a file: the
//! configuration and shard map (`config`, in every build), the `Dialect`
//! trait, the migrations (`migrate`), the group-commit writer (`writer`),
//! the statement builder (`statement`) and the [`ConversationStore`] impl
//! (`store`).
//!
//! # Layout
//!
//! Users are spread over [`SHARDS`] logical shards by [`shard_of`]. Shard
//! `NN` (two digits, `00`..`63`) has its own tables `events_NN` and
//! `snapshots_NN`; which database holds a shard is configuration
//! ([`SqlConfig`]), so one database can hold all 64 shards or 64 databases
//! one each. Every database also has `colloquy_schema` (schema version per
//! shard it holds).
//!
//! An event id is unique within its user's log (the store's contract),
//! through a unique key (user_id, event_id) on the user's shard table, so
//! the check is clustered by user and costs no statement of its own.
//! Schema version 1 kept every id of a database in one `event_ids` table
//! keyed by the id alone: a random insert into one ever-growing B-tree per
//! event, shared by all shards, which version 2 drops.
//!
//! # Using it
//!
//! ```no_run
//! # async fn f(config: &colloquy_store::sql::SqlConfig) -> Result<(), colloquy_store::StoreError> {
//! // `colloquy migrate`: create or upgrade every shard of every database.
//! colloquy_store::sql::migrate(config).await?;
//! // Serving: refuses databases that were not migrated.
//! let store = colloquy_store::sql::connect(config).await?;
//! # Ok(()) }
//! ```
//!
//! # Writes
//!
//! Appends and snapshot writes of all users go through a few writer tasks
//! per database that group whatever is queued into one transaction, paying
//! one commit (one fsync) for all of it. Within a group each append still
//! stands alone: its expected seq is checked against one read of every
//! user's last seq (plus the group's own earlier appends), and all accepted
//! rows go in as a few multi-row INSERTs. If one of those hits a unique key
//! (another process appended for the same user, or an event id repeats),
//! the group is redone append by append under savepoints, so that only the
//! offending append fails. The primary key (user_id, seq) is what keeps a
//! log from forking between processes. Reads go straight to the pool.
//!
//! Connection loss, timeouts, deadlocks and the like are
//! [`ErrorKind::Transient`](crate::ErrorKind::Transient): retry them. A
//! group whose commit was cut off may or may not have committed: a retry
//! then meets a conflict, and the reloaded log shows which it was.

mod config;
mod migrate;

#[cfg(any(feature = "mysql", feature = "postgres"))]
mod dialect;
#[cfg(any(feature = "mysql", feature = "postgres"))]
mod registry;
#[cfg(any(feature = "mysql", feature = "postgres"))]
mod statement;
#[cfg(any(feature = "mysql", feature = "postgres"))]
mod store;
#[cfg(any(feature = "mysql", feature = "postgres"))]
mod writer;

#[cfg(feature = "mysql")]
pub mod mysql;
#[cfg(feature = "postgres")]
pub mod postgres;

pub use config::{shard_of, DialectKind, ShardRoute, SqlConfig, SHARDS};
#[cfg(any(feature = "mysql", feature = "postgres"))]
pub use dialect::Dialect;
pub use migrate::{migrate, MigrationReport, ShardUpgrade, SCHEMA_VERSION};
#[cfg(feature = "mysql")]
pub use mysql::MySqlStore;
#[cfg(feature = "postgres")]
pub use postgres::PgStore;
#[cfg(any(feature = "mysql", feature = "postgres"))]
pub use store::{SqlStore, MAX_USER_ID_BYTES};

use crate::{ConversationStore, StoreError};
use std::sync::Arc;

/// The bot registry in the database of shard 00 (created by [`migrate`]).
pub async fn open_registry(
    config: &SqlConfig,
) -> Result<Arc<dyn crate::BotRegistry>, crate::RegistryError> {
    #[cfg(any(feature = "mysql", feature = "postgres"))]
    return registry::open(config).await;
    #[cfg(not(any(feature = "mysql", feature = "postgres")))]
    Err(crate::RegistryError::Unavailable(
        config
            .dialect()
            .map_or_else(|e| e, |k| k.not_built())
            .to_string(),
    ))
}

/// Open every database of `config` and check that it is migrated; the
/// backend is chosen by the URLs' scheme.
pub async fn connect(config: &SqlConfig) -> Result<Arc<dyn ConversationStore>, StoreError> {
    match config.dialect()? {
        #[cfg(feature = "mysql")]
        DialectKind::MySql => Ok(Arc::new(MySqlStore::connect(config).await?)),
        #[cfg(feature = "postgres")]
        DialectKind::Postgres => Ok(Arc::new(PgStore::connect(config).await?)),
        #[cfg(not(all(feature = "mysql", feature = "postgres")))]
        kind => Err(kind.not_built()),
    }
}

//! The schema: [`migrate`] creates or upgrades every shard's tables (what
//! `colloquy migrate` runs), and a store refuses to serve shards that are
//! not at this build's [`SCHEMA_VERSION`].

#[cfg(any(feature = "mysql", feature = "postgres"))]
use {
    super::config::ranges,
    super::store::{Link, SqlStore},
    super::Dialect,
    sqlx::query_builder::QueryBuilder,
    sqlx::{ColumnIndex, Connection, Decode, Encode, Executor, IntoArguments, Row, Type},
    std::collections::HashMap,
    std::path::PathBuf,
};

use super::SqlConfig;
use crate::StoreError;

/// Schema version this build writes (the same for both dialects: entry `i`
/// of each dialect's migrations means the same change).
pub const SCHEMA_VERSION: i64 = 2;

/// Create or upgrade the schema of every shard in every database of
/// `config` (what `colloquy migrate` runs). Idempotent.
pub async fn migrate(config: &SqlConfig) -> Result<MigrationReport, StoreError> {
    match config.dialect()? {
        #[cfg(feature = "mysql")]
        super::DialectKind::MySql => super::MySqlStore::migrate(config).await,
        #[cfg(feature = "postgres")]
        super::DialectKind::Postgres => super::PgStore::migrate(config).await,
        #[cfg(not(all(feature = "mysql", feature = "postgres")))]
        kind => Err(kind.not_built()),
    }
}

/// What [`migrate`] changed; empty `upgraded` means nothing was to do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrationReport {
    pub upgraded: Vec<ShardUpgrade>,
    /// Shards that were at [`SCHEMA_VERSION`] already.
    pub current: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardUpgrade {
    /// The database, password redacted.
    pub database: String,
    pub shard: u8,
    pub from: i64,
    pub to: i64,
}

#[cfg(any(feature = "mysql", feature = "postgres"))]
impl<DB> SqlStore<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'a> &'a str: Encode<'a, DB> + Type<DB>,
    for<'a> i64: Encode<'a, DB> + Decode<'a, DB> + Type<DB>,
    for<'a> String: Decode<'a, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
{
    /// Create or upgrade the schema of every shard of every database in
    /// `config`. Idempotent, and safe to run from several processes at once.
    pub async fn migrate(config: &SqlConfig) -> Result<MigrationReport, StoreError> {
        let layout = Self::layout(config)?;
        let mut report = MigrationReport::default();
        for (i, url) in layout.urls.iter().enumerate() {
            let link = Link::<DB>::open(config, url, layout.shards_of(i), 1)?;
            let result = link.migrate(&mut report).await;
            link.pool.close().await;
            result?;
        }
        Ok(report)
    }
}

#[cfg(any(feature = "mysql", feature = "postgres"))]
impl<DB> Link<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'a> &'a str: Encode<'a, DB> + Type<DB>,
    for<'a> i64: Encode<'a, DB> + Decode<'a, DB> + Type<DB>,
    for<'a> String: Decode<'a, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
{
    /// Schema version per shard of this database, as recorded.
    async fn versions(&self, conn: &mut DB::Connection) -> Result<HashMap<u8, i64>, sqlx::Error> {
        let rows = sqlx::query::<DB>("SELECT shard, version FROM colloquy_schema")
            .fetch_all(&mut *conn)
            .await?;
        let mut versions = HashMap::new();
        for row in rows {
            let shard: i64 = row.try_get(0)?;
            if let Ok(shard) = u8::try_from(shard) {
                versions.insert(shard, row.try_get(1)?);
            }
        }
        Ok(versions)
    }

    fn too_new(&self, shard: u8, found: i64) -> StoreError {
        StoreError::SchemaTooNew {
            path: PathBuf::from(format!("{} (shard {shard:02})", self.label)),
            found,
            supported: SCHEMA_VERSION,
        }
    }

    pub(super) async fn check_schema(&self) -> Result<(), StoreError> {
        let versions = self
            .timed(async {
                let mut conn = self.pool.acquire().await.map_err(|e| self.error(e))?;
                match self.versions(&mut conn).await {
                    Ok(versions) => Ok(versions),
                    Err(e) if e.as_database_error().is_some_and(DB::is_missing_table) => {
                        Ok(HashMap::new())
                    }
                    Err(e) => Err(self.error(e)),
                }
            })
            .await?;
        let mut behind = Vec::new();
        for &shard in &self.shards {
            match versions.get(&shard).copied().unwrap_or(0) {
                SCHEMA_VERSION => {}
                found if found > SCHEMA_VERSION => return Err(self.too_new(shard, found)),
                _ => behind.push(shard),
            }
        }
        if behind.is_empty() {
            return Ok(());
        }
        Err(StoreError::NotMigrated {
            database: self.label.clone(),
            detail: format!(
                "shards {} are not at schema version {SCHEMA_VERSION}",
                ranges(&behind)
            ),
        })
    }

    async fn migrate(&self, report: &mut MigrationReport) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await.map_err(|e| self.error(e))?;
        let locked: Option<i64> = sqlx::query_scalar(DB::LOCK)
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| self.error(e))?;
        if locked != Some(1) {
            return Err(StoreError::Unavailable(format!(
                "{}: another process holds the migration lock",
                self.label
            )));
        }
        let result = self.migrate_locked(&mut conn, report).await;
        // Also after a failure: the session may live on in the pool.
        let unlocked = sqlx::query::<DB>(DB::UNLOCK).execute(&mut *conn).await;
        result?;
        unlocked.map_err(|e| self.error(e))?;
        Ok(())
    }

    async fn migrate_locked(
        &self,
        conn: &mut DB::Connection,
        report: &mut MigrationReport,
    ) -> Result<(), StoreError> {
        let error = |e| self.error(e);
        conn.execute(DB::CREATE_SCHEMA_TABLE).await.map_err(error)?;
        // Not versioned per shard: created if missing by every migration,
        // under the lock (concurrent CREATE TABLE IF NOT EXISTS can fail
        // on PostgreSQL).
        if self.shards.contains(&0) {
            for statement in DB::REGISTRY_TABLES {
                conn.execute(*statement).await.map_err(error)?;
            }
        }
        let versions = self.versions(conn).await.map_err(error)?;
        for &shard in &self.shards {
            let found = versions.get(&shard).copied().unwrap_or(0);
            if found > SCHEMA_VERSION {
                return Err(self.too_new(shard, found));
            }
            if found == SCHEMA_VERSION {
                report.current += 1;
                continue;
            }
            for (version, statements) in (1..).zip(DB::MIGRATIONS).skip(found.max(0) as usize) {
                // Transactional DDL (PostgreSQL) makes a step all or nothing;
                // MySQL commits each DDL statement, so every statement is
                // written to be rerun after a crash mid-step.
                let mut tx = conn.begin().await.map_err(error)?;
                for statement in *statements {
                    let sql = statement.replace("{shard}", &format!("{shard:02}"));
                    match sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                        .execute(&mut *tx)
                        .await
                    {
                        Ok(_) => {}
                        Err(e) if e.as_database_error().is_some_and(DB::is_existing_index) => {}
                        Err(e) => return Err(error(e)),
                    }
                }
                let mut upsert = QueryBuilder::<DB>::new(
                    "INSERT INTO colloquy_schema (shard, version) VALUES (",
                );
                upsert
                    .push_bind(i64::from(shard))
                    .push(", ")
                    .push_bind(version)
                    .push(") ")
                    .push(DB::VERSION_UPSERT);
                upsert.build().execute(&mut *tx).await.map_err(error)?;
                tx.commit().await.map_err(error)?;
            }
            report.upgraded.push(ShardUpgrade {
                database: self.label.clone(),
                shard,
                from: found,
                to: SCHEMA_VERSION,
            });
        }
        Ok(())
    }
}

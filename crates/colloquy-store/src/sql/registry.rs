//! The bot registry of the distributed topology, in the database that
//! holds shard 00, shared by every gateway and worker. Its tables
//! (`bot_versions`, `bot_rollouts`, `bot_activations`) are created by
//! `colloquy migrate`. Every write is one statement whose primary key
//! decides races: two pushes of one version, or two rollout changes from
//! the same generation, cannot both land.

use super::store::Link;
use super::{Dialect, SqlConfig, SqlStore};
use crate::registry::{
    check_rollout, check_version, Activation, AuditEntry, BotFiles, BotRegistry, Pushed,
    RegistryError, RolloutChange, RolloutRecord, StoredVersion, VersionInfo,
};
use async_trait::async_trait;
use sqlx::query_builder::QueryBuilder;
use sqlx::{ColumnIndex, Decode, Encode, Executor, IntoArguments, Row, Type};
use std::collections::HashSet;
use std::sync::Arc;

pub struct SqlRegistry<DB: sqlx::Database> {
    link: Link<DB>,
}

fn unique(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.is_unique_violation())
}

impl<DB> SqlRegistry<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'a> &'a str: Encode<'a, DB> + Type<DB>,
    for<'a> i64: Encode<'a, DB> + Decode<'a, DB> + Type<DB>,
    for<'a> String: Decode<'a, DB> + Type<DB>,
    for<'a> Option<&'a str>: Encode<'a, DB>,
    for<'a> Option<String>: Decode<'a, DB>,
    usize: ColumnIndex<DB::Row>,
{
    /// Connect to the database of shard 00 and check that `colloquy
    /// migrate` created the registry's tables.
    pub async fn open(config: &SqlConfig) -> Result<SqlRegistry<DB>, RegistryError> {
        let layout = SqlStore::<DB>::layout(config).map_err(RegistryError::from)?;
        let url = &layout.urls[layout.route[0]];
        let link = Link::<DB>::open(config, url, vec![0], 2).map_err(RegistryError::from)?;
        let reg = SqlRegistry { link };
        let probe = sqlx::query::<DB>("SELECT COUNT(*) FROM bot_rollouts WHERE 1 = 0")
            .fetch_all(&reg.link.pool)
            .await;
        match probe {
            Ok(_) => Ok(reg),
            Err(e) if e.as_database_error().is_some_and(DB::is_missing_table) => {
                Err(RegistryError::Unavailable(format!(
                    "{}: no bot registry tables; run `colloquy migrate`",
                    reg.link.label
                )))
            }
            Err(e) => Err(reg.error(e)),
        }
    }

    fn error(&self, e: sqlx::Error) -> RegistryError {
        RegistryError::from(self.link.error(e))
    }

    async fn hash_of(&self, name: &str, version: &str) -> Result<Option<String>, RegistryError> {
        let mut q = QueryBuilder::<DB>::new("SELECT hash FROM bot_versions WHERE name = ");
        q.push_bind(name).push(" AND version = ").push_bind(version);
        let row = q
            .build()
            .fetch_optional(&self.link.pool)
            .await
            .map_err(|e| self.error(e))?;
        row.map(|r| r.try_get::<String, _>(0))
            .transpose()
            .map_err(|e| self.error(e))
    }

    async fn generation(&self, name: &str) -> Result<u64, RegistryError> {
        let mut q =
            QueryBuilder::<DB>::new("SELECT MAX(generation) FROM bot_rollouts WHERE name = ");
        q.push_bind(name);
        let row = q
            .build()
            .fetch_one(&self.link.pool)
            .await
            .map_err(|e| self.error(e))?;
        let g: Option<i64> = row.try_get(0).map_err(|e| self.error(e))?;
        Ok(g.unwrap_or(0) as u64)
    }

    async fn records(&self, name: &str, limit: usize) -> Result<Vec<RolloutRecord>, RegistryError> {
        let mut q = QueryBuilder::<DB>::new("SELECT record FROM bot_rollouts WHERE name = ");
        q.push_bind(name)
            .push(" ORDER BY generation DESC LIMIT ")
            .push_bind(limit.min(i64::MAX as usize) as i64);
        let rows = q
            .build()
            .fetch_all(&self.link.pool)
            .await
            .map_err(|e| self.error(e))?;
        rows.iter()
            .map(|r| {
                let text: String = r.try_get(0).map_err(|e| self.error(e))?;
                serde_json::from_str(&text)
                    .map_err(|e| RegistryError::Corrupt(format!("bot_rollouts of {name}: {e}")))
            })
            .collect()
    }
}

#[async_trait]
impl<DB> BotRegistry for SqlRegistry<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'a> &'a str: Encode<'a, DB> + Type<DB>,
    for<'a> i64: Encode<'a, DB> + Decode<'a, DB> + Type<DB>,
    for<'a> String: Decode<'a, DB> + Type<DB>,
    for<'a> Option<&'a str>: Encode<'a, DB>,
    for<'a> Option<String>: Decode<'a, DB>,
    usize: ColumnIndex<DB::Row>,
{
    async fn push(&self, v: StoredVersion) -> Result<Pushed, RegistryError> {
        check_version(&v)?;
        self.link.timed(async {
            let existing = |hash: String| {
                if hash == v.info.hash {
                    Ok(Pushed::Unchanged)
                } else {
                    Err(RegistryError::VersionExists {
                        name: v.info.name.clone(),
                        version: v.info.version.clone(),
                        existing: hash,
                    })
                }
            };
            if let Some(hash) = self.hash_of(&v.info.name, &v.info.version).await? {
                return existing(hash);
            }
            let files = serde_json::to_string(&v.files)
                .map_err(|e| RegistryError::Invalid(format!("encoding the files: {e}")))?;
            let mut q = QueryBuilder::<DB>::new(
                "INSERT INTO bot_versions (name, version, hash, files, pushed_at_ms, pushed_by) VALUES (",
            );
            q.push_bind(v.info.name.as_str())
                .push(", ")
                .push_bind(v.info.version.as_str())
                .push(", ")
                .push_bind(v.info.hash.as_str())
                .push(", ")
                .push_bind(files.as_str())
                .push(", ")
                .push_bind(v.info.pushed_at_ms)
                .push(", ")
                .push_bind(v.info.pushed_by.as_str())
                .push(")");
            match q.build().execute(&self.link.pool).await {
                Ok(_) => Ok(Pushed::Created),
                // Another process pushed it between our read and write.
                Err(e) if unique(&e) => match self.hash_of(&v.info.name, &v.info.version).await? {
                    Some(hash) => existing(hash),
                    None => Err(self.error(e)),
                },
                Err(e) => Err(self.error(e)),
            }
        })
        .await
    }

    async fn versions(&self, name: Option<&str>) -> Result<Vec<VersionInfo>, RegistryError> {
        self.link
            .timed(async {
                let mut q = QueryBuilder::<DB>::new(
                    "SELECT name, version, hash, pushed_at_ms, pushed_by FROM bot_versions",
                );
                if let Some(n) = name {
                    q.push(" WHERE name = ").push_bind(n);
                }
                q.push(" ORDER BY pushed_at_ms, name, version");
                let rows = q
                    .build()
                    .fetch_all(&self.link.pool)
                    .await
                    .map_err(|e| self.error(e))?;
                rows.iter()
                    .map(|r| {
                        Ok(VersionInfo {
                            name: r.try_get(0)?,
                            version: r.try_get(1)?,
                            hash: r.try_get(2)?,
                            pushed_at_ms: r.try_get(3)?,
                            pushed_by: r.try_get(4)?,
                        })
                    })
                    .collect::<Result<_, sqlx::Error>>()
                    .map_err(|e| self.error(e))
            })
            .await
    }

    async fn version(
        &self,
        name: &str,
        version: &str,
    ) -> Result<Option<StoredVersion>, RegistryError> {
        self.link
            .timed(async {
                let mut q = QueryBuilder::<DB>::new(
                    "SELECT hash, files, pushed_at_ms, pushed_by FROM bot_versions WHERE name = ",
                );
                q.push_bind(name).push(" AND version = ").push_bind(version);
                let Some(r) = q
                    .build()
                    .fetch_optional(&self.link.pool)
                    .await
                    .map_err(|e| self.error(e))?
                else {
                    return Ok(None);
                };
                let get = |e| self.error(e);
                let files: String = r.try_get(1).map_err(get)?;
                let files: BotFiles = serde_json::from_str(&files)
                    .map_err(|e| RegistryError::Corrupt(format!("{name} {version}: {e}")))?;
                let v = StoredVersion {
                    info: VersionInfo {
                        name: name.into(),
                        version: version.into(),
                        hash: r.try_get(0).map_err(get)?,
                        pushed_at_ms: r.try_get(2).map_err(get)?,
                        pushed_by: r.try_get(3).map_err(get)?,
                    },
                    files,
                };
                check_version(&v).map_err(|e| RegistryError::Corrupt(e.to_string()))?;
                Ok(Some(v))
            })
            .await
    }

    async fn set_rollout(
        &self,
        name: &str,
        expected: u64,
        change: RolloutChange,
    ) -> Result<RolloutRecord, RegistryError> {
        self.link
            .timed(async {
                let current = self.generation(name).await?;
                if current != expected {
                    return Err(RegistryError::Stale {
                        name: name.into(),
                        current,
                    });
                }
                let known: HashSet<String> = self
                    .versions(Some(name))
                    .await?
                    .into_iter()
                    .map(|v| v.version)
                    .collect();
                let rollout = check_rollout(name, change.rollout.clone(), |v| known.contains(v))?;
                let record = RolloutChange { rollout, ..change }.record(name, current + 1);
                let text = serde_json::to_string(&record)
                    .map_err(|e| RegistryError::Invalid(format!("encoding the rollout: {e}")))?;
                let mut q = QueryBuilder::<DB>::new(
                    "INSERT INTO bot_rollouts (name, generation, record) VALUES (",
                );
                q.push_bind(name)
                    .push(", ")
                    .push_bind(record.generation as i64)
                    .push(", ")
                    .push_bind(text.as_str())
                    .push(")");
                match q.build().execute(&self.link.pool).await {
                    Ok(_) => Ok(record),
                    // Another process wrote this generation first.
                    Err(e) if unique(&e) => Err(RegistryError::Stale {
                        name: name.into(),
                        current: self.generation(name).await?,
                    }),
                    Err(e) => Err(self.error(e)),
                }
            })
            .await
    }

    async fn rollout(&self, name: &str) -> Result<Option<RolloutRecord>, RegistryError> {
        self.link
            .timed(async { Ok(self.records(name, 1).await?.pop()) })
            .await
    }

    async fn history(&self, name: &str, limit: usize) -> Result<Vec<RolloutRecord>, RegistryError> {
        self.link.timed(self.records(name, limit)).await
    }

    async fn report(&self, name: &str, a: Activation) -> Result<(), RegistryError> {
        let figures = serde_json::to_string(&a.figures)
            .map_err(|e| RegistryError::Invalid(format!("encoding figures: {e}")))?;
        self.link.timed(async {
            let mut update = QueryBuilder::<DB>::new("UPDATE bot_activations SET generation = ");
            update
                .push_bind(a.generation as i64)
                .push(", error = ")
                .push_bind(a.error.as_deref())
                .push(", at_ms = ")
                .push_bind(a.at_ms)
                .push(", figures = ")
                .push_bind(figures.as_str())
                .push(" WHERE name = ")
                .push_bind(name)
                .push(" AND process = ")
                .push_bind(a.process.as_str());
            update
                .build()
                .execute(&self.link.pool)
                .await
                .map_err(|e| self.error(e))?;
            // Whether the UPDATE found the row is asked, not read from its
            // result: MySQL counts a row it left unchanged as unaffected.
            let mut there =
                QueryBuilder::<DB>::new("SELECT COUNT(*) FROM bot_activations WHERE name = ");
            there
                .push_bind(name)
                .push(" AND process = ")
                .push_bind(a.process.as_str());
            let row = there
                .build()
                .fetch_one(&self.link.pool)
                .await
                .map_err(|e| self.error(e))?;
            if row.try_get::<i64, _>(0).map_err(|e| self.error(e))? > 0 {
                return Ok(());
            }
            let mut insert = QueryBuilder::<DB>::new(
                "INSERT INTO bot_activations (name, process, generation, error, at_ms, figures) VALUES (",
            );
            insert
                .push_bind(name)
                .push(", ")
                .push_bind(a.process.as_str())
                .push(", ")
                .push_bind(a.generation as i64)
                .push(", ")
                .push_bind(a.error.as_deref())
                .push(", ")
                .push_bind(a.at_ms)
                .push(", ")
                .push_bind(figures.as_str())
                .push(")");
            match insert.build().execute(&self.link.pool).await {
                Ok(_) => Ok(()),
                // Only this process reports under its name: a duplicate
                // is its own earlier report racing this one.
                Err(e) if unique(&e) => Ok(()),
                Err(e) => Err(self.error(e)),
            }
        })
        .await
    }

    async fn activations(&self, name: &str) -> Result<Vec<Activation>, RegistryError> {
        self.link.timed(async {
            let mut q = QueryBuilder::<DB>::new(
                "SELECT process, generation, error, at_ms, figures FROM bot_activations WHERE name = ",
            );
            q.push_bind(name);
            let rows = q
                .build()
                .fetch_all(&self.link.pool)
                .await
                .map_err(|e| self.error(e))?;
            rows.iter()
                .map(|r| {
                    let get = |e| self.error(e);
                    let figures: Option<String> = r.try_get(4).map_err(get)?;
                    Ok(Activation {
                        process: r.try_get(0).map_err(get)?,
                        generation: r.try_get::<i64, _>(1).map_err(get)? as u64,
                        error: r.try_get(2).map_err(get)?,
                        at_ms: r.try_get(3).map_err(get)?,
                        figures: match figures {
                            Some(f) => serde_json::from_str(&f).map_err(|e| {
                                RegistryError::Corrupt(format!("bot_activations of {name}: {e}"))
                            })?,
                            None => Default::default(),
                        },
                    })
                })
                .collect()
        })
        .await
    }

    async fn audit(&self, entry: AuditEntry) -> Result<(), RegistryError> {
        let text = serde_json::to_string(&entry)
            .map_err(|e| RegistryError::Invalid(format!("encoding an audit entry: {e}")))?;
        self.link
            .timed(async {
                let mut q =
                    QueryBuilder::<DB>::new("INSERT INTO admin_audit (at_ms, entry) VALUES (");
                q.push_bind(entry.at_ms)
                    .push(", ")
                    .push_bind(text.as_str())
                    .push(")");
                q.build()
                    .execute(&self.link.pool)
                    .await
                    .map_err(|e| self.error(e))?;
                Ok(())
            })
            .await
    }

    async fn audit_log(&self, limit: usize) -> Result<Vec<AuditEntry>, RegistryError> {
        self.link
            .timed(async {
                let mut q = QueryBuilder::<DB>::new(
                    "SELECT entry FROM admin_audit ORDER BY id DESC LIMIT ",
                );
                q.push_bind(limit.min(i64::MAX as usize) as i64);
                let rows = q
                    .build()
                    .fetch_all(&self.link.pool)
                    .await
                    .map_err(|e| self.error(e))?;
                rows.iter()
                    .map(|r| {
                        let text: String = r.try_get(0).map_err(|e| self.error(e))?;
                        serde_json::from_str(&text)
                            .map_err(|e| RegistryError::Corrupt(format!("admin_audit: {e}")))
                    })
                    .collect()
            })
            .await
    }
}

/// The registry in the SQL databases of `config`, by their dialect.
pub async fn open(config: &SqlConfig) -> Result<Arc<dyn BotRegistry>, RegistryError> {
    match config.dialect().map_err(RegistryError::from)? {
        #[cfg(feature = "mysql")]
        super::DialectKind::MySql => Ok(Arc::new(SqlRegistry::<sqlx::MySql>::open(config).await?)),
        #[cfg(feature = "postgres")]
        super::DialectKind::Postgres => {
            Ok(Arc::new(SqlRegistry::<sqlx::Postgres>::open(config).await?))
        }
        #[cfg(not(all(feature = "mysql", feature = "postgres")))]
        kind => Err(RegistryError::from(kind.not_built())),
    }
}

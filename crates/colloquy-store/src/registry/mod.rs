//! The bot registry: every pushed version of every bot (immutable,
//! content-hashed), and each bot's rollout with its history. Every gateway
//! and worker of a deployment reads the same registry: `serve` keeps it
//! under its data directory ([`embedded`]), the distributed topology in its
//! SQL database ([`sql`]). Processes follow a bot's rollout by its
//! generation, which grows by one with every change, and report here
//! whether they activated it ([`Activation`]), so an admin call can say
//! where a change took and where it did not.

pub mod embedded;

#[cfg(feature = "conformance")]
pub mod conformance;

use async_trait::async_trait;
use colloquy_core::bot::check_registry_name;
use colloquy_core::Rollout;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// A bot's files: path inside the bot directory (`/`-separated) → YAML text.
pub type BotFiles = BTreeMap<String, String>;

/// What is known of a pushed version, without its files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    pub name: String,
    pub version: String,
    /// [`content_hash`] of the files, hex.
    pub hash: String,
    pub pushed_at_ms: i64,
    /// The token subject that pushed it.
    pub pushed_by: String,
}

/// A version and its files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredVersion {
    #[serde(flatten)]
    pub info: VersionInfo,
    pub files: BotFiles,
}

impl StoredVersion {
    /// A version of `files`, hashed.
    pub fn new(
        name: &str,
        version: &str,
        files: BotFiles,
        pushed_at_ms: i64,
        pushed_by: &str,
    ) -> StoredVersion {
        StoredVersion {
            info: VersionInfo {
                name: name.into(),
                version: version.into(),
                hash: content_hash(&files),
                pushed_at_ms,
                pushed_by: pushed_by.into(),
            },
            files,
        }
    }
}

/// SHA-256 over every file's path and text, in path order, each
/// length-prefixed so that no two different sets of files hash alike.
pub fn content_hash(files: &BotFiles) -> String {
    let mut h = Sha256::new();
    for (path, text) in files {
        for part in [path.as_bytes(), text.as_bytes()] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part);
        }
    }
    hex::encode(h.finalize())
}

/// What a push did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    Created,
    /// The same version with the same files was there already.
    Unchanged,
}

/// Why a rollout changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutAction {
    /// An admin set it.
    Set,
    /// The canary became stable.
    Promote,
    /// An admin rolled back.
    Rollback,
    /// A breached guard rolled the canary back.
    Guard,
    /// `colloquy serve --bot DIR` started on a version the rollout did not
    /// serve.
    Local,
}

/// One state of a bot's rollout; the history is these, by generation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutRecord {
    pub name: String,
    /// 1 for a bot's first rollout, then one more with every change.
    pub generation: u64,
    pub rollout: Rollout,
    pub action: RolloutAction,
    pub by: String,
    pub at_ms: i64,
    /// Why, in words (for a guard: the figures that tripped it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A process's report on a rollout generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activation {
    /// The process (`host:pid` and role), as it names itself.
    pub process: String,
    pub generation: u64,
    /// Why it could not activate that generation; it goes on serving the
    /// generation it had.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub at_ms: i64,
    /// The turns this process answered over the last [`STATUS_WINDOW_SECS`],
    /// by version, for `bots status`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub figures: BTreeMap<String, Figures>,
}

/// How far back the figures of an [`Activation`] look.
pub const STATUS_WINDOW_SECS: u64 = 60;

/// One version's turns on one process over the status window.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Figures {
    /// Distinct users.
    pub users: u64,
    pub turns: u64,
    pub fallbacks: u64,
    pub handoffs: u64,
    pub action_errors: u64,
    /// Turns by latency bucket (`colloquy_core::rollout::LATENCY_BUCKETS`),
    /// so that processes' figures add up to a p99.
    pub latency: Vec<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{name} {version} is in the registry with other files (hash {existing}); versions are immutable: push it under a new version")]
    VersionExists {
        name: String,
        version: String,
        existing: String,
    },
    #[error("{name} has no version {version} in the registry")]
    UnknownVersion { name: String, version: String },
    #[error("the rollout of {name} changed meanwhile (now generation {current}); read it again")]
    Stale { name: String, current: u64 },
    #[error("{0}")]
    Invalid(String),
    #[error("registry unavailable: {0}")]
    Unavailable(String),
    #[error("registry data is damaged: {0}")]
    Corrupt(String),
}

/// A store failure under the registry: the registry is unavailable.
impl From<crate::StoreError> for RegistryError {
    fn from(e: crate::StoreError) -> Self {
        RegistryError::Unavailable(e.to_string())
    }
}

/// The registry's contract; [`conformance`] is the test every backend
/// passes.
#[async_trait]
pub trait BotRegistry: Send + Sync {
    /// Keep a version. Pushing a version again with the same files changes
    /// nothing; with other files it is [`RegistryError::VersionExists`].
    async fn push(&self, version: StoredVersion) -> Result<Pushed, RegistryError>;

    /// Every version of `name` (every bot's when `None`), oldest first.
    async fn versions(&self, name: Option<&str>) -> Result<Vec<VersionInfo>, RegistryError>;

    async fn version(
        &self,
        name: &str,
        version: &str,
    ) -> Result<Option<StoredVersion>, RegistryError>;

    /// Make `rollout` the bot's next generation, if the bot is still at
    /// `expected` (0: no rollout yet); else [`RegistryError::Stale`]. Every
    /// version it serves must be in the registry.
    async fn set_rollout(
        &self,
        name: &str,
        expected: u64,
        change: RolloutChange,
    ) -> Result<RolloutRecord, RegistryError>;

    /// The bot's current rollout (its newest generation).
    async fn rollout(&self, name: &str) -> Result<Option<RolloutRecord>, RegistryError>;

    /// The bot's generations, newest first, at most `limit`.
    async fn history(&self, name: &str, limit: usize) -> Result<Vec<RolloutRecord>, RegistryError>;

    /// Record a process's activation report (one per process and bot: the
    /// newest replaces the older).
    async fn report(&self, name: &str, activation: Activation) -> Result<(), RegistryError>;

    /// The newest report of every process on `name`.
    async fn activations(&self, name: &str) -> Result<Vec<Activation>, RegistryError>;

    /// Append an admin action to the audit log; `Ok` once it is durable.
    async fn audit(&self, entry: AuditEntry) -> Result<(), RegistryError>;

    /// The audit log, newest first, at most `limit` entries.
    async fn audit_log(&self, limit: usize) -> Result<Vec<AuditEntry>, RegistryError>;
}

/// One admin action: who, from where, what, on which bot, and how it went
/// (refused actions are kept too).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub at_ms: i64,
    /// The token subject.
    pub by: String,
    /// The client's address, as the gateway saw it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// `push`, `rollout`, `promote`, `rollback`.
    pub action: String,
    pub bot: String,
    /// What it did or why it was refused (e.g. `1.1.0 created`, `409
    /// version_exists`).
    pub outcome: String,
}

/// What [`BotRegistry::set_rollout`] writes, before it has a generation.
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutChange {
    pub rollout: Rollout,
    pub action: RolloutAction,
    pub by: String,
    pub at_ms: i64,
    pub note: Option<String>,
}

impl RolloutChange {
    pub(crate) fn record(self, name: &str, generation: u64) -> RolloutRecord {
        RolloutRecord {
            name: name.into(),
            generation,
            rollout: self.rollout,
            action: self.action,
            by: self.by,
            at_ms: self.at_ms,
            note: self.note,
        }
    }
}

/// The registry of the deployment `config` describes: beside the event log
/// or SQLite store, in `data_dir/registry` (one process, like the store);
/// with a SQL store, in the database of shard 00, shared by every process
/// (its tables are created by `colloquy migrate`).
pub async fn open(
    config: &crate::StoreConfig,
    data_dir: &std::path::Path,
) -> Result<Option<std::sync::Arc<dyn BotRegistry>>, RegistryError> {
    use crate::StoreBackend;
    match config.backend {
        StoreBackend::EventLog | StoreBackend::Sqlite => {
            let dir = data_dir.join("registry");
            let reg = tokio::task::spawn_blocking(move || embedded::EmbeddedRegistry::open(&dir))
                .await
                .map_err(|e| RegistryError::Unavailable(format!("opening the registry: {e}")))??;
            Ok(Some(std::sync::Arc::new(reg)))
        }
        StoreBackend::Mysql | StoreBackend::Postgres => {
            crate::sql::open_registry(&config.sql).await.map(Some)
        }
    }
}

/// The checks every backend makes before it keeps a version.
pub(crate) fn check_version(v: &StoredVersion) -> Result<(), RegistryError> {
    for (what, value) in [("name", &v.info.name), ("version", &v.info.version)] {
        check_registry_name(value)
            .map_err(|p| RegistryError::Invalid(format!("bot {what} {p}")))?;
    }
    if v.info.hash != content_hash(&v.files) {
        return Err(RegistryError::Invalid(format!(
            "{} {}: the hash does not match the files",
            v.info.name, v.info.version
        )));
    }
    Ok(())
}

/// The checks every backend makes before it sets a rollout: sound, and
/// every version it serves pushed (`known(v)`).
pub(crate) fn check_rollout(
    name: &str,
    rollout: Rollout,
    known: impl Fn(&str) -> bool,
) -> Result<Rollout, RegistryError> {
    let rollout = rollout
        .validated()
        .map_err(|e| RegistryError::Invalid(e.to_string()))?;
    if let Some(v) = rollout.serving().into_iter().find(|v| !known(v)) {
        return Err(RegistryError::UnknownVersion {
            name: name.into(),
            version: v.into(),
        });
    }
    Ok(rollout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_tells_apart_files_that_concatenate_alike() {
        let a = BotFiles::from([("a".into(), "bc".into())]);
        let b = BotFiles::from([("ab".into(), "c".into())]);
        assert_ne!(content_hash(&a), content_hash(&b));
        assert_eq!(content_hash(&a), content_hash(&a.clone()));
        assert_eq!(content_hash(&a).len(), 64);
    }

    #[test]
    fn a_version_with_a_wrong_hash_or_name_is_refused() {
        let mut v = StoredVersion::new("bot", "1", BotFiles::new(), 0, "me");
        assert!(check_version(&v).is_ok());
        v.files.insert("bot.yaml".into(), "x".into());
        assert!(matches!(check_version(&v), Err(RegistryError::Invalid(_))));
        let bad = StoredVersion::new("../etc", "1", BotFiles::new(), 0, "me");
        assert!(matches!(
            check_version(&bad),
            Err(RegistryError::Invalid(_))
        ));
    }
}

//! The registry of `colloquy serve`, in files under `DATA/registry`:
//! `versions/<name>/<version>.json` (one file per version, written once:
//! to a temporary name, synced, renamed, the directory synced) and
//! `rollouts/<name>.jsonl` (the history, one generation a line, appended
//! and synced). Everything is read into memory when it opens; a line cut
//! short by a crash at the end of a history is dropped, damage anywhere
//! else refuses to open. Activation reports are kept in memory only: they
//! are about live processes, and `serve` is one.
//!
//! One process at a time: `serve` holds the data directory's lock.

use super::{
    check_rollout, check_version, Activation, AuditEntry, BotRegistry, Pushed, RegistryError,
    RolloutChange, RolloutRecord, StoredVersion, VersionInfo,
};
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub struct EmbeddedRegistry {
    dir: PathBuf,
    inner: Arc<Mutex<Inner>>,
    /// Writes run one at a time, off the runtime's threads.
    writes: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Inner {
    /// (name, version) → version.
    versions: BTreeMap<(String, String), StoredVersion>,
    /// name → generations, oldest first.
    rollouts: BTreeMap<String, Vec<RolloutRecord>>,
    activations: BTreeMap<String, BTreeMap<String, Activation>>,
    audit: Vec<AuditEntry>,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> RegistryError + '_ {
    move |e| RegistryError::Unavailable(format!("{}: {e}", path.display()))
}

impl EmbeddedRegistry {
    /// Open (creating if needed) the registry in `dir`.
    pub fn open(dir: &Path) -> Result<EmbeddedRegistry, RegistryError> {
        let mut inner = Inner::default();
        let versions = dir.join("versions");
        let rollouts = dir.join("rollouts");
        for d in [&versions, &rollouts] {
            fs::create_dir_all(d).map_err(io(d))?;
        }
        for bot in fs::read_dir(&versions).map_err(io(&versions))? {
            let bot = bot.map_err(io(&versions))?.path();
            for file in fs::read_dir(&bot).map_err(io(&bot))? {
                let path = file.map_err(io(&bot))?.path();
                if path.extension().and_then(|e| e.to_str()) != Some("json") {
                    continue; // a temporary file a crash left behind
                }
                let text = fs::read(&path).map_err(io(&path))?;
                let v: StoredVersion = serde_json::from_slice(&text)
                    .map_err(|e| RegistryError::Corrupt(format!("{}: {e}", path.display())))?;
                check_version(&v)
                    .map_err(|e| RegistryError::Corrupt(format!("{}: {e}", path.display())))?;
                inner
                    .versions
                    .insert((v.info.name.clone(), v.info.version.clone()), v);
            }
        }
        let audit = dir.join("audit.jsonl");
        if audit.exists() {
            inner.audit = read_lines(&audit)?;
        }
        for file in fs::read_dir(&rollouts).map_err(io(&rollouts))? {
            let path = file.map_err(io(&rollouts))?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("jsonl") {
                continue;
            }
            let history = read_history(&path)?;
            if let Some(last) = history.last() {
                inner.rollouts.insert(last.name.clone(), history);
            }
        }
        Ok(EmbeddedRegistry {
            dir: dir.to_path_buf(),
            inner: Arc::new(Mutex::new(inner)),
            writes: tokio::sync::Mutex::new(()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A JSON-lines file's records. A last line without its newline was cut
/// short by a crash before it was acknowledged: it is cut off the file.
fn read_lines<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Vec<T>, RegistryError> {
    let text = fs::read_to_string(path).map_err(io(path))?;
    let complete = text.rfind('\n').map_or(0, |i| i + 1);
    if complete < text.len() {
        tracing::warn!(file = %path.display(), "dropping a line cut short by a crash");
        let f = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(io(path))?;
        f.set_len(complete as u64).map_err(io(path))?;
        f.sync_all().map_err(io(path))?;
    }
    text[..complete]
        .lines()
        .enumerate()
        .map(|(i, line)| {
            serde_json::from_str(line)
                .map_err(|e| RegistryError::Corrupt(format!("{}:{}: {e}", path.display(), i + 1)))
        })
        .collect()
}

/// A history file's generations, which count up from 1.
fn read_history(path: &Path) -> Result<Vec<RolloutRecord>, RegistryError> {
    let mut history: Vec<RolloutRecord> = Vec::new();
    for (i, r) in read_lines::<RolloutRecord>(path)?.into_iter().enumerate() {
        let expected = history.last().map_or(1, |p| p.generation + 1);
        if r.generation != expected {
            return Err(RegistryError::Corrupt(format!(
                "{}:{}: generation {} follows {}",
                path.display(),
                i + 1,
                r.generation,
                expected - 1
            )));
        }
        history.push(r);
    }
    Ok(history)
}

/// Write `bytes` to `path` so that after a crash it is either absent or
/// whole: a temporary file, synced, renamed, the directory synced.
fn write_new(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().expect("a version file is inside a directory");
    fs::create_dir_all(dir)?;
    let tmp = path.with_extension("json.tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()
}

fn append_line(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let created = !path.exists();
    let mut f = OpenOptions::new().create(true).append(true).open(path)?;
    f.write_all(bytes)?;
    f.sync_data()?;
    if created {
        File::open(path.parent().expect("inside a directory"))?.sync_all()?;
    }
    Ok(())
}

async fn blocking(
    work: impl FnOnce() -> Result<(), RegistryError> + Send + 'static,
) -> Result<(), RegistryError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| RegistryError::Unavailable(format!("registry write: {e}")))?
}

#[async_trait]
impl BotRegistry for EmbeddedRegistry {
    async fn push(&self, version: StoredVersion) -> Result<Pushed, RegistryError> {
        check_version(&version)?;
        let _one_writer = self.writes.lock().await;
        let key = (version.info.name.clone(), version.info.version.clone());
        if let Some(existing) = self.lock().versions.get(&key) {
            return if existing.info.hash == version.info.hash {
                Ok(Pushed::Unchanged)
            } else {
                Err(RegistryError::VersionExists {
                    name: key.0,
                    version: key.1,
                    existing: existing.info.hash.clone(),
                })
            };
        }
        let path = self
            .dir
            .join("versions")
            .join(&key.0)
            .join(format!("{}.json", key.1));
        let bytes = serde_json::to_vec(&version)
            .map_err(|e| RegistryError::Invalid(format!("encoding the version: {e}")))?;
        blocking(move || write_new(&path, &bytes).map_err(io(&path))).await?;
        self.lock().versions.insert(key, version);
        Ok(Pushed::Created)
    }

    async fn versions(&self, name: Option<&str>) -> Result<Vec<VersionInfo>, RegistryError> {
        let mut all: Vec<VersionInfo> = self
            .lock()
            .versions
            .values()
            .filter(|v| name.is_none_or(|n| v.info.name == n))
            .map(|v| v.info.clone())
            .collect();
        all.sort_by(|a, b| (a.pushed_at_ms, &a.name).cmp(&(b.pushed_at_ms, &b.name)));
        Ok(all)
    }

    async fn version(
        &self,
        name: &str,
        version: &str,
    ) -> Result<Option<StoredVersion>, RegistryError> {
        Ok(self
            .lock()
            .versions
            .get(&(name.to_string(), version.to_string()))
            .cloned())
    }

    async fn set_rollout(
        &self,
        name: &str,
        expected: u64,
        change: RolloutChange,
    ) -> Result<RolloutRecord, RegistryError> {
        let _one_writer = self.writes.lock().await;
        let record = {
            let inner = self.lock();
            let current = inner
                .rollouts
                .get(name)
                .and_then(|h| h.last())
                .map_or(0, |r| r.generation);
            if current != expected {
                return Err(RegistryError::Stale {
                    name: name.into(),
                    current,
                });
            }
            let rollout = check_rollout(name, change.rollout.clone(), |v| {
                inner
                    .versions
                    .contains_key(&(name.to_string(), v.to_string()))
            })?;
            RolloutChange { rollout, ..change }.record(name, current + 1)
        };
        let mut line = serde_json::to_vec(&record)
            .map_err(|e| RegistryError::Invalid(format!("encoding the rollout: {e}")))?;
        line.push(b'\n');
        let path = self.dir.join("rollouts").join(format!("{name}.jsonl"));
        blocking(move || append_line(&path, &line).map_err(io(&path))).await?;
        self.lock()
            .rollouts
            .entry(name.to_string())
            .or_default()
            .push(record.clone());
        Ok(record)
    }

    async fn rollout(&self, name: &str) -> Result<Option<RolloutRecord>, RegistryError> {
        Ok(self
            .lock()
            .rollouts
            .get(name)
            .and_then(|h| h.last())
            .cloned())
    }

    async fn history(&self, name: &str, limit: usize) -> Result<Vec<RolloutRecord>, RegistryError> {
        Ok(self
            .lock()
            .rollouts
            .get(name)
            .map(|h| h.iter().rev().take(limit).cloned().collect())
            .unwrap_or_default())
    }

    async fn report(&self, name: &str, activation: Activation) -> Result<(), RegistryError> {
        self.lock()
            .activations
            .entry(name.to_string())
            .or_default()
            .insert(activation.process.clone(), activation);
        Ok(())
    }

    async fn activations(&self, name: &str) -> Result<Vec<Activation>, RegistryError> {
        Ok(self
            .lock()
            .activations
            .get(name)
            .map(|a| a.values().cloned().collect())
            .unwrap_or_default())
    }

    async fn audit(&self, entry: AuditEntry) -> Result<(), RegistryError> {
        let _one_writer = self.writes.lock().await;
        let mut line = serde_json::to_vec(&entry)
            .map_err(|e| RegistryError::Invalid(format!("encoding an audit entry: {e}")))?;
        line.push(b'\n');
        let path = self.dir.join("audit.jsonl");
        blocking(move || append_line(&path, &line).map_err(io(&path))).await?;
        self.lock().audit.push(entry);
        Ok(())
    }

    async fn audit_log(&self, limit: usize) -> Result<Vec<AuditEntry>, RegistryError> {
        Ok(self
            .lock()
            .audit
            .iter()
            .rev()
            .take(limit)
            .cloned()
            .collect())
    }
}

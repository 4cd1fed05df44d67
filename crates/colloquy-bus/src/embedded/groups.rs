//! Committed offsets of consumer groups: one JSON file per group,
//! `groups/<group>.json`, mapping topic → partition → next offset, replaced
//! atomically on every durable commit.
//!
//! Writes are shared: a commit raises the wanted offset in memory, then
//! whoever holds the group's flush lock writes everything wanted so far, so
//! commits arriving during a write ride on the next one instead of each
//! paying for their own fsyncs.

use super::write_atomically;
use crate::BusError;
use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// topic → partition → next offset.
pub(crate) type Offsets = BTreeMap<String, BTreeMap<u32, u64>>;

pub(crate) struct Groups {
    dir: PathBuf,
    groups: Mutex<HashMap<String, Arc<Group>>>,
}

struct Group {
    path: PathBuf,
    flush: tokio::sync::Mutex<()>,
    state: Mutex<GroupState>,
}

#[derive(Default)]
struct GroupState {
    wanted: Offsets,
    /// What the file on disk says: the only offsets anyone else sees.
    durable: Offsets,
    /// Bumped on every change of `wanted`.
    version: u64,
    durable_version: u64,
}

impl Groups {
    /// Load every group file under `dir` (created if missing).
    pub fn open(dir: &Path) -> Result<Groups, BusError> {
        std::fs::create_dir_all(dir).map_err(BusError::io(format!("create {}", dir.display())))?;
        let mut groups = HashMap::new();
        let entries =
            std::fs::read_dir(dir).map_err(BusError::io(format!("list {}", dir.display())))?;
        for entry in entries {
            let path = entry
                .map_err(BusError::io(format!("list {}", dir.display())))?
                .path();
            let Some(name) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".json"))
            else {
                // Temp files of a write a crash interrupted, never renamed.
                continue;
            };
            let text =
                std::fs::read(&path).map_err(BusError::io(format!("read {}", path.display())))?;
            let offsets: Offsets = serde_json::from_slice(&text)
                .map_err(|e| BusError::Corrupt(format!("{}: {e}", path.display())))?;
            let state = GroupState {
                wanted: offsets.clone(),
                durable: offsets,
                ..GroupState::default()
            };
            groups.insert(name.to_string(), Arc::new(Group::new(path, state)));
        }
        Ok(Groups {
            dir: dir.to_path_buf(),
            groups: Mutex::new(groups),
        })
    }

    /// Durably raise the group's offset for the partition (never lower it).
    pub async fn commit(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
        offset: u64,
    ) -> Result<(), BusError> {
        let group = Arc::clone(
            self.groups
                .lock()
                .expect("groups lock")
                .entry(group.to_string())
                .or_insert_with(|| {
                    Arc::new(Group::new(
                        self.dir.join(format!("{group}.json")),
                        GroupState::default(),
                    ))
                }),
        );
        let needed = {
            let mut state = group.state.lock().expect("group lock");
            let changed = match state
                .wanted
                .entry(topic.to_string())
                .or_default()
                .entry(partition)
            {
                Entry::Vacant(entry) => {
                    entry.insert(offset);
                    true
                }
                Entry::Occupied(mut entry) if offset > *entry.get() => {
                    entry.insert(offset);
                    true
                }
                Entry::Occupied(_) => false,
            };
            if changed {
                state.version += 1;
            }
            if state.durable_version >= state.version {
                return Ok(());
            }
            state.version
        };
        let _flush = group.flush.lock().await;
        let (offsets, version) = {
            let state = group.state.lock().expect("group lock");
            if state.durable_version >= needed {
                return Ok(());
            }
            (state.wanted.clone(), state.version)
        };
        let text = serde_json::to_vec(&offsets).expect("offsets serialize");
        let path = group.path.clone();
        tokio::task::spawn_blocking(move || write_atomically(&path, &text))
            .await
            .map_err(|_| BusError::Closed)??;
        let mut state = group.state.lock().expect("group lock");
        state.durable = offsets;
        state.durable_version = version;
        Ok(())
    }

    /// The group's durable offset for the partition, if it ever committed one.
    pub fn committed(&self, group: &str, topic: &str, partition: u32) -> Option<u64> {
        let group = Arc::clone(self.groups.lock().expect("groups lock").get(group)?);
        let state = group.state.lock().expect("group lock");
        state.durable.get(topic)?.get(&partition).copied()
    }

    /// The durable offsets of every group consuming `topic`, one map of
    /// partition → offset per group.
    pub fn consumers_of(&self, topic: &str) -> Vec<BTreeMap<u32, u64>> {
        let groups: Vec<_> = self
            .groups
            .lock()
            .expect("groups lock")
            .values()
            .cloned()
            .collect();
        groups
            .iter()
            .filter_map(|g| {
                g.state
                    .lock()
                    .expect("group lock")
                    .durable
                    .get(topic)
                    .cloned()
            })
            .collect()
    }
}

impl Group {
    fn new(path: PathBuf, state: GroupState) -> Group {
        Group {
            path,
            flush: tokio::sync::Mutex::new(()),
            state: Mutex::new(state),
        }
    }
}

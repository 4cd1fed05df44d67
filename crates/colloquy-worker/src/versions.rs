//! Version routing: the bot versions this process holds, loaded and
//! trained, and the rollout that says which user gets which
//! ([`colloquy_core::Rollout::route`]). [`Follower`] keeps them in step
//! with the registry: it polls the bot's rollout generation, loads and
//! trains any version it lacks off the path of live turns, and only then
//! swaps the new table in, so a turn sees either the old table or the new
//! one, whole. A version that fails to load is never activated here; the
//! process keeps serving what it had and reports the failure to the
//! registry, where the admin call that made the change reads it.

use crate::loader::{load_files, LoadError, LoadedBot};
use colloquy_core::{Rollout, Route, State};
use colloquy_store::registry::{
    Activation, BotFiles, BotRegistry, RegistryError, RolloutAction, RolloutChange, StoredVersion,
};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// What a turn routes by: one consistent set of loaded versions and the
/// rollout over them.
pub struct Table {
    /// 0 for a bot served from its directory alone, with no registry.
    pub generation: u64,
    /// `None`: one version, no routing (`colloquy chat --bot`, tests).
    pub rollout: Option<Rollout>,
    pub bots: HashMap<String, Arc<LoadedBot>>,
    /// The version for turns when there is no rollout.
    only: String,
}

impl Table {
    /// The version a user gets before their state is read (the NLU stage
    /// classifies with it; the policy re-classifies on the rare turn whose
    /// route turns out to differ, a pinned session).
    pub fn assigned(&self, user: &str) -> (&str, &Arc<LoadedBot>) {
        let version = match &self.rollout {
            Some(r) => r.assign(user).version,
            None => self.only.clone(),
        };
        self.get(&version)
    }

    /// The route of a user's turn at `now_ms` and the version it goes to.
    pub fn route(&self, state: &State, now_ms: i64) -> (Option<Route>, &Arc<LoadedBot>) {
        let Some(rollout) = &self.rollout else {
            return (None, &self.bots[&self.only]);
        };
        let route = rollout.route(state, now_ms, |v| {
            self.bots.get(v).map(|b| b.bot.session_timeout_ms)
        });
        let bot = self.get(&route.version).1;
        (Some(route), bot)
    }

    /// Every version a rollout serves is loaded before its table is
    /// installed, so this finds it; the stable one stands in otherwise.
    fn get(&self, version: &str) -> (&str, &Arc<LoadedBot>) {
        match self.bots.get_key_value(version) {
            Some((v, b)) => (v, b),
            None => {
                let (v, b) = self
                    .bots
                    .get_key_value(&self.only)
                    .expect("a table holds its stable version");
                (v, b)
            }
        }
    }
}

/// The current [`Table`], swapped whole.
pub struct Versions {
    current: RwLock<Arc<Table>>,
}

impl Versions {
    /// One version, no rollout, no registry.
    pub fn single(bot: Arc<LoadedBot>) -> Versions {
        let only = bot.bot.id.version.clone();
        Versions {
            current: RwLock::new(Arc::new(Table {
                generation: 0,
                rollout: None,
                bots: HashMap::from([(only.clone(), bot)]),
                only,
            })),
        }
    }

    pub fn current(&self) -> Arc<Table> {
        Arc::clone(&self.current.read().unwrap_or_else(|p| p.into_inner()))
    }

    fn install(&self, table: Table) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(table);
    }
}

/// How often a follower reports that it is alive, well within the admin
/// API's notion of live (`LIVE_WITHIN_MS` in the gateway, 15 s).
pub const HEARTBEAT: Duration = Duration::from_secs(5);

/// How many versions beyond those a rollout serves a process keeps loaded
/// for sessions pinned to them (the newest ones it had).
const KEEP_FOR_PINS: usize = 4;

/// Keeps a process's [`Versions`] in step with the registry.
pub struct Follower {
    pub registry: Arc<dyn BotRegistry>,
    pub versions: Arc<Versions>,
    pub bot: String,
    /// How this process names itself in activation reports.
    pub process: String,
    pub now_ms: fn() -> i64,
}

impl Follower {
    /// Bring the versions up to the registry's rollout. A generation
    /// `refused` before is not tried again: it cannot load until the
    /// registry moves on.
    pub async fn sync(&self, refused: u64) -> Result<Synced, RegistryError> {
        let Some(record) = self.registry.rollout(&self.bot).await? else {
            return Ok(Synced::Unchanged);
        };
        let old = self.versions.current();
        if record.generation <= old.generation || record.generation == refused {
            return Ok(Synced::Unchanged);
        }
        let started = std::time::Instant::now();
        let mut bots: HashMap<String, Arc<LoadedBot>> = HashMap::new();
        let serving: Vec<String> = record
            .rollout
            .serving()
            .into_iter()
            .map(String::from)
            .collect();
        let mut loaded = Vec::new();
        for v in &serving {
            let bot = match old.bots.get(v) {
                Some(b) => Arc::clone(b),
                None => match self.load(v).await {
                    Ok(b) => {
                        loaded.push(v.clone());
                        b
                    }
                    Err(e) => {
                        let error = format!("{} {v}: {e}", self.bot);
                        tracing::error!(
                            bot = %self.bot,
                            generation = record.generation,
                            %error,
                            "not activating a rollout: a version failed to load"
                        );
                        self.report(record.generation, Some(error.clone())).await;
                        return Ok(Synced::Refused(record.generation, error));
                    }
                },
            };
            bots.insert(v.clone(), bot);
        }
        // Keep a few older versions for sessions still pinned to them.
        let mut kept = 0;
        for (v, b) in &old.bots {
            if kept < KEEP_FOR_PINS
                && !bots.contains_key(v)
                && !record.rollout.withdrawn.contains(v)
            {
                bots.insert(v.clone(), Arc::clone(b));
                kept += 1;
            }
        }
        self.versions.install(Table {
            generation: record.generation,
            only: record.rollout.stable.clone(),
            rollout: Some(record.rollout.clone()),
            bots,
        });
        tracing::info!(
            bot = %self.bot,
            generation = record.generation,
            stable = %record.rollout.stable,
            canary = ?record.rollout.canary.as_ref().map(|c| (&c.version, &c.tails)),
            loaded = ?loaded,
            took_ms = started.elapsed().as_millis() as u64,
            "rollout activated"
        );
        self.report(record.generation, None).await;
        Ok(Synced::Activated(record.generation))
    }

    /// Fetch a version and compile and train it on a blocking thread: a
    /// bot's NLU takes tens to hundreds of milliseconds to train, which
    /// must not stall the runtime's turns.
    async fn load(&self, version: &str) -> Result<Arc<LoadedBot>, String> {
        let stored = self
            .registry
            .version(&self.bot, version)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "not in the registry".to_string())?;
        let key = version.to_string();
        tokio::task::spawn_blocking(move || load_files(&stored.files))
            .await
            .map_err(|e| format!("loading: {e}"))?
            .map(|b| Arc::new(keyed(b, key)))
            .map_err(|e| e.to_string())
    }

    async fn report(&self, generation: u64, error: Option<String>) {
        let activation = Activation {
            process: self.process.clone(),
            generation,
            error,
            at_ms: (self.now_ms)(),
        };
        if let Err(e) = self.registry.report(&self.bot, activation).await {
            tracing::warn!(bot = %self.bot, error = %e, "could not report an activation");
        }
    }

    /// Poll every `every` until `stop` resolves, and report this
    /// process's state every [`HEARTBEAT`] even when nothing changes, so
    /// the admin API knows it is live and which generation it serves.
    pub async fn run(self, every: Duration, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut refused: Option<(u64, String)> = None;
        let mut reported = std::time::Instant::now();
        loop {
            tokio::select! {
                _ = &mut stop => return,
                _ = tick.tick() => {}
            }
            match self.sync(refused.as_ref().map_or(0, |r| r.0)).await {
                Ok(Synced::Refused(g, e)) => refused = Some((g, e)),
                Ok(Synced::Activated(_)) => refused = None,
                Ok(Synced::Unchanged) => {}
                Err(e) => tracing::warn!(bot = %self.bot, error = %e, "registry unreachable"),
            }
            if reported.elapsed() >= HEARTBEAT {
                reported = std::time::Instant::now();
                match &refused {
                    Some((g, e)) => self.report(*g, Some(e.clone())).await,
                    None => self.report(self.versions.current().generation, None).await,
                }
            }
        }
    }
}

/// What [`Follower::sync`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Synced {
    Unchanged,
    Activated(u64),
    /// A version of this generation failed to load (why); the process
    /// keeps the table it had.
    Refused(u64, String),
}

/// A loaded bot names the version it is kept under in the registry, which
/// its events then carry (a directory registered by `serve` may be kept
/// under a suffixed version, see [`register_dir`]).
fn keyed(mut bot: LoadedBot, version: String) -> LoadedBot {
    bot.bot.id.version = version;
    bot
}

/// What [`register_dir`] did.
pub struct Registered {
    /// The bot, loaded, under the version it is registered as.
    pub bot: Arc<LoadedBot>,
    /// The directory's files were not in the registry yet.
    pub pushed: bool,
    /// The rollout now serves this version to everyone.
    pub rolled_out: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

/// A process started with `--bot DIR` (`serve`, `worker`): load the
/// directory's bot, keep it in the registry, and serve it, so local work
/// needs no admin calls.
///
/// The version is the one its `bot:` section declares; when the registry
/// holds that version with other files (the YAML was edited without a new
/// version), the directory is kept as `VERSION+local.HASH` instead. The
/// rollout is set to it only when nobody changed the rollout through the
/// admin API: a restart never undoes a canary, a promotion or a rollback.
pub async fn register_dir(
    registry: &dyn BotRegistry,
    files: BotFiles,
    now_ms: i64,
) -> Result<Registered, RegisterError> {
    let for_load = files.clone();
    let loaded = tokio::task::spawn_blocking(move || load_files(&for_load))
        .await
        .map_err(|e| RegistryError::Unavailable(format!("loading the bot: {e}")))??;
    let name = loaded.bot.id.name.clone();
    let declared = loaded.bot.id.version.clone();
    let mut version = StoredVersion::new(&name, &declared, files, now_ms, LOCAL);
    let pushed = match registry.push(version.clone()).await {
        Ok(p) => p,
        Err(RegistryError::VersionExists { .. }) => {
            let local = format!("{declared}+local.{}", &version.info.hash[..12]);
            version = StoredVersion::new(&name, &local, version.files, now_ms, LOCAL);
            registry.push(version.clone()).await?
        }
        Err(e) => return Err(e.into()),
    };
    let key = version.info.version.clone();
    // Workers started together race here: the loser of a compare-and-set
    // looks again at what the winner wrote.
    let mut rolled_out = false;
    for _ in 0..3 {
        let current = registry.rollout(&name).await?;
        let ours = current
            .as_ref()
            .is_none_or(|r| r.action == RolloutAction::Local);
        let serving = current
            .as_ref()
            .is_some_and(|r| r.rollout.stable == key && r.rollout.canary.is_none());
        if !ours || serving {
            break;
        }
        let expected = current.as_ref().map_or(0, |r| r.generation);
        let change = RolloutChange {
            rollout: Rollout::stable(&key),
            action: RolloutAction::Local,
            by: LOCAL.into(),
            at_ms: now_ms,
            note: Some("served from the directory a process was started with".into()),
        };
        match registry.set_rollout(&name, expected, change).await {
            Ok(_) => {
                rolled_out = true;
                break;
            }
            Err(RegistryError::Stale { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Registered {
        bot: Arc::new(keyed(loaded, key)),
        pushed: pushed == colloquy_store::registry::Pushed::Created,
        rolled_out,
    })
}

/// Who [`register_dir`] acts as, in the registry and its history.
const LOCAL: &str = "colloquy --bot";

//! Version routing: the bot versions this process holds, loaded and
//! trained, and the rollout that says which user gets which
//! ([`colloquy_core::Rollout::route`]). [`Follower`] keeps them in step
//! with the registry: it polls the bot's rollout generation, loads and
//! trains any version it lacks off the path of live turns, and only then
//! swaps the new table in, so a turn sees either the old table or the new
//! one, whole. A version that fails to load is never activated here; the
//! process keeps serving what it had and reports the failure to the
//! registry, where the admin call that made the change reads it.
//!
//! [`Turns`] counts the turns each version answered in this process, and
//! the follower checks the rollout's guards against them every tick
//! ([`Follower::check_guards`]): a breach rolls the canary back through the
//! registry, which every process then follows like any rollback.

use crate::engine::TurnFacts;
use crate::loader::{load_files, LoadError, LoadedBot};
use crate::pipeline::StageObserver;
use colloquy_core::rollout::{fnv1a, Breach, WindowCounts, MAX_GUARD_WINDOW};
use colloquy_core::{Rollout, Route, State};
use colloquy_store::registry::{
    Activation, BotFiles, BotRegistry, Figures, RegistryError, RolloutAction, RolloutChange,
    StoredVersion, STATUS_WINDOW_SECS,
};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

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

/// The turns each version answered in this process over the last
/// [`MAX_GUARD_WINDOW`], one bucket a second: the counts guards read. A
/// turn costs one uncontended lock and an addition; a version that
/// answers nothing for that long is dropped.
pub struct Turns {
    started: Instant,
    /// Version → its seconds, oldest first.
    by_version: Mutex<HashMap<String, VecDeque<Second>>>,
}

/// One second of one version's turns.
struct Second {
    /// Since `Turns::started`.
    at: u64,
    counts: WindowCounts,
    /// Hashes of the users answered in it, kept for the last
    /// [`STATUS_WINDOW_SECS`] only: the one part whose size grows with
    /// traffic.
    users: HashSet<u64>,
}

impl Default for Turns {
    fn default() -> Self {
        Turns {
            started: Instant::now(),
            by_version: Mutex::new(HashMap::new()),
        }
    }
}

impl Turns {
    pub fn record(&self, turn: &TurnFacts, user: &str) {
        let now = self.started.elapsed().as_secs();
        let mut map = self.by_version.lock().unwrap_or_else(|p| p.into_inner());
        // Looked up by reference first: the version is allocated only for
        // its first turn.
        let seconds = match map.get_mut(&turn.version) {
            Some(b) => b,
            None => map.entry(turn.version.clone()).or_default(),
        };
        if seconds.back().is_none_or(|s| s.at != now) {
            // Once a second: the seconds that left the status window let
            // go of their users, those that left the guard window go.
            for s in seconds
                .iter_mut()
                .filter(|s| s.at + STATUS_WINDOW_SECS <= now)
            {
                s.users = HashSet::new();
            }
            while seconds
                .front()
                .is_some_and(|s| s.at + MAX_GUARD_WINDOW.as_secs() <= now)
            {
                seconds.pop_front();
            }
            seconds.push_back(Second {
                at: now,
                counts: WindowCounts::default(),
                users: HashSet::new(),
            });
        }
        if let Some(s) = seconds.back_mut() {
            s.counts.add_turn(
                turn.fallback,
                turn.handoff,
                turn.action_errors,
                turn.latency,
            );
            // A hash: the status figures keep no user id.
            s.users.insert(fnv1a(user.bytes()));
        }
    }

    /// Every version's turns and distinct users over the last
    /// [`STATUS_WINDOW_SECS`], as a status report carries them.
    pub fn figures(&self) -> BTreeMap<String, Figures> {
        let now = self.started.elapsed().as_secs();
        let map = self.by_version.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = BTreeMap::new();
        for (v, seconds) in map.iter() {
            let recent = || seconds.iter().filter(|s| s.at + STATUS_WINDOW_SECS > now);
            let mut c = WindowCounts::default();
            for s in recent() {
                c.merge(&s.counts);
            }
            if c.turns == 0 {
                continue;
            }
            let users: HashSet<u64> = recent().flat_map(|s| s.users.iter().copied()).collect();
            out.insert(
                v.clone(),
                Figures {
                    users: users.len() as u64,
                    turns: c.turns,
                    fallbacks: c.fallbacks,
                    handoffs: c.handoffs,
                    action_errors: c.action_errors,
                    latency: c.latency.to_vec(),
                },
            );
        }
        out
    }

    /// `version`'s turns over the last `window` (whole seconds, this one
    /// included).
    pub fn window(&self, version: &str, window: Duration) -> WindowCounts {
        let now = self.started.elapsed().as_secs();
        let mut map = self.by_version.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, b| {
            b.back()
                .is_some_and(|s| s.at + MAX_GUARD_WINDOW.as_secs() > now)
        });
        let mut sum = WindowCounts::default();
        for s in map
            .get(version)
            .into_iter()
            .flatten()
            .filter(|s| s.at + window.as_secs() > now)
        {
            sum.merge(&s.counts);
        }
        sum
    }
}

/// The current [`Table`], swapped whole, and the turns answered by it.
pub struct Versions {
    current: RwLock<Arc<Table>>,
    pub turns: Turns,
    /// The policy stage's observer, told of the guard trips this
    /// process's follower acts on.
    observer: OnceLock<Arc<dyn StageObserver>>,
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
            turns: Turns::default(),
            observer: OnceLock::new(),
        }
    }

    /// Report guard trips (and abandoned saga compensations) to `observer`. A process runs one policy stage,
    /// so the first observer is the only one; a later one is ignored.
    pub fn observe(&self, observer: Arc<dyn StageObserver>) {
        let table = self.current();
        if let Some(b) = table.bots.values().next() {
            observer.guards_watched(&b.bot.id.name);
        }
        for saga in table.bots.values().flat_map(|b| b.bot.sagas.keys()) {
            observer.saga_watched(saga);
        }
        let _ = self.observer.set(observer);
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

    /// Roll the canary back through the registry if it breaches one of
    /// the rollout's guards over the turns this process answered; the
    /// breach acted on, if any. The change is conditional on the
    /// generation this process serves: losing that race means another
    /// process (or an admin) changed the rollout first, which is fine.
    pub async fn check_guards(&self) -> Result<Option<Breach>, RegistryError> {
        let table = self.versions.current();
        let Some(rollout) = &table.rollout else {
            return Ok(None);
        };
        let Some(breach) = rollout.breached(|v, w| self.versions.turns.window(v, w)) else {
            return Ok(None);
        };
        let (Some(next), Some(canary)) = (rollout.without_canary(), &rollout.canary) else {
            return Ok(None);
        };
        let change = RolloutChange {
            rollout: next,
            action: RolloutAction::Guard,
            by: self.process.clone(),
            at_ms: (self.now_ms)(),
            note: Some(breach.to_string()),
        };
        match self
            .registry
            .set_rollout(&self.bot, table.generation, change)
            .await
        {
            Ok(record) => {
                tracing::warn!(
                    bot = %self.bot,
                    canary = %canary.version,
                    generation = record.generation,
                    breach = %breach,
                    "a rollout guard tripped: the canary is rolled back"
                );
                if let Some(o) = self.versions.observer.get() {
                    o.guard_tripped(&self.bot);
                }
                Ok(Some(breach))
            }
            Err(RegistryError::Stale { current, .. }) => {
                tracing::info!(
                    bot = %self.bot,
                    current,
                    breach = %breach,
                    "a rollout guard tripped, but the rollout changed first"
                );
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    async fn report(&self, generation: u64, error: Option<String>) {
        let activation = Activation {
            process: self.process.clone(),
            generation,
            error,
            at_ms: (self.now_ms)(),
            figures: self.versions.turns.figures(),
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
            // Guards first: the rollback a breach writes is activated by
            // the sync right after, in the same tick.
            if let Err(e) = self.check_guards().await {
                tracing::warn!(bot = %self.bot, error = %e, "could not act on a rollout guard");
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

#[cfg(test)]
mod tests {
    use super::*;

    fn turn(version: &str, fallback: bool) -> TurnFacts {
        TurnFacts {
            version: version.into(),
            intent: None,
            fallback,
            handoff: false,
            action_errors: 0,
            latency: Duration::from_millis(3),
        }
    }

    #[test]
    fn figures_count_turns_and_distinct_users_per_version() {
        let t = Turns::default();
        t.record(&turn("1", false), "alice");
        t.record(&turn("1", true), "alice");
        t.record(&turn("1", false), "bob");
        t.record(&turn("2", true), "carol");
        let f = t.figures();
        assert_eq!((f["1"].turns, f["1"].users, f["1"].fallbacks), (3, 2, 1));
        assert_eq!((f["2"].turns, f["2"].users, f["2"].fallbacks), (1, 1, 1));
        assert_eq!(t.window("1", Duration::from_secs(60)).turns, 3);
        assert_eq!(t.window("3", Duration::from_secs(60)).turns, 0);
    }
}

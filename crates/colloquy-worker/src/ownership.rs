//! Which worker runs a stage for which users, when the stage runs in
//! several processes.
//!
//! Members of a stage's group announce themselves in Redis with a
//! heartbeat; every member computes the same consistent-hash [`Ring`] from
//! the live members and consumes the partitions the ring gives it (users
//! map to partitions by key, so ownership of users follows the ring).
//! Partitions are handed over through a lease per partition: a member
//! starts consuming a partition only once it holds the lease, and releases
//! it only after its runner for the partition has drained and committed, so
//! in the normal case (join, graceful leave) no two members work on one
//! partition at once. When a member dies its heartbeat and leases expire
//! and the ring moves its partitions to the others.
//!
//! Leases are an optimisation for clean handovers, not the safety net: a
//! stale owner (paused, cut off from Redis while still reaching the store)
//! may run on for a while, and then the store's expected-seq check is what
//! stops it from forking a user's log — it gets a conflict, reloads and
//! finds the message already handled. While Redis is unreachable every
//! member keeps what it has, so the pipeline goes on serving.
//!
//! Redis's own clock (`TIME`) stamps heartbeats, so members' clocks need
//! not agree.

use colloquy_bus::ring::{Ring, DEFAULT_VNODES};
use colloquy_bus::runner::{Handler, StageConfig, StageHandle, StageRunner, StageStats};
use colloquy_bus::Bus;
use redis::aio::ConnectionManager;
use redis::Script;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Timing of membership.
#[derive(Debug, Clone)]
pub struct OwnershipConfig {
    /// Prefix of the Redis keys (`{prefix}:{group}:members`, `…:lease:{p}`).
    pub prefix: String,
    /// A member (and its leases) is gone this long after its last heartbeat.
    pub ttl: Duration,
    /// How often members heartbeat and look at the ring.
    pub tick: Duration,
    pub vnodes: u32,
}

impl Default for OwnershipConfig {
    fn default() -> Self {
        OwnershipConfig {
            prefix: "colloquy".into(),
            ttl: Duration::from_secs(3),
            tick: Duration::from_millis(250),
            vnodes: DEFAULT_VNODES,
        }
    }
}

/// Heartbeat stamped with Redis time; drops expired members; returns the
/// live ones. KEYS[1] members zset; ARGV[1] member, ARGV[2] ttl ms.
const HEARTBEAT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 10)
return redis.call('ZRANGE', KEYS[1], 0, -1)
";

/// Take or keep a lease. KEYS[1] lease; ARGV[1] member, ARGV[2] ttl ms.
/// 1 if the member holds it afterwards.
const ACQUIRE: &str = r"
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', tonumber(ARGV[2]))
  return 1
end
return 0
";

/// Give a lease back, only if still held. KEYS[1] lease; ARGV[1] member.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// What a member of a stage's group runs on the partitions it owns.
pub struct Stage {
    pub bus: Arc<dyn Bus>,
    /// Template: `partitions` is set per runner.
    pub config: StageConfig,
    pub handler: Arc<dyn Handler>,
    /// Shared by every runner this member starts for the stage.
    pub stats: Arc<StageStats>,
}

/// A member taking part in a stage's group until [`Member::leave`].
/// Dropping it stops it like a crash: no drain, no handover; the others
/// take over once its heartbeat expires.
pub struct Member {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    owned: Arc<Mutex<Vec<u32>>>,
}

impl Member {
    /// Join the group `stage.config.group` as `id` (unique per process) and
    /// keep consuming whatever the ring assigns until `leave`.
    pub async fn join(
        redis_url: &str,
        id: String,
        stage: Stage,
        cfg: OwnershipConfig,
    ) -> Result<Member, OwnershipError> {
        let client = redis::Client::open(redis_url)?;
        let partitions = stage.bus.partitions(&stage.config.topic).await?;
        let (stop, stopped) = watch::channel(false);
        let owned = Arc::new(Mutex::new(Vec::new()));
        let keys = Keys::new(&cfg.prefix, &stage.config.group);
        let task = tokio::spawn(
            Membership {
                client,
                scripts: Scripts {
                    heartbeat: Script::new(HEARTBEAT),
                    acquire: Script::new(ACQUIRE),
                    release: Script::new(RELEASE),
                },
                conn: None,
                id,
                cfg,
                keys,
                partitions,
                stage,
                runners: BTreeMap::new(),
                owned: owned.clone(),
                last_error: None,
            }
            .run(stopped),
        );
        Ok(Member { stop, task, owned })
    }

    /// Partitions this member consumes right now.
    pub fn owned(&self) -> Vec<u32> {
        self.owned.lock().expect("owned lock").clone()
    }

    /// Leave gracefully: drain and commit every partition, give the leases
    /// back and drop out of the ring, so the others take over at once.
    pub async fn leave(mut self) {
        self.stop.send_replace(true);
        let _ = (&mut self.task).await;
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OwnershipError {
    #[error("membership store: {0}")]
    Redis(#[from] redis::RedisError),
    #[error(transparent)]
    Bus(#[from] colloquy_bus::BusError),
}

impl Drop for Member {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Keys {
    members: String,
    lease_prefix: String,
}

impl Keys {
    fn new(prefix: &str, group: &str) -> Keys {
        Keys {
            members: format!("{prefix}:{group}:members"),
            lease_prefix: format!("{prefix}:{group}:lease:"),
        }
    }

    fn lease(&self, partition: u32) -> String {
        format!("{}{partition}", self.lease_prefix)
    }
}

/// The Lua scripts, hashed once: a script is sent by its SHA-1 and loaded
/// into Redis only when Redis does not know it yet.
struct Scripts {
    heartbeat: Script,
    acquire: Script,
    release: Script,
}

struct Membership {
    client: redis::Client,
    scripts: Scripts,
    conn: Option<ConnectionManager>,
    id: String,
    cfg: OwnershipConfig,
    keys: Keys,
    partitions: u32,
    stage: Stage,
    runners: BTreeMap<u32, StageHandle>,
    owned: Arc<Mutex<Vec<u32>>>,
    /// When the last Redis error was logged, so an outage logs once per
    /// few seconds and not once per tick.
    last_error: Option<Instant>,
}

impl Membership {
    async fn run(mut self, mut stopped: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.cfg.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stopped.changed() => break,
            }
            if let Err(e) = self.rebalance().await {
                self.conn = None;
                let now = Instant::now();
                if self
                    .last_error
                    .is_none_or(|at| now.duration_since(at) > Duration::from_secs(5))
                {
                    self.last_error = Some(now);
                    tracing::warn!(group = %self.stage.config.group, member = %self.id, error = %e,
                        "membership unavailable; keeping the partitions held");
                }
            }
        }
        self.leave().await;
    }

    async fn conn(&mut self) -> redis::RedisResult<ConnectionManager> {
        if let Some(c) = &self.conn {
            return Ok(c.clone());
        }
        let c = tokio::time::timeout(self.cfg.tick * 4, self.client.get_connection_manager())
            .await
            .map_err(|_| {
                redis::RedisError::from((redis::ErrorKind::Io, "connecting to redis timed out"))
            })??;
        self.conn = Some(c.clone());
        Ok(c)
    }

    /// One round: heartbeat, compute the ring, hand over what moved.
    async fn rebalance(&mut self) -> redis::RedisResult<()> {
        let mut conn = self.conn().await?;
        let ttl_ms = self.cfg.ttl.as_millis() as u64;
        let timeout = self.cfg.ttl / 2;
        let members: Vec<String> = bounded(
            timeout,
            self.scripts
                .heartbeat
                .key(&self.keys.members)
                .arg(&self.id)
                .arg(ttl_ms)
                .invoke_async(&mut conn),
        )
        .await?;
        let ring = Ring::new(&members, self.cfg.vnodes);
        let wanted = ring.partitions_of(&self.id, self.partitions);

        // Give up what the ring moved away first, so the new owners can
        // start as soon as possible.
        let lost: Vec<u32> = self
            .runners
            .keys()
            .copied()
            .filter(|p| !wanted.contains(p))
            .collect();
        for p in lost {
            self.stop_partition(&mut conn, p).await?;
            tracing::info!(group = %self.stage.config.group, member = %self.id, partition = p, "handed over");
        }
        for p in wanted {
            let held: i32 = bounded(
                timeout,
                self.scripts
                    .acquire
                    .key(self.keys.lease(p))
                    .arg(&self.id)
                    .arg(ttl_ms)
                    .invoke_async(&mut conn),
            )
            .await?;
            match (held == 1, self.runners.contains_key(&p)) {
                (true, false) => self.start_partition(p).await,
                (false, true) => {
                    // Someone took the lease while we could not renew it
                    // (we were cut off or paused): they own it now.
                    tracing::warn!(group = %self.stage.config.group, member = %self.id, partition = p,
                        "lease lost; stopping");
                    if let Some(r) = self.runners.remove(&p) {
                        r.shutdown().await;
                    }
                }
                // Held and running, or waiting for the old owner to drain.
                _ => {}
            }
        }
        self.publish_owned();
        Ok(())
    }

    async fn start_partition(&mut self, partition: u32) {
        let cfg = StageConfig {
            partitions: Some(vec![partition]),
            ..self.stage.config.clone()
        };
        match StageRunner::spawn_counting(
            self.stage.bus.clone(),
            cfg,
            self.stage.handler.clone(),
            self.stage.stats.clone(),
        )
        .await
        {
            Ok(r) => {
                tracing::info!(group = %self.stage.config.group, member = %self.id, partition, "took over");
                self.runners.insert(partition, r);
            }
            // The bus is unreachable: the lease is held, so try again next tick.
            Err(e) => tracing::warn!(partition, error = %e, "cannot start consuming"),
        }
    }

    async fn stop_partition(
        &mut self,
        conn: &mut ConnectionManager,
        partition: u32,
    ) -> redis::RedisResult<()> {
        if let Some(r) = self.runners.remove(&partition) {
            r.shutdown().await;
        }
        let _: i32 = bounded(
            self.cfg.ttl / 2,
            self.scripts
                .release
                .key(self.keys.lease(partition))
                .arg(&self.id)
                .invoke_async(conn),
        )
        .await?;
        Ok(())
    }

    fn publish_owned(&self) {
        *self.owned.lock().expect("owned lock") = self.runners.keys().copied().collect();
    }

    async fn leave(mut self) {
        // Out of the ring first, so the others see the new ring while this
        // member drains; the leases make them wait for the drain to end.
        let out: redis::RedisResult<()> = async {
            let mut conn = self.conn().await?;
            let _: i32 = bounded(
                self.cfg.ttl / 2,
                redis::cmd("ZREM")
                    .arg(&self.keys.members)
                    .arg(&self.id)
                    .query_async(&mut conn),
            )
            .await?;
            Ok(())
        }
        .await;
        let runners = std::mem::take(&mut self.runners);
        let partitions: Vec<u32> = runners.keys().copied().collect();
        // Drain every partition at once: a leave takes as long as the
        // slowest one, not their sum.
        futures_util::future::join_all(runners.into_values().map(|r| r.shutdown())).await;
        self.publish_owned();
        let released: redis::RedisResult<()> = async {
            out?;
            let mut conn = self.conn().await?;
            for p in partitions {
                let _: i32 = bounded(
                    self.cfg.ttl / 2,
                    self.scripts
                        .release
                        .key(self.keys.lease(p))
                        .arg(&self.id)
                        .invoke_async(&mut conn),
                )
                .await?;
            }
            Ok(())
        }
        .await;
        match released {
            Ok(()) => {
                tracing::info!(group = %self.stage.config.group, member = %self.id, "left the group")
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not leave cleanly; the others take over once the heartbeat expires")
            }
        }
    }
}

/// A Redis call that gives up after `limit`, so an unresponsive server
/// stalls a round by at most that long.
async fn bounded<T>(
    limit: Duration,
    call: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> redis::RedisResult<T> {
    tokio::time::timeout(limit, call)
        .await
        .map_err(|_| redis::RedisError::from((redis::ErrorKind::Io, "redis call timed out")))?
}

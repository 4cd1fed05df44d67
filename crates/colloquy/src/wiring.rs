//! What the roles share: the runtime with logs and traces, the shutdown
//! signal, secrets, the backends the configuration chooses, the adapters
//! between the worker's traits and the gateway's hub and metrics, and the
//! HTTP listener. Each role opens only the parts it uses.

use crate::config::{self, Config};
use crate::keys::{self, Secret};
use crate::telemetry::{LogFormat, Role, Telemetry};
use anyhow::Context;
use colloquy_bus::runner::HandlerError;
use colloquy_bus::{Bus, SealedBus};
use colloquy_core::wire::{Outcome, GROUP_IN, TOPIC_IN};
use colloquy_gateway::api::{router, Gateway};
use colloquy_gateway::auth::{Algorithm, Issuer, Scope, Verifier};
use colloquy_gateway::hub::Hub;
use colloquy_gateway::metrics::{Metrics, Sources};
use colloquy_gateway::server::ConnectionLimits;
use colloquy_store::l1::HotStates;
use colloquy_store::{BotRegistry, ConversationStore, Conversations, KeyRing, Sealed, SnapshotKey};
use colloquy_worker::pipeline::{Deliver, StageObserver};
use colloquy_worker::versions::{register_dir, Follower, Versions};
use colloquy_worker::{load_bot, read_files, Engine};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Run a server role on a new runtime, with its logs and traces set up
/// first and its last spans exported after it returns.
pub fn run_role(
    settings: &config::Telemetry,
    role: Role,
    logs: LogFormat,
    serve: impl std::future::Future<Output = anyhow::Result<ExitCode>>,
) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let telemetry = Telemetry::start(settings, role, logs)?;
        let served = serve.await;
        telemetry.shutdown().await;
        served
    })
}

/// Resolves on SIGTERM or Ctrl-C received after this is called.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    // The SIGTERM listener is made now, not when the future is first
    // polled: once any listener exists the process no longer dies of
    // SIGTERM, and a signal that came before a late listener was made would
    // be lost to it. `serve` was seen to miss a SIGTERM sent right after it
    // printed its address, while the registry follower's listener already
    // existed.
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
    async move {
        let ctrl_c = tokio::signal::ctrl_c();
        match term {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                let _ = ctrl_c.await;
            }
        }
        tracing::info!("shutdown requested: no longer accepting connections");
    }
}

/// The HS256 secret: configured, from `COLLOQUY_JWT_SECRET`, or generated
/// once and kept in the data directory.
pub fn hs_secret(cfg: &Config) -> anyhow::Result<Secret> {
    match &cfg.auth.secret {
        Some(s) => Ok(Secret {
            bytes: s.clone().into_bytes(),
            generated: false,
        }),
        None => keys::load_or_create(&cfg.server.data_dir, "jwt.secret", "COLLOQUY_JWT_SECRET"),
    }
}

/// The token verifier of the configured algorithm; a JWKS is read now and
/// kept current by a task of this runtime.
pub async fn verifier(cfg: &Config) -> anyhow::Result<(Verifier, Secret)> {
    let secret = hs_secret(cfg)?;
    let verifier = Verifier::start(&cfg.auth, Some(&secret.bytes))
        .await
        .context("auth settings")?;
    Ok((verifier, secret))
}

/// The key snapshots (and the Redis L1's copies) are signed with.
pub fn snapshot_key(cfg: &Config) -> anyhow::Result<SnapshotKey> {
    let secret = keys::load_or_create(
        &cfg.server.data_dir,
        "snapshot.key",
        "COLLOQUY_SNAPSHOT_KEY",
    )?;
    SnapshotKey::new(secret.bytes).context("snapshot key")
}

pub fn create_data_dir(cfg: &Config) -> anyhow::Result<()> {
    let data = &cfg.server.data_dir;
    std::fs::create_dir_all(data).with_context(|| format!("creating {}", data.display()))
}

/// The key ring personal data is sealed with: `COLLOQUY_SEALING_KEYS` (a
/// whole ring as JSON, fixed for the life of the process), else the ring
/// file (`sealing.keys_file`, by default `keys/sealing.json` in the data
/// directory), created with one key on the first start. A ring file is read
/// again every few seconds, so `colloquy keys rotate` reaches every process
/// without a restart. Must be called inside the runtime.
pub fn key_ring(cfg: &Config) -> anyhow::Result<Arc<KeyRing>> {
    if let Ok(json) = std::env::var(SEALING_KEYS_ENV) {
        if !json.is_empty() {
            return Ok(Arc::new(KeyRing::from_json(&json, SEALING_KEYS_ENV)?));
        }
    }
    let ring = Arc::new(KeyRing::open_or_create(&ring_file(cfg))?);
    let follower = Arc::downgrade(&ring);
    tokio::spawn(async move {
        let mut every = tokio::time::interval(RING_RELOAD);
        every.tick().await;
        loop {
            every.tick().await;
            let Some(ring) = follower.upgrade() else {
                return;
            };
            match ring.reload() {
                Ok(true) => tracing::info!(current = %ring.current(), "sealing key rotated"),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the key ring again; sealing with the keys read before")
                }
            }
        }
    });
    Ok(ring)
}

/// Where a process seals to without `COLLOQUY_SEALING_KEYS`.
pub fn ring_file(cfg: &Config) -> std::path::PathBuf {
    match &cfg.sealing.keys_file {
        p if p.as_os_str().is_empty() => KeyRing::default_file(&cfg.server.data_dir),
        p => p.clone(),
    }
}

pub const SEALING_KEYS_ENV: &str = "COLLOQUY_SEALING_KEYS";
const RING_RELOAD: Duration = Duration::from_secs(2);

/// The key ring as the bus's payload cipher: every record bound to its
/// key (the user id), as the stores bind events to their user.
struct BusSeal(Arc<KeyRing>);

impl colloquy_bus::PayloadCipher for BusSeal {
    fn seal(&self, key: &str, payload: &[u8]) -> Vec<u8> {
        self.0.seal(key.as_bytes(), payload)
    }

    fn open(&self, key: &str, payload: &[u8]) -> Result<Option<Vec<u8>>, String> {
        if !KeyRing::is_sealed(payload) {
            return Ok(None);
        }
        self.0
            .open(key.as_bytes(), payload)
            .map(Some)
            .map_err(|e| e.to_string())
    }
}

/// The configured bus, its records sealed under `ring`.
pub fn open_bus(cfg: &Config, ring: &Arc<KeyRing>) -> anyhow::Result<Arc<dyn Bus>> {
    let bus = colloquy_bus::open(&cfg.bus, &cfg.server.data_dir).context("opening the bus")?;
    Ok(Arc::new(SealedBus::new(
        bus,
        Arc::new(BusSeal(ring.clone())),
    )))
}

/// The configured store, its personal data sealed under `ring`.
pub async fn open_store(
    cfg: &Config,
    ring: &Arc<KeyRing>,
) -> anyhow::Result<Arc<dyn ConversationStore>> {
    let store = colloquy_store::open(&cfg.store, &cfg.server.data_dir)
        .await
        .context("opening the store (for a new SQL database, run `colloquy migrate` first)")?;
    Ok(Arc::new(Sealed::new(store, ring.clone())))
}

pub fn conversations(
    cfg: &Config,
    store: Arc<dyn ConversationStore>,
    key: SnapshotKey,
) -> Arc<Conversations> {
    Arc::new(Conversations::new(store, key, cfg.store.snapshot_policy()))
}

/// The hot states (L1) of a process running the policy stage.
pub fn hot_states(
    cfg: &Config,
    key: &SnapshotKey,
    ring: &Arc<KeyRing>,
) -> anyhow::Result<Arc<dyn HotStates>> {
    colloquy_store::l1::open(&cfg.store.l1, key.clone(), ring.clone()).context("store.l1")
}

pub async fn open_registry(cfg: &Config) -> anyhow::Result<Option<Arc<dyn BotRegistry>>> {
    colloquy_store::registry::open(&cfg.store, &cfg.server.data_dir)
        .await
        .context("opening the bot registry")
}

/// How this process names itself in the registry's activation reports.
pub fn process_name(role: &str) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    format!("{host}:{}/{role}", std::process::id())
}

/// The policy engine over the store and the hot states, serving the
/// versions of the configured bot directory's bot that the registry's
/// rollout names (registering the directory first), kept current by a
/// follower of the registry until `stop`.
pub async fn engine(
    cfg: &Config,
    registry: Option<Arc<dyn BotRegistry>>,
    store: Arc<dyn ConversationStore>,
    key: SnapshotKey,
    hot: Arc<dyn HotStates>,
    role: &str,
) -> anyhow::Result<Engine> {
    let conversations = Conversations::new(store, key, cfg.store.snapshot_policy());
    let dir = &cfg.server.bot;
    let Some(registry) = registry else {
        tracing::warn!(
            "no bot registry with this store: serving {} as it is",
            dir.display()
        );
        let bot = load_bot(dir).map_err(|e| anyhow::anyhow!("{e}"))?;
        return Ok(Engine::with_hot_states(Arc::new(bot), conversations, hot));
    };
    let files = read_files(dir).map_err(|e| anyhow::anyhow!("{e}"))?;
    let now = colloquy_gateway::clock::unix_ms();
    let registered = register_dir(registry.as_ref(), files, now)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let id = registered.bot.bot.id.clone();
    if registered.pushed {
        println!(
            "registered {} {} from {}",
            id.name,
            id.version,
            dir.display()
        );
    }
    if !registered.rolled_out {
        tracing::info!(bot = %id.name, "serving the registry's rollout");
    }
    let versions = Arc::new(Versions::single(registered.bot));
    let follower = Follower {
        registry,
        versions: versions.clone(),
        bot: id.name.clone(),
        process: process_name(role),
        now_ms: colloquy_gateway::clock::unix_ms,
    };
    follower.sync(0).await.context("activating the rollout")?;
    let table = versions.current();
    if let Some(r) = &table.rollout {
        println!(
            "{} rollout generation {}: stable {}{}",
            id.name,
            table.generation,
            r.stable,
            r.canary
                .as_ref()
                .map(|c| format!(", canary {} for tails {:?}", c.version, c.tails))
                .unwrap_or_default()
        );
    }
    tokio::spawn(follower.run(cfg.server.registry_poll, shutdown_signal()));
    Ok(Engine::routed(versions, conversations, hot))
}

/// The inbound queue, whose backlog is the queue depth everywhere.
pub fn inbound_queue() -> Vec<(String, String)> {
    vec![(TOPIC_IN.to_string(), GROUP_IN.to_string())]
}

/// The gateway's hub as the policy stage's delivery when both run in one
/// process: outcomes go straight to the waiting requests and streams.
pub struct HubDeliver(pub Arc<Hub>);

#[async_trait::async_trait]
impl Deliver for HubDeliver {
    async fn deliver(&self, outcome: Outcome) -> Result<(), HandlerError> {
        self.0.push(outcome);
        Ok(())
    }
}

/// The process's metrics as what the stages report to.
pub struct MetricsObserver(pub Arc<Metrics>);

impl StageObserver for MetricsObserver {
    fn message(&self, stage: &'static str, outcome: &'static str) {
        self.0.message(stage, outcome);
    }

    fn turn(&self, turn: &colloquy_worker::TurnFacts) {
        self.0.turn(&colloquy_gateway::metrics::Turn {
            version: &turn.version,
            intent: turn.intent.as_deref(),
            fallback: turn.fallback,
            handoff: turn.handoff,
            action_errors: turn.action_errors,
            latency: turn.latency,
        });
    }

    fn guard_tripped(&self, bot: &str) {
        self.0.guard_tripped(bot);
    }

    fn guards_watched(&self, bot: &str) {
        self.0.guards_watched(bot);
    }

    fn action_call(&self, action: &str, outcome: &'static str, took: std::time::Duration) {
        self.0.action_call(action, outcome, took.as_secs_f64());
    }

    fn breaker(&self, endpoint: &str, state: colloquy_worker::actions::BreakerState) {
        self.0.breaker(endpoint, state.gauge());
    }

    fn compensation_abandoned(&self, saga: &str) {
        self.0.compensation_abandoned(saga);
    }

    fn saga_watched(&self, saga: &str) {
        self.0.saga_watched(saga);
    }
}

/// The HTTP gateway, not yet listening; the caller adds the registry
/// where the admin API is to manage one.
pub fn gateway(
    cfg: &Config,
    verifier: Verifier,
    bus: Arc<dyn Bus>,
    conversations: Arc<Conversations>,
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
    sources: Sources,
) -> anyhow::Result<Gateway> {
    Gateway::new(
        verifier,
        bus,
        conversations,
        hub,
        cfg.limits.clone(),
        metrics,
        sources,
    )
    .map_err(|e| anyhow::anyhow!(e))
}

/// Listen, print where to talk to the server, and serve until SIGTERM or
/// Ctrl-C; returns once open requests are done. `dev_token`: the secret
/// to print a ready-made development token with, which only `serve` does,
/// and only with a secret it generated itself.
pub async fn serve_http(
    cfg: &Config,
    gateway: Arc<Gateway>,
    what: &str,
    dev_token: Option<&Secret>,
) -> anyhow::Result<()> {
    let app = router(gateway.clone()).layer(tower_http::timeout::TimeoutLayer::with_status_code(
        axum::http::StatusCode::REQUEST_TIMEOUT,
        cfg.server.request_timeout,
    ));
    let listener = tokio::net::TcpListener::bind(&cfg.server.listen)
        .await
        .with_context(|| format!("listening on {}", cfg.server.listen))?;
    let addr = listener.local_addr()?;
    // Listening for SIGTERM before saying where to connect: whoever reads
    // the address may stop the server at once.
    let stop = shutdown_signal();
    gateway.ready.store(true, Ordering::Relaxed);
    tracing::info!(%addr, what, "serving");
    println!(
        "colloquy {} serving {what} on http://{addr}",
        env!("CARGO_PKG_VERSION"),
    );
    let hs256 = cfg.auth.algorithm == Algorithm::HS256;
    if let Some(secret) = dev_token.filter(|s| s.generated && hs256) {
        let issuer = Issuer::hs256(
            &secret.bytes,
            cfg.auth.issuer.clone(),
            cfg.auth.audience.clone(),
        );
        let token = issuer.issue_now("alice", Scope::Chat, Duration::from_secs(24 * 3600))?;
        println!("development token for user alice (24 h): {token}");
        println!(
            "try: curl -s -H 'Authorization: Bearer {token}' -H 'Content-Type: application/json' \
             -d '{{\"text\":\"星云跑鞋有39码吗\"}}' 'http://{addr}/v1/conversations/alice/messages?wait_ms=2000'"
        );
    }
    let limits = ConnectionLimits {
        max_connections: cfg.server.max_connections,
        header_timeout: cfg.server.header_timeout,
        ..ConnectionLimits::default()
    };
    colloquy_gateway::server::serve(listener, app, &limits, stop, cfg.server.shutdown_timeout)
        .await;
    Ok(())
}

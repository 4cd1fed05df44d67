//! The parts every role is built from, chosen by the configuration, and the
//! roles that run apart: `colloquy gateway` and `colloquy worker`.

use crate::config::{BusBackend, Config, L1Backend, StoreBackend};
use crate::keys;
use crate::serve::{hs_secret, shutdown_signal, unix_now, ServeArgs};
use anyhow::Context;
use colloquy_bus::kafka::KafkaBus;
use colloquy_bus::runner::HandlerError;
use colloquy_bus::runner::{Handler, RetryPolicy, StageConfig, StageStats};
use colloquy_bus::{Bus, EmbeddedBus};
use colloquy_core::wire::{Outcome, GROUP_IN, GROUP_POLICY, TOPIC_IN, TOPIC_NLU, TOPIC_OUT};
use colloquy_gateway::api::{metrics_router, router, Gateway};
use colloquy_gateway::auth::{Algorithm, Issuer, Scope, Verifier};
use colloquy_gateway::feed::OutcomeFeed;
use colloquy_gateway::hub::Hub;
use colloquy_gateway::metrics::{Metrics, Sources};
use colloquy_gateway::server::ConnectionLimits;
use colloquy_store::l1::{HotStates, LayeredHotStates, MemoryHotStates, RedisHotStates};
use colloquy_store::{
    sqlite::SqliteStore, ConversationStore, Conversations, LogConfig, LogStore, SnapshotKey,
    SnapshotPolicy,
};
use colloquy_worker::ownership::{Member, OwnershipConfig, Stage};
use colloquy_worker::pipeline::{
    BusDeliver, ChatHandler, Deliver, NluHandler, PolicyHandler, StageObserver,
};
use colloquy_worker::{load_bot, Engine, MEMORY_L1_USERS};
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

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

    fn intent(&self, intent: Option<&str>) {
        self.0.intent(intent);
    }
}

/// What a role process opens: bus, store, keys and the engine.
pub struct Parts {
    pub bus: Arc<dyn Bus>,
    pub store: Arc<dyn ConversationStore>,
    pub key: SnapshotKey,
    pub policy: SnapshotPolicy,
    pub engine: Arc<Engine>,
    /// The engine's hot states, for the hit-ratio metric.
    pub hot: Arc<dyn HotStates>,
    pub verifier: Verifier,
    /// The HS256 secret, for the development token printed at start.
    pub secret: Vec<u8>,
}

impl Parts {
    pub async fn open(cfg: &Config) -> anyhow::Result<Parts> {
        let data = &cfg.server.data_dir;
        std::fs::create_dir_all(data).with_context(|| format!("creating {}", data.display()))?;
        let bot = load_bot(&cfg.server.bot).map_err(|e| anyhow::anyhow!("{e}"))?;
        let secret = hs_secret(cfg)?;
        let verifier = Verifier::new(&cfg.auth, Some(&secret)).context("auth settings")?;
        let bus = open_bus(cfg)?;
        let store = open_store(cfg).await?;
        let key = SnapshotKey::new(keys::load_or_create(
            data,
            "snapshot.key",
            "COLLOQUY_SNAPSHOT_KEY",
        )?)
        .context("snapshot key")?;
        let policy = cfg.store.snapshot_policy();
        let conversations = Conversations::new(store.clone(), key.clone(), policy);
        let hot: Arc<dyn HotStates> = match cfg.store.l1.backend {
            L1Backend::Memory => Arc::new(MemoryHotStates::new(MEMORY_L1_USERS)),
            // The worker's own copies first: the ring gives it its users
            // one at a time, so most turns find the last state here.
            L1Backend::Redis => Arc::new(LayeredHotStates::new(
                MEMORY_L1_USERS,
                Arc::new(
                    RedisHotStates::new(&cfg.store.l1.redis, key.clone())
                        .context("store.l1.redis")?,
                ),
            )),
        };
        let engine = Engine::with_hot_states(Arc::new(bot), conversations, hot.clone());
        Ok(Parts {
            bus,
            store,
            key,
            policy,
            engine: Arc::new(engine),
            hot,
            verifier,
            secret,
        })
    }
}

fn open_bus(cfg: &Config) -> anyhow::Result<Arc<dyn Bus>> {
    Ok(match cfg.bus.backend {
        BusBackend::Embedded => Arc::new(
            EmbeddedBus::open(&cfg.server.data_dir.join("bus"), cfg.bus.embedded.clone())
                .context("opening the embedded bus")?,
        ),
        BusBackend::Kafka => Arc::new(KafkaBus::new(cfg.bus.kafka.clone()).context("bus.kafka")?),
    })
}

async fn open_store(cfg: &Config) -> anyhow::Result<Arc<dyn ConversationStore>> {
    Ok(match cfg.store.backend {
        StoreBackend::EventLog => Arc::new(open_event_log(
            &cfg.server.data_dir,
            cfg.store.eventlog.clone(),
        )?),
        StoreBackend::Sqlite => {
            Arc::new(SqliteStore::open(&cfg.server.data_dir).context("opening the embedded store")?)
        }
        StoreBackend::Mysql | StoreBackend::Postgres => {
            colloquy_store::sql::connect(&cfg.store.sql).await.context(
                "connecting to store.sql (run `colloquy migrate` first on a new database)",
            )?
        }
    })
}

/// The embedded event log of the data directory `data` (in `data/events`).
/// A directory that holds only an SQLite store from an earlier colloquy is
/// refused rather than served as if it had no conversations.
pub fn open_event_log(data: &Path, cfg: LogConfig) -> anyhow::Result<LogStore> {
    let dir = data.join("events");
    if !dir.exists() && data.join("colloquy.db").exists() {
        anyhow::bail!(
            "{} holds an SQLite store (colloquy.db) and no event log; to keep using it set \
             `[store] backend = \"sqlite\"` (or COLLOQUY_STORE_BACKEND=sqlite)",
            data.display()
        );
    }
    LogStore::open(&dir, cfg).with_context(|| format!("opening the event log in {}", dir.display()))
}

/// The settings of a stage consuming `topic` as `group`.
pub fn stage_config(cfg: &Config, topic: &str, group: &str) -> StageConfig {
    StageConfig {
        max_in_flight: cfg.bus.max_in_flight,
        retry: RetryPolicy {
            max_attempts: cfg.bus.max_attempts,
            ..RetryPolicy::default()
        },
        ..StageConfig::new(topic, group)
    }
}

/// The HTTP gateway over `parts`, not yet listening.
pub fn gateway(
    cfg: &Config,
    parts: &Parts,
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
    sources: Sources,
) -> anyhow::Result<Arc<Gateway>> {
    Ok(Arc::new(
        Gateway::new(
            parts.verifier.clone(),
            parts.bus.clone(),
            Arc::new(Conversations::new(
                parts.store.clone(),
                parts.key.clone(),
                parts.policy,
            )),
            hub,
            cfg.limits.clone(),
            metrics,
            sources,
        )
        .map_err(|e| anyhow::anyhow!(e))?,
    ))
}

/// The inbound queue, whose backlog is the queue depth everywhere.
pub fn inbound_queue() -> Vec<(String, String)> {
    vec![(TOPIC_IN.to_string(), GROUP_IN.to_string())]
}

/// Listen, print where and how to talk to the server, and serve until
/// SIGTERM or Ctrl-C; returns once open requests are done.
pub async fn serve_http(
    cfg: &Config,
    parts: &Parts,
    gateway: Arc<Gateway>,
    what: &str,
) -> anyhow::Result<()> {
    let request_timeout = Duration::from_millis(Config::ms(&cfg.server.request_timeout) as u64);
    let app = router(gateway.clone()).layer(tower_http::timeout::TimeoutLayer::with_status_code(
        axum::http::StatusCode::REQUEST_TIMEOUT,
        request_timeout,
    ));
    let listener = tokio::net::TcpListener::bind(&cfg.server.listen)
        .await
        .with_context(|| format!("listening on {}", cfg.server.listen))?;
    let addr = listener.local_addr()?;
    gateway.ready.store(true, Ordering::Relaxed);
    tracing::info!(%addr, what, "serving");
    println!(
        "colloquy {} serving {what} on http://{addr}",
        env!("CARGO_PKG_VERSION"),
    );
    if cfg.auth.algorithm == Algorithm::HS256 {
        let issuer = Issuer::hs256(
            &parts.secret,
            cfg.auth.issuer.clone(),
            cfg.auth.audience.clone(),
        );
        let token = issuer.issue(
            "alice",
            Scope::Chat,
            Duration::from_secs(24 * 3600),
            unix_now(),
        )?;
        println!("development token for user alice (24 h): {token}");
        println!(
            "try: curl -s -H 'Authorization: Bearer {token}' -H 'Content-Type: application/json' \
             -d '{{\"text\":\"星云跑鞋有39码吗\"}}' 'http://{addr}/v1/conversations/alice/messages?wait_ms=2000'"
        );
    }
    let grace = Duration::from_millis(Config::ms(&cfg.server.shutdown_timeout) as u64);
    let limits = ConnectionLimits {
        max_connections: cfg.server.max_connections,
        header_timeout: Duration::from_millis(Config::ms(&cfg.server.header_timeout) as u64),
        ..ConnectionLimits::default()
    };
    colloquy_gateway::server::serve(listener, app, &limits, shutdown_signal(), grace).await;
    Ok(())
}

/// `colloquy gateway`: the HTTP/WebSocket API alone. Publishes accepted
/// messages to the bus and pushes the outcomes that workers publish to
/// `chat.out`.
pub fn gateway_role(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let cfg = crate::serve::load_config(&args)?;
    crate::serve::runtime()?.block_on(async {
        let parts = Parts::open(&cfg).await?;
        for topic in [TOPIC_IN, TOPIC_OUT] {
            parts.bus.ensure_topic(topic, cfg.bus.partitions).await?;
        }
        let hub = Arc::new(Hub::default());
        let feed = OutcomeFeed::start(parts.bus.clone(), hub.clone()).await?;
        let sources = Sources {
            bus: parts.bus.clone(),
            queues: inbound_queue(),
            stages: Vec::new(),
            l1: None,
        };
        let gateway = gateway(&cfg, &parts, hub, Arc::new(Metrics::default()), sources)?;
        serve_http(&cfg, &parts, gateway.clone(), "the gateway").await?;
        gateway.ready.store(false, Ordering::Relaxed);
        feed.stop().await;
        println!("colloquy gateway stopped");
        Ok(ExitCode::SUCCESS)
    })
}

#[derive(clap::Args)]
pub struct WorkerArgs {
    /// Stages to run: `nlu`, `policy`, or both (joined in memory).
    #[arg(long, value_delimiter = ',', default_value = "nlu,policy", value_parser = ["nlu", "policy"])]
    stages: Vec<String>,
    /// This worker's name in the ring [default: host name and process id].
    #[arg(long)]
    id: Option<String>,
    /// Serve Prometheus `/metrics` and `/healthz` on this address.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<String>,
    #[command(flatten)]
    serve: ServeArgs,
}

/// `colloquy worker --stages nlu,policy`: stage workers that own the
/// partitions a consistent-hash ring over the live workers gives them.
pub fn worker_role(args: WorkerArgs) -> anyhow::Result<ExitCode> {
    let cfg = crate::serve::load_config(&args.serve)?;
    let id = args.id.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    });
    let (nlu, policy) = (
        args.stages.iter().any(|s| s == "nlu"),
        args.stages.iter().any(|s| s == "policy"),
    );
    crate::serve::runtime()?.block_on(async {
        let parts = Parts::open(&cfg).await?;
        for topic in [TOPIC_IN, TOPIC_NLU, TOPIC_OUT] {
            parts.bus.ensure_topic(topic, cfg.bus.partitions).await?;
        }
        let metrics = Arc::new(Metrics::default());
        let deliver = Arc::new(BusDeliver::new(parts.bus.clone()));
        let observer: Arc<dyn StageObserver> = Arc::new(MetricsObserver(metrics.clone()));
        let workers = cfg.server.nlu_workers;
        // (topic, group, handler) of each stage this process runs.
        let mut stages: Vec<(&str, &str, Arc<dyn Handler>)> = Vec::new();
        if nlu && policy {
            let h = ChatHandler::new(parts.engine.clone(), workers, deliver, observer.clone());
            stages.push((TOPIC_IN, GROUP_IN, Arc::new(h)));
        } else if nlu {
            let h = NluHandler::new(
                parts.engine.clone(),
                workers,
                parts.bus.clone(),
                observer.clone(),
            );
            stages.push((TOPIC_IN, GROUP_IN, Arc::new(h)));
        } else {
            let h = PolicyHandler::new(parts.engine.clone(), deliver, observer.clone());
            stages.push((TOPIC_NLU, GROUP_POLICY, Arc::new(h)));
        }
        let ownership = OwnershipConfig {
            prefix: cfg.cluster.key_prefix.clone(),
            ttl: Duration::from_millis(Config::ms(&cfg.cluster.member_ttl) as u64),
            tick: Duration::from_millis(Config::ms(&cfg.cluster.heartbeat) as u64),
            ..OwnershipConfig::default()
        };
        let mut members = Vec::new();
        let mut sources = Sources {
            bus: parts.bus.clone(),
            queues: Vec::new(),
            stages: Vec::new(),
            l1: policy.then(|| parts.hot.clone()),
        };
        for (topic, group, handler) in stages {
            let config = stage_config(&cfg, topic, group);
            parts
                .bus
                .ensure_topic(&config.dlq_topic, cfg.bus.partitions)
                .await?;
            let stats = Arc::new(StageStats::default());
            sources.queues.push((topic.to_string(), group.to_string()));
            sources.stages.push(stats.clone());
            let stage = Stage {
                bus: parts.bus.clone(),
                config,
                handler,
                stats,
            };
            members.push(
                Member::join(&cfg.cluster.redis_url, id.clone(), stage, ownership.clone())
                    .await
                    .context("joining the worker group")?,
            );
        }
        println!(
            "colloquy worker {id} running {} on {}",
            args.stages.join(","),
            cfg.cluster.redis_url
        );
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let metrics_server = match &args.metrics {
            Some(addr) => {
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("--metrics {addr}"))?;
                println!("metrics on http://{}/metrics", listener.local_addr()?);
                let app = metrics_router(metrics.clone(), sources);
                let mut stopped = stopped.clone();
                Some(tokio::spawn(async move {
                    let until = async move {
                        let _ = stopped.changed().await;
                    };
                    let limits = ConnectionLimits::default();
                    colloquy_gateway::server::serve(
                        listener,
                        app,
                        &limits,
                        until,
                        Duration::from_secs(1),
                    )
                    .await;
                }))
            }
            None => None,
        };
        shutdown_signal().await;
        tracing::info!("leaving the group: draining and handing partitions over");
        futures_util::future::join_all(members.into_iter().map(Member::leave)).await;
        stop.send_replace(true);
        if let Some(server) = metrics_server {
            let _ = server.await;
        }
        println!("colloquy worker stopped");
        Ok(ExitCode::SUCCESS)
    })
}

/// `colloquy migrate`: create or upgrade the schema of every shard of the
/// configured SQL store.
pub fn migrate(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let cfg = crate::serve::load_config(&args)?;
    if matches!(
        cfg.store.backend,
        StoreBackend::EventLog | StoreBackend::Sqlite
    ) {
        println!("the embedded stores upgrade themselves when they open; nothing to migrate");
        return Ok(ExitCode::SUCCESS);
    }
    crate::serve::runtime()?.block_on(async {
        let report = colloquy_store::sql::migrate(&cfg.store.sql)
            .await
            .context("migrating store.sql")?;
        for u in &report.upgraded {
            println!(
                "{} shard {:02}: schema {} -> {}",
                u.database, u.shard, u.from, u.to
            );
        }
        println!(
            "{} shards upgraded, {} already current",
            report.upgraded.len(),
            report.current
        );
        Ok(ExitCode::SUCCESS)
    })
}

//! `colloquy serve`: every role in one process on the embedded backends.

use crate::config::Config;
use crate::keys;
use anyhow::Context;
use colloquy_bus::runner::{RetryPolicy, StageConfig, StageRunner};
use colloquy_bus::{Bus, EmbeddedBus};
use colloquy_gateway::api::{router, Gateway};
use colloquy_gateway::auth::{Algorithm, Issuer, Scope, Verifier};
use colloquy_gateway::hub::Hub;
use colloquy_gateway::metrics::Metrics;
use colloquy_gateway::server::ConnectionLimits;
use colloquy_store::{
    sqlite::SqliteStore, ConversationStore, Conversations, SnapshotKey, SnapshotPolicy,
};
use colloquy_worker::pipeline::{ChatHandler, TOPIC_IN};
use colloquy_worker::{load_bot, Engine};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

#[derive(clap::Args)]
pub struct ServeArgs {
    /// TOML settings file; `COLLOQUY_<SECTION>_<KEY>` variables override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Data directory [default: ./data].
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// Bot directory [default: bots/shoe-store].
    #[arg(long, value_name = "DIR")]
    bot: Option<PathBuf>,
}

/// The consumer group of the stage that reads the inbound topic.
const GROUP: &str = "colloquy-pipeline";

pub fn load_config(args: &ServeArgs) -> anyhow::Result<Config> {
    let mut cfg = Config::load(args.config.as_deref(), std::env::vars())?;
    if let Some(l) = &args.listen {
        cfg.server.listen = l.clone();
    }
    if let Some(d) = &args.data {
        cfg.server.data_dir = d.clone();
    }
    if let Some(b) = &args.bot {
        cfg.server.bot = b.clone();
    }
    Ok(cfg)
}

/// The HS256 secret: configured, from `COLLOQUY_JWT_SECRET`, or generated
/// once and kept in the data directory.
pub fn hs_secret(cfg: &Config) -> anyhow::Result<Vec<u8>> {
    match &cfg.auth.secret {
        Some(s) => Ok(s.clone().into_bytes()),
        None => keys::load_or_create(&cfg.server.data_dir, "jwt.secret", "COLLOQUY_JWT_SECRET"),
    }
}

pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let cfg = load_config(&args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve(cfg))
}

async fn serve(cfg: Config) -> anyhow::Result<ExitCode> {
    let data = cfg.server.data_dir.clone();
    std::fs::create_dir_all(&data).with_context(|| format!("creating {}", data.display()))?;
    let bot = load_bot(&cfg.server.bot).map_err(|e| anyhow::anyhow!("{e}"))?;
    let bot_id = bot.bot.id.clone();
    let secret = hs_secret(&cfg)?;
    let verifier = Verifier::new(&cfg.auth, Some(&secret)).context("auth settings")?;

    let bus: Arc<dyn Bus> = Arc::new(
        EmbeddedBus::open(&data.join("bus"), cfg.bus.embedded.clone())
            .context("opening the embedded bus")?,
    );
    bus.ensure_topic(TOPIC_IN, cfg.bus.partitions).await?;
    let stage = StageConfig {
        max_in_flight: cfg.bus.max_in_flight,
        retry: RetryPolicy {
            max_attempts: cfg.bus.max_attempts,
            ..RetryPolicy::default()
        },
        ..StageConfig::new(TOPIC_IN, GROUP)
    };
    bus.ensure_topic(&stage.dlq_topic, cfg.bus.partitions)
        .await?;

    let key = SnapshotKey::new(keys::load_or_create(
        &data,
        "snapshot.key",
        "COLLOQUY_SNAPSHOT_KEY",
    )?)
    .context("snapshot key")?;
    let store: Arc<dyn ConversationStore> =
        Arc::new(SqliteStore::open(&data).context("opening the store")?);
    let policy = SnapshotPolicy {
        every_events: cfg.store.snapshot_every_events.max(1),
        every_ms: Config::ms(&cfg.store.snapshot_interval),
    };
    let engine = Arc::new(Engine::new(
        Arc::new(bot),
        Conversations::new(store.clone(), key.clone(), policy),
    ));
    let hub = Arc::new(Hub::default());
    let metrics = Arc::new(Metrics::default());
    let handler = ChatHandler::new(engine, cfg.server.nlu_workers, hub.clone(), metrics.clone());
    let runner = StageRunner::spawn(bus.clone(), stage, Arc::new(handler)).await?;

    let gateway = Arc::new(
        Gateway::new(
            verifier,
            bus.clone(),
            Arc::new(Conversations::new(store, key, policy)),
            hub,
            cfg.limits.clone(),
            metrics,
            GROUP.into(),
            vec![runner.stats()],
        )
        .map_err(|e| anyhow::anyhow!(e))?,
    );
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
    tracing::info!(%addr, bot = %bot_id.name, version = %bot_id.version, "serving");
    println!(
        "colloquy {} serving {} {} on http://{addr}",
        env!("CARGO_PKG_VERSION"),
        bot_id.name,
        bot_id.version
    );
    if cfg.auth.algorithm == Algorithm::HS256 {
        let issuer = Issuer::hs256(&secret, cfg.auth.issuer.clone(), cfg.auth.audience.clone());
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
    // Stop accepting happened above; now drain the pipeline.
    gateway.ready.store(false, Ordering::Relaxed);
    tracing::info!("draining in-flight messages");
    if tokio::time::timeout(grace, runner.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "in-flight messages did not finish in time; they will be redelivered on restart"
        );
    }
    println!("colloquy stopped");
    Ok(ExitCode::SUCCESS)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM");
            let _ = ctrl_c.await;
            return;
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutdown requested: no longer accepting connections");
}

#[derive(clap::Args)]
pub struct TokenArgs {
    /// User id the token acts for (its `sub`).
    #[arg(long)]
    user: String,
    /// `chat` acts only for the user; `admin` for anyone.
    #[arg(long, default_value = "chat", value_parser = ["chat", "admin"])]
    scope: String,
    /// Lifetime, e.g. 30m, 1h, 7d.
    #[arg(long, default_value = "1h")]
    ttl: String,
    #[command(flatten)]
    serve: ServeArgs,
}

pub fn token(args: TokenArgs) -> anyhow::Result<ExitCode> {
    colloquy_core::check_user_id(&args.user).map_err(|e| anyhow::anyhow!("--user: {e}"))?;
    let cfg = load_config(&args.serve)?;
    if cfg.auth.algorithm != Algorithm::HS256 {
        anyhow::bail!("tokens for {:?} are issued by whoever holds the private key; colloquy only issues HS256", cfg.auth.algorithm);
    }
    let ttl =
        colloquy_gateway::auth::parse_ttl(&args.ttl).map_err(|e| anyhow::anyhow!("--ttl: {e}"))?;
    let scope = if args.scope == "admin" {
        Scope::Admin
    } else {
        Scope::Chat
    };
    let issuer = Issuer::hs256(
        &hs_secret(&cfg)?,
        cfg.auth.issuer.clone(),
        cfg.auth.audience.clone(),
    );
    println!("{}", issuer.issue(&args.user, scope, ttl, unix_now())?);
    Ok(ExitCode::SUCCESS)
}

//! `colloquy serve`: every role in one process (embedded backends by
//! default), and `colloquy token`.

use crate::config::Config;
use crate::{keys, roles};
use colloquy_bus::runner::StageRunner;
use colloquy_core::wire::{GROUP_IN, TOPIC_IN};
use colloquy_gateway::auth::{Algorithm, Issuer, Scope};
use colloquy_gateway::hub::Hub;
use colloquy_gateway::metrics::{Metrics, Sources};
use colloquy_worker::pipeline::ChatHandler;
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
    runtime()?.block_on(serve(cfg))
}

pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// `colloquy serve`: gateway, bus and both stages in one process, the
/// stages joined in memory and replies handed to the gateway directly.
async fn serve(cfg: Config) -> anyhow::Result<ExitCode> {
    let parts = roles::Parts::open(&cfg).await?;
    let bot_id = parts.engine.bot().bot.id.clone();
    parts.bus.ensure_topic(TOPIC_IN, cfg.bus.partitions).await?;
    let stage = roles::stage_config(&cfg, TOPIC_IN, GROUP_IN);
    parts
        .bus
        .ensure_topic(&stage.dlq_topic, cfg.bus.partitions)
        .await?;
    let hub = Arc::new(Hub::default());
    let metrics = Arc::new(Metrics::default());
    let handler = ChatHandler::new(
        parts.engine.clone(),
        cfg.server.nlu_workers,
        Arc::new(roles::HubDeliver(hub.clone())),
        Arc::new(roles::MetricsObserver(metrics.clone())),
    );
    let runner = StageRunner::spawn(parts.bus.clone(), stage, Arc::new(handler)).await?;
    let sources = Sources {
        bus: parts.bus.clone(),
        queues: roles::inbound_queue(),
        stages: vec![runner.stats()],
        l1: Some(parts.hot.clone()),
    };
    let gateway = roles::gateway(&cfg, &parts, hub, metrics, sources)?;
    roles::serve_http(
        &cfg,
        &parts,
        gateway.clone(),
        &format!("{} {}", bot_id.name, bot_id.version),
    )
    .await?;
    // Stop accepting happened above; now drain the pipeline.
    gateway.ready.store(false, Ordering::Relaxed);
    tracing::info!("draining in-flight messages");
    let grace = Duration::from_millis(Config::ms(&cfg.server.shutdown_timeout) as u64);
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

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub async fn shutdown_signal() {
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

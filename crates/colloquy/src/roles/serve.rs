//! `colloquy serve`: gateway, bus and both stages in one process (embedded
//! backends by default), the stages joined in memory and replies handed to
//! the gateway directly.

use crate::config::{Config, ConfigArgs};
use crate::telemetry::{LogFormat, Role};
use crate::wiring::{self, HubDeliver, MetricsObserver};
use colloquy_bus::runner::StageRunner;
use colloquy_core::wire::{GROUP_IN, TOPIC_IN};
use colloquy_gateway::hub::Hub;
use colloquy_gateway::metrics::{Metrics, Sources};
use colloquy_worker::pipeline::ChatHandler;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;

pub fn run(args: ConfigArgs, logs: LogFormat) -> anyhow::Result<ExitCode> {
    let cfg = Config::from_args(&args)?;
    let telemetry = cfg.telemetry.clone();
    wiring::run_role(&telemetry, Role::Serve, logs, serve(cfg))
}

async fn serve(cfg: Config) -> anyhow::Result<ExitCode> {
    wiring::create_data_dir(&cfg)?;
    let (verifier, secret) = wiring::verifier(&cfg).await?;
    let ring = wiring::key_ring(&cfg)?;
    let bus = wiring::open_bus(&cfg, &ring)?;
    let store = wiring::open_store(&cfg, &ring).await?;
    let key = wiring::snapshot_key(&cfg)?;
    let conversations = wiring::conversations(&cfg, store.clone(), key.clone());
    let hot = wiring::hot_states(&cfg, &key, &ring)?;
    let registry = wiring::open_registry(&cfg).await?;
    let engine =
        Arc::new(wiring::engine(&cfg, registry.clone(), store, key, hot.clone(), "serve").await?);
    let table = engine.versions().current();
    let stable = table.assigned("").1.bot.id.clone();

    bus.ensure_topic(TOPIC_IN, cfg.bus.partitions).await?;
    let stage = cfg.bus.stage(TOPIC_IN, GROUP_IN);
    bus.ensure_topic(&stage.dlq_topic, cfg.bus.partitions)
        .await?;
    let hub = Arc::new(Hub::default());
    let metrics = Arc::new(Metrics::default());
    let handler = ChatHandler::new(
        engine,
        cfg.server.nlu_workers,
        Arc::new(HubDeliver(hub.clone())),
        Arc::new(MetricsObserver(metrics.clone())),
    );
    let runner = StageRunner::spawn(bus.clone(), stage, Arc::new(handler)).await?;
    let sources = Sources {
        bus: bus.clone(),
        queues: wiring::inbound_queue(),
        stages: vec![runner.stats()],
        l1: Some(hot),
    };
    let mut gateway = wiring::gateway(&cfg, verifier, bus, conversations, hub, metrics, sources)?;
    gateway.registry = registry;
    gateway.user_id_baggage = cfg.telemetry.user_id_baggage;
    let gateway = Arc::new(gateway);
    wiring::serve_http(
        &cfg,
        gateway.clone(),
        &format!("{} {}", stable.name, stable.version),
        Some(&secret),
    )
    .await?;
    // Stop accepting happened above; now drain the pipeline.
    gateway.ready.store(false, Ordering::Relaxed);
    tracing::info!("draining in-flight messages");
    if tokio::time::timeout(cfg.server.shutdown_timeout, runner.shutdown())
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

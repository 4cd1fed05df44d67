//! `colloquy worker --stages nlu,policy,action`: stage workers that own the
//! partitions a consistent-hash ring over the live workers gives them.
//! Membership lives in Redis, so the role needs the `redis` feature.

use crate::config::ConfigArgs;
use crate::telemetry::LogFormat;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct WorkerArgs {
    /// Stages to run: `nlu`, `policy`, `action`, or several. Stages in one
    /// process are joined in memory; a policy stage without the action
    /// stage hands remote action calls to `chat.action`, for action
    /// workers to make.
    #[arg(long, value_delimiter = ',', default_value = "nlu,policy,action", value_parser = ["nlu", "policy", "action"])]
    stages: Vec<String>,
    /// This worker's name in the ring [default: host name and process id].
    #[arg(long)]
    id: Option<String>,
    /// Serve Prometheus `/metrics` and `/healthz` on this address.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<String>,
    #[command(flatten)]
    config: ConfigArgs,
}

pub fn run(args: WorkerArgs, logs: LogFormat) -> anyhow::Result<ExitCode> {
    #[cfg(feature = "redis")]
    return run_member(args, logs);
    #[cfg(not(feature = "redis"))]
    {
        let _ = (args, logs);
        anyhow::bail!(
            "colloquy worker keeps its group membership in Redis: it needs a colloquy built \
             with the `redis` cargo feature (it is on by default)"
        )
    }
}

#[cfg(feature = "redis")]
fn run_member(args: WorkerArgs, logs: LogFormat) -> anyhow::Result<ExitCode> {
    use crate::config::Config;
    use crate::telemetry::Role;
    use crate::wiring::{self, MetricsObserver};
    use anyhow::Context;
    use colloquy_bus::runner::{Handler, StageStats};
    use colloquy_core::wire::{
        GROUP_ACTION, GROUP_IN, GROUP_POLICY, TOPIC_ACTION, TOPIC_IN, TOPIC_NLU, TOPIC_OUT,
    };
    use colloquy_gateway::api::metrics_router;
    use colloquy_gateway::metrics::{Metrics, Sources};
    use colloquy_gateway::server::ConnectionLimits;
    use colloquy_worker::ownership::{Member, OwnershipConfig, Stage};
    use colloquy_worker::pipeline::{
        ActionHandler, BusDeliver, ChatHandler, NluHandler, PolicyHandler, StageObserver,
    };
    use std::sync::Arc;
    use std::time::Duration;

    let cfg = Config::from_args(&args.config)?;
    let id = args.id.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    });
    let runs = |stage: &str| args.stages.iter().any(|s| s == stage);
    let (nlu, policy, action) = (runs("nlu"), runs("policy"), runs("action"));
    wiring::run_role(&cfg.telemetry, Role::Worker, logs, async {
        wiring::create_data_dir(&cfg)?;
        let ring = wiring::key_ring(&cfg)?;
        let bus = wiring::open_bus(&cfg, &ring)?;
        let store = wiring::open_store(&cfg, &ring).await?;
        let key = wiring::snapshot_key(&cfg)?;
        let hot = wiring::hot_states(&cfg, &key, &ring)?;
        let registry = wiring::open_registry(&cfg).await?;
        let engine = wiring::engine(&cfg, registry, store, key, hot.clone(), "worker").await?;
        let engine = Arc::new(if policy && !action {
            engine.deferring_actions()
        } else {
            engine
        });
        for topic in [TOPIC_IN, TOPIC_NLU, TOPIC_OUT, TOPIC_ACTION] {
            bus.ensure_topic(topic, cfg.bus.partitions).await?;
        }
        let metrics = Arc::new(Metrics::default());
        let deliver = Arc::new(BusDeliver::new(bus.clone()));
        let observer: Arc<dyn StageObserver> = Arc::new(MetricsObserver(metrics.clone()));
        let workers = cfg.server.nlu_workers;
        // (topic, group, handler) of each stage this process runs.
        let mut stages: Vec<(&str, &str, Arc<dyn Handler>)> = Vec::new();
        if nlu && policy {
            let h = ChatHandler::new(engine.clone(), workers, deliver.clone(), observer.clone());
            stages.push((TOPIC_IN, GROUP_IN, Arc::new(h)));
        } else if nlu {
            let h = NluHandler::new(engine.clone(), workers, bus.clone(), observer.clone());
            stages.push((TOPIC_IN, GROUP_IN, Arc::new(h)));
        } else if policy {
            let h = PolicyHandler::new(engine.clone(), deliver.clone(), observer.clone());
            stages.push((TOPIC_NLU, GROUP_POLICY, Arc::new(h)));
        }
        // With the policy stage here too, this process's turns call their
        // actions themselves; it still takes the calls other policy-only
        // workers hand over.
        if action {
            let h = ActionHandler::new(engine, deliver, observer);
            stages.push((TOPIC_ACTION, GROUP_ACTION, Arc::new(h)));
        }
        let ownership = OwnershipConfig {
            prefix: cfg.cluster.key_prefix.clone(),
            ttl: cfg.cluster.member_ttl,
            tick: cfg.cluster.heartbeat,
            ..OwnershipConfig::default()
        };
        let mut members = Vec::new();
        let mut sources = Sources {
            bus: bus.clone(),
            queues: Vec::new(),
            stages: Vec::new(),
            l1: policy.then_some(hot),
        };
        for (topic, group, handler) in stages {
            let config = cfg.bus.stage(topic, group);
            bus.ensure_topic(&config.dlq_topic, cfg.bus.partitions)
                .await?;
            let stats = Arc::new(StageStats::default());
            sources.queues.push((topic.to_string(), group.to_string()));
            sources.stages.push(stats.clone());
            let stage = Stage {
                bus: bus.clone(),
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
        // Listening for SIGTERM before saying it runs (see shutdown_signal).
        let terminated = wiring::shutdown_signal();
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
        terminated.await;
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

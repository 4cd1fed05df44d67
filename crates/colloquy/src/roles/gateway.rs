//! `colloquy gateway`: the HTTP/WebSocket API alone. Publishes accepted
//! messages to the bus and pushes the outcomes that workers publish to
//! `chat.out`. It loads no bot, trains no NLU and opens no L1: it reads
//! the store only to answer the event and state APIs.

use crate::config::{Config, ConfigArgs};
use crate::telemetry::{LogFormat, Role};
use crate::wiring;
use colloquy_core::wire::{TOPIC_IN, TOPIC_OUT};
use colloquy_gateway::feed::OutcomeFeed;
use colloquy_gateway::hub::Hub;
use colloquy_gateway::metrics::{Metrics, Sources};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;

pub fn run(args: ConfigArgs, logs: LogFormat) -> anyhow::Result<ExitCode> {
    let cfg = Config::from_args(&args)?;
    wiring::run_role(&cfg.telemetry, Role::Gateway, logs, async {
        wiring::create_data_dir(&cfg)?;
        let (verifier, _) = wiring::verifier(&cfg).await?;
        let ring = wiring::key_ring(&cfg)?;
        let bus = wiring::open_bus(&cfg, &ring)?;
        let store = wiring::open_store(&cfg, &ring).await?;
        let conversations = wiring::conversations(&cfg, store, wiring::snapshot_key(&cfg)?);
        for topic in [TOPIC_IN, TOPIC_OUT] {
            bus.ensure_topic(topic, cfg.bus.partitions).await?;
        }
        let hub = Arc::new(Hub::default());
        let feed = OutcomeFeed::start(bus.clone(), hub.clone()).await?;
        let sources = Sources {
            bus: bus.clone(),
            queues: wiring::inbound_queue(),
            stages: Vec::new(),
            l1: None,
        };
        let metrics = Arc::new(Metrics::default());
        let registry = wiring::open_registry(&cfg).await?;
        let mut gateway =
            wiring::gateway(&cfg, verifier, bus, conversations, hub, metrics, sources)?;
        gateway.registry = registry;
        gateway.user_id_baggage = cfg.telemetry.user_id_baggage;
        let gateway = Arc::new(gateway);
        wiring::serve_http(&cfg, gateway.clone(), "the gateway", None).await?;
        gateway.ready.store(false, Ordering::Relaxed);
        feed.stop().await;
        println!("colloquy gateway stopped");
        Ok(ExitCode::SUCCESS)
    })
}

//! Replies produced by workers in other processes: each gateway follows
//! every partition of `chat.out` and hands the outcomes to its own hub,
//! which pushes those of users connected here and drops the rest.
//!
//! A gateway starts following at the end of the topic: an outcome
//! published while no gateway of a user's connection was following is not
//! lost, it is in the event log, where a reconnecting WebSocket client
//! catches up with `after=SEQ`. So the feed commits nothing.

use crate::hub::Hub;
use colloquy_bus::{trace, Bus, BusError};
use colloquy_core::wire::{Outcome, TOPIC_OUT};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Records asked for per fetch.
const BATCH: usize = 512;
/// Long-poll wait of a fetch.
const POLL: Duration = Duration::from_millis(500);

/// A running feed; [`OutcomeFeed::stop`] ends it.
pub struct OutcomeFeed {
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl OutcomeFeed {
    /// Follow every partition of `chat.out` from its current end.
    pub async fn start(bus: Arc<dyn Bus>, hub: Arc<Hub>) -> Result<OutcomeFeed, BusError> {
        let (stop, stopped) = watch::channel(false);
        let mut tasks = JoinSet::new();
        for partition in 0..bus.partitions(TOPIC_OUT).await? {
            let from = bus.end_offset(TOPIC_OUT, partition).await?;
            tasks.spawn(follow(
                bus.clone(),
                hub.clone(),
                partition,
                from,
                stopped.clone(),
            ));
        }
        Ok(OutcomeFeed { stop, tasks })
    }

    pub async fn stop(mut self) {
        self.stop.send_replace(true);
        while self.tasks.join_next().await.is_some() {}
    }
}

async fn follow(
    bus: Arc<dyn Bus>,
    hub: Arc<Hub>,
    partition: u32,
    mut next: u64,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        let fetched = tokio::select! {
            r = bus.fetch(TOPIC_OUT, partition, next, BATCH, POLL) => r,
            _ = stopped.changed() => return,
        };
        match fetched {
            Ok(records) => {
                for r in records {
                    next = r.offset + 1;
                    // The turn's trace goes on here, from the worker's
                    // publish to this gateway's delivery.
                    let span = tracing::debug_span!(
                        "consume",
                        otel.name = "consume chat.out",
                        otel.kind = "consumer",
                        messaging.destination.name = TOPIC_OUT,
                    );
                    trace::continue_from(&span, &r.headers);
                    let _consuming = span.enter();
                    match serde_json::from_slice::<Outcome>(&r.payload) {
                        Ok(outcome) => hub.push(outcome),
                        Err(e) => tracing::warn!(partition, offset = r.offset, error = %e,
                            "skipping a record of chat.out that is not an outcome"),
                    }
                }
            }
            Err(e) => {
                tracing::warn!(partition, error = %e, "following chat.out failed; retrying");
                // Fell out of retention, or the bus was away: go live again
                // from the end once it answers. Whatever is skipped is in
                // the event log, for clients to catch up from.
                tokio::select! {
                    _ = tokio::time::sleep(POLL) => {}
                    _ = stopped.changed() => return,
                }
                if let Ok(end) = bus.end_offset(TOPIC_OUT, partition).await {
                    next = end;
                }
            }
        }
    }
}

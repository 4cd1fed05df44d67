//! The chat pipeline as bus stages. In `colloquy serve` the `nlu` and
//! `policy` stages run in one process, joined in memory: a record of the
//! inbound topic is done (and its offset may be committed) only once the
//! policy stage has appended its events, so a crash anywhere redelivers it.

use crate::engine::{Engine, EngineError};
use async_trait::async_trait;
use colloquy_bus::runner::{Handler, HandlerError};
use colloquy_bus::Record;
use colloquy_core::{Event, NluResult};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Topic the gateway publishes accepted messages to, keyed by user id.
pub const TOPIC_IN: &str = "chat.in";

/// A user message as it travels on the bus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Inbound {
    pub user: String,
    pub message_id: String,
    pub text: String,
    /// When the gateway accepted it; the policy's notion of "now", so a
    /// redelivery decides exactly as the first run did.
    pub ts_ms: i64,
}

/// What the policy stage produced for one message.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub user: String,
    pub message_id: String,
    pub replies: Vec<String>,
    /// Events appended for it (empty when it was a repeat).
    pub events: Vec<Event>,
    /// The user's last seq after the turn.
    pub seq: u64,
}

/// Where outcomes go: the gateway's waiters and WebSocket streams.
pub trait Deliver: Send + Sync {
    fn deliver(&self, outcome: Outcome);
}

/// Counters a stage reports; the binary exports them as metrics.
pub trait StageObserver: Send + Sync {
    fn message(&self, stage: &'static str, outcome: &'static str);
    fn intent(&self, intent: Option<&str>);
}

/// The NLU stage: a pool of workers behind a bounded queue, so CPU-bound
/// classification neither blocks the I/O threads nor grows without bound.
pub struct NluStage {
    tx: mpsc::Sender<(String, oneshot::Sender<NluResult>)>,
}

impl NluStage {
    pub fn spawn(engine: Arc<Engine>, workers: usize, queue: usize) -> NluStage {
        let (tx, rx) = mpsc::channel::<(String, oneshot::Sender<NluResult>)>(queue.max(1));
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        for _ in 0..workers.max(1) {
            let rx = rx.clone();
            let engine = engine.clone();
            tokio::spawn(async move {
                loop {
                    let next = rx.lock().await.recv().await;
                    let Some((text, reply)) = next else { break };
                    // Dropped receiver = the caller gave up; nothing to do.
                    let _ = reply.send(engine.understand(&text));
                }
            });
        }
        NluStage { tx }
    }

    pub async fn run(&self, text: String) -> Result<NluResult, HandlerError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send((text, tx))
            .await
            .map_err(|_| HandlerError::Retryable("nlu stage stopped".into()))?;
        rx.await
            .map_err(|_| HandlerError::Retryable("nlu stage stopped".into()))
    }
}

/// Handles records of `TOPIC_IN`: NLU stage, then the policy stage, then
/// delivery of the replies.
pub struct ChatHandler {
    nlu: NluStage,
    engine: Arc<Engine>,
    deliver: Arc<dyn Deliver>,
    observer: Arc<dyn StageObserver>,
}

impl ChatHandler {
    pub fn new(
        engine: Arc<Engine>,
        nlu_workers: usize,
        deliver: Arc<dyn Deliver>,
        observer: Arc<dyn StageObserver>,
    ) -> ChatHandler {
        let nlu = NluStage::spawn(engine.clone(), nlu_workers, 1024);
        ChatHandler {
            nlu,
            engine,
            deliver,
            observer,
        }
    }
}

#[async_trait]
impl Handler for ChatHandler {
    async fn handle(&self, record: &Record) -> Result<(), HandlerError> {
        let msg: Inbound = serde_json::from_slice(&record.payload).map_err(|e| {
            self.observer.message("nlu", "invalid");
            HandlerError::Permanent(format!("not an inbound message: {e}"))
        })?;
        let nlu = self.nlu.run(msg.text.clone()).await?;
        self.observer.message("nlu", "ok");
        let reply = match self
            .engine
            .decide(&msg.user, &msg.message_id, &msg.text, &nlu, msg.ts_ms)
            .await
        {
            Ok(r) => r,
            Err(e) => {
                self.observer.message("policy", "error");
                return Err(match &e {
                    EngineError::Store(s) if !s.is_retryable() => {
                        HandlerError::Permanent(e.to_string())
                    }
                    _ => HandlerError::Retryable(e.to_string()),
                });
            }
        };
        if reply.events.is_empty() {
            self.observer.message("policy", "duplicate");
        } else {
            self.observer.message("policy", "ok");
            self.observer.intent(nlu.intent.as_deref());
        }
        self.deliver.deliver(Outcome {
            user: msg.user,
            message_id: msg.message_id,
            replies: reply.replies,
            events: reply.events,
            seq: reply.state.seq,
        });
        Ok(())
    }
}

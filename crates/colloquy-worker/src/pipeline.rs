//! The chat pipeline as bus stages: `chat.in` → nlu → `chat.nlu` → policy →
//! `chat.out`, and policy → `chat.action` → action → `chat.out` for turns
//! that stop for a remote action when the action stage runs elsewhere. Stages placed in one process are joined in memory
//! ([`ChatHandler`]: a record of `chat.in` is done only once the policy has
//! appended its events and the replies are delivered); stages in different
//! processes are joined by the bus ([`NluHandler`], [`PolicyHandler`]). A
//! record is done, and its offset may be committed, only after what the
//! stage produced is durable downstream, so a crash anywhere redelivers it.

use crate::engine::{Classified, Engine, EngineError, Settled, TurnFacts};
use async_trait::async_trait;
use colloquy_bus::runner::{Handler, HandlerError};
use colloquy_bus::{Bus, Record};
use colloquy_core::wire::{
    ActionCall, Inbound, Outcome, Understood, TOPIC_ACTION, TOPIC_NLU, TOPIC_OUT,
};
use std::sync::Arc;
use tokio::sync::Semaphore;
use tracing::Instrument;

/// Where outcomes go: the gateway's waiters and WebSocket streams, in this
/// process or (through `chat.out`) in another.
#[async_trait]
pub trait Deliver: Send + Sync {
    /// `Ok` once the outcome is handed over for good; an error makes the
    /// stage retry the message (the policy's second run is a no-op).
    async fn deliver(&self, outcome: Outcome) -> Result<(), HandlerError>;

    /// Hand a turn that stopped for a remote action to the action stage,
    /// which delivers the outcome once the action is answered. Only a
    /// deliverer whose engine defers actions is asked to.
    async fn hand_over(&self, call: ActionCall) -> Result<(), HandlerError> {
        Err(HandlerError::Permanent(format!(
            "user {}: the turn waits for a remote action, and no action stage is wired",
            call.user
        )))
    }
}

/// Delivers outcomes to whichever gateway holds the user's connection, by
/// publishing them to `chat.out` keyed by user id.
pub struct BusDeliver {
    bus: Arc<dyn Bus>,
}

impl BusDeliver {
    pub fn new(bus: Arc<dyn Bus>) -> BusDeliver {
        BusDeliver { bus }
    }
}

#[async_trait]
impl Deliver for BusDeliver {
    async fn deliver(&self, outcome: Outcome) -> Result<(), HandlerError> {
        let payload = serde_json::to_vec(&outcome)
            .map_err(|e| HandlerError::Permanent(format!("encoding an outcome: {e}")))?;
        publish(&*self.bus, TOPIC_OUT, &outcome.user, payload).await
    }

    async fn hand_over(&self, call: ActionCall) -> Result<(), HandlerError> {
        let payload = serde_json::to_vec(&call)
            .map_err(|e| HandlerError::Permanent(format!("encoding an action call: {e}")))?;
        publish(&*self.bus, TOPIC_ACTION, &call.user, payload).await
    }
}

async fn publish(
    bus: &dyn Bus,
    topic: &str,
    key: &str,
    payload: Vec<u8>,
) -> Result<(), HandlerError> {
    match colloquy_bus::trace::publish(bus, topic, key, payload, None).await {
        Ok(_) => Ok(()),
        // Downstream full or the broker away: the record waits (its offset
        // is not committed) until the bus takes it; it is never dropped.
        Err(e) if e.is_retryable() => Err(HandlerError::Unavailable(format!(
            "publishing to {topic}: {e}"
        ))),
        Err(e) => Err(HandlerError::Retryable(format!(
            "publishing to {topic}: {e}"
        ))),
    }
}

/// Counters a stage reports; the binary exports them as metrics.
pub trait StageObserver: Send + Sync {
    fn message(&self, stage: &'static str, outcome: &'static str);
    /// A turn the policy stage answered (not a redelivered one), with the
    /// version that answered it.
    fn turn(&self, turn: &TurnFacts);
    /// This process rolled `bot`'s canary back because a guard tripped.
    fn guard_tripped(&self, bot: &str);
    /// This process checks `bot`'s guards: its trip count starts at 0, so
    /// that an alert on its increase has a series to look at.
    fn guards_watched(&self, bot: &str);
    /// One attempt at a remote action call: `ok`, `refused` (400, 404, a
    /// malformed answer), `error` (retryable), `needs_domain` (449) or
    /// `circuit_open` (not attempted), and how long it took.
    fn action_call(&self, action: &str, outcome: &'static str, took: std::time::Duration);
    /// An action endpoint's circuit breaker changed state.
    fn breaker(&self, endpoint: &str, state: crate::actions::BreakerState);
    /// A compensation of `saga` failed in every round and was set aside
    /// (the `compensation_abandoned` event is its dead letter).
    fn compensation_abandoned(&self, saga: &str);
    /// A loaded bot has the saga `saga`: its count of abandoned
    /// compensations starts at 0, so an alert on its increase has a series.
    fn saga_watched(&self, saga: &str);
}

/// The NLU stage: classifications run on the calling task, at most
/// `workers` at once. A classification of a chat message took 5-70 µs under
/// load (measured), too short to be worth a hop to another task or thread:
/// handing each one to a pool task and back cost two wake-ups per message.
/// Callers waiting for a permit are bounded by the stage runner's
/// in-flight limit.
pub struct NluStage {
    engine: Arc<Engine>,
    permits: Semaphore,
}

impl NluStage {
    pub fn new(engine: Arc<Engine>, workers: usize) -> NluStage {
        NluStage {
            engine,
            permits: Semaphore::new(workers.max(1)),
        }
    }

    pub async fn run(&self, user: &str, text: &str) -> Result<Classified, HandlerError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| HandlerError::Retryable("nlu stage stopped".into()))?;
        let span = tracing::debug_span!("nlu", bot.version = tracing::field::Empty);
        let _classifying = span.enter();
        let classified = self.engine.understand(user, text);
        span.record("bot.version", classified.version.as_str());
        Ok(classified)
    }
}

/// The nlu and policy stages joined in memory: handles records of
/// `TOPIC_IN` through to delivered replies.
pub struct ChatHandler {
    nlu: NluStage,
    policy: PolicyHandler,
}

impl ChatHandler {
    pub fn new(
        engine: Arc<Engine>,
        nlu_workers: usize,
        deliver: Arc<dyn Deliver>,
        observer: Arc<dyn StageObserver>,
    ) -> ChatHandler {
        ChatHandler {
            nlu: NluStage::new(engine.clone(), nlu_workers),
            policy: PolicyHandler::new(engine, deliver, observer),
        }
    }
}

#[async_trait]
impl Handler for ChatHandler {
    async fn handle(&self, record: &Record) -> Result<(), HandlerError> {
        let inbound: Inbound = decode(record, &*self.policy.observer, "nlu")?;
        let classified = self.nlu.run(&inbound.user, &inbound.text).await?;
        self.policy.observer.message("nlu", "ok");
        self.policy.decide(inbound, classified).await
    }
}

/// The nlu stage on its own: `TOPIC_IN` → `TOPIC_NLU`.
pub struct NluHandler {
    nlu: NluStage,
    bus: Arc<dyn Bus>,
    observer: Arc<dyn StageObserver>,
}

impl NluHandler {
    pub fn new(
        engine: Arc<Engine>,
        nlu_workers: usize,
        bus: Arc<dyn Bus>,
        observer: Arc<dyn StageObserver>,
    ) -> NluHandler {
        NluHandler {
            nlu: NluStage::new(engine, nlu_workers),
            bus,
            observer,
        }
    }
}

#[async_trait]
impl Handler for NluHandler {
    async fn handle(&self, record: &Record) -> Result<(), HandlerError> {
        let inbound: Inbound = decode(record, &*self.observer, "nlu")?;
        let Classified { nlu, version } = self.nlu.run(&inbound.user, &inbound.text).await?;
        let user = inbound.user.clone();
        let payload = serde_json::to_vec(&Understood {
            inbound,
            nlu,
            version,
        })
        .map_err(|e| HandlerError::Permanent(format!("encoding an nlu result: {e}")))?;
        publish(&*self.bus, TOPIC_NLU, &user, payload).await?;
        self.observer.message("nlu", "ok");
        Ok(())
    }
}

/// The policy stage: load state, step, append, deliver. On its own it
/// consumes `TOPIC_NLU`.
pub struct PolicyHandler {
    engine: Arc<Engine>,
    deliver: Arc<dyn Deliver>,
    observer: Arc<dyn StageObserver>,
}

impl PolicyHandler {
    pub fn new(
        engine: Arc<Engine>,
        deliver: Arc<dyn Deliver>,
        observer: Arc<dyn StageObserver>,
    ) -> PolicyHandler {
        engine.versions().observe(observer.clone());
        engine.actions().observe(observer.clone());
        PolicyHandler {
            engine,
            deliver,
            observer,
        }
    }

    async fn decide(&self, msg: Inbound, classified: Classified) -> Result<(), HandlerError> {
        let reply = match self
            .engine
            .decide(
                &msg.user,
                &msg.message_id,
                &msg.text,
                &classified,
                msg.ts_ms,
            )
            .instrument(tracing::debug_span!("policy"))
            .await
        {
            Ok(r) => r,
            Err(e) => {
                self.observer.message("policy", "error");
                return Err(match &e {
                    // The database is away: wait for it, however long.
                    EngineError::Store(s) if s.is_retryable() => {
                        HandlerError::Unavailable(e.to_string())
                    }
                    EngineError::Store(_) => HandlerError::Permanent(e.to_string()),
                    EngineError::Contended { .. } => HandlerError::Retryable(e.to_string()),
                    // Per-user order: the message waits behind the action.
                    EngineError::Waiting { .. } => HandlerError::Unavailable(e.to_string()),
                });
            }
        };
        match &reply.turn {
            None => self.observer.message("policy", "duplicate"),
            Some(turn) => {
                self.observer.message("policy", "ok");
                self.observer.turn(turn);
            }
        }
        if let Some(pending) = reply.pending {
            return self
                .deliver
                .hand_over(ActionCall {
                    user: msg.user,
                    message_id: msg.message_id,
                    key: pending.key,
                    ts_ms: msg.ts_ms,
                    replies: reply.replies,
                    events: reply.events,
                })
                .await;
        }
        self.deliver
            .deliver(Outcome {
                user: msg.user,
                message_id: msg.message_id,
                replies: reply.replies,
                events: reply.events,
                seq: reply.state.seq,
            })
            .await
    }
}

/// The action stage on its own: consumes `TOPIC_ACTION`, calls the action
/// a turn stopped for, appends the result and what the flow did next, and
/// delivers the turn's whole outcome. A redelivered call whose result is in
/// the log is not called again; its replies are delivered again.
pub struct ActionHandler {
    engine: Arc<Engine>,
    deliver: Arc<dyn Deliver>,
    observer: Arc<dyn StageObserver>,
}

impl ActionHandler {
    pub fn new(
        engine: Arc<Engine>,
        deliver: Arc<dyn Deliver>,
        observer: Arc<dyn StageObserver>,
    ) -> ActionHandler {
        engine.actions().observe(observer.clone());
        ActionHandler {
            engine,
            deliver,
            observer,
        }
    }
}

#[async_trait]
impl Handler for ActionHandler {
    async fn handle(&self, record: &Record) -> Result<(), HandlerError> {
        let call: ActionCall = decode(record, &*self.observer, "action")?;
        let settled = self
            .engine
            .settle_call(&call.user, &call.message_id, call.key, call.ts_ms)
            .await
            .map_err(|e| {
                self.observer.message("action", "error");
                match &e {
                    EngineError::Store(s) if !s.is_retryable() => {
                        HandlerError::Permanent(e.to_string())
                    }
                    // The call is never dropped: the user's turns wait on it.
                    _ => HandlerError::Unavailable(e.to_string()),
                }
            })?;
        let (replies, events, seq) = match settled {
            Settled::Now {
                events,
                replies,
                seq,
            } => {
                self.observer.message("action", "ok");
                let mut all = call.replies;
                all.extend(replies);
                let mut appended = call.events;
                appended.extend(events);
                (all, appended, seq)
            }
            Settled::Before { replies, seq } => {
                self.observer.message("action", "duplicate");
                (replies, Vec::new(), seq)
            }
        };
        self.deliver
            .deliver(Outcome {
                user: call.user,
                message_id: call.message_id,
                replies,
                events,
                seq,
            })
            .await
    }
}

#[async_trait]
impl Handler for PolicyHandler {
    async fn handle(&self, record: &Record) -> Result<(), HandlerError> {
        let Understood {
            inbound,
            nlu,
            version,
        } = decode(record, &*self.observer, "policy")?;
        self.decide(inbound, Classified { nlu, version }).await
    }
}

fn decode<T: serde::de::DeserializeOwned>(
    record: &Record,
    observer: &dyn StageObserver,
    stage: &'static str,
) -> Result<T, HandlerError> {
    serde_json::from_slice(&record.payload).map_err(|e| {
        observer.message(stage, "invalid");
        HandlerError::Permanent(format!(
            "{}/{}@{}: not a {stage} stage message: {e}",
            record.topic, record.partition, record.offset
        ))
    })
}

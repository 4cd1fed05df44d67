//! Handling one message: the policy stage's unit of work.

use crate::actions::ActionStage;
use crate::loader::LoadedBot;
use crate::versions::Versions;
use colloquy_core::redact;
use colloquy_core::{resume, step, Event, EventKind, Input, NluResult, PendingAction, State};
use colloquy_store::l1::{HotStates, HotStats, MemoryHotStates, MEMORY_L1_USERS};
use colloquy_store::{Conversations, StoreError};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

/// What handling a message produced.
#[derive(Debug, Clone)]
pub struct Reply {
    pub replies: Vec<String>,
    /// The events appended for this message (empty for a duplicate).
    pub events: Vec<Event>,
    /// The user's state after the message; shared with the L1.
    pub state: Arc<State>,
    /// What the turn was, for metrics; `None` for a duplicate.
    pub turn: Option<TurnFacts>,
    /// The remote action the turn stopped for, when the action stage runs
    /// elsewhere ([`Engine::deferring_actions`]): the caller hands it over.
    pub pending: Option<Box<PendingAction>>,
}

/// One answered turn as metrics and rollout guards count it.
#[derive(Debug, Clone, PartialEq)]
pub struct TurnFacts {
    /// The version that answered (the one its events name).
    pub version: String,
    /// The intent the policy acted on (`None`: below threshold).
    pub intent: Option<String>,
    /// The bot said its fallback response.
    pub fallback: bool,
    pub handoff: bool,
    /// Remote action calls of the turn that failed for good.
    pub action_errors: u64,
    /// The policy stage's time for the turn: state, step and durable
    /// append, and a second classification when the route asked for one.
    pub latency: Duration,
}

impl TurnFacts {
    fn of(
        version: &str,
        intent: Option<&str>,
        fallback: &str,
        events: &[Event],
        latency: Duration,
    ) -> TurnFacts {
        let said = |e: &Event| matches!(&e.kind, EventKind::BotSaid { response: Some(r), .. } if r == fallback);
        TurnFacts {
            version: version.to_string(),
            intent: intent.map(String::from),
            fallback: events.iter().any(said),
            handoff: events
                .iter()
                .any(|e| matches!(e.kind, EventKind::HandedOff { .. })),
            action_errors: events
                .iter()
                .filter(|e| matches!(e.kind, EventKind::ActionFailed { .. }))
                .count() as u64,
            latency,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("user {user}: gave up after {attempts} conflicting writers")]
    Contended { user: String, attempts: u32 },
    /// The user's conversation waits for a remote action that the action
    /// stage (another process) has not answered yet; the message waits.
    #[error("user {user}: waiting for the remote action `{action}`")]
    Waiting { user: String, action: String },
}

/// How often a message is re-run after losing an expected-seq race to
/// another writer of the same user before the error goes to the caller.
const CONFLICT_RETRIES: u32 = 3;

pub struct Engine {
    versions: Arc<Versions>,
    conversations: Conversations,
    hot: Arc<dyn HotStates>,
    actions: ActionStage,
    /// Remote actions are called by an action stage in another process
    /// (`chat.action`), not by this engine's policy turns.
    defer_actions: bool,
}

/// What settling one handed-over call gave.
pub enum Settled {
    /// Answered now: the events appended and replies made.
    Now {
        events: Vec<Event>,
        replies: Vec<String>,
        seq: u64,
    },
    /// Answered before (a redelivered call): every reply of the message,
    /// read back from the log.
    Before { replies: Vec<String>, seq: u64 },
}

/// Events appended and replies made in one delivery of a message.
#[derive(Default)]
struct Produced {
    events: Vec<Event>,
    replies: Vec<String>,
}

/// An NLU result and the bot version whose NLU produced it.
#[derive(Debug, Clone)]
pub struct Classified {
    pub nlu: NluResult,
    pub version: String,
}

impl Engine {
    /// An engine with a private in-memory L1 of [`MEMORY_L1_USERS`] users.
    pub fn new(bot: Arc<LoadedBot>, conversations: Conversations) -> Self {
        Engine::with_hot_states(
            bot,
            conversations,
            Arc::new(MemoryHotStates::new(MEMORY_L1_USERS)),
        )
    }

    /// An engine whose L1 is `hot`, e.g. a Redis one shared with other
    /// workers.
    pub fn with_hot_states(
        bot: Arc<LoadedBot>,
        conversations: Conversations,
        hot: Arc<dyn HotStates>,
    ) -> Self {
        Engine::routed(Arc::new(Versions::single(bot)), conversations, hot)
    }

    /// An engine that routes every turn to a version by the rollout in
    /// `versions`, which a [`crate::versions::Follower`] keeps current.
    pub fn routed(
        versions: Arc<Versions>,
        conversations: Conversations,
        hot: Arc<dyn HotStates>,
    ) -> Self {
        Engine {
            versions,
            conversations,
            hot,
            actions: ActionStage::default(),
            defer_actions: false,
        }
    }

    /// The same engine leaving remote actions to an action stage in
    /// another process: a turn that stops for one returns it in
    /// [`Reply::pending`], and a later message of the user waits
    /// ([`EngineError::Waiting`]) until the action stage has answered.
    pub fn deferring_actions(mut self) -> Self {
        self.defer_actions = true;
        self
    }

    pub fn actions(&self) -> &ActionStage {
        &self.actions
    }

    /// The L1's counters, for a hit-ratio metric.
    pub fn hot_stats(&self) -> HotStats {
        self.hot.stats()
    }

    pub fn versions(&self) -> &Arc<Versions> {
        &self.versions
    }

    /// Run the NLU stage on a message's text, with the NLU of the version
    /// the rollout assigns to `user`.
    pub fn understand(&self, user: &str, text: &str) -> Classified {
        let table = self.versions.current();
        let (version, bot) = table.assigned(user);
        Classified {
            nlu: bot.nlu.parse(text),
            version: version.to_string(),
        }
    }

    /// Handle one user message at `now_ms`: NLU, then the policy.
    pub async fn handle(
        &self,
        user: &str,
        message_id: &str,
        text: &str,
        now_ms: i64,
    ) -> Result<Reply, EngineError> {
        let nlu = self.understand(user, text);
        self.decide(user, message_id, text, &nlu, now_ms).await
    }

    /// The policy stage: load state, route to a version, step, append.
    /// Idempotent by `message_id`: a message already in the log appends
    /// nothing and returns the replies it got the first time.
    pub async fn decide(
        &self,
        user: &str,
        message_id: &str,
        text: &str,
        understood: &Classified,
        now_ms: i64,
    ) -> Result<Reply, EngineError> {
        let started = Instant::now();
        let table = self.versions.current();
        for _ in 0..CONFLICT_RETRIES {
            let mut state = self.take(user).await?;
            if self.defer_actions && state.pending.is_some() {
                // The action stage appends the result from another
                // process: a hot copy that still waits may be stale.
                self.hot.forget(user).await;
                state = self.conversations.load(user).await?;
            }
            let mut produced = Produced::default();
            let state = match &state.pending {
                // Handed over to the action stage, which has not answered:
                // a redelivery of the message that stopped for it hands it
                // over again; a later message waits.
                Some(p) if self.defer_actions => {
                    let pending = Some(p.clone());
                    let seen = state.has_seen(message_id);
                    let action = p.action.clone();
                    let replies = if seen {
                        Some(self.replies_in_log(&state, message_id).await)
                    } else {
                        None
                    };
                    let state = Arc::new(state);
                    self.hot.put(Arc::clone(&state)).await;
                    return match replies {
                        Some(replies) => Ok(Reply {
                            replies: replies?,
                            events: Vec::new(),
                            state,
                            turn: None,
                            pending,
                        }),
                        None => Err(EngineError::Waiting {
                            user: user.to_string(),
                            action,
                        }),
                    };
                }
                // A remote action still pending (the process died during
                // the call, or the append after it failed) comes first:
                // the user's turns wait behind it, and the call is
                // repeated with its key.
                Some(_) => match self.settle(&table, state, now_ms, &mut produced).await {
                    Ok(s) => s,
                    Err(StoreError::Conflict { .. }) => {
                        self.hot.forget(user).await;
                        continue;
                    }
                    Err(e) => {
                        self.hot.forget(user).await;
                        return Err(e.into());
                    }
                },
                None => state,
            };
            if state.has_seen(message_id) {
                let replies = self.replies_in_log(&state, message_id).await;
                let state = Arc::new(state);
                self.hot.put(Arc::clone(&state)).await;
                return Ok(Reply {
                    replies: replies?,
                    events: produced.events,
                    state,
                    turn: None,
                    pending: None,
                });
            }
            let (route, bot) = table.route(&state, now_ms);
            // Classified by another version than the one answering (a
            // pinned session, or the rollout changed in between): classify
            // again with the answering version's NLU.
            let reclassified;
            let nlu = if bot.bot.id.version == understood.version {
                &understood.nlu
            } else {
                reclassified = bot.nlu.parse(text);
                &reclassified
            };
            let input = Input {
                message_id,
                text,
                nlu,
                route: route.as_ref(),
            };
            let turn = step(&bot.bot, state, &input, now_ms, seed(user, message_id));
            let committed = self
                .conversations
                .commit(&turn.state, &turn.events)
                .instrument(append_span(&turn.events))
                .await;
            // The actions the turn asked for, answered before the turn is
            // done: their replies go with its own.
            let committed = match committed {
                Ok(()) => {
                    produced.events.extend(turn.events);
                    produced.replies.extend(turn.replies);
                    if self.defer_actions {
                        Ok(turn.state)
                    } else {
                        self.settle(&table, turn.state, now_ms, &mut produced).await
                    }
                }
                Err(e) => Err(e),
            };
            match committed {
                Ok(state) => {
                    let state = Arc::new(state);
                    self.hot.put(Arc::clone(&state)).await;
                    let facts = TurnFacts::of(
                        &bot.bot.id.version,
                        nlu.intent.as_deref(),
                        &bot.bot.fallback,
                        &produced.events,
                        started.elapsed(),
                    );
                    self.versions.turns.record(&facts, user);
                    return Ok(Reply {
                        replies: produced.replies,
                        events: produced.events,
                        pending: state.pending.clone().filter(|_| self.defer_actions),
                        state,
                        turn: Some(facts),
                    });
                }
                Err(StoreError::Conflict { .. }) => {
                    // Another writer got there first: the hot state we
                    // started from was stale (or there was none).
                    self.hot.forget(user).await;
                    tracing::debug!(
                        user,
                        message_id,
                        "lost an append race; re-running on fresh state"
                    );
                }
                Err(e) => {
                    // Whether the append landed is unknown; the next load
                    // must ask the log.
                    self.hot.forget(user).await;
                    return Err(e.into());
                }
            }
        }
        Err(EngineError::Contended {
            user: user.to_string(),
            attempts: CONFLICT_RETRIES,
        })
    }

    /// Call the remote action `state` waits for, apply its result, and go
    /// on until the state waits for none (a result may ask for another
    /// action). Each result is appended before the next call, so a crash
    /// repeats at most the call in flight, with the same key. The version
    /// the user is routed to answers (its `resume` and its action's
    /// settings).
    async fn settle(
        &self,
        table: &crate::versions::Table,
        mut state: State,
        now_ms: i64,
        out: &mut Produced,
    ) -> Result<State, StoreError> {
        while let Some(pending) = state.pending.clone() {
            let (_, bot) = table.route(&state, now_ms);
            if let Some(pause) = compensation_pause(&bot.bot, &pending) {
                tokio::time::sleep(pause).await;
            }
            // The tracker's events: this delivery's own when it holds the
            // message (the common case, and no read), else the end of the
            // log (a call left pending by a crash).
            let read;
            let recent: &[Event] = if out
                .events
                .iter()
                .any(|e| matches!(e.kind, EventKind::UserSaid { .. }))
            {
                let from = out.events.len().saturating_sub(TRACKER_EVENTS as usize);
                &out.events[from..]
            } else {
                read = self
                    .conversations
                    .store()
                    .events_after(
                        &state.user_id,
                        state.seq.saturating_sub(TRACKER_EVENTS),
                        TRACKER_EVENTS as usize,
                    )
                    .await?;
                &read
            };
            let result = self.actions.call(&bot.bot, &state, &pending, recent).await;
            // The turn's time, as the policy's "now" always is (never
            // before the log's end).
            let at = now_ms.max(state.last_ts_ms);
            let seed = seed(&state.user_id, &pending.key.to_string());
            let turn = resume(&bot.bot, state, &result, at, seed);
            self.conversations
                .commit(&turn.state, &turn.events)
                .instrument(append_span(&turn.events))
                .await?;
            for e in &turn.events {
                if let EventKind::CompensationAbandoned { call, .. } = &e.kind {
                    tracing::error!(user = %turn.state.user_id, saga = call.saga, event = %e.event_id,
                        "a compensation failed in every round and is set aside");
                    self.actions.abandoned(&call.saga);
                }
            }
            out.events.extend(turn.events);
            out.replies.extend(turn.replies);
            state = turn.state;
        }
        Ok(state)
    }

    /// The action stage on its own: answer the call `key` that the
    /// message `message_id` of `user` stopped for (and any the result asks
    /// for next), at the message's time `now_ms`. A call already answered
    /// (a redelivery) gives the message's replies from the log.
    pub async fn settle_call(
        &self,
        user: &str,
        message_id: &str,
        key: uuid::Uuid,
        now_ms: i64,
    ) -> Result<Settled, EngineError> {
        for _ in 0..CONFLICT_RETRIES {
            // From the log, not a hot copy: the policy stage appends from
            // another process, and a stale copy would repeat a call.
            self.hot.forget(user).await;
            let state = self.conversations.load(user).await?;
            if state.pending.as_ref().map(|p| p.key) != Some(key) {
                let replies = self.replies_in_log(&state, message_id).await;
                let seq = state.seq;
                self.hot.put(Arc::new(state)).await;
                return Ok(Settled::Before {
                    replies: replies?,
                    seq,
                });
            }
            let table = self.versions.current();
            let mut produced = Produced::default();
            match self.settle(&table, state, now_ms, &mut produced).await {
                Ok(state) => {
                    let seq = state.seq;
                    self.hot.put(Arc::new(state)).await;
                    return Ok(Settled::Now {
                        events: produced.events,
                        replies: produced.replies,
                        seq,
                    });
                }
                Err(StoreError::Conflict { .. }) => self.hot.forget(user).await,
                Err(e) => {
                    self.hot.forget(user).await;
                    return Err(e.into());
                }
            }
        }
        Err(EngineError::Contended {
            user: user.to_string(),
            attempts: CONFLICT_RETRIES,
        })
    }

    /// A user's current state for a turn: the hot copy, handed over, if
    /// there is one (the turn puts the new state back), else snapshot +
    /// replay from the store. A hot copy shared with other workers may lag
    /// the log; only an append (which checks the seq) can tell.
    async fn take(&self, user: &str) -> Result<State, StoreError> {
        match self.hot.take(user).await {
            Some(s) => Ok(s),
            None => self.conversations.load(user).await,
        }
    }

    /// The bot's replies to an earlier message, read back from the log,
    /// masked as the log's pages are: they were delivered in full once,
    /// and a repeat carries no events a reader could mask them by.
    async fn replies_in_log(
        &self,
        state: &State,
        message_id: &str,
    ) -> Result<Vec<String>, StoreError> {
        let from = state.seq.saturating_sub(REPLAY_WINDOW);
        let mut events = self
            .conversations
            .store()
            .events_after(&state.user_id, from, REPLAY_WINDOW as usize)
            .await?;
        let secrets = redact::Secrets::of(state, &events);
        redact::mask_events(&mut events, &secrets);
        let mut replies = Vec::new();
        let mut inside = false;
        for e in events {
            match e.kind {
                EventKind::UserSaid { message_id: m, .. } => inside = m == message_id,
                EventKind::BotSaid { text, .. } if inside => replies.push(text),
                _ => {}
            }
        }
        Ok(replies)
    }
}

/// Before a saga's compensation is requested again: its backoff, doubled
/// each round after the second, at most 30 s. The user's turns wait
/// meanwhile, as they do behind any pending call.
fn compensation_pause(bot: &colloquy_core::Bot, pending: &PendingAction) -> Option<Duration> {
    let call = pending
        .saga
        .as_ref()
        .filter(|c| c.compensation && c.round > 1)?;
    let base = bot.sagas.get(&call.saga)?.compensation_backoff_ms;
    let ms = base.saturating_mul(1 << (call.round - 2).min(16));
    Some(Duration::from_millis(ms.min(30_000)))
}

/// The span of one durable append of a turn's events.
fn append_span(events: &[Event]) -> tracing::Span {
    tracing::debug_span!("store.append", events = events.len())
}

/// How much of the end of a user's log an action server gets as the
/// tracker's events.
const TRACKER_EVENTS: u64 = 100;

/// How far back a repeated message's replies are looked for; the state
/// remembers the ids of the last `RECENT_MESSAGES` messages, whose turns
/// fit well within this many events.
const REPLAY_WINDOW: u64 = 1024;

/// The policy's seed: derived from the message, so a redelivery draws the
/// same lottery prize and picks the same response variants (FNV-1a).
fn seed(user: &str, message_id: &str) -> u64 {
    colloquy_core::rollout::fnv1a(user.bytes().chain([0]).chain(message_id.bytes()))
}

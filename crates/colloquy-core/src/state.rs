//! Conversation state: a pure fold of a user's events. Nothing else may
//! change it, so replaying the log (or a snapshot plus the rest of the log)
//! always gives the same state.

use crate::event::{Event, EventKind};
use crate::rollout::Route;
use crate::value::Value;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

/// How many recent message ids the state remembers, so that a redelivered
/// message is recognised and not processed twice.
pub const RECENT_MESSAGES: usize = 64;

/// Where the active flow stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowPosition {
    pub flow: String,
    pub step: usize,
    pub attempts: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub user_id: String,
    /// Seq of the last event folded in (0 = empty log).
    pub seq: u64,
    /// Timestamp of the last event folded in, ms since the epoch.
    pub last_ts_ms: i64,
    /// Session number, 0 before the first session starts.
    pub session: u64,
    pub slots: BTreeMap<String, Value>,
    /// Slots whose values are sensitive: the API masks them in the state and
    /// in events it returns, and the stores seal them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sensitive: Vec<String>,
    pub flow: Option<FlowPosition>,
    pub last_intent: Option<String>,
    #[serde(deserialize_with = "crate::value::finite_f32")]
    pub last_confidence: f32,
    pub handed_off: bool,
    /// Ids of the most recent user messages, oldest first. Shared strings:
    /// a state is cloned a few times per turn (hot cache in and out), and
    /// these were most of its allocations.
    pub recent_messages: VecDeque<Arc<str>>,
    /// The bot version the user's turns go to, and why. Absent before the
    /// first routed turn; left out of the JSON then, so a snapshot written
    /// before versions were routed re-serializes to the bytes it was
    /// signed over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<Route>,
    /// A remote action the policy waits for; the user's next turn runs
    /// only once it is resolved. Absent (and left out of the JSON, as
    /// `route`) when there is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<Box<PendingAction>>,
    /// Only in a state's stored form (a snapshot, a Redis copy): the values
    /// of the `sensitive` slots sealed (an AEAD ciphertext naming its key),
    /// while `slots` holds them masked. `None` in every state in memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<Box<str>>,
}

/// A remote action requested and not yet answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingAction {
    pub action: String,
    /// The idempotency key of the call (the `action_requested` event id).
    pub key: uuid::Uuid,
    /// Seq of the `action_requested` event.
    pub seq: u64,
    /// Id of the `action_requested` event: the ids of the result's events
    /// derive from it. The key, for a call outside a saga.
    pub request: uuid::Uuid,
    /// Where the call stands in a saga, if it is a saga's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub saga: Option<Box<crate::event::SagaCall>>,
}

impl State {
    pub fn new(user_id: impl Into<String>) -> Self {
        State {
            user_id: user_id.into(),
            ..State::default()
        }
    }

    /// Fold a whole log from empty.
    pub fn from_events<'a>(user_id: &str, events: impl IntoIterator<Item = &'a Event>) -> Self {
        let mut s = State::new(user_id);
        for e in events {
            s.apply(e);
        }
        s
    }

    pub fn has_seen(&self, message_id: &str) -> bool {
        self.recent_messages.iter().any(|m| &**m == message_id)
    }

    /// Fold one event in. Events must come in seq order; an event at or
    /// below the current seq was already folded and is ignored, which makes
    /// replay after a snapshot safe whatever overlap the reader fetched.
    pub fn apply(&mut self, e: &Event) {
        if e.seq <= self.seq {
            return;
        }
        self.seq = e.seq;
        self.last_ts_ms = e.ts_ms;
        match &e.kind {
            EventKind::SessionStarted { session, kept } => {
                self.session = *session;
                self.slots.retain(|k, _| kept.contains(k));
                self.sensitive.retain(|k| kept.contains(k));
                self.flow = None;
                self.handed_off = false;
            }
            EventKind::UserSaid { message_id, .. } => {
                if self.recent_messages.len() == RECENT_MESSAGES {
                    self.recent_messages.pop_front();
                }
                self.recent_messages
                    .push_back(Arc::from(message_id.as_str()));
            }
            EventKind::IntentRecognised {
                intent, confidence, ..
            } => {
                self.last_intent = intent.clone();
                self.last_confidence = *confidence;
            }
            EventKind::SlotSet {
                slot,
                value,
                sensitive,
            } => {
                self.slots.insert(slot.clone(), value.clone());
                let known = self.sensitive.iter().any(|s| s == slot);
                if *sensitive && !known {
                    self.sensitive.push(slot.clone());
                }
            }
            EventKind::SlotCleared { slot } => {
                self.slots.remove(slot);
                self.sensitive.retain(|s| s != slot);
            }
            EventKind::FlowStarted { flow } => {
                self.flow = Some(FlowPosition {
                    flow: flow.clone(),
                    step: 0,
                    attempts: 0,
                });
            }
            EventKind::FlowStep {
                flow,
                step,
                attempts,
            } => {
                self.flow = Some(FlowPosition {
                    flow: flow.clone(),
                    step: *step,
                    attempts: *attempts,
                });
            }
            EventKind::FlowEnded { .. } => self.flow = None,
            EventKind::HandedOff { .. } => self.handed_off = true,
            EventKind::RouteChanged {
                version,
                reason,
                tail,
            } => {
                self.route = Some(Route {
                    version: version.clone(),
                    reason: *reason,
                    tail: *tail,
                })
            }
            EventKind::ActionRequested {
                action, key, saga, ..
            } => {
                self.pending = Some(Box::new(PendingAction {
                    action: action.clone(),
                    key: *key,
                    seq: e.seq,
                    request: e.event_id,
                    saga: saga.clone(),
                }))
            }
            EventKind::ActionCompleted { key, .. } | EventKind::ActionFailed { key, .. } => {
                if self.pending.as_ref().is_some_and(|p| p.key == *key) {
                    self.pending = None;
                }
            }
            EventKind::SlotRejected { .. }
            | EventKind::SagaStarted { .. }
            | EventKind::CompensationAbandoned { .. }
            | EventKind::SagaEnded { .. }
            | EventKind::ActionCalled { .. }
            | EventKind::BotSaid { .. } => {}
        }
    }
}

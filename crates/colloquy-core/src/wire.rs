//! The stage messages every role exchanges over the bus, and the names of
//! the topics and consumer groups they travel through. Plain serde types:
//! the gateway that publishes an [`Inbound`] and the worker that consumes
//! it share this definition and nothing else.

use crate::event::Event;
use crate::nlu::NluResult;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Topic the gateway publishes accepted messages to, keyed by user id.
pub const TOPIC_IN: &str = "chat.in";
/// Messages with their NLU result, from the nlu stage to the policy stage.
pub const TOPIC_NLU: &str = "chat.nlu";
/// Outcomes of the policy stage, for the gateways to push to clients.
pub const TOPIC_OUT: &str = "chat.out";
/// Remote action calls, from a policy stage to the action stage when the
/// two run in different processes.
pub const TOPIC_ACTION: &str = "chat.action";

/// Consumer group of the stage reading [`TOPIC_IN`] (nlu, or nlu + policy
/// joined in memory); its backlog is the queue depth every role reports.
pub const GROUP_IN: &str = "colloquy-pipeline";
/// Consumer group of the policy stage on its own, reading [`TOPIC_NLU`].
pub const GROUP_POLICY: &str = "colloquy-policy";
/// Consumer group of the action stage on its own, reading [`TOPIC_ACTION`].
pub const GROUP_ACTION: &str = "colloquy-action";

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

/// A message and what the nlu stage made of it, as it travels on the bus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Understood {
    #[serde(flatten)]
    pub inbound: Inbound,
    pub nlu: NluResult,
    /// The bot version whose NLU classified it; the policy stage
    /// classifies again if another version answers. Empty in records
    /// written before versions were routed.
    #[serde(default)]
    pub version: String,
}

/// What the policy stage produced for one message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub user: String,
    pub message_id: String,
    pub replies: Vec<String>,
    /// Events appended for it (empty when it was a repeat).
    pub events: Vec<Event>,
    /// The user's last seq after the turn.
    pub seq: u64,
}

/// A turn that stopped for a remote action, handed to the action stage:
/// the call to make is the user's pending action `key` (the log says what
/// it is), and the outcome to deliver once it is answered begins with the
/// turn's own `replies` and `events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionCall {
    pub user: String,
    pub message_id: String,
    pub key: Uuid,
    /// The message's time: the policy's "now" for the result.
    pub ts_ms: i64,
    pub replies: Vec<String>,
    pub events: Vec<Event>,
}

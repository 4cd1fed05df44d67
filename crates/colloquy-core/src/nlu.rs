//! What the NLU stage hands to the policy. Produced by `colloquy-nlu`, kept
//! here so the policy and the event log do not depend on how it was computed.

use crate::value::Value;
use serde::{Deserialize, Serialize};

/// One intent with the classifier's confidence in it (0..=1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IntentScore {
    pub name: String,
    pub confidence: f32,
}

/// One entity found in the text: which entity definition matched, the
/// normalised value, and where (char offsets into the normalised text).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntityMatch {
    pub entity: String,
    pub value: Value,
    pub text: String,
    pub start: usize,
    pub end: usize,
}

/// The NLU result for one user message. `intents` is ranked, best first;
/// `intent` is the best one if it cleared the bot's threshold, else `None`
/// (the policy then falls back unless a flow is waiting for a slot).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NluResult {
    pub intent: Option<String>,
    pub confidence: f32,
    pub intents: Vec<IntentScore>,
    pub entities: Vec<EntityMatch>,
}

//! What a remote action answered, as the policy applies it. The worker's
//! action stage turns the action server's reply (Rasa's protocol) into an
//! [`ActionResult`]; [`crate::policy::resume`] records it and goes on with
//! the flow.

use crate::value::Value;
use uuid::Uuid;

/// The result of the call whose idempotency key is `key`.
#[derive(Debug, Clone, PartialEq)]
pub struct ActionResult {
    pub key: Uuid,
    pub outcome: ActionOutcome,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ActionOutcome {
    /// The action server answered: apply `effects`, then say `responses`.
    Completed {
        effects: Vec<Effect>,
        responses: Vec<Said>,
        /// What the answer held that is not applied, and why (recorded).
        ignored: Vec<String>,
    },
    /// No usable answer within the deadline and retries, or the action
    /// rejected the call.
    Failed { reason: String, attempts: u32 },
}

/// A change to the conversation the action asked for.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Set a slot; `None` clears it (Rasa's `null`).
    SetSlot { slot: String, value: Option<Value> },
    /// Clear every slot.
    ResetSlots,
    /// Run this remote action next, before the flow goes on.
    Followup { action: String },
}

/// Something the action asked the bot to say.
#[derive(Debug, Clone, PartialEq)]
pub enum Said {
    /// Literal text, with what else the message held (buttons, image,
    /// custom payload) kept as sent.
    Text {
        text: String,
        payload: Option<serde_json::Value>,
    },
    /// One of the bot's responses, rendered with the slots and these
    /// variables (which win over slots of the same name).
    Named {
        response: String,
        variables: Vec<(String, Value)>,
    },
}

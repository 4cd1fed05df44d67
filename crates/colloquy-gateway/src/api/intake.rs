//! The one way a user message enters the pipeline, whether it came by HTTP
//! POST or as a WebSocket frame: normalise the text, check the client's
//! message id, answer a repeated id with the first acknowledgement, publish
//! to the inbound queue, and register the waiter for the replies.

use super::error::{internal, ApiError};
use super::Gateway;
use crate::input::InputError;
use axum::http::StatusCode;
use colloquy_bus::BusError;
use colloquy_core::user_event_id;
use colloquy_core::wire::{Inbound, Outcome, TOPIC_IN};
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// How many acknowledgements are remembered for idempotent retries.
const RECENT_ACKS: usize = 100_000;

/// Recently accepted (user, message id) → position in the inbound queue,
/// so that a client retrying with the same id gets the same answer.
#[derive(Default)]
pub(super) struct Acks {
    recent: Mutex<Recent>,
}

#[derive(Default)]
struct Recent {
    map: HashMap<(String, String), u64>,
    order: VecDeque<(String, String)>,
}

/// A message on the inbound queue.
pub(super) struct Accepted {
    pub(super) message_id: String,
    event_id: uuid::Uuid,
    seq: u64,
    /// Receives the outcome, when the client waits for the replies.
    pub(super) waiter: Option<oneshot::Receiver<Arc<Outcome>>>,
}

impl Accepted {
    pub(super) fn body(&self) -> Value {
        json!({"event_id": self.event_id, "message_id": self.message_id, "seq": self.seq})
    }

    pub(super) fn replied(&self, outcome: &Outcome) -> Value {
        json!({
            "event_id": self.event_id,
            "message_id": self.message_id,
            "seq": self.seq,
            "log_seq": outcome.seq,
            "replies": outcome.replies,
        })
    }
}

fn check_message_id(id: &str) -> Result<(), ApiError> {
    if id.is_empty()
        || id.len() > 128
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-:".contains(c))
    {
        return Err(ApiError::bad(
            "invalid_id",
            "id must be 1-128 characters of A-Z a-z 0-9 . _ - :",
        ));
    }
    Ok(())
}

fn refused(e: InputError) -> ApiError {
    let status = if matches!(e, InputError::Denied) {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::BAD_REQUEST
    };
    ApiError::new(status, e.code(), e.to_string())
}

/// Check, normalise and durably enqueue one message.
pub(super) async fn accept(
    gw: &Gateway,
    user: &str,
    raw: String,
    id: Option<String>,
    wait: bool,
) -> Result<Accepted, ApiError> {
    let text = gw.input.normalise(&raw).map_err(refused)?;
    if let Some(id) = &id {
        check_message_id(id)?;
    }
    let message_id = id.unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let event_id = user_event_id(user, &message_id);
    let waiter = wait.then(|| gw.hub.wait_for(user, &message_id));
    let key = (user.to_string(), message_id.clone());
    let prev = gw
        .acks
        .recent
        .lock()
        .expect("ack lock")
        .map
        .get(&key)
        .copied();
    if let Some(prev) = prev {
        if wait {
            // It may have been handled already: ask the pipeline again; the
            // policy answers a repeat from the log without re-running it.
            publish(gw, user, &message_id, &text).await?;
        }
        return Ok(Accepted {
            message_id,
            event_id,
            seq: prev,
            waiter,
        });
    }
    let pos = publish(gw, user, &message_id, &text).await?;
    let mut recent = gw.acks.recent.lock().expect("ack lock");
    if recent.order.len() >= RECENT_ACKS {
        if let Some(old) = recent.order.pop_front() {
            recent.map.remove(&old);
        }
    }
    recent.order.push_back(key.clone());
    recent.map.insert(key, pos);
    Ok(Accepted {
        message_id,
        event_id,
        seq: pos,
        waiter,
    })
}

async fn publish(gw: &Gateway, user: &str, message_id: &str, text: &str) -> Result<u64, ApiError> {
    let msg = Inbound {
        user: user.into(),
        message_id: message_id.into(),
        text: text.into(),
        ts_ms: (gw.clock)(),
    };
    let payload = serde_json::to_vec(&msg).map_err(internal)?;
    match gw.bus.publish(TOPIC_IN, user, payload, Vec::new()).await {
        Ok(pos) => Ok(pos.offset),
        Err(BusError::Full { .. } | BusError::Overloaded { .. }) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "too many messages are queued; retry shortly",
        )
        .retry_after(1)),
        Err(e) => Err(internal(e)),
    }
}

//! The one way a user message enters the pipeline, whether it came by HTTP
//! POST or as a WebSocket frame: normalise the text, check the client's
//! message id, answer a repeated id with the first acknowledgement, publish
//! to the inbound queue, and register the waiter for the replies.

use super::error::{internal, ApiError};
use super::Gateway;
use crate::auth::Principal;
use crate::input::{InputError, InputPolicy};
use crate::ratelimit::{retry_after_secs, Limited};
use axum::http::StatusCode;
use colloquy_bus::{trace, BusError};
use colloquy_core::user_event_id;
use colloquy_core::wire::{Inbound, Outcome, TOPIC_IN};
use opentelemetry::KeyValue;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use tokio::sync::{oneshot, watch};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The attribute and baggage entry naming the user (OpenTelemetry's
/// semantic conventions), where the operator enabled it.
const USER_ID: &str = "user.id";

/// How many acknowledgements are remembered for idempotent retries.
const RECENT_ACKS: usize = 100_000;

/// A user and one of their message ids.
type Key = (String, String);

/// What became of a publish, for the duplicates that waited on it: `None`
/// until it is over.
type Published = Option<Result<u64, ApiError>>;

/// The acknowledgements of recent messages, so that a client sending the
/// same message id again (a retry, or the same message twice at once) gets
/// the same answer and the message is published once.
///
/// A key is reserved before its message is published, not recorded after:
/// otherwise every concurrent duplicate finds nothing and publishes too.
/// Reservations in flight are bounded by the requests in flight (the
/// server bounds connections); finished ones by `capacity`, oldest first.
pub(super) struct Acks {
    capacity: usize,
    recent: Mutex<Recent>,
}

#[derive(Default)]
struct Recent {
    map: HashMap<Key, Entry>,
    /// Finished keys, oldest first.
    order: VecDeque<Key>,
}

enum Entry {
    /// On the inbound queue at this position.
    Done(u64),
    /// Being published by the request that reserved it.
    Pending(watch::Receiver<Published>),
}

/// What a request is to do with its key.
enum Claim<'a> {
    /// Accepted before, at this position.
    Known(u64),
    /// Another request is publishing it; its result comes through here.
    InFlight(watch::Receiver<Published>),
    /// This request publishes it and reports how that went.
    Mine(Reservation<'a>),
}

/// The right to publish a key. Dropped unfinished (the client went away
/// mid-publish), it frees the key, and duplicates waiting on it try again.
struct Reservation<'a> {
    acks: &'a Acks,
    key: Option<Key>,
    result: watch::Sender<Published>,
}

impl Default for Acks {
    fn default() -> Self {
        Acks::new(RECENT_ACKS)
    }
}

impl Acks {
    fn new(capacity: usize) -> Acks {
        Acks {
            capacity,
            recent: Mutex::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Recent> {
        // Every critical section leaves the maps consistent before anything
        // can panic, so a poisoned lock still guards valid data; and a
        // reservation dropped while unwinding must not panic again.
        self.recent.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn claim(&self, key: &Key) -> Claim<'_> {
        let mut recent = self.lock();
        match recent.map.get(key) {
            Some(Entry::Done(seq)) => Claim::Known(*seq),
            Some(Entry::Pending(published)) => Claim::InFlight(published.clone()),
            None => {
                let (result, published) = watch::channel(None);
                recent.map.insert(key.clone(), Entry::Pending(published));
                Claim::Mine(Reservation {
                    acks: self,
                    key: Some(key.clone()),
                    result,
                })
            }
        }
    }
}

impl Reservation<'_> {
    /// Records how the publish went and tells the waiting duplicates. A
    /// failure frees the key, so that a retry can publish.
    fn finish(mut self, published: Result<u64, ApiError>) -> Result<u64, ApiError> {
        let key = self.key.take().expect("a reservation finishes once");
        {
            let mut recent = self.acks.lock();
            match &published {
                Ok(seq) => {
                    if recent.order.len() >= self.acks.capacity {
                        if let Some(old) = recent.order.pop_front() {
                            recent.map.remove(&old);
                        }
                    }
                    recent.order.push_back(key.clone());
                    recent.map.insert(key, Entry::Done(*seq));
                }
                Err(_) => {
                    recent.map.remove(&key);
                }
            }
        }
        self.result.send_replace(Some(published.clone()));
        published
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.acks.lock().map.remove(&key);
        }
    }
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

/// A message as the client sent it: the JSON body of a POST, or the text
/// and id of a WebSocket `message` frame.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessageBody {
    pub text: String,
    #[serde(default)]
    pub id: Option<String>,
}

impl MessageBody {
    /// Reads a POST body: UTF-8, then JSON of this shape. Public, with
    /// [`MessageBody::checked`], so that the fuzz target runs exactly what a
    /// request does to untrusted bytes before anything is published.
    pub fn parse(bytes: &[u8]) -> Result<MessageBody, ApiError> {
        let text = std::str::from_utf8(bytes)
            .map_err(|e| ApiError::bad("invalid_utf8", format!("the body is not UTF-8: {e}")))?;
        serde_json::from_str(text)
            .map_err(|e| ApiError::bad("invalid_json", format!("invalid request body: {e}")))
    }

    /// The message as it is published: its text normalised and refused
    /// when empty, too long or denied, its id checked.
    pub fn checked(self, input: &InputPolicy) -> Result<MessageBody, ApiError> {
        let text = input.normalise(&self.text).map_err(refused)?;
        if let Some(id) = &self.id {
            check_message_id(id)?;
        }
        Ok(MessageBody { text, id: self.id })
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
    principal: &Principal,
    user: &str,
    body: MessageBody,
    wait: bool,
) -> Result<Accepted, ApiError> {
    if gw.user_id_baggage {
        tracing::Span::current().set_attribute(USER_ID, user.to_string());
    }
    gw.limiter
        .admit(principal, user, std::time::Instant::now())
        .map_err(|(which, wait)| rate_limited(gw, which, wait))?;
    let MessageBody { text, id } = body.checked(&gw.input)?;
    let message_id = id.unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let event_id = user_event_id(user, &message_id);
    // Registered before publishing, or the outcome may come first and be
    // missed.
    let waiter = wait.then(|| gw.hub.wait_for(user, &message_id));
    let seq = match enqueue(gw, user, &message_id, &text, wait).await {
        Ok(seq) => seq,
        Err(e) => {
            if let Some(waiter) = waiter {
                // Nothing will answer a message that was not enqueued: its
                // waiter would stay in the hub for good.
                drop(waiter);
                gw.hub.abandon(user, &message_id);
            }
            return Err(e);
        }
    };
    Ok(Accepted {
        message_id,
        event_id,
        seq,
        waiter,
    })
}

/// Publishes the message unless its id was accepted before or is being
/// published right now; either way, its position in the inbound queue.
async fn enqueue(
    gw: &Gateway,
    user: &str,
    message_id: &str,
    text: &str,
    wait: bool,
) -> Result<u64, ApiError> {
    let key = (user.to_string(), message_id.to_string());
    let seq = loop {
        match gw.acks.claim(&key) {
            Claim::Mine(reservation) => {
                return reservation.finish(publish(gw, user, message_id, text).await)
            }
            Claim::Known(seq) => break seq,
            Claim::InFlight(mut published) => {
                match published.wait_for(Option::is_some).await {
                    Ok(result) => break (*result).clone().expect("waited for a result")?,
                    // The publishing request went away unfinished: the key
                    // is free again, for this request to take.
                    Err(_) => continue,
                }
            }
        }
    };
    if wait {
        // It may have been handled already, before this request's waiter
        // was registered: ask the pipeline again; the policy answers a
        // repeat from the log without re-running it.
        publish(gw, user, message_id, text).await?;
    }
    Ok(seq)
}

async fn publish(gw: &Gateway, user: &str, message_id: &str, text: &str) -> Result<u64, ApiError> {
    let msg = Inbound {
        user: user.into(),
        message_id: message_id.into(),
        text: text.into(),
        ts_ms: (gw.clock)(),
    };
    let payload = serde_json::to_vec(&msg).map_err(internal)?;
    let baggage = gw
        .user_id_baggage
        .then(|| KeyValue::new(USER_ID, user.to_string()));
    match trace::publish(&*gw.bus, TOPIC_IN, user, payload, baggage).await {
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

/// A message over a rate limit: 429 with the seconds until one is
/// accepted again, and counted.
pub(super) fn rate_limited(gw: &Gateway, which: Limited, wait: std::time::Duration) -> ApiError {
    gw.metrics.rate_limited(which.label());
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!("too many messages for this {}; retry later", which.label()),
    )
    .retry_after(retry_after_secs(wait))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str) -> Key {
        ("alice".into(), id.into())
    }

    fn mine(claim: Claim<'_>) -> Reservation<'_> {
        match claim {
            Claim::Mine(r) => r,
            Claim::Known(seq) => panic!("known at {seq}"),
            Claim::InFlight(_) => panic!("in flight"),
        }
    }

    fn in_flight(claim: Claim<'_>) -> watch::Receiver<Published> {
        match claim {
            Claim::InFlight(rx) => rx,
            Claim::Known(seq) => panic!("known at {seq}"),
            Claim::Mine(_) => panic!("mine"),
        }
    }

    #[tokio::test]
    async fn duplicates_wait_for_the_first_publish_and_then_know_it() {
        let acks = Acks::default();
        let first = mine(acks.claim(&key("m")));
        let mut second = in_flight(acks.claim(&key("m")));
        assert!(second.borrow().is_none());
        assert_eq!(first.finish(Ok(7)).unwrap(), 7);
        let seen = second.wait_for(Option::is_some).await.unwrap().clone();
        assert_eq!(seen.unwrap().unwrap(), 7);
        assert!(matches!(acks.claim(&key("m")), Claim::Known(7)));
        // Another id is another message.
        drop(mine(acks.claim(&key("n"))));
    }

    #[tokio::test]
    async fn a_failed_publish_answers_its_duplicates_and_frees_the_key() {
        let acks = Acks::default();
        let first = mine(acks.claim(&key("m")));
        let mut second = in_flight(acks.claim(&key("m")));
        let overloaded = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", "later");
        assert!(first.finish(Err(overloaded)).is_err());
        let seen = second.wait_for(Option::is_some).await.unwrap().clone();
        let err = seen.unwrap().unwrap_err();
        assert_eq!(err.frame()["error"]["code"], "overloaded");
        mine(acks.claim(&key("m"))).finish(Ok(9)).unwrap();
        assert!(matches!(acks.claim(&key("m")), Claim::Known(9)));
    }

    #[tokio::test]
    async fn an_abandoned_reservation_frees_the_key() {
        let acks = Acks::default();
        let first = mine(acks.claim(&key("m")));
        let mut second = in_flight(acks.claim(&key("m")));
        drop(first);
        assert!(second.wait_for(Option::is_some).await.is_err());
        mine(acks.claim(&key("m"))).finish(Ok(3)).unwrap();
        assert!(matches!(acks.claim(&key("m")), Claim::Known(3)));
    }

    #[test]
    fn only_the_most_recent_acknowledgements_are_kept() {
        let acks = Acks::new(2);
        for (i, id) in ["a", "b", "c"].into_iter().enumerate() {
            mine(acks.claim(&key(id))).finish(Ok(i as u64)).unwrap();
        }
        assert!(matches!(acks.claim(&key("c")), Claim::Known(2)));
        assert!(matches!(acks.claim(&key("b")), Claim::Known(1)));
        drop(mine(acks.claim(&key("a"))));
        let recent = acks.lock();
        assert_eq!((recent.map.len(), recent.order.len()), (2, 2));
    }
}

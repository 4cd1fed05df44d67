//! Events: the immutable facts of a conversation, and the only source of
//! truth for state. The envelope serializes unchanged onto a bus topic and
//! into a SQL row (`user_id`, `seq`, `ts_ms`, `event_id`, JSON body).

use crate::nlu::EntityMatch;
use crate::rollout::RouteReason;
use crate::value::Value;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use uuid::Uuid;

/// Which bot (and version) produced an event.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BotRef {
    pub name: String,
    pub version: String,
}

/// One event of a user's log. `seq` is 1, 2, 3 … per user, without gaps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub event_id: Uuid,
    pub user_id: String,
    pub seq: u64,
    /// Milliseconds since the Unix epoch, as given to the policy (never read
    /// from a clock inside the core).
    pub ts_ms: i64,
    pub bot: BotRef,
    /// The event holds personal data: a sensitive slot's value, the text or
    /// entities of a message that gave one (or named an entity a sensitive
    /// slot is filled from), or a reply that repeats one. The policy marks
    /// it ([`crate::redact::mark`]); the API masks it, and the stores seal
    /// it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub personal: bool,
    /// Only in an event's stored form: its `kind` sealed (an AEAD
    /// ciphertext naming its key), while `kind` holds the masked form
    /// ([`crate::redact::masked`]). `None` in every event in memory: the
    /// store that seals on write opens on read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<Box<str>>,
    #[serde(flatten)]
    pub kind: EventKind,
}

/// Why a flow ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlowEnd {
    /// Reached an `end` step or ran past its last step.
    Completed,
    /// The user ran out of attempts at a slot.
    Abandoned,
    /// Another flow took over (a jump, or a new intent interrupted it).
    Replaced,
    /// The session expired while the flow was active.
    Expired,
    /// A rollback moved the user to a version without this flow.
    Withdrawn,
    /// A remote action it called failed for good, and the step named no
    /// `on_error` to go on at.
    Failed,
}

/// Where a remote action call stands in a saga.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SagaCall {
    pub saga: String,
    /// The run of the saga (its `saga_started` event id).
    pub id: Uuid,
    pub step: usize,
    /// Undoing `step` rather than doing it.
    #[serde(default)]
    pub compensation: bool,
    /// Which request of this very call this is (1 for the first); only a
    /// compensation is requested again.
    pub round: u32,
    /// Compensations of this run set aside so far.
    #[serde(default)]
    pub abandoned: u32,
}

impl SagaCall {
    /// The idempotency key of this step (or its compensation) in this run:
    /// the same in every round, so the action server sees one operation.
    pub fn key(&self) -> Uuid {
        Uuid::new_v5(
            &SAGA_NS,
            format!("{}\u{0}{}\u{0}{}", self.id, self.step, self.compensation).as_bytes(),
        )
    }
}

/// How a saga ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SagaOutcome {
    /// Every step was done.
    Completed,
    /// A step failed, and every step done before it was undone.
    Compensated,
    /// A step failed, and a compensation was set aside after all its rounds.
    Stuck,
}

/// Namespace of the idempotency keys of saga calls.
const SAGA_NS: Uuid = Uuid::from_u128(0x8c2e_4f17_0b6a_4d93_a5e8_71c0_3d9b_26f4);

/// What happened. Tagged by `type` in JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    /// A new session began (first message, or after inactivity). Slots not
    /// listed in `kept` are cleared; `kept` are the bot's `remember` slots.
    SessionStarted {
        session: u64,
        kept: Vec<String>,
    },
    /// The user's message, with the id it was accepted under (idempotency).
    UserSaid {
        message_id: String,
        text: String,
    },
    /// The NLU result the policy acted on. `intent` is `None` below threshold.
    IntentRecognised {
        intent: Option<String>,
        #[serde(deserialize_with = "crate::value::finite_f32")]
        confidence: f32,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        entities: Vec<EntityMatch>,
    },
    SlotSet {
        slot: String,
        value: Value,
        /// Set for `sensitive: true` slots so that readers (the API) mask
        /// the value without needing the bot definition (the event is
        /// `personal` too, and so sealed where it is stored).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        sensitive: bool,
    },
    SlotCleared {
        slot: String,
    },
    /// A value the user gave for a slot failed validation.
    SlotRejected {
        slot: String,
        text: String,
        reason: String,
    },
    FlowStarted {
        flow: String,
    },
    /// The active flow now waits at (or has moved to) step `step`;
    /// `attempts` counts the prompts already spent on an `ask` step.
    FlowStep {
        flow: String,
        step: usize,
        attempts: u32,
    },
    FlowEnded {
        flow: String,
        reason: FlowEnd,
    },
    /// A declarative action ran; `result` is what it wrote, for audit.
    ActionCalled {
        action: String,
        result: serde_json::Value,
    },
    /// The policy stopped for a remote action. `key` is this event's own
    /// id: the idempotency key of every attempt at the call, across retries
    /// and redeliveries. `slots` are the values sent.
    ActionRequested {
        action: String,
        key: Uuid,
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        slots: BTreeMap<String, Value>,
        /// Set when the call is a step (or a compensation) of a saga.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        saga: Option<Box<SagaCall>>,
    },
    /// A flow started the saga `saga`; `id` (this event's id) names this
    /// run of it in the calls it makes.
    SagaStarted {
        saga: String,
        id: Uuid,
    },
    /// A compensation failed in every round: it is set aside for a person
    /// to resolve (the saga's dead letter), and the earlier steps are
    /// compensated still.
    CompensationAbandoned {
        action: String,
        key: Uuid,
        /// The compensation's last request: its saga run, step and round.
        call: Box<SagaCall>,
    },
    SagaEnded {
        saga: String,
        id: Uuid,
        outcome: SagaOutcome,
    },
    /// The action server answered the call `key`; the slots it set and the
    /// responses it returned follow as their own events. `ignored` lists
    /// what the answer held that colloquy did not apply, and why.
    ActionCompleted {
        action: String,
        key: Uuid,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        ignored: Vec<String>,
    },
    /// The call `key` failed for good after `attempts` attempts.
    ActionFailed {
        action: String,
        key: Uuid,
        reason: String,
        attempts: u32,
    },
    /// The conversation was handed to a human agent.
    HandedOff {
        reason: String,
    },
    BotSaid {
        text: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        response: Option<String>,
        /// What a remote action's response held besides text (buttons,
        /// an image, an attachment, a custom payload), as it sent it.
        /// Boxed, as the other rare fields below: every event is as large
        /// as the largest kind, and events are moved and copied on every
        /// turn.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        payload: Option<Box<serde_json::Value>>,
        /// The reply as it is shown when it repeats sensitive values: each
        /// of them masked (set by [`crate::redact::mark`], with every value
        /// the state held). It stays readable in the stored form, so every
        /// page shows the reply so, without knowing the values.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        shown: Option<Box<str>>,
    },
    /// The user's turns are now answered by another version of the bot, or
    /// by the same one for another reason (a rollout changed, a session
    /// ended, a version was rolled back). Written only on a change.
    RouteChanged {
        version: String,
        reason: RouteReason,
        tail: u8,
    },
}

impl EventKind {
    /// False if the event holds a number JSON cannot represent (infinite or
    /// NaN), which no store may accept.
    pub fn is_finite(&self) -> bool {
        match self {
            EventKind::SlotSet { value, .. } => value.is_finite(),
            EventKind::ActionRequested { slots, .. } => slots.values().all(Value::is_finite),
            EventKind::IntentRecognised {
                confidence,
                entities,
                ..
            } => confidence.is_finite() && entities.iter().all(|e| e.value.is_finite()),
            _ => true,
        }
    }
}

/// Longest user id accepted: ids are keys in topics and SQL rows.
pub const MAX_USER_ID_LEN: usize = 128;

/// User ids are opaque to colloquy but must be safe as a path segment, a
/// bus key and a SQL key: 1–128 characters of `A-Z a-z 0-9 . _ - @ :`.
pub fn check_user_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("user id is empty".into());
    }
    if id.len() > MAX_USER_ID_LEN {
        return Err(format!(
            "user id is longer than {MAX_USER_ID_LEN} characters"
        ));
    }
    match id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "._-@:".contains(*c)))
    {
        Some(c) => Err(format!(
            "user id contains {c:?}; allowed are A-Z a-z 0-9 . _ - @ :"
        )),
        None => Ok(()),
    }
}

/// Namespace for deterministic event ids (UUIDv5 of user, message id and
/// index), so that processing a redelivered message yields the same ids
/// again.
const EVENT_NS: Uuid = Uuid::from_u128(0x6a1c_2f0e_8d4b_4c61_9a57_3e0b_c011_0a7d);

/// Namespace of the ids of the events that apply an action's result.
const ACTION_NS: Uuid = Uuid::from_u128(0x3f9d_51c2_7a0e_4b8f_b6d1_0c4e_2a79_e5f3);

/// The id of the first event of the turn that applies the result of the
/// call `key` (the others derive from it as in a message's turn): the same
/// on every run, so a result applied twice appends nothing the second
/// time, and never the id of a message's event.
pub fn action_event_id(user_id: &str, key: Uuid) -> Uuid {
    Uuid::new_v5(&ACTION_NS, format!("{user_id}\u{0}{key}").as_bytes())
}

/// The id `seal` gives the first event of a message's turn, which the
/// policy always makes the `UserSaid` event.
pub fn user_event_id(user_id: &str, message_id: &str) -> Uuid {
    Uuid::new_v5(
        &EVENT_NS,
        format!("{user_id}\u{0}{message_id}\u{0}0").as_bytes(),
    )
}

/// The id of the event at `index` in a turn whose first event has id
/// `first` (the [`user_event_id`]): the index goes in the node field (the
/// last six bytes), which leaves the version and variant bits alone. One
/// SHA-1 per turn instead of one per event: the hashing was a twentieth of
/// the server's work per message. Distinct per index, and per message
/// through the hash.
pub(crate) fn turn_event_id(first: Uuid, index: usize) -> Uuid {
    Uuid::from_u128(first.as_u128() ^ (index as u128 & 0xffff_ffff_ffff))
}

fn event_ids(user_id: &str, message_id: &str) -> impl Iterator<Item = Uuid> {
    let first = user_event_id(user_id, message_id);
    (0..).map(move |index| turn_event_id(first, index))
}

/// Wrap the kinds of one message's turn into sealed events numbered after
/// `last_seq`, as [`crate::step`] seals the events it makes; for callers
/// that make events without the policy (store tests, tools).
pub fn seal(
    kinds: Vec<EventKind>,
    user_id: &str,
    last_seq: u64,
    ts_ms: i64,
    bot: &BotRef,
    message_id: &str,
) -> Vec<Event> {
    kinds
        .into_iter()
        .zip(event_ids(user_id, message_id))
        .enumerate()
        .map(|(i, (kind, event_id))| Event {
            event_id,
            user_id: user_id.to_string(),
            seq: last_seq + 1 + i as u64,
            ts_ms,
            bot: bot.clone(),
            personal: false,
            sealed: None,
            kind,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `event_decoder` fuzz target: a confidence beyond
    /// `f32`'s range read as infinity and was written back as `null`, which
    /// then did not read at all.
    #[test]
    fn a_confidence_beyond_f32_is_refused_when_read() {
        let event = |confidence: &str| {
            format!(
                r#"{{"event_id":"0193a0f4-6a1e-7c3e-9b1a-2f4d5e6a7b99","user_id":"alice","seq":1,"ts_ms":1,"bot":{{"name":"b","version":"1"}},"type":"intent_recognised","intent":null,"confidence":{confidence}}}"#
            )
        };
        let err = serde_json::from_str::<Event>(&event("1e39")).unwrap_err();
        assert!(err.to_string().contains("not a finite"), "{err}");
        let read: Event = serde_json::from_str(&event("0.87")).unwrap();
        let again: Event = serde_json::from_str(&serde_json::to_string(&read).unwrap()).unwrap();
        assert_eq!(read, again);
        // The state of a snapshot or the L1 holds the last one.
        let state = r#"{"user_id":"alice","seq":1,"last_ts_ms":1,"session":1,"slots":{},"flow":null,"last_intent":null,"last_confidence":1e39,"handed_off":false,"recent_messages":[]}"#;
        assert!(serde_json::from_str::<crate::State>(state).is_err());
        let state = state.replace("1e39", "0.5");
        assert_eq!(
            serde_json::from_str::<crate::State>(&state)
                .unwrap()
                .last_confidence,
            0.5
        );
    }

    #[test]
    fn a_turns_event_ids_are_distinct_stable_v5_ids_led_by_the_user_event() {
        let ids: Vec<Uuid> = event_ids("alice", "m-1").take(300).collect();
        assert_eq!(ids[0], user_event_id("alice", "m-1"));
        let unique: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len());
        assert!(ids
            .iter()
            .all(|id| id.get_version_num() == 5 && id.get_variant() == uuid::Variant::RFC4122));
        assert_eq!(ids, event_ids("alice", "m-1").take(300).collect::<Vec<_>>());
        assert!(!ids.contains(&user_event_id("alice", "m-2")));
        assert!(!ids.contains(&user_event_id("bob", "m-1")));
    }

    #[test]
    fn events_round_trip_through_json_unchanged() {
        let bot = BotRef {
            name: "b".into(),
            version: "1".into(),
        };
        let events = seal(
            vec![
                EventKind::UserSaid {
                    message_id: "m1".into(),
                    text: "你好".into(),
                },
                EventKind::SlotSet {
                    slot: "size".into(),
                    value: Value::Int(39),
                    sensitive: false,
                },
                EventKind::FlowEnded {
                    flow: "stock".into(),
                    reason: FlowEnd::Completed,
                },
            ],
            "alice",
            7,
            1_700_000_000_000,
            &bot,
            "m1",
        );
        assert_eq!(
            events.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![8, 9, 10]
        );
        for e in &events {
            let json = serde_json::to_string(e).unwrap();
            let back: Event = serde_json::from_str(&json).unwrap();
            assert_eq!(&back, e, "{json}");
        }
        let json = serde_json::to_value(&events[1]).unwrap();
        assert_eq!(json["type"], "slot_set");
        assert_eq!(json["value"], 39);
    }

    #[test]
    fn user_ids_are_checked() {
        assert!(check_user_id("alice").is_ok());
        assert!(check_user_id("u-1.2_3@x:y").is_ok());
        assert!(check_user_id("").is_err());
        assert!(check_user_id("a/b").unwrap_err().contains("'/'"));
        assert!(check_user_id(&"x".repeat(129)).is_err());
    }

    #[test]
    fn event_ids_are_deterministic_per_message_and_index() {
        let bot = BotRef {
            name: "b".into(),
            version: "1".into(),
        };
        let k = || vec![EventKind::SlotCleared { slot: "x".into() }; 2];
        let a = seal(k(), "u", 0, 0, &bot, "m");
        let b = seal(k(), "u", 5, 9, &bot, "m");
        let c = seal(k(), "u", 0, 0, &bot, "other");
        assert_eq!(a[0].event_id, b[0].event_id);
        assert_ne!(a[0].event_id, a[1].event_id);
        assert_ne!(a[0].event_id, c[0].event_id);
    }
}

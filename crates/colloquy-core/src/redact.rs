//! Personal data in events: which events hold it ([`mark`], run by the
//! policy on every turn), their masked form that the stores keep beside
//! the sealed original ([`masked`]), and the masking of what is shown
//! outside the pipeline (the event log and state pages of the API, pushed
//! replies). It lives beside the events it reads so that every reader masks
//! the same way, and a new event kind that carries user text is masked
//! where it is defined.
//!
//! A value is sensitive when its slot is: the `slot_set` event says so
//! itself, and the state lists the sensitive slots it holds. The value may
//! also show up elsewhere — in the text the user typed, in the bot's echo
//! of it, in a rejected attempt, in an entity the NLU captured — so the
//! policy marks those events `personal`, and readers mask them whole or
//! wherever they contain one of the [`Secrets`].

use crate::bot::Bot;
use crate::event::{Event, EventKind};
use crate::nlu::EntityMatch;
use crate::state::State;
use crate::value::Value;
use crate::wire::Outcome;
use std::collections::BTreeMap;

/// Shown instead of a sensitive value.
pub const MASK: &str = "***";

/// The sensitive values to hide wherever they appear in free text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Secrets(Vec<String>);

impl Secrets {
    /// The given values. An empty value is dropped: it is contained in
    /// every text and would mask all of them. Longer values are hidden
    /// first, so a secret that contains another is not left half shown.
    pub fn new(values: impl IntoIterator<Item = String>) -> Secrets {
        let mut values: Vec<String> = values.into_iter().filter(|s| !s.is_empty()).collect();
        values.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        values.dedup();
        Secrets(values)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The values of `state`'s sensitive slots, then those of the sensitive
    /// `slot_set` events among `events`: a page of the log may show values
    /// the state has since replaced or cleared.
    pub fn of(state: &State, events: &[Event]) -> Secrets {
        let current = state
            .sensitive
            .iter()
            .filter_map(|slot| state.slots.get(slot))
            .map(Value::to_string);
        Secrets::new(current.chain(logged(events)))
    }

    /// The values of the sensitive `slot_set` events among `events`.
    pub fn of_events(events: &[Event]) -> Secrets {
        Secrets::new(logged(events))
    }

    /// `text` with every occurrence of every secret replaced by [`MASK`].
    pub fn hide(&self, text: &str) -> String {
        self.0
            .iter()
            .fold(text.to_string(), |acc, s| acc.replace(s.as_str(), MASK))
    }

    /// Whether `text` contains one of the secrets.
    pub fn within(&self, text: &str) -> bool {
        self.0.iter().any(|s| text.contains(s.as_str()))
    }

    fn reveal_in(&self, m: &EntityMatch) -> bool {
        let value = m.value.to_string();
        self.0
            .iter()
            .any(|s| m.text.contains(s.as_str()) || value == *s)
    }
}

fn logged(events: &[Event]) -> impl Iterator<Item = String> + '_ {
    events.iter().filter_map(|e| match &e.kind {
        EventKind::SlotSet {
            value,
            sensitive: true,
            ..
        } => Some(value.to_string()),
        _ => None,
    })
}

/// Marks the events of a turn that hold personal data
/// ([`Event::personal`]); `state` is the state the turn led to. A message
/// is personal when its turn set (or refused) a sensitive slot, when it
/// names an entity a sensitive slot is filled from, or when it contains a
/// sensitive value the state holds; a reply, an action's request or a
/// declarative action's result is personal when it carries one of those
/// values or a sensitive slot. A bot without sensitive slots costs one
/// scan of its slots.
pub fn mark(bot: &Bot, state: &State, events: &mut [Event]) {
    if state.sensitive.is_empty() && !bot.slots.values().any(|s| s.sensitive) {
        return;
    }
    let sensitive_slot = |slot: &str| {
        bot.slots.get(slot).is_some_and(|s| s.sensitive)
            || state.sensitive.iter().any(|s| s == slot)
    };
    // Whether a sensitive slot is filled from `entity`; no list is built:
    // this runs on every turn of a bot with a sensitive slot.
    let fills_sensitive = |entity: &str| {
        bot.slots
            .values()
            .any(|s| s.sensitive && s.from.iter().any(|m| m.entity == entity))
    };
    let gave = events.iter().any(|e| match &e.kind {
        EventKind::SlotSet { sensitive, .. } => *sensitive,
        EventKind::SlotRejected { slot, .. } => sensitive_slot(slot),
        EventKind::IntentRecognised {
            entities: found, ..
        } => found.iter().any(|m| fills_sensitive(&m.entity)),
        _ => false,
    });
    let secrets = Secrets::of(state, events);
    // No value to find and none given: only an action's request can still
    // name a sensitive slot.
    if !gave
        && secrets.is_empty()
        && !events
            .iter()
            .any(|e| matches!(e.kind, EventKind::ActionRequested { .. }))
    {
        return;
    }
    for e in events {
        e.personal |= match &mut e.kind {
            EventKind::SlotSet { sensitive, .. } => *sensitive,
            EventKind::SlotRejected { slot, text, .. } => {
                sensitive_slot(slot) || secrets.within(text)
            }
            EventKind::UserSaid { text, .. } => gave || secrets.within(text),
            EventKind::IntentRecognised { entities, .. } => {
                gave || entities.iter().any(|m| secrets.reveal_in(m))
            }
            EventKind::BotSaid {
                text,
                payload,
                shown,
                ..
            } => {
                let personal = secrets.within(text)
                    || payload
                        .as_ref()
                        .is_some_and(|p| secrets.within(&p.to_string()));
                if personal {
                    *shown = Some(secrets.hide(text).into());
                }
                personal
            }
            EventKind::ActionRequested { slots, .. } => {
                slots.keys().any(|s| sensitive_slot(s))
                    || slots.values().any(|v| secrets.within(&v.to_string()))
            }
            EventKind::ActionCalled { result, .. } => secrets.within(&result.to_string()),
            _ => false,
        };
    }
}

/// `kind` with everything a personal event may hold replaced by [`MASK`]:
/// what a store keeps readable beside the sealed original, and what a
/// reader shows of a personal event whose values it does not know.
pub fn masked(kind: &EventKind) -> EventKind {
    let mut kind = kind.clone();
    match &mut kind {
        EventKind::UserSaid { text, .. } | EventKind::SlotRejected { text, .. } => {
            *text = MASK.into()
        }
        EventKind::BotSaid {
            text,
            payload,
            shown,
            ..
        } => {
            *text = shown.as_deref().unwrap_or(MASK).into();
            *payload = None;
        }
        EventKind::IntentRecognised { entities, .. } => {
            for m in entities {
                m.text = MASK.into();
                m.value = Value::Text(MASK.into());
            }
        }
        EventKind::SlotSet { value, .. } => *value = Value::Text(MASK.into()),
        EventKind::ActionRequested { slots, .. } => {
            for v in slots.values_mut() {
                *v = Value::Text(MASK.into());
            }
        }
        EventKind::ActionCalled { result, .. } => *result = serde_json::Value::from(MASK),
        _ => {}
    }
    kind
}

/// Masks a page of events in place. A personal event is masked whole,
/// except that a reply shows its `shown` form, and an action's request
/// what is not one of `secrets` when it holds one of them; in any other
/// event, the values of sensitive `slot_set`
/// events, and the texts and entities that contain one of `secrets`
/// (events logged before the policy marked them).
pub fn mask_events(events: &mut [Event], secrets: &Secrets) {
    for e in events {
        if e.personal {
            e.kind = match &e.kind {
                EventKind::BotSaid {
                    text,
                    response,
                    shown: None,
                    ..
                } if secrets.within(text) => EventKind::BotSaid {
                    text: secrets.hide(text),
                    response: response.clone(),
                    payload: None,
                    shown: None,
                },
                EventKind::ActionRequested {
                    action,
                    key,
                    slots,
                    saga,
                } if slots.values().any(|v| secrets.within(&v.to_string())) => {
                    EventKind::ActionRequested {
                        action: action.clone(),
                        key: *key,
                        slots: slots
                            .iter()
                            .map(|(k, v)| {
                                let v = if secrets.within(&v.to_string()) {
                                    Value::Text(MASK.into())
                                } else {
                                    v.clone()
                                };
                                (k.clone(), v)
                            })
                            .collect(),
                        saga: saga.clone(),
                    }
                }
                other => masked(other),
            };
            continue;
        }
        match &mut e.kind {
            EventKind::SlotSet {
                value,
                sensitive: true,
                ..
            } => *value = Value::Text(MASK.into()),
            EventKind::UserSaid { text, .. }
            | EventKind::BotSaid { text, .. }
            | EventKind::SlotRejected { text, .. } => *text = secrets.hide(text),
            EventKind::ActionRequested { slots, .. } => {
                for v in slots.values_mut() {
                    let shown = v.to_string();
                    if secrets.hide(&shown) != shown {
                        *v = Value::Text(MASK.into());
                    }
                }
            }
            EventKind::IntentRecognised { entities, .. } => {
                for m in entities.iter_mut().filter(|m| secrets.reveal_in(m)) {
                    m.text = MASK.into();
                    m.value = Value::Text(MASK.into());
                }
            }
            _ => {}
        }
    }
}

/// A turn's outcome as clients may see it pushed: its personal events
/// masked as on a page of the log, with the sensitive values its own
/// events set as the secrets, and each reply shown as its masked
/// `bot_said` event (the replies are the texts of those events, in order).
pub fn mask_outcome(outcome: &mut Outcome) {
    if !outcome.events.iter().any(|e| e.personal) {
        // Logged before the policy marked events: the values set in the
        // turn are all that can be known.
        let secrets = Secrets::of_events(&outcome.events);
        if secrets.is_empty() {
            return;
        }
        mask_events(&mut outcome.events, &secrets);
        for reply in &mut outcome.replies {
            *reply = secrets.hide(reply);
        }
        return;
    }
    let secrets = Secrets::of_events(&outcome.events);
    mask_events(&mut outcome.events, &secrets);
    let said = outcome.events.iter().filter_map(|e| match &e.kind {
        EventKind::BotSaid { text, .. } => Some(text),
        _ => None,
    });
    for (reply, shown) in outcome.replies.iter_mut().zip(said) {
        reply.clone_from(shown);
    }
}

/// The state's slots, with the value of each sensitive one replaced by
/// [`MASK`].
pub fn mask_slots(state: &State) -> BTreeMap<String, Value> {
    state
        .slots
        .iter()
        .map(|(slot, value)| {
            let value = if state.sensitive.contains(slot) {
                Value::Text(MASK.into())
            } else {
                value.clone()
            };
            (slot.clone(), value)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{seal, BotRef};

    fn events(kinds: Vec<EventKind>) -> Vec<Event> {
        let bot = BotRef {
            name: "b".into(),
            version: "1".into(),
        };
        seal(kinds, "alice", 0, 0, &bot, "m1")
    }

    fn phone_set() -> EventKind {
        EventKind::SlotSet {
            slot: "phone".into(),
            value: Value::Text("13800138000".into()),
            sensitive: true,
        }
    }

    fn entity(text: &str, value: Value) -> EntityMatch {
        EntityMatch {
            entity: "number".into(),
            value,
            text: text.into(),
            start: 0,
            end: text.chars().count(),
        }
    }

    #[test]
    fn a_sensitive_slot_set_is_masked() {
        let mut page = events(vec![phone_set()]);
        let secrets = Secrets::of(&State::new("alice"), &page);
        mask_events(&mut page, &secrets);
        let EventKind::SlotSet { value, .. } = &page[0].kind else {
            panic!("{:?}", page[0].kind)
        };
        assert_eq!(value, &Value::Text(MASK.into()));
    }

    #[test]
    fn texts_containing_a_secret_are_masked_where_it_appears() {
        let mut page = events(vec![
            EventKind::UserSaid {
                message_id: "m1".into(),
                text: "我的电话是13800138000".into(),
            },
            EventKind::SlotRejected {
                slot: "phone".into(),
                text: "13800138000?".into(),
                reason: "too short".into(),
            },
            EventKind::BotSaid {
                text: "好的, 13800138000".into(),
                response: None,
                payload: None,
                shown: None,
            },
        ]);
        // The value is known from the state alone: the slot_set is on
        // another page.
        let mut state = State::new("alice");
        state.apply(&events(vec![phone_set()])[0]);
        let secrets = Secrets::of(&state, &page);
        mask_events(&mut page, &secrets);
        let texts: Vec<&str> = page
            .iter()
            .map(|e| match &e.kind {
                EventKind::UserSaid { text, .. }
                | EventKind::SlotRejected { text, .. }
                | EventKind::BotSaid { text, .. } => text.as_str(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(texts, ["我的电话是***", "***?", "好的, ***"]);
    }

    #[test]
    fn entities_holding_a_secret_are_masked() {
        let mut page = events(vec![EventKind::IntentRecognised {
            intent: Some("give_phone".into()),
            confidence: 0.9,
            entities: vec![
                entity("电话13800138000", Value::Text("x".into())),
                entity("one three eight", Value::Int(13800138000)),
                entity("39", Value::Int(39)),
            ],
        }]);
        let secrets = Secrets::new(["13800138000".to_string()]);
        mask_events(&mut page, &secrets);
        let EventKind::IntentRecognised { entities, .. } = &page[0].kind else {
            panic!("{:?}", page[0].kind)
        };
        let masked = entity(MASK, Value::Text(MASK.into()));
        assert_eq!(
            (&entities[0].text, &entities[0].value),
            (&masked.text, &masked.value)
        );
        assert_eq!(
            (&entities[1].text, &entities[1].value),
            (&masked.text, &masked.value)
        );
        assert_eq!(entities[2], entity("39", Value::Int(39)));
    }

    #[test]
    fn non_sensitive_values_are_untouched() {
        let original = events(vec![
            EventKind::SlotSet {
                slot: "size".into(),
                value: Value::Int(39),
                sensitive: false,
            },
            EventKind::UserSaid {
                message_id: "m1".into(),
                text: "39码".into(),
            },
        ]);
        let mut page = original.clone();
        let mut state = State::new("alice");
        state.apply(&original[0]);
        let secrets = Secrets::of(&state, &page);
        assert_eq!(secrets, Secrets::default());
        mask_events(&mut page, &secrets);
        assert_eq!(page, original);
        assert_eq!(mask_slots(&state).get("size"), Some(&Value::Int(39)));
    }

    #[test]
    fn an_empty_secret_masks_nothing() {
        let secrets = Secrets::new([String::new()]);
        assert_eq!(secrets, Secrets::default());
        assert_eq!(secrets.hide("hello"), "hello");
        let mut page = events(vec![EventKind::SlotSet {
            slot: "note".into(),
            value: Value::Text(String::new()),
            sensitive: true,
        }]);
        let mut state = State::new("alice");
        state.apply(&page[0]);
        let secrets = Secrets::of(&state, &page);
        assert_eq!(secrets, Secrets::default());
        let mut said = events(vec![EventKind::UserSaid {
            message_id: "m1".into(),
            text: "hello".into(),
        }]);
        mask_events(&mut said, &secrets);
        assert!(matches!(&said[0].kind, EventKind::UserSaid { text, .. } if text == "hello"));
        mask_events(&mut page, &secrets);
        assert!(
            matches!(&page[0].kind, EventKind::SlotSet { value, .. } if *value == Value::Text(MASK.into()))
        );
    }

    #[test]
    fn state_slots_are_masked_only_when_sensitive() {
        let mut state = State::new("alice");
        for e in events(vec![
            phone_set(),
            EventKind::SlotSet {
                slot: "size".into(),
                value: Value::Int(39),
                sensitive: false,
            },
        ]) {
            state.apply(&e);
        }
        let slots = mask_slots(&state);
        assert_eq!(slots.get("phone"), Some(&Value::Text(MASK.into())));
        assert_eq!(slots.get("size"), Some(&Value::Int(39)));
        assert_eq!(slots.len(), 2);
    }

    #[test]
    fn a_pushed_outcome_hides_what_its_turn_set() {
        let mut outcome = Outcome {
            user: "alice".into(),
            message_id: "m1".into(),
            replies: vec!["好的, 我们会打 13800138000 联系您".into()],
            events: events(vec![
                EventKind::UserSaid {
                    message_id: "m1".into(),
                    text: "13800138000".into(),
                },
                phone_set(),
            ]),
            seq: 2,
        };
        mask_outcome(&mut outcome);
        assert_eq!(
            outcome.replies,
            vec!["好的, 我们会打 *** 联系您".to_string()]
        );
        let shown = serde_json::to_string(&outcome.events).unwrap();
        assert!(!shown.contains("13800138000"), "{shown}");

        let mut plain = Outcome {
            replies: vec!["13800138000".into()],
            events: Vec::new(),
            ..outcome
        };
        mask_outcome(&mut plain);
        assert_eq!(
            plain.replies,
            vec!["13800138000".to_string()],
            "nothing sensitive was set"
        );
    }

    #[test]
    fn longer_secrets_are_hidden_before_the_ones_they_contain() {
        let secrets = Secrets::new(["345".to_string(), "12345".to_string()]);
        assert_eq!(secrets.hide("call 12345 or 345"), "call *** or ***");
    }
}

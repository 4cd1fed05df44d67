//! Rasa's action server protocol, so that an existing rasa-sdk action
//! server answers colloquy unchanged: the request (`next_action`,
//! `sender_id`, `tracker`, `domain`, `domain_digest`, `version`) and the
//! answer (`events`, `responses`).
//!
//! Of the events an action may return, colloquy applies `slot`,
//! `reset_slots`, `followup` and `bot` (said like a response). The others
//! (`restart`, `session_started`, `pause`, `resume`, `undo`, `rewind`,
//! `reminder`, `active_loop`, `action_execution_rejected`, …) steer Rasa's
//! own dialogue manager, which colloquy's flows replace; they are recorded
//! in `action_completed.ignored`, never silently dropped.

use colloquy_core::bot::{Bot, SlotType};
use colloquy_core::{Effect, Event, EventKind, Said, State, Value};
use serde_json::{json, Map, Value as Json};

/// The Rasa version colloquy speaks as. An action server compares its
/// major and minor with its own and only warns when they differ; the
/// tests run rasa-sdk 3.21.
pub const PROTOCOL_VERSION: &str = "3.21.0";

/// The request body for `remote` (the action's name at the server). The
/// tracker holds every slot of the bot (unset ones as `null`), the latest
/// user message with its intent and entities, and `recent`, the end of
/// the user's log, as Rasa events. `domain` is sent when the server may not
/// know it yet; `digest` names it either way.
pub fn request(
    bot: &Bot,
    remote: &str,
    state: &State,
    recent: &[Event],
    domain: Option<&Json>,
    digest: &str,
) -> Json {
    let mut slots = Map::new();
    for name in bot.slots.keys() {
        slots.insert(name.clone(), slot_json(state.slots.get(name)));
    }
    let events: Vec<Json> = tracker_events(recent);
    let latest_message = events
        .iter()
        .rev()
        .find(|e| e["event"] == "user")
        .map(|e| {
            json!({
                "text": e["text"],
                "intent": e["parse_data"]["intent"],
                "entities": e["parse_data"]["entities"],
                "message_id": e["message_id"],
            })
        })
        .unwrap_or_else(|| json!({}));
    let mut body = json!({
        "next_action": remote,
        "sender_id": state.user_id,
        "tracker": {
            "sender_id": state.user_id,
            "slots": slots,
            "latest_message": latest_message,
            "latest_event_time": state.last_ts_ms as f64 / 1000.0,
            "followup_action": null,
            "paused": state.handed_off,
            "events": events,
            "latest_input_channel": "colloquy",
            "active_loop": {},
            "latest_action": {"action_name": remote},
            "latest_action_name": remote,
        },
        "domain_digest": digest,
        "version": PROTOCOL_VERSION,
    });
    if let Some(d) = domain {
        body["domain"] = d.clone();
    }
    body
}

fn slot_json(v: Option<&Value>) -> Json {
    v.and_then(|v| serde_json::to_value(v).ok())
        .unwrap_or(Json::Null)
}

/// The user's log as Rasa tracker events: `user` (with the intent and
/// entities of its `intent_recognised`), `bot`, `slot`, `session_started`
/// and `action`; the rest has no Rasa counterpart.
fn tracker_events(recent: &[Event]) -> Vec<Json> {
    let mut out: Vec<Json> = Vec::new();
    for e in recent {
        let ts = e.ts_ms as f64 / 1000.0;
        match &e.kind {
            EventKind::UserSaid { message_id, text } => out.push(json!({
                "event": "user", "timestamp": ts, "text": text, "message_id": message_id,
                "input_channel": "colloquy",
                "parse_data": {"text": text, "intent": {}, "entities": []},
            })),
            EventKind::IntentRecognised {
                intent,
                confidence,
                entities,
            } => {
                if let Some(user) = out.iter_mut().rev().find(|e| e["event"] == "user") {
                    user["parse_data"]["intent"] = match intent {
                        Some(name) => json!({"name": name, "confidence": confidence}),
                        None => json!({"name": "nlu_fallback", "confidence": confidence}),
                    };
                    user["parse_data"]["entities"] = entities
                        .iter()
                        .map(|m| {
                            json!({"entity": m.entity, "value": slot_json(Some(&m.value)),
                                   "start": m.start, "end": m.end, "text": m.text})
                        })
                        .collect();
                }
            }
            EventKind::BotSaid { text, payload, .. } => out.push(json!({
                "event": "bot", "timestamp": ts, "text": text,
                "data": payload.as_deref().cloned().unwrap_or_else(|| json!({})),
            })),
            EventKind::SlotSet { slot, value, .. } => out.push(json!({
                "event": "slot", "timestamp": ts, "name": slot, "value": slot_json(Some(value)),
            })),
            EventKind::SlotCleared { slot } => out.push(json!({
                "event": "slot", "timestamp": ts, "name": slot, "value": null,
            })),
            EventKind::SessionStarted { .. } => {
                out.push(json!({"event": "session_started", "timestamp": ts}))
            }
            // The key rides on the action event too: rasa-sdk hands an
            // action the tracker's events but not the request's headers.
            EventKind::ActionRequested { action, key, .. } => out.push(json!({
                "event": "action", "timestamp": ts, "name": action, "idempotency_key": key,
            })),
            _ => {}
        }
    }
    out
}

/// The bot as a Rasa domain: intents, entities, slots (with their types),
/// responses and actions, which is what rasa-sdk's helpers (forms, slot
/// validation) read.
pub fn domain(bot: &Bot) -> Json {
    let slots: Map<String, Json> = bot
        .slots
        .iter()
        .map(|(name, s)| {
            let t = match s.slot_type {
                SlotType::Text | SlotType::Enum => "text",
                SlotType::Int | SlotType::Float => "float",
                SlotType::Bool => "bool",
                SlotType::List => "list",
            };
            (
                name.clone(),
                json!({"type": t, "influence_conversation": false, "mappings": [{"type": "custom"}]}),
            )
        })
        .collect();
    let responses: Map<String, Json> = bot
        .responses
        .keys()
        .map(|name| (name.clone(), json!([])))
        .collect();
    json!({
        "version": "3.1",
        "session_config": {"session_expiration_time": bot.session_timeout_ms as f64 / 60_000.0,
                           "carry_over_slots_to_new_session": true},
        "intents": bot.intents.keys().collect::<Vec<_>>(),
        "entities": bot.entities.keys().collect::<Vec<_>>(),
        "slots": slots,
        "responses": responses,
        "actions": bot.actions.keys().collect::<Vec<_>>(),
        "forms": {},
    })
}

/// An action server's answer as the policy applies it.
#[derive(Debug, Default, PartialEq)]
pub struct Answer {
    pub effects: Vec<Effect>,
    pub responses: Vec<Said>,
    pub ignored: Vec<String>,
}

/// Read a 200 answer. `null` (an action that returned nothing) is an empty
/// answer; anything that is not the protocol's shape is an error.
pub fn answer(body: &[u8]) -> Result<Answer, String> {
    let json: Json =
        serde_json::from_slice(body).map_err(|e| format!("the answer is not JSON: {e}"))?;
    let mut out = Answer::default();
    let obj = match &json {
        Json::Null => return Ok(out),
        Json::Object(o) => o,
        _ => return Err("the answer is not a JSON object".into()),
    };
    for (i, e) in list(obj, "events")?.iter().enumerate() {
        let kind = e["event"].as_str().unwrap_or_default();
        match kind {
            "slot" => {
                let Some(name) = e["name"].as_str() else {
                    return Err(format!("events[{i}]: a slot event needs a name"));
                };
                match value(&e["value"]) {
                    Ok(value) => out.effects.push(Effect::SetSlot {
                        slot: name.to_string(),
                        value,
                    }),
                    Err(why) => out.ignored.push(format!("slot `{name}`: {why}")),
                }
            }
            "reset_slots" => out.effects.push(Effect::ResetSlots),
            "followup" => match e["name"].as_str() {
                Some(name) => out.effects.push(Effect::Followup {
                    action: name.to_string(),
                }),
                None => return Err(format!("events[{i}]: a followup event needs a name")),
            },
            "bot" => out.responses.push(Said::Text {
                text: e["text"].as_str().unwrap_or_default().to_string(),
                payload: e
                    .get("data")
                    .and_then(Json::as_object)
                    .and_then(|d| payload(d.iter())),
            }),
            "" => return Err(format!("events[{i}] has no `event` field")),
            other => out
                .ignored
                .push(format!("event `{other}`: not applied by colloquy")),
        }
    }
    for r in list(obj, "responses")? {
        out.responses.push(said(r)?);
    }
    Ok(out)
}

fn list<'a>(obj: &'a Map<String, Json>, key: &str) -> Result<&'a [Json], String> {
    match obj.get(key) {
        None | Some(Json::Null) => Ok(&[]),
        Some(Json::Array(items)) => Ok(items),
        Some(_) => Err(format!("`{key}` is not a list")),
    }
}

/// The keys of a dispatcher message that are not template variables.
const MESSAGE_KEYS: [&str; 10] = [
    "text",
    "buttons",
    "elements",
    "custom",
    "template",
    "response",
    "image",
    "attachment",
    "quick_replies",
    "channel",
];

/// One message of `responses`: a named response (`response`, or the older
/// `template`) with its extra keys as variables, or text with what else it
/// carries (buttons, image, custom payload) kept as its payload.
fn said(r: &Json) -> Result<Said, String> {
    let Some(obj) = r.as_object() else {
        return Err("a response is not an object".into());
    };
    let named = ["response", "template"]
        .iter()
        .find_map(|k| obj.get(*k).and_then(Json::as_str));
    if let Some(name) = named {
        let variables = obj
            .iter()
            .filter(|(k, _)| !MESSAGE_KEYS.contains(&k.as_str()))
            .filter_map(|(k, v)| Some((k.clone(), value(v).ok()??)))
            .collect();
        return Ok(Said::Named {
            response: name.to_string(),
            variables,
        });
    }
    Ok(Said::Text {
        text: obj
            .get("text")
            .and_then(Json::as_str)
            .unwrap_or_default()
            .to_string(),
        payload: payload(
            obj.iter()
                .filter(|(k, _)| k.as_str() != "text" && MESSAGE_KEYS.contains(&k.as_str())),
        ),
    })
}

/// What a message carries besides its text, without the empty fields
/// rasa-sdk fills every message with; `None` if nothing is left.
fn payload<'a>(fields: impl Iterator<Item = (&'a String, &'a Json)>) -> Option<Json> {
    let kept: Map<String, Json> = fields
        .filter(|(_, v)| !empty(v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    (!kept.is_empty()).then_some(Json::Object(kept))
}

fn empty(v: &Json) -> bool {
    match v {
        Json::Null => true,
        Json::Array(a) => a.is_empty(),
        Json::Object(o) => o.is_empty(),
        Json::String(s) => s.is_empty(),
        _ => false,
    }
}

/// A JSON value as a slot value: `null` clears; objects have no slot type.
fn value(v: &Json) -> Result<Option<Value>, String> {
    Ok(Some(match v {
        Json::Null => return Ok(None),
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => Value::Float(n.as_f64().ok_or("a number out of range")?),
        },
        Json::String(s) => Value::Text(s.clone()),
        Json::Array(items) => Value::List(
            items
                .iter()
                .map(|i| value(i)?.ok_or_else(|| "a list holding null".to_string()))
                .collect::<Result<_, _>>()?,
        ),
        Json::Object(_) => return Err("an object is not a slot value".into()),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_map_to_effects_responses_and_what_was_ignored() {
        let body = r#"{"events": [
            {"event": "slot", "timestamp": null, "name": "stock", "value": 3},
            {"event": "slot", "name": "size", "value": null},
            {"event": "slot", "name": "blob", "value": {"a": 1}},
            {"event": "reset_slots"},
            {"event": "followup", "name": "notify"},
            {"event": "restart"},
            {"event": "bot", "text": "hi", "data": {"buttons": []}}
        ], "responses": [
            {"text": "有货", "buttons": [{"title": "买", "payload": "/buy"}], "custom": {}, "image": null, "template": null, "response": null},
            {"text": null, "response": "utter_stock", "template": "utter_stock", "count": 3, "buttons": []}
        ]}"#;
        let a = answer(body.as_bytes()).unwrap();
        assert_eq!(
            a.effects,
            vec![
                Effect::SetSlot {
                    slot: "stock".into(),
                    value: Some(Value::Int(3))
                },
                Effect::SetSlot {
                    slot: "size".into(),
                    value: None
                },
                Effect::ResetSlots,
                Effect::Followup {
                    action: "notify".into()
                },
            ]
        );
        assert_eq!(
            a.ignored,
            vec![
                "slot `blob`: an object is not a slot value".to_string(),
                "event `restart`: not applied by colloquy".to_string()
            ]
        );
        assert_eq!(
            a.responses[0],
            Said::Text {
                text: "hi".into(),
                payload: None
            }
        );
        assert_eq!(
            a.responses[1],
            Said::Text {
                text: "有货".into(),
                payload: Some(json!({"buttons": [{"title": "买", "payload": "/buy"}]}))
            }
        );
        assert_eq!(
            a.responses[2],
            Said::Named {
                response: "utter_stock".into(),
                variables: vec![("count".into(), Value::Int(3))]
            }
        );
    }

    #[test]
    fn malformed_answers_are_errors_and_null_is_empty() {
        assert_eq!(answer(b"null").unwrap(), Answer::default());
        assert!(answer(b"<html>").unwrap_err().contains("not JSON"));
        assert!(answer(b"[1]").unwrap_err().contains("not a JSON object"));
        assert!(answer(br#"{"events": 3}"#)
            .unwrap_err()
            .contains("`events` is not a list"));
        assert!(answer(br#"{"events": [{"name": "x"}]}"#)
            .unwrap_err()
            .contains("no `event`"));
    }
}

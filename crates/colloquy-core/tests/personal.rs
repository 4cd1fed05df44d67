//! Which events of a turn hold personal data: the policy marks them
//! (`redact::mark`), and readers mask them whole, or where a known value
//! appears in them.

use colloquy_core::bot::{compile, SourceFile};
use colloquy_core::redact::{mask_events, masked, Secrets, MASK};
use colloquy_core::{step, Bot, EntityMatch, Event, EventKind, Input, NluResult, State, Value};

const BOT: &str = r#"
bot: {name: t, version: "1", fallback: fallback}
entities:
  phone: {regex: '(1[3-9][0-9]{9})'}
intents:
  ship: {examples: [ship]}
  contact: {examples: [contact], response: contact}
slots:
  address: {type: text, sensitive: true}
  phone: {type: text, sensitive: true, from: [{entity: phone, when: asked}]}
  size: {type: int}
responses:
  fallback: sorry
  ask_address: where to?
  ask_phone: your phone?
  done: "shipping to {address}, calling {phone}"
  contact: "we call {phone}"
flows:
  ship:
    intents: [ship]
    steps:
      - ask: address
        prompt: ask_address
      - ask: phone
        prompt: ask_phone
      - say: done
"#;

fn bot() -> Bot {
    compile(&[SourceFile {
        path: "bot.yaml".into(),
        text: BOT.into(),
    }])
    .unwrap_or_else(|e| panic!("{e:?}"))
}

fn say(bot: &Bot, state: State, id: &str, text: &str, intent: Option<&str>) -> (State, Vec<Event>) {
    let entities = regex::Regex::new("1[3-9][0-9]{9}")
        .unwrap()
        .find_iter(text)
        .map(|m| EntityMatch {
            entity: "phone".into(),
            value: Value::Text(m.as_str().into()),
            text: m.as_str().into(),
            start: m.start(),
            end: m.end(),
        })
        .collect();
    let nlu = NluResult {
        intent: intent.map(str::to_string),
        confidence: 0.9,
        entities,
        ..NluResult::default()
    };
    let input = Input {
        message_id: id,
        text,
        nlu: &nlu,
        route: None,
    };
    let t = step(bot, state, &input, 1_000, 1);
    (t.state, t.events)
}

fn personal(events: &[Event]) -> Vec<&'static str> {
    events
        .iter()
        .filter(|e| e.personal)
        .map(|e| match &e.kind {
            EventKind::UserSaid { .. } => "user_said",
            EventKind::IntentRecognised { .. } => "intent_recognised",
            EventKind::SlotSet { .. } => "slot_set",
            EventKind::BotSaid { .. } => "bot_said",
            other => panic!("{other:?} marked personal"),
        })
        .collect()
}

#[test]
fn a_turn_that_gives_a_sensitive_value_is_personal_and_so_is_its_echo() {
    let bot = bot();
    let (s, events) = say(&bot, State::new("u"), "m1", "ship", Some("ship"));
    assert!(personal(&events).is_empty(), "{events:#?}");
    let (s, events) = say(&bot, s, "m2", "1 Main St", None);
    assert_eq!(
        personal(&events),
        ["user_said", "intent_recognised", "slot_set"]
    );
    let (s, events) = say(&bot, s, "m3", "13800138000", None);
    assert_eq!(
        personal(&events),
        ["user_said", "intent_recognised", "slot_set", "bot_said"],
        "the reply repeats both values"
    );
    // A later turn that says the value again is personal too.
    let (_, events) = say(&bot, s, "m4", "contact", Some("contact"));
    assert_eq!(personal(&events), ["bot_said"]);
}

#[test]
fn a_sensitive_entity_outside_its_prompt_makes_the_message_personal() {
    let bot = bot();
    let (s, events) = say(
        &bot,
        State::new("u"),
        "m1",
        "my colleague 13912345678 says ship",
        Some("ship"),
    );
    assert_eq!(personal(&events), ["user_said", "intent_recognised"]);
    assert!(
        !s.slots.contains_key("phone"),
        "not filled outside its prompt"
    );
}

#[test]
fn a_bot_without_sensitive_slots_marks_nothing() {
    let bot = compile(&[SourceFile {
        path: "bot.yaml".into(),
        text: BOT.replace("sensitive: true", "sensitive: false"),
    }])
    .unwrap();
    let (s, _) = say(&bot, State::new("u"), "m1", "ship", Some("ship"));
    let (s, a) = say(&bot, s, "m2", "1 Main St", None);
    let (_, b) = say(&bot, s, "m3", "13800138000", None);
    assert!(a.iter().chain(&b).all(|e| !e.personal));
}

#[test]
fn personal_events_are_masked_whole_or_where_a_known_value_is() {
    let bot = bot();
    let (s, _) = say(&bot, State::new("u"), "m1", "ship", Some("ship"));
    let (s, a) = say(&bot, s, "m2", "1 Main St", None);
    let (s, b) = say(&bot, s, "m3", "13800138000", None);
    let mut page: Vec<Event> = a.into_iter().chain(b).collect();
    // Known values: the reply keeps what is not one of them.
    let mut known = page.clone();
    let secrets = Secrets::of(&s, &known);
    mask_events(&mut known, &secrets);
    let shown = serde_json::to_string(&known).unwrap();
    assert!(
        !shown.contains("13800138000") && !shown.contains("Main St"),
        "{shown}"
    );
    assert!(shown.contains("shipping to ***, calling ***"), "{shown}");
    // Nothing known (another session's page): masked whole.
    mask_events(&mut page, &Secrets::default());
    let shown = serde_json::to_string(&page).unwrap();
    assert!(
        !shown.contains("13800138000") && !shown.contains("Main St"),
        "{shown}"
    );
    let said: Vec<&str> = page
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::BotSaid { text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        said,
        ["your phone?", "shipping to ***, calling ***"],
        "a reply keeps the form the policy masked with every value it knew"
    );
    let user: Vec<&str> = page
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::UserSaid { text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(user, [MASK, MASK]);
    // The stored form's masked kind holds nothing of the original.
    for e in &page {
        let m = serde_json::to_string(&masked(&e.kind)).unwrap();
        assert!(!m.contains("13800138000") && !m.contains("Main St"), "{m}");
    }
}

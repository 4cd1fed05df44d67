//! The policy is pure and deterministic, and its events fold into the state
//! it reasoned about.

use colloquy_core::bot::{compile, SourceFile};
use colloquy_core::{
    seal, step, Bot, EntityMatch, EventKind, FlowEnd, Input, NluResult, Route, RouteReason, State,
    Turn, Value,
};
use proptest::prelude::*;

const BOT: &str = r#"
bot: {name: t, version: "1", fallback: fallback, abandon: abandon, session_timeout: 30m}
intents:
  buy: {examples: [buy]}
  spin: {examples: [spin]}
  loop: {examples: [loop]}
  hi: {examples: [hi], response: hello}
entities:
  model: {lookup: {a: [], b: [], c: [], m: [], x: []}}
  size: {regex: '(\d+)', type: int}
slots:
  model: {type: text, remember: true}
  size: {type: int, range: [35, 46], invalid: bad_size}
  prize: {type: text}
  spins: {type: int}
responses:
  fallback: sorry
  abandon: giving up
  hello: [hello, hi there, hey]
  ask_model: which model?
  ask_size: which size?
  bad_size: sizes are 35-46
  done: "{model} {size} ok"
  won: "won {prize}"
tables:
  prizes: [{name: a, weight: 1}, {name: b, weight: 1}, {name: c, weight: 2}]
actions:
  draw: {draw: {table: prizes, weight: weight, set: {prize: name}}}
flows:
  buy:
    intents: [buy]
    steps:
      - ask: model
      - ask: size
        max_attempts: 2
      - say: done
  spin:
    intents: [spin]
    steps:
      - add: {spins: 1}
      - action: draw
      - say: won
  loop:
    intents: [loop]
    steps:
      - label: top
        add: {spins: 1}
      - goto: top
"#;

fn bot() -> Bot {
    compile(&[SourceFile {
        path: "bot.yaml".into(),
        text: BOT.into(),
    }])
    .expect("test bot compiles")
}

fn nlu(intent: Option<&str>, entities: &[(&str, Value)]) -> NluResult {
    NluResult {
        intent: intent.map(str::to_string),
        confidence: if intent.is_some() { 0.9 } else { 0.1 },
        intents: vec![],
        entities: entities
            .iter()
            .map(|(e, v)| EntityMatch {
                entity: e.to_string(),
                value: v.clone(),
                text: v.to_string(),
                start: 0,
                end: 1,
            })
            .collect(),
    }
}

const T0: i64 = 1_767_261_600_000;

/// Run one message and keep the state it leads to, as the engine does.
fn turn(bot: &Bot, state: &mut State, id: &str, nlu: &NluResult, now: i64) -> Vec<String> {
    let out = step(
        bot,
        std::mem::take(state),
        &Input {
            message_id: id,
            text: id,
            nlu,
            route: None,
        },
        now,
        42,
    );
    *state = out.state;
    out.replies
}

#[test]
fn a_flow_asks_fills_and_finishes() {
    let bot = bot();
    let mut s = State::new("u");
    assert_eq!(
        turn(&bot, &mut s, "1", &nlu(Some("buy"), &[]), T0),
        vec!["which model?"]
    );
    assert_eq!(s.flow.as_ref().map(|f| f.flow.as_str()), Some("buy"));
    assert_eq!(
        turn(&bot, &mut s, "2", &nlu(None, &[]), T0 + 1),
        vec!["which size?"],
        "free text fills a text slot"
    );
    assert_eq!(s.slots["model"], Value::from("2"));
    assert_eq!(
        turn(
            &bot,
            &mut s,
            "3",
            &nlu(None, &[("number", Value::Int(50))]),
            T0 + 2
        ),
        vec!["sizes are 35-46"; 1]
            .into_iter()
            .chain(["which size?"])
            .collect::<Vec<_>>()
    );
    assert_eq!(
        turn(
            &bot,
            &mut s,
            "4",
            &nlu(None, &[("number", Value::Int(39))]),
            T0 + 3
        ),
        vec!["2 39 ok"]
    );
    assert!(s.flow.is_none());
}

#[test]
fn running_out_of_attempts_abandons_the_flow() {
    let bot = bot();
    let mut s = State::new("u");
    turn(
        &bot,
        &mut s,
        "1",
        &nlu(Some("buy"), &[("model", Value::from("x"))]),
        T0,
    );
    turn(&bot, &mut s, "2", &nlu(None, &[]), T0 + 1);
    assert_eq!(s.flow.as_ref().map(|f| f.attempts), Some(1));
    assert_eq!(
        turn(&bot, &mut s, "3", &nlu(None, &[]), T0 + 2),
        vec!["giving up"]
    );
    assert!(s.flow.is_none());
}

#[test]
fn sessions_expire_and_remembered_slots_survive() {
    let bot = bot();
    let mut s = State::new("u");
    turn(
        &bot,
        &mut s,
        "1",
        &nlu(
            Some("buy"),
            &[("model", Value::from("m")), ("size", Value::Int(40))],
        ),
        T0,
    );
    assert_eq!((s.session, s.slots.len()), (1, 2));
    turn(&bot, &mut s, "2", &nlu(Some("hi"), &[]), T0 + 29 * 60_000);
    assert_eq!(s.session, 1, "within the timeout");
    turn(
        &bot,
        &mut s,
        "3",
        &nlu(Some("hi"), &[]),
        T0 + 29 * 60_000 + 30 * 60_000 + 1,
    );
    assert_eq!(s.session, 2);
    assert_eq!(s.slots.get("model"), Some(&Value::from("m")));
    assert_eq!(s.slots.get("size"), None);
    // The remembered model makes "buy" skip straight to the size question.
    assert_eq!(
        turn(&bot, &mut s, "4", &nlu(Some("buy"), &[]), T0 + 60 * 60_000),
        vec!["which size?"]
    );
}

#[test]
fn a_fallback_or_an_aside_still_fills_the_slots_its_entities_name() {
    let bot = bot();
    let mut s = State::new("u");
    assert_eq!(
        turn(
            &bot,
            &mut s,
            "1",
            &nlu(None, &[("model", Value::from("m"))]),
            T0
        ),
        vec!["sorry"]
    );
    assert_eq!(s.slots.get("model"), Some(&Value::from("m")));
    // Asked for a size, the user says hello and names another model.
    turn(&bot, &mut s, "2", &nlu(Some("buy"), &[]), T0 + 1);
    let replies = turn(
        &bot,
        &mut s,
        "3",
        &nlu(Some("hi"), &[("model", Value::from("x"))]),
        T0 + 2,
    );
    assert_eq!(replies.last().map(String::as_str), Some("which size?"));
    assert_eq!(s.slots.get("model"), Some(&Value::from("x")));
}

/// A bot whose `qty` slot is filled only under `buy` or when asked for,
/// and whose `note` slot is never filled from an entity.
const MAPPED: &str = r#"
bot: {name: t, version: "1", fallback: fallback}
intents:
  buy: {examples: [buy]}
  hours: {examples: [hours], response: open}
  ask: {examples: [ask]}
  track: {examples: [track], response: open}
entities:
  qty: {builtin: number}
  note: {regex: 'note (\w+)'}
slots:
  qty:
    type: int
    from:
      - {entity: qty, intents: [buy]}
      - {entity: qty, when: asked}
  note: {type: text, from: []}
  tag:
    type: text
    from: [{entity: note, not_intents: [track]}]
responses:
  fallback: sorry
  open: we open at 11
  ask_qty: how many?
  ask_note: any note?
  done: "{qty} ok"
flows:
  buy:
    intents: [buy]
    steps:
      - ask: qty
      - say: done
  ask:
    intents: [ask]
    steps:
      - ask: note
      - say: done
"#;

#[test]
fn mappings_decide_which_turns_fill_a_slot() {
    let bot = compile(&[SourceFile {
        path: "bot.yaml".into(),
        text: MAPPED.into(),
    }])
    .expect("compiles");
    let mut s = State::new("u");
    let four = [("qty", Value::Int(4)), ("note", Value::from("x"))];
    turn(&bot, &mut s, "1", &nlu(Some("hours"), &four), T0);
    assert_eq!(s.slots.get("qty"), None, "not under hours");
    assert_eq!(s.slots.get("note"), None, "`from: []` never fills");
    assert_eq!(s.slots.get("tag"), Some(&Value::from("x")));
    turn(
        &bot,
        &mut s,
        "2",
        &nlu(Some("track"), &[("note", Value::from("y"))]),
        T0 + 1,
    );
    assert_eq!(
        s.slots.get("tag"),
        Some(&Value::from("x")),
        "not under track"
    );
    turn(&bot, &mut s, "3", &nlu(None, &four), T0 + 2);
    assert_eq!(s.slots.get("qty"), None, "a fallback is not `buy`");
    assert_eq!(
        turn(&bot, &mut s, "4", &nlu(Some("buy"), &four), T0 + 3),
        vec!["4 ok"],
        "under buy the number fills the slot before it is asked"
    );
    let mut s = State::new("v");
    assert_eq!(
        turn(&bot, &mut s, "1", &nlu(Some("buy"), &[]), T0),
        vec!["how many?"]
    );
    assert_eq!(
        turn(
            &bot,
            &mut s,
            "2",
            &nlu(None, &[("qty", Value::Int(3))]),
            T0 + 1
        ),
        vec!["3 ok"],
        "`when: asked` takes the answer whatever its intent"
    );
    // Asked for, a slot with no mapping still takes the whole reply.
    turn(&bot, &mut s, "3", &nlu(Some("ask"), &[]), T0 + 2);
    turn(&bot, &mut s, "4", &nlu(None, &[]), T0 + 3);
    assert_eq!(s.slots.get("note"), Some(&Value::from("4")));
}

#[test]
fn a_duplicate_message_produces_nothing() {
    let bot = bot();
    let mut s = State::new("u");
    turn(&bot, &mut s, "m1", &nlu(Some("hi"), &[]), T0);
    let again = step(
        &bot,
        s.clone(),
        &Input {
            message_id: "m1",
            text: "hi",
            nlu: &nlu(Some("hi"), &[]),
            route: None,
        },
        T0 + 5,
        1,
    );
    assert!(again.events.is_empty() && again.replies.is_empty());
    assert_eq!(again.state, s, "a duplicate leaves the state as it was");
}

#[test]
fn a_flow_that_never_waits_is_stopped() {
    let bot = bot();
    let mut s = State::new("u");
    assert_eq!(
        turn(&bot, &mut s, "1", &nlu(Some("loop"), &[]), T0),
        vec!["sorry"]
    );
    assert!(s.flow.is_none());
}

#[test]
fn draws_follow_the_weights_and_the_seed() {
    let bot = bot();
    let s = State::new("u");
    let mut counts = std::collections::BTreeMap::new();
    for seed in 0..4000u64 {
        let out = step(
            &bot,
            s.clone(),
            &Input {
                message_id: "m",
                text: "spin",
                nlu: &nlu(Some("spin"), &[]),
                route: None,
            },
            T0,
            seed,
        );
        *counts.entry(out.replies[0].clone()).or_insert(0) += 1;
    }
    let c = counts["won c"] as f64 / 4000.0;
    assert!((0.45..0.55).contains(&c), "{counts:?}");
    assert!(counts["won a"] > 800 && counts["won b"] > 800, "{counts:?}");
}

fn arb_nlu() -> impl Strategy<Value = NluResult> {
    let intent = prop::option::of(prop::sample::select(vec!["buy", "spin", "hi", "loop"]));
    let ents = prop::collection::vec(
        prop_oneof![
            (30i64..50).prop_map(|n| ("number", Value::Int(n))),
            (30i64..50).prop_map(|n| ("size", Value::Int(n))),
            "[a-c]".prop_map(|m| ("model", Value::Text(m))),
        ],
        0..3,
    );
    (intent, ents).prop_map(|(i, e)| {
        nlu(
            i,
            &e.iter().map(|(k, v)| (*k, v.clone())).collect::<Vec<_>>(),
        )
    })
}

proptest! {
    /// Same inputs, same outputs; the events are sealed as `seal` seals
    /// them; the state a turn returns is the fold of its events on top of
    /// the state before it; and the log alone rebuilds the last state.
    #[test]
    fn the_policy_is_a_pure_function(
        turns in prop::collection::vec((arb_nlu(), 0i64..4_000_000, any::<u64>()), 1..12)
    ) {
        let bot = bot();
        let mut s = State::new("u");
        let mut now = T0;
        let mut log = Vec::new();
        for (i, (n, gap, seed)) in turns.iter().enumerate() {
            now += gap;
            let id = format!("m{i}");
            let input = Input { message_id: &id, text: "text", nlu: n , route: None};
            let a = step(&bot, s.clone(), &input, now, *seed);
            let b = step(&bot, s.clone(), &input, now, *seed);
            prop_assert_eq!(&a, &b);
            let said: Vec<String> = a.events.iter().filter_map(|e| match &e.kind {
                EventKind::BotSaid { text, .. } => Some(text.clone()),
                _ => None,
            }).collect();
            prop_assert_eq!(&said, &a.replies);
            let kinds = a.events.iter().map(|e| e.kind.clone()).collect();
            prop_assert_eq!(&seal(kinds, "u", s.seq, now, &bot.id, &id), &a.events);
            let events = a.events;
            let mut folded = s.clone();
            for e in &events {
                folded.apply(e);
            }
            prop_assert_eq!(&a.state, &folded);
            s = a.state;
            prop_assert_eq!(s.seq as usize, events.last().map(|e| e.seq as usize).unwrap_or(s.seq as usize));
            prop_assert!(s.has_seen(&id));
            let first_is_user_said = matches!(events[0].kind, EventKind::UserSaid { .. });
            prop_assert!(first_is_user_said);
            prop_assert_eq!(events[0].event_id, colloquy_core::user_event_id("u", &id));
            log.extend(events);
        }
        // The log alone rebuilds the state, and seqs have no gaps.
        prop_assert_eq!(State::from_events("u", &log), s);
        prop_assert!(log.iter().enumerate().all(|(i, e)| e.seq == i as u64 + 1));
    }
}

fn routed(bot: &Bot, state: &mut State, id: &str, nlu: &NluResult, route: &Route) -> Turn {
    let out = step(
        bot,
        std::mem::take(state),
        &Input {
            message_id: id,
            text: id,
            nlu,
            route: Some(route),
        },
        T0,
        42,
    );
    *state = out.state.clone();
    out
}

#[test]
fn the_route_is_recorded_when_it_changes_and_only_then() {
    let bot = bot();
    let mut s = State::new("u1");
    let stable = Route {
        version: "1".into(),
        reason: RouteReason::Stable,
        tail: 1,
    };
    let first = routed(&bot, &mut s, "a", &nlu(Some("hi"), &[]), &stable);
    let changes = |t: &Turn| {
        t.events
            .iter()
            .filter(|e| matches!(e.kind, EventKind::RouteChanged { .. }))
            .count()
    };
    assert_eq!(changes(&first), 1);
    assert_eq!(s.route.as_ref(), Some(&stable));
    let again = routed(&bot, &mut s, "b", &nlu(Some("hi"), &[]), &stable);
    assert_eq!(changes(&again), 0);
    let pinned = Route {
        reason: RouteReason::Pinned,
        ..stable
    };
    let moved = routed(&bot, &mut s, "c", &nlu(Some("hi"), &[]), &pinned);
    assert_eq!(changes(&moved), 1);
    assert_eq!(
        s.route.as_ref().map(|r| r.reason),
        Some(RouteReason::Pinned)
    );
}

#[test]
fn a_flow_the_answering_version_lacks_ends_with_the_bots_response() {
    let with_flow = bot();
    let without = compile(&[SourceFile {
        path: "bot.yaml".into(),
        text: BOT
            .replace("version: \"1\"", "version: \"0\"")
            .replace(
                "fallback: fallback, abandon",
                "fallback: fallback, withdrawn: gone, abandon",
            )
            .replace(
                "  abandon: giving up",
                "  abandon: giving up\n  gone: that offer has ended",
            )
            .replace("  buy:\n    intents", "  buy2:\n    intents"),
    }])
    .expect("the older version compiles");
    assert!(!without.flows.contains_key("buy"));
    let mut s = State::new("u1");
    turn(&with_flow, &mut s, "1", &nlu(Some("buy"), &[]), T0);
    assert!(s.flow.is_some());
    let back = Route {
        version: "0".into(),
        reason: RouteReason::Stable,
        tail: 1,
    };
    let out = routed(&without, &mut s, "2", &nlu(None, &[]), &back);
    assert!(out.events.iter().any(|e| matches!(
        &e.kind,
        EventKind::FlowEnded { flow, reason: FlowEnd::Withdrawn } if flow == "buy"
    )));
    assert_eq!(out.replies[0], "that offer has ended");
    assert_eq!(s.flow, None);
}

//! Remote actions in the pure policy: a step that calls one records
//! `action_requested` and stops; `resume` records the result, applies it
//! once, and goes on with the flow (or at `on_error`).

use colloquy_core::bot::{compile, SourceFile};
use colloquy_core::{
    resume, step, ActionOutcome, ActionResult, Bot, Effect, Event, EventKind, FlowEnd, Input,
    NluResult, Said, State, Value,
};

const BOT: &str = r#"
bot:
  name: t
  version: "1"
  fallback: fallback
  action_failed: sorry_later
  action_endpoint: {url: "http://127.0.0.1:1/webhook", timeout: 500ms, headers: {X-Shop: "1"}, breaker: {failures: 2}}
intents:
  stock: {examples: [stock]}
  pay: {examples: [pay]}
slots:
  model: {type: text}
  qty: {type: int}
  code: {type: text, sensitive: true}
responses:
  fallback: sorry
  sorry_later: try later
  checking: checking
  have: "{qty} left"
  none_left: none left
  utter_count: "count {qty} of {model}"
actions:
  check_stock: {webhook: {send: [model], retries: 1}}
  notify: {webhook: {name: notify_user, url: "http://127.0.0.1:2/hook", timeout: 2s}}
flows:
  stock:
    intents: [stock]
    steps:
      - set: {model: m1, code: secret-7}
      - say: checking
      - action: check_stock
        on_error: failed
      - say: have
      - end: true
      - label: failed
        say: none_left
  pay:
    intents: [pay]
    steps:
      - action: notify
      - say: have
"#;

fn bot() -> Bot {
    compile(&[SourceFile {
        path: "bot.yaml".into(),
        text: BOT.into(),
    }])
    .unwrap_or_else(|e| panic!("{e:?}"))
}

fn message(bot: &Bot, state: State, id: &str, intent: &str) -> (State, Vec<Event>, Vec<String>) {
    let nlu = NluResult {
        intent: Some(intent.into()),
        confidence: 0.9,
        ..NluResult::default()
    };
    let input = Input {
        message_id: id,
        text: intent,
        nlu: &nlu,
        route: None,
    };
    let t = step(bot, state, &input, 1_000, 1);
    (t.state, t.events, t.replies)
}

fn kinds(events: &[Event]) -> Vec<&'static str> {
    events
        .iter()
        .map(|e| match e.kind {
            EventKind::ActionRequested { .. } => "requested",
            EventKind::ActionCompleted { .. } => "completed",
            EventKind::ActionFailed { .. } => "failed",
            EventKind::SlotSet { .. } => "slot_set",
            EventKind::SlotCleared { .. } => "slot_cleared",
            EventKind::BotSaid { .. } => "said",
            EventKind::FlowEnded { .. } => "flow_ended",
            EventKind::FlowStep { .. } => "flow_step",
            _ => "other",
        })
        .collect()
}

#[test]
fn webhooks_take_the_endpoint_defaults_and_their_own_fields() {
    let bot = bot();
    let colloquy_core::bot::Action::Webhook(w) = &bot.actions["check_stock"] else {
        panic!("check_stock is a webhook");
    };
    assert_eq!(w.url, "http://127.0.0.1:1/webhook");
    assert_eq!((w.timeout_ms, w.retries), (500, 1));
    assert_eq!(w.headers, vec![("X-Shop".to_string(), "1".to_string())]);
    assert_eq!(w.remote, "check_stock");
    let colloquy_core::bot::Action::Webhook(n) = &bot.actions["notify"] else {
        panic!("notify is a webhook");
    };
    assert_eq!(
        (n.remote.as_str(), n.url.as_str()),
        ("notify_user", "http://127.0.0.1:2/hook")
    );
    assert_eq!(
        (n.timeout_ms, n.retries),
        (2_000, 2),
        "own timeout, default retries"
    );
}

#[test]
fn a_remote_action_stops_the_turn_and_its_result_goes_on_with_the_flow() {
    let bot = bot();
    let (state, events, replies) = message(&bot, State::new("u"), "m1", "stock");
    assert_eq!(replies, vec!["checking"]);
    let requested = events.last().unwrap();
    let EventKind::ActionRequested {
        action, key, slots, ..
    } = &requested.kind
    else {
        panic!("the turn ends with the request: {:?}", kinds(&events));
    };
    assert_eq!(action, "check_stock");
    assert_eq!(*key, requested.event_id, "the key is the event's id");
    assert_eq!(
        slots.keys().collect::<Vec<_>>(),
        vec!["model"],
        "only the slots the action sends"
    );
    let pending = state.pending.clone().expect("the state waits");
    assert_eq!(pending.key, *key);

    let result = ActionResult {
        key: *key,
        outcome: ActionOutcome::Completed {
            effects: vec![
                Effect::SetSlot {
                    slot: "qty".into(),
                    value: Some(Value::Text("3".into())),
                },
                Effect::SetSlot {
                    slot: "nope".into(),
                    value: Some(Value::Int(1)),
                },
            ],
            responses: vec![
                Said::Named {
                    response: "utter_count".into(),
                    variables: vec![("model".into(), Value::Text("M-X".into()))],
                },
                Said::Text {
                    text: "".into(),
                    payload: Some(serde_json::json!({"custom": {"card": 1}})),
                },
            ],
            ignored: vec![],
        },
    };
    let t = resume(&bot, state.clone(), &result, 2_000, 1);
    assert_eq!(
        t.replies,
        vec!["count 3 of M-X", "3 left"],
        "variables win over slots"
    );
    assert_eq!(
        kinds(&t.events),
        vec![
            "completed",
            "slot_set",
            "said",
            "said",
            "said",
            "flow_ended"
        ]
    );
    let EventKind::ActionCompleted { ignored, .. } = &t.events[0].kind else {
        unreachable!()
    };
    assert_eq!(
        ignored,
        &vec!["slot `nope`: the bot has no such slot".to_string()]
    );
    assert_eq!(
        t.state.slots["qty"],
        Value::Int(3),
        "converted to the slot's type"
    );
    assert!(t.state.pending.is_none() && t.state.flow.is_none());
    assert_eq!(
        t.state,
        State::from_events("u", events.iter().chain(&t.events))
    );

    // The same result again (a redelivery): nothing.
    let again = resume(&bot, t.state.clone(), &result, 3_000, 1);
    assert!(again.events.is_empty() && again.replies.is_empty());
    // Its events' ids do not depend on when it ran.
    let later = resume(&bot, state, &result, 9_000, 1);
    assert_eq!(
        later.events.iter().map(|e| e.event_id).collect::<Vec<_>>(),
        t.events.iter().map(|e| e.event_id).collect::<Vec<_>>()
    );
}

#[test]
fn a_failed_call_goes_to_on_error_or_says_the_bots_response() {
    let bot = bot();
    let (state, events, _) = message(&bot, State::new("u"), "m1", "stock");
    let key = state.pending.as_ref().unwrap().key;
    let failed = |key| ActionResult {
        key,
        outcome: ActionOutcome::Failed {
            reason: "connection refused".into(),
            attempts: 2,
        },
    };
    let t = resume(&bot, state, &failed(key), 2_000, 1);
    assert_eq!(t.replies, vec!["none left"], "the step's on_error branch");
    assert_eq!(kinds(&t.events), vec!["failed", "said", "flow_ended"]);
    assert!(matches!(
        &t.events[0].kind,
        EventKind::ActionFailed { attempts: 2, reason, .. } if reason == "connection refused"
    ));
    assert_eq!(
        t.state,
        State::from_events("u", events.iter().chain(&t.events))
    );

    let (state, _, _) = message(&bot, State::new("v"), "m1", "pay");
    let key = state.pending.as_ref().unwrap().key;
    let t = resume(&bot, state, &failed(key), 2_000, 1);
    assert_eq!(t.replies, vec!["try later"], "no on_error: action_failed");
    assert!(t.events.iter().any(|e| matches!(
        e.kind,
        EventKind::FlowEnded {
            reason: FlowEnd::Failed,
            ..
        }
    )));
}

#[test]
fn a_followup_requests_the_next_action_before_the_flow_goes_on() {
    let bot = bot();
    let (state, _, _) = message(&bot, State::new("u"), "m1", "stock");
    let key = state.pending.as_ref().unwrap().key;
    let t = resume(
        &bot,
        state,
        &ActionResult {
            key,
            outcome: ActionOutcome::Completed {
                effects: vec![Effect::Followup {
                    action: "notify".into(),
                }],
                responses: vec![],
                ignored: vec![],
            },
        },
        2_000,
        1,
    );
    assert_eq!(kinds(&t.events), vec!["completed", "requested"]);
    let next = t.state.pending.clone().expect("waits for the followup");
    assert_eq!(next.action, "notify");
    assert_ne!(next.key, key);
    let done = resume(
        &bot,
        t.state,
        &ActionResult {
            key: next.key,
            outcome: ActionOutcome::Completed {
                effects: vec![],
                responses: vec![],
                ignored: vec![],
            },
        },
        3_000,
        1,
    );
    assert_eq!(
        done.replies,
        vec![" left"],
        "the flow went on after the calling step"
    );
}

#[test]
fn a_sensitive_value_sent_to_an_action_is_masked_in_the_events_shown() {
    let bot = bot();
    let mut b = bot.clone();
    // Send every slot, the sensitive one included.
    if let colloquy_core::bot::Action::Webhook(w) = b.actions.get_mut("check_stock").unwrap() {
        w.send = None;
    }
    let (state, mut events, _) = message(&b, State::new("u"), "m1", "stock");
    let secrets = colloquy_core::redact::Secrets::of(&state, &events);
    colloquy_core::redact::mask_events(&mut events, &secrets);
    let EventKind::ActionRequested { slots, .. } = &events.last().unwrap().kind else {
        unreachable!()
    };
    assert_eq!(slots["code"], Value::Text("***".into()));
    assert_eq!(slots["model"], Value::Text("m1".into()));
}

const SAGA_BOT: &str = r#"
bot: {name: s, version: "1", fallback: fallback, action_failed: sorry_later}
intents:
  win: {examples: [win]}
slots:
  amount: {type: int}
responses:
  fallback: sorry
  sorry_later: try later
  paid: paid
  not_paid: not paid
actions:
  reserve: {webhook: {url: "http://127.0.0.1:1/w"}}
  release: {webhook: {url: "http://127.0.0.1:1/w"}}
  grant: {webhook: {url: "http://127.0.0.1:1/w"}}
  revoke: {webhook: {url: "http://127.0.0.1:1/w"}}
  notify: {webhook: {url: "http://127.0.0.1:1/w"}}
sagas:
  red_packet:
    compensation_rounds: 3
    steps:
      - {action: reserve, compensate: release}
      - {action: grant, compensate: revoke}
      - {action: notify}
flows:
  win:
    intents: [win]
    steps:
      - saga: red_packet
        on_error: failed
      - say: paid
      - end: true
      - label: failed
        say: not_paid
"#;

/// A call the saga made: action, key, round.
type Call = (String, uuid::Uuid, u32);

/// Run the saga of a "win" message to its end, answering each call with
/// `answer(action, round)`; returns every event and reply and the calls
/// made, as (action, key, round).
fn run_saga(answer: impl Fn(&str, u32) -> bool) -> (Vec<Event>, Vec<String>, Vec<Call>) {
    let bot = compile(&[SourceFile {
        path: "bot.yaml".into(),
        text: SAGA_BOT.into(),
    }])
    .unwrap_or_else(|e| panic!("{e:?}"));
    let (mut state, mut events, mut replies) = message(&bot, State::new("u"), "m1", "win");
    let mut calls = Vec::new();
    while let Some(p) = state.pending.clone() {
        let round = p.saga.as_ref().map_or(1, |s| s.round);
        calls.push((p.action.clone(), p.key, round));
        assert!(calls.len() < 50, "the saga never ends");
        let outcome = if answer(&p.action, round) {
            ActionOutcome::Completed {
                effects: vec![],
                responses: vec![],
                ignored: vec![],
            }
        } else {
            ActionOutcome::Failed {
                reason: "down".into(),
                attempts: 1,
            }
        };
        let t = resume(
            &bot,
            state,
            &ActionResult {
                key: p.key,
                outcome,
            },
            2_000,
            1,
        );
        events.extend(t.events);
        replies.extend(t.replies);
        state = t.state;
    }
    assert_eq!(
        state,
        State::from_events("u", &events),
        "the log folds to the state"
    );
    let ids: std::collections::HashSet<_> = events.iter().map(|e| e.event_id).collect();
    assert_eq!(ids.len(), events.len(), "event ids are unique in the log");
    (events, replies, calls)
}

fn saga_outcome(events: &[Event]) -> Option<colloquy_core::SagaOutcome> {
    events.iter().find_map(|e| match &e.kind {
        EventKind::SagaEnded { outcome, .. } => Some(*outcome),
        _ => None,
    })
}

fn names(calls: &[Call]) -> Vec<&str> {
    calls.iter().map(|(a, ..)| a.as_str()).collect()
}

#[test]
fn a_saga_runs_its_steps_in_order_and_the_flow_goes_on() {
    let (events, replies, calls) = run_saga(|_, _| true);
    assert_eq!(names(&calls), vec!["reserve", "grant", "notify"]);
    assert_eq!(
        saga_outcome(&events),
        Some(colloquy_core::SagaOutcome::Completed)
    );
    assert_eq!(replies, vec!["paid"]);
    let keys: std::collections::HashSet<_> = calls.iter().map(|(_, k, _)| k).collect();
    assert_eq!(keys.len(), 3, "a key per step");
}

#[test]
fn a_failed_step_compensates_the_steps_done_last_first() {
    for (fail, undo) in [
        ("reserve", vec![]),
        ("grant", vec!["release"]),
        ("notify", vec!["revoke", "release"]),
    ] {
        let (events, replies, calls) = run_saga(|a, _| a != fail);
        let done: Vec<&str> = ["reserve", "grant", "notify"]
            .into_iter()
            .take_while(|a| *a != fail)
            .chain([fail])
            .collect();
        let mut want = done.clone();
        want.extend(undo.iter().copied());
        assert_eq!(names(&calls), want, "failing at {fail}");
        assert_eq!(
            saga_outcome(&events),
            Some(colloquy_core::SagaOutcome::Compensated)
        );
        assert_eq!(replies, vec!["not paid"], "the step's on_error");
    }
}

#[test]
fn a_compensation_is_retried_with_one_key_then_set_aside_and_the_rest_still_undone() {
    // notify fails; revoke fails in every round; release works.
    let (events, replies, calls) = run_saga(|a, _| a != "notify" && a != "revoke");
    assert_eq!(
        names(&calls),
        vec!["reserve", "grant", "notify", "revoke", "revoke", "revoke", "release"]
    );
    let revoke: Vec<_> = calls.iter().filter(|(a, ..)| a == "revoke").collect();
    assert!(
        revoke.iter().all(|(_, k, _)| *k == revoke[0].1),
        "one key every round"
    );
    assert_eq!(
        revoke.iter().map(|(.., r)| *r).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    let abandoned: Vec<_> = events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::CompensationAbandoned { .. }))
        .collect();
    assert_eq!(abandoned.len(), 1);
    assert_eq!(
        saga_outcome(&events),
        Some(colloquy_core::SagaOutcome::Stuck)
    );
    assert_eq!(replies, vec!["not paid"]);

    // A compensation that works in its second round is not set aside.
    let (events, _, calls) = run_saga(|a, round| a != "notify" && !(a == "revoke" && round == 1));
    assert_eq!(
        names(&calls),
        vec!["reserve", "grant", "notify", "revoke", "revoke", "release"]
    );
    assert_eq!(
        saga_outcome(&events),
        Some(colloquy_core::SagaOutcome::Compensated)
    );
}

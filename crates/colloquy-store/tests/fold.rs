//! Where snapshots fall must not change the state: snapshot + replay equals
//! the fold of the whole log, for any history, policy and reload pattern;
//! and the states the policy hands to `commit` turn by turn are that fold.

use colloquy_core::bot::{compile, SourceFile};
use colloquy_core::{
    seal, step as policy_step, Bot, BotRef, EntityMatch, EventKind, FlowEnd, Input, NluResult,
    State, Value,
};
use colloquy_store::{
    conformance, ConversationStore, Conversations, MemoryStore, SnapshotPolicy, SqliteStore,
};
use proptest::prelude::*;
use std::sync::Arc;

fn kind() -> impl Strategy<Value = EventKind> {
    let name = || prop::sample::select(vec!["a", "b", "c"]).prop_map(String::from);
    prop_oneof![
        (name(), 0i64..5, any::<bool>()).prop_map(|(slot, v, sensitive)| EventKind::SlotSet {
            slot,
            value: Value::Int(v),
            sensitive
        }),
        (name(), name()).prop_map(|(slot, text)| EventKind::SlotSet {
            slot,
            value: Value::Text(format!("值{text}")),
            sensitive: false
        }),
        name().prop_map(|slot| EventKind::SlotCleared { slot }),
        (0u64..4, prop::collection::vec(name(), 0..3))
            .prop_map(|(session, kept)| EventKind::SessionStarted { session, kept }),
        name().prop_map(|flow| EventKind::FlowStarted { flow }),
        name().prop_map(|flow| EventKind::FlowEnded {
            flow,
            reason: FlowEnd::Completed
        }),
        name().prop_map(|m| EventKind::UserSaid {
            message_id: m,
            text: "嗨".into()
        }),
        Just(EventKind::HandedOff {
            reason: "asked".into()
        }),
    ]
}

/// One step of a history.
#[derive(Debug, Clone)]
enum Step {
    /// Commit one message's events, `gap_ms` after the previous one.
    Commit { kinds: Vec<EventKind>, gap_ms: i64 },
    /// Run the policy on one message, `gap_ms` after the previous one, and
    /// commit the state and events it returns.
    Message {
        nlu: NluResult,
        gap_ms: i64,
        seed: u64,
    },
    /// Reload the state, through a fresh `Conversations` (as another worker
    /// would) or the same one.
    Reload { fresh: bool },
    /// Put a snapshot of the log's prefix at fraction `at` of its length
    /// (a racing or lagging snapshot writer).
    SnapshotAt { at: f64 },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (prop::collection::vec(kind(), 1..5), 0i64..20_000).prop_map(|(kinds, gap_ms)| Step::Commit { kinds, gap_ms }),
        2 => any::<bool>().prop_map(|fresh| Step::Reload { fresh }),
        1 => (0.0..=1.0).prop_map(|at| Step::SnapshotAt { at }),
    ]
}

/// Histories of real turns: arbitrary events could leave a state the policy
/// never makes (a flow the bot does not have), so they are kept apart.
fn message_step() -> impl Strategy<Value = Step> {
    let intent = prop::option::of(prop::sample::select(vec!["buy", "hi", "spin"]));
    let entities = prop::collection::vec(
        prop_oneof![
            (30i64..50).prop_map(|n| ("size", Value::Int(n))),
            prop::sample::select(vec!["a", "b"]).prop_map(|m| ("model", Value::from(m))),
        ],
        0..3,
    );
    prop_oneof![
        6 => (intent, entities, 0i64..120_000, any::<u64>()).prop_map(|(intent, entities, gap_ms, seed)| Step::Message {
            nlu: nlu(intent, &entities),
            gap_ms,
            seed,
        }),
        2 => any::<bool>().prop_map(|fresh| Step::Reload { fresh }),
        1 => (0.0..=1.0).prop_map(|at| Step::SnapshotAt { at }),
    ]
}

/// A bot whose sessions end within the histories' gaps, with a remembered
/// slot, a flow and a weighted draw.
const BOT: &str = r#"
bot: {name: b, version: "1", fallback: fallback, session_timeout: 2m}
intents:
  buy: {examples: [buy]}
  hi: {examples: [hi], response: hello}
  spin: {examples: [spin]}
entities:
  model: {lookup: {a: [], b: []}}
  size: {regex: '(\d+)', type: int}
slots:
  model: {type: text, remember: true}
  size: {type: int, range: [35, 46], invalid: bad_size}
  prize: {type: text}
responses:
  fallback: sorry
  hello: [hello, hi there]
  ask_model: which model?
  ask_size: which size?
  bad_size: sizes are 35-46
  done: "{model} {size} ok"
  won: "won {prize}"
tables:
  prizes: [{name: a, weight: 1}, {name: b, weight: 2}]
actions:
  draw: {draw: {table: prizes, weight: weight, set: {prize: name}}}
flows:
  buy:
    intents: [buy]
    steps:
      - ask: model
      - ask: size
      - say: done
  spin:
    intents: [spin]
    steps:
      - action: draw
      - say: won
"#;

fn dialogue_bot() -> Bot {
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

fn policy() -> impl Strategy<Value = SnapshotPolicy> {
    (1u64..12, 1i64..60_000).prop_map(|(every_events, every_ms)| SnapshotPolicy {
        every_events,
        every_ms,
    })
}

async fn check(store: Arc<dyn ConversationStore>, policy: SnapshotPolicy, steps: Vec<Step>) {
    let bot = BotRef {
        name: "b".into(),
        version: "1".into(),
    };
    let dialogue = dialogue_bot();
    let new_conv = || Conversations::new(Arc::clone(&store), conformance::key(), policy);
    let mut conv = new_conv();
    let mut state = conv.load("u").await.unwrap();
    let (mut log, mut ts) = (Vec::new(), 1_700_000_000_000);
    for (i, step) in steps.into_iter().enumerate() {
        match step {
            Step::Commit { kinds, gap_ms } => {
                ts += gap_ms;
                let events = seal(kinds, "u", state.seq, ts, &bot, &format!("m{i}"));
                for e in &events {
                    state.apply(e);
                }
                conv.commit(&state, &events).await.unwrap();
                log.extend(events);
            }
            Step::Message { nlu, gap_ms, seed } => {
                ts += gap_ms;
                let id = format!("m{i}");
                let input = Input {
                    message_id: &id,
                    text: "text",
                    nlu: &nlu,
                    route: None,
                };
                let turn = policy_step(&dialogue, state.clone(), &input, ts, seed);
                for e in &turn.events {
                    state.apply(e);
                }
                assert_eq!(
                    turn.state, state,
                    "the state a turn returns is not the fold of its events"
                );
                conv.commit(&turn.state, &turn.events).await.unwrap();
                log.extend(turn.events);
            }
            Step::Reload { fresh } => {
                if fresh {
                    conv = new_conv();
                }
                state = conv.load("u").await.unwrap();
            }
            Step::SnapshotAt { at } => {
                let prefix = State::from_events("u", &log[..(log.len() as f64 * at) as usize]);
                store
                    .put_snapshot(&conformance::key().sign(&prefix))
                    .await
                    .unwrap();
            }
        }
        assert_eq!(state, State::from_events("u", &log));
    }
    assert_eq!(
        new_conv().load("u").await.unwrap(),
        State::from_events("u", &log)
    );
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

proptest! {
    #[test]
    fn snapshots_never_change_the_fold_memory(policy in policy(), steps in prop::collection::vec(step(), 1..40)) {
        runtime().block_on(check(Arc::new(MemoryStore::new()), policy, steps));
    }
}

proptest! {
    #[test]
    fn turn_states_are_the_fold_of_the_log(policy in policy(), steps in prop::collection::vec(message_step(), 1..40)) {
        runtime().block_on(check(Arc::new(MemoryStore::new()), policy, steps));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]
    #[test]
    fn snapshots_never_change_the_fold_sqlite(policy in policy(), steps in prop::collection::vec(step(), 1..25)) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(dir.path()).unwrap());
        runtime().block_on(check(store, policy, steps));
    }
}

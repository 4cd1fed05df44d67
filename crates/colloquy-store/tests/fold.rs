//! Where snapshots fall must not change the state: snapshot + replay equals
//! the fold of the whole log, for any history, policy and reload pattern.

use colloquy_core::{seal, BotRef, EventKind, FlowEnd, State, Value};
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
    let new_conv = || Conversations::new(Arc::clone(&store), conformance::key(), policy);
    let mut conv = new_conv();
    let mut state = conv.load("u").await.unwrap();
    let (mut log, mut ts) = (Vec::new(), 1_700_000_000_000);
    for (i, step) in steps.into_iter().enumerate() {
        match step {
            Step::Commit { kinds, gap_ms } => {
                ts += gap_ms;
                let events = seal(kinds, "u", state.seq, ts, &bot, &format!("m{i}"));
                conv.commit(&mut state, &events).await.unwrap();
                log.extend(events);
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
    #![proptest_config(ProptestConfig::with_cases(12))]
    #[test]
    fn snapshots_never_change_the_fold_sqlite(policy in policy(), steps in prop::collection::vec(step(), 1..25)) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(dir.path()).unwrap());
        runtime().block_on(check(store, policy, steps));
    }
}

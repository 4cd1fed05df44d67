//! The behaviour every [`ConversationStore`] must show, written once. A
//! backend's test file calls [`run_all`] with a factory of fresh, empty
//! stores, from inside a multi-threaded tokio runtime. Failures panic, with
//! the case in the message.

use crate::{
    ConversationStore, Conversations, ErrorKind, SnapshotKey, SnapshotPolicy, StoreError,
    WriterStats,
};
use colloquy_core::{seal, BotRef, Event, EventKind, State, Value};
use std::sync::Arc;

pub async fn run_all(make: impl Fn() -> Arc<dyn ConversationStore>) {
    append_and_read_back(make()).await;
    seqs_must_continue_the_log(make()).await;
    stale_expected_seq_conflicts(make()).await;
    concurrent_appenders_one_wins(make()).await;
    many_users_concurrently(make()).await;
    duplicate_event_ids_rejected(make()).await;
    events_after_pages(make()).await;
    snapshot_keeps_newest(make()).await;
    load_uses_valid_snapshot(make()).await;
    tampered_snapshot_ignored(make()).await;
    stale_snapshot_ignored(make()).await;
    snapshot_with_wrong_key_ignored(make()).await;
    policy_every_events(make()).await;
    policy_every_ms(make()).await;
    sealed_at_rest_and_resealed(make()).await;
}

/// For stores with a group-committing writer: 64 users appending at once
/// are all answered, and most of their appends share a commit. `stats`
/// reads the store's writer counters.
pub async fn concurrent_appends_share_commits(
    store: Arc<dyn ConversationStore>,
    stats: impl Fn() -> WriterStats,
) {
    let tasks: Vec<_> = (0..64)
        .map(|u| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let user = format!("u{u}");
                for a in 0..5 {
                    store
                        .append(&user, a * 2, &events(&user, a * 2, 2, 0, "m"))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let stats = stats();
    assert_eq!(stats.requests, 64 * 5);
    assert!(
        stats.commits < stats.requests / 2,
        "no group commit happened: {stats:?}"
    );
}

/// The key the suite signs with.
pub fn key() -> SnapshotKey {
    SnapshotKey::new(b"conformance-suite-key-0123456789".to_vec()).expect("key is long enough")
}

/// `n` events of `user` after seq `after`, as the policy would seal them for
/// message `{tag}-{after}`: the same arguments give the same events (and
/// ids), a different `tag` gives other ids.
pub fn events(user: &str, after: u64, n: usize, ts_ms: i64, tag: &str) -> Vec<Event> {
    let bot = BotRef {
        name: "shop".into(),
        version: "1".into(),
    };
    let message_id = format!("{tag}-{after}");
    let kinds = (after..after + n as u64)
        .map(|i| match i % 6 {
            0 => EventKind::UserSaid {
                message_id: message_id.clone(),
                text: format!("我想买一双跑鞋，{i} 号"),
            },
            1 => EventKind::SlotSet {
                slot: "size".into(),
                value: Value::Int(i as i64),
                sensitive: false,
            },
            2 => EventKind::SlotSet {
                slot: "brand".into(),
                value: Value::Text("星云".into()),
                sensitive: false,
            },
            3 => EventKind::FlowStarted {
                flow: format!("flow{}", i % 3),
            },
            4 => EventKind::SlotCleared {
                slot: "size".into(),
            },
            _ => EventKind::SessionStarted {
                session: i,
                kept: vec!["brand".into()],
            },
        })
        .collect();
    seal(kinds, user, after, ts_ms, &bot, &message_id)
}

/// Append `batches` batches of `per_batch` events to a fresh user log, one
/// second of event time apart; returns the whole log.
async fn fill(
    store: &dyn ConversationStore,
    user: &str,
    batches: usize,
    per_batch: usize,
) -> Vec<Event> {
    let mut log = Vec::new();
    for b in 0..batches {
        let batch = events(
            user,
            log.len() as u64,
            per_batch,
            1_700_000_000_000 + b as i64 * 1000,
            "fill",
        );
        store
            .append(user, log.len() as u64, &batch)
            .await
            .expect("fill append");
        log.extend(batch);
    }
    log
}

async fn read_all(store: &dyn ConversationStore, user: &str) -> Vec<Event> {
    store
        .events_after(user, 0, usize::MAX)
        .await
        .expect("events_after")
}

fn conversations(store: Arc<dyn ConversationStore>, policy: SnapshotPolicy) -> Conversations {
    Conversations::new(store, key(), policy)
}

pub async fn append_and_read_back(store: Arc<dyn ConversationStore>) {
    let first = events("alice", 0, 3, 1_000, "m");
    assert_eq!(
        store
            .append("alice", 0, &first)
            .await
            .expect("first append"),
        3
    );
    let second = events("alice", 3, 4, 2_000, "m");
    assert_eq!(
        store
            .append("alice", 3, &second)
            .await
            .expect("second append"),
        7
    );
    let all: Vec<Event> = first.into_iter().chain(second).collect();
    assert_eq!(
        read_all(&*store, "alice").await,
        all,
        "round trip: events read back differ"
    );
    assert_eq!(store.last_seq("alice").await.unwrap(), 7);
    assert_eq!(store.last_seq("nobody").await.unwrap(), 0);
    assert!(read_all(&*store, "nobody").await.is_empty());
}

pub async fn seqs_must_continue_the_log(store: Arc<dyn ConversationStore>) {
    let log = fill(&*store, "alice", 1, 2).await;
    let bad_batches = [
        ("starts past expected + 1", events("alice", 3, 2, 0, "x")),
        ("starts at expected", events("alice", 1, 2, 0, "x")),
        ("gap inside", {
            let mut b = events("alice", 2, 3, 0, "x");
            b.remove(1);
            b
        }),
        ("other user's event", events("bob", 2, 1, 0, "x")),
        ("empty", Vec::new()),
        // A run of 400 nines in a message once parsed to an infinite
        // float that was stored as `null` and broke every later read.
        ("infinite slot value", {
            let mut b = events("alice", 2, 2, 0, "x");
            b[1].kind = EventKind::SlotSet {
                slot: "foot_cm".into(),
                value: Value::Float(f64::INFINITY),
                sensitive: false,
            };
            b
        }),
        ("NaN entity value", {
            let mut b = events("alice", 2, 1, 0, "x");
            b[0].kind = EventKind::IntentRecognised {
                intent: None,
                confidence: 0.1,
                entities: vec![colloquy_core::EntityMatch {
                    entity: "number".into(),
                    value: Value::List(vec![Value::Float(f64::NAN)]),
                    text: "9".into(),
                    start: 0,
                    end: 1,
                }],
            };
            b
        }),
    ];
    for (what, batch) in bad_batches {
        let err = store.append("alice", 2, &batch).await.expect_err(what);
        assert_eq!(err.kind(), ErrorKind::Invalid, "{what}: {err}");
    }
    assert_eq!(
        read_all(&*store, "alice").await,
        log,
        "a rejected append wrote something"
    );
}

pub async fn stale_expected_seq_conflicts(store: Arc<dyn ConversationStore>) {
    let log = fill(&*store, "alice", 1, 3).await;
    for expected in [0, 1, 5] {
        let err = store
            .append("alice", expected, &events("alice", expected, 2, 0, "late"))
            .await
            .expect_err("stale expected seq must fail");
        assert!(
            matches!(&err, StoreError::Conflict { user_id, expected: e, actual: 3 } if user_id == "alice" && *e == expected),
            "expected a conflict at 3, got {err}"
        );
        assert_eq!(err.kind(), ErrorKind::Conflict);
    }
    assert_eq!(
        read_all(&*store, "alice").await,
        log,
        "a conflicting append changed the log"
    );
}

pub async fn concurrent_appenders_one_wins(store: Arc<dyn ConversationStore>) {
    let log = fill(&*store, "alice", 1, 2).await;
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let batch = events("alice", 2, 3, 5_000, &format!("racer{i}"));
                (store.append("alice", 2, &batch).await, batch)
            })
        })
        .collect();
    let mut winners = Vec::new();
    for task in tasks {
        match task.await.expect("appender task") {
            (Ok(last), batch) => {
                assert_eq!(last, 5);
                winners.push(batch);
            }
            (Err(err), _) => assert!(
                matches!(err, StoreError::Conflict { actual: 5, .. }),
                "loser got {err}"
            ),
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "exactly one of the concurrent appends must win"
    );
    let expected: Vec<Event> = log.into_iter().chain(winners.remove(0)).collect();
    assert_eq!(
        read_all(&*store, "alice").await,
        expected,
        "the log forked or lost the winner"
    );
}

pub async fn many_users_concurrently(store: Arc<dyn ConversationStore>) {
    let tasks: Vec<_> = (0..16)
        .map(|u| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let user = format!("user-{u}");
                let mut log = Vec::new();
                for a in 0..25 {
                    let batch = events(&user, log.len() as u64, 2, a, "m");
                    let last = store
                        .append(&user, log.len() as u64, &batch)
                        .await
                        .expect("append");
                    log.extend(batch);
                    assert_eq!(last, log.len() as u64);
                }
                (user, log)
            })
        })
        .collect();
    for task in tasks {
        let (user, log) = task.await.expect("user task");
        assert_eq!(read_all(&*store, &user).await, log, "log of {user}");
    }
}

pub async fn duplicate_event_ids_rejected(store: Arc<dyn ConversationStore>) {
    let log = fill(&*store, "alice", 1, 3).await;
    let mut again = log[0].clone();
    again.seq = 4;
    let mut twice = events("alice", 3, 2, 0, "twice");
    twice[1].event_id = twice[0].event_id;
    let cases = [
        ("id already in the log", "alice", 3, vec![again]),
        ("id repeated in the batch", "alice", 3, twice),
    ];
    for (what, user, expected, batch) in cases {
        let err = store.append(user, expected, &batch).await.expect_err(what);
        assert!(
            matches!(err, StoreError::DuplicateEvent { .. }),
            "{what}: got {err}"
        );
        assert_eq!(err.kind(), ErrorKind::Invalid);
    }
    assert_eq!(read_all(&*store, "alice").await, log);
    // The rejected appends left nothing half-done behind.
    assert_eq!(
        store
            .append("alice", 3, &events("alice", 3, 2, 0, "ok"))
            .await
            .unwrap(),
        5
    );
    // Ids are unique within a user's log, not across users: bob may hold
    // one of alice's, and alice still may not reuse it.
    let mut bobs = events("bob", 0, 1, 0, "m");
    bobs[0].event_id = log[0].event_id;
    assert_eq!(store.append("bob", 0, &bobs).await.unwrap(), 1);
    assert_eq!(read_all(&*store, "bob").await, bobs);
    let mut again = log[1].clone();
    again.seq = 6;
    let err = store.append("alice", 5, &[again]).await.unwrap_err();
    assert!(matches!(err, StoreError::DuplicateEvent { .. }), "{err}");
}

pub async fn events_after_pages(store: Arc<dyn ConversationStore>) {
    let log = fill(&*store, "alice", 5, 5).await;
    let mut paged = Vec::new();
    loop {
        let page = store
            .events_after("alice", paged.len() as u64, 7)
            .await
            .unwrap();
        assert!(page.len() <= 7);
        if page.is_empty() {
            break;
        }
        paged.extend(page);
    }
    assert_eq!(paged, log);
    assert_eq!(
        store.events_after("alice", 10, 5).await.unwrap(),
        log[10..15].to_vec()
    );
    assert!(store.events_after("alice", 25, 5).await.unwrap().is_empty());
    assert!(store.events_after("alice", 99, 5).await.unwrap().is_empty());
    assert!(store.events_after("alice", 0, 0).await.unwrap().is_empty());
}

pub async fn snapshot_keeps_newest(store: Arc<dyn ConversationStore>) {
    let log = fill(&*store, "alice", 3, 3).await;
    let at = |seq: usize| key().sign(&State::from_events("alice", &log[..seq]));
    assert_eq!(store.get_snapshot("alice").await.unwrap(), None);
    store.put_snapshot(&at(5)).await.unwrap();
    assert_eq!(
        store.get_snapshot("alice").await.unwrap(),
        Some(at(5)),
        "snapshot round trip"
    );
    store.put_snapshot(&at(3)).await.unwrap();
    assert_eq!(
        store.get_snapshot("alice").await.unwrap(),
        Some(at(5)),
        "an older snapshot replaced a newer one"
    );
    store.put_snapshot(&at(8)).await.unwrap();
    assert_eq!(store.get_snapshot("alice").await.unwrap(), Some(at(8)));
    assert_eq!(store.get_snapshot("bob").await.unwrap(), None);
}

pub async fn load_uses_valid_snapshot(store: Arc<dyn ConversationStore>) {
    let log = fill(&*store, "alice", 10, 3).await;
    store
        .put_snapshot(&key().sign(&State::from_events("alice", &log[..21])))
        .await
        .unwrap();
    let (state, info) = conversations(store, SnapshotPolicy::default())
        .load_with_info("alice")
        .await
        .unwrap();
    assert_eq!(info.snapshot_seq, Some(21), "valid snapshot not used");
    assert_eq!(info.replayed, 9);
    assert_eq!(state, State::from_events("alice", &log));
}

/// Load must fall back to a full replay with the snapshot put in place.
async fn assert_ignored(store: &Arc<dyn ConversationStore>, what: &str, user: &str, log: &[Event]) {
    let conv = conversations(Arc::clone(store), SnapshotPolicy::default());
    let (state, info) = conv.load_with_info(user).await.unwrap();
    assert_eq!(info.snapshot_seq, None, "{what}: snapshot was used");
    assert_eq!(info.replayed, log.len(), "{what}");
    assert_eq!(
        state,
        State::from_events(user, log),
        "{what}: state differs from the full fold"
    );
}

pub async fn tampered_snapshot_ignored(store: Arc<dyn ConversationStore>) {
    let log = fill(&*store, "alice", 10, 3).await;
    let good = key().sign(&State::from_events("alice", &log[..20]));
    let mut slot = good.clone();
    slot.state
        .slots
        .insert("brand".into(), Value::Text("forged".into()));
    store.put_snapshot(&slot).await.unwrap();
    assert_ignored(&store, "slot changed", "alice", &log).await;

    // Seqs move forward only, so each forgery lands on a newer seq.
    let mut seq = good.clone();
    seq.seq = 25;
    seq.state.seq = 25;
    store.put_snapshot(&seq).await.unwrap();
    assert_ignored(&store, "seq changed", "alice", &log).await;
}

pub async fn stale_snapshot_ignored(store: Arc<dyn ConversationStore>) {
    let log = fill(&*store, "alice", 10, 3).await;
    let bob_log = fill(&*store, "bob", 10, 3).await;
    let mut other = key().sign(&State::from_events("bob", &bob_log[..12]));
    other.user_id = "alice".into();
    other.hmac = key().mac(&other);
    store.put_snapshot(&other).await.unwrap();
    assert_ignored(&store, "other user's state", "alice", &log).await;

    let mut diverged = key().sign(&State::from_events("alice", &log[..15]));
    diverged.ts_ms += 1;
    diverged.state.last_ts_ms += 1;
    diverged.hmac = key().mac(&diverged);
    store.put_snapshot(&diverged).await.unwrap();
    assert_ignored(&store, "timestamp not in the log", "alice", &log).await;

    let mut ahead = State::from_events("alice", &log);
    ahead.seq = 40;
    store.put_snapshot(&key().sign(&ahead)).await.unwrap();
    assert_ignored(&store, "beyond the log's end", "alice", &log).await;
}

pub async fn snapshot_with_wrong_key_ignored(store: Arc<dyn ConversationStore>) {
    let log = fill(&*store, "alice", 10, 3).await;
    let other_key = SnapshotKey::new(b"some-other-deployment-key-000000".to_vec()).unwrap();
    store
        .put_snapshot(&other_key.sign(&State::from_events("alice", &log[..20])))
        .await
        .unwrap();
    assert_ignored(&store, "wrong key", "alice", &log).await;
}

/// Commit `commits` messages of 3 events, `step_ms` of event time apart, and
/// check after each that the snapshot is where `expect` (given the seq and
/// ts after the commit and the last snapshot's) says.
async fn check_policy(
    store: Arc<dyn ConversationStore>,
    policy: SnapshotPolicy,
    commits: usize,
    step_ms: i64,
    due: impl Fn(u64, i64, (u64, i64)) -> bool,
) {
    let conv = conversations(Arc::clone(&store), policy);
    let mut state = conv.load("alice").await.unwrap();
    let (mut log, mut last, mut first_ts) = (Vec::new(), None::<(u64, i64)>, None);
    for c in 0..commits {
        let ts = 1_700_000_000_000 + c as i64 * step_ms;
        let batch = events("alice", state.seq, 3, ts, "m");
        // `commit` takes the state after the batch, as the policy hands it over.
        for e in &batch {
            state.apply(e);
        }
        conv.commit(&state, &batch).await.unwrap();
        log.extend(batch);
        let since = last.unwrap_or((0, *first_ts.get_or_insert(ts)));
        if due(state.seq, ts, since) {
            last = Some((state.seq, ts));
        }
        let snap = store.get_snapshot("alice").await.unwrap();
        assert_eq!(
            snap.map(|s| s.seq),
            last.map(|l| l.0),
            "after commit {c} ({policy:?})"
        );
    }
    assert_eq!(
        state,
        State::from_events("alice", &log),
        "the turn-by-turn states differ from the fold of the log"
    );
    let (loaded, info) = conv.load_with_info("alice").await.unwrap();
    assert_eq!(loaded, state);
    assert_eq!(info.snapshot_seq, last.map(|l| l.0));
}

pub async fn policy_every_events(store: Arc<dyn ConversationStore>) {
    // Commits of 3 events reach 6 exactly: the threshold itself triggers.
    let policy = SnapshotPolicy {
        every_events: 6,
        every_ms: i64::MAX,
    };
    check_policy(store, policy, 10, 1000, |seq, _, (last, _)| seq - last >= 6).await;
}

pub async fn policy_every_ms(store: Arc<dyn ConversationStore>) {
    let policy = SnapshotPolicy {
        every_events: u64::MAX,
        every_ms: 1000,
    };
    check_policy(store, policy, 12, 500, |_, ts, (_, last_ts)| {
        ts - last_ts >= 1000
    })
    .await;
}

/// Personal events and the sensitive slots of snapshots are stored sealed
/// ([`crate::Sealed`] over this backend): what the backend itself returns
/// holds none of the values, what the sealed store returns is what was
/// written, a record moved onto another user does not open, and after a
/// rotation [`ConversationStore::reseal`] leaves every value under the new
/// key, so a ring without the old key reads everything.
pub async fn sealed_at_rest_and_resealed(store: Arc<dyn ConversationStore>) {
    use crate::seal::{rotate_file, Resealer};
    use crate::{KeyRing, Sealed};
    const PHONE: &str = "13800138000";
    const ADDRESS: &str = "世纪大道100号";
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("ring.json");
    let ring = Arc::new(KeyRing::open_or_create(&path).expect("ring"));
    let sealed: Arc<dyn ConversationStore> = Arc::new(Sealed::new(store.clone(), ring.clone()));
    let bot = BotRef {
        name: "shop".into(),
        version: "1".into(),
    };
    let mut written = seal(
        vec![
            EventKind::UserSaid {
                message_id: "m-1".into(),
                text: format!("寄到{ADDRESS},电话{PHONE}"),
            },
            EventKind::SlotSet {
                slot: "phone".into(),
                value: Value::Text(PHONE.into()),
                sensitive: true,
            },
            EventKind::SlotSet {
                slot: "address".into(),
                value: Value::Text(ADDRESS.into()),
                sensitive: true,
            },
            EventKind::BotSaid {
                text: format!("好的,寄到{ADDRESS}"),
                response: None,
                payload: None,
                shown: None,
            },
            EventKind::SlotSet {
                slot: "size".into(),
                value: Value::Int(39),
                sensitive: false,
            },
        ],
        "sealed-user",
        0,
        1_000,
        &bot,
        "m-1",
    );
    for e in &mut written[..4] {
        e.personal = true;
    }
    sealed
        .append("sealed-user", 0, &written)
        .await
        .expect("append");
    let state = State::from_events("sealed-user", &written);
    let snapshot = key().sign(&state);
    sealed.put_snapshot(&snapshot).await.expect("snapshot");

    let raw = |store: Arc<dyn ConversationStore>| async move {
        let events = store
            .events_after("sealed-user", 0, 100)
            .await
            .expect("raw read");
        let snap = store
            .get_snapshot("sealed-user")
            .await
            .expect("raw snapshot");
        (events, snap.expect("a snapshot"))
    };
    let (stored, stored_snap) = raw(store.clone()).await;
    let text = serde_json::to_string(&(&stored, &stored_snap)).expect("json");
    for secret in [PHONE, ADDRESS] {
        assert!(
            !text.contains(secret),
            "{secret} stored in the clear: {text}"
        );
    }
    assert_eq!(stored.iter().filter(|e| e.sealed.is_some()).count(), 4);
    assert!(
        text.contains("39"),
        "a value that is not personal stays readable"
    );

    let read = sealed
        .events_after("sealed-user", 0, 100)
        .await
        .expect("read");
    assert_eq!(read, written, "the sealed store returns what was written");
    let snap = sealed
        .get_snapshot("sealed-user")
        .await
        .expect("get")
        .expect("some");
    assert_eq!(snap, snapshot);
    key().verify(&snap).expect("the opened snapshot verifies");

    let mut moved = stored[1].clone();
    moved.user_id = "other-user".into();
    assert!(
        ring.open_event(&mut moved).is_err(),
        "a sealed value moved to another user opened"
    );

    assert_eq!(rotate_file(&path).expect("rotate"), "k0002");
    ring.reload().expect("reload");
    let resealer = Resealer::new(ring.clone(), |_| {});
    let report = sealed.reseal(&resealer).await.expect("reseal");
    assert!(report.rewritten >= 2, "{report:?}");
    let (stored, stored_snap) = raw(store.clone()).await;
    for e in stored.iter().filter_map(|e| e.sealed.as_deref()) {
        assert_eq!(KeyRing::key_of_text(e).expect("sealed"), "k0002");
    }
    let state_key = stored_snap.state.sealed.as_deref().expect("sealed state");
    assert_eq!(KeyRing::key_of_text(state_key).expect("sealed"), "k0002");
    let again = sealed.reseal(&resealer).await.expect("reseal again");
    assert_eq!(again.rewritten, 0, "a second run finds nothing to do");

    let ring_text = std::fs::read_to_string(&path).expect("ring file");
    let mut file: serde_json::Value = serde_json::from_str(&ring_text).expect("ring json");
    file["keys"].as_object_mut().expect("keys").remove("k0001");
    let newest_only = Arc::new(KeyRing::from_json(&file.to_string(), "test").expect("ring"));
    let sealed = Sealed::new(store, newest_only);
    assert_eq!(
        sealed
            .events_after("sealed-user", 0, 100)
            .await
            .expect("read"),
        written
    );
    assert_eq!(
        sealed.get_snapshot("sealed-user").await.expect("get"),
        Some(snapshot)
    );
}

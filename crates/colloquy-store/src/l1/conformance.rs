//! The behaviour every [`HotStates`] backend must show, written once: what
//! the trait's docs promise, checked case by case. A backend's test file
//! calls [`run_all`] with the backend's [`Capabilities`] and a factory of
//! fresh L1s, each seen through two handles, from inside a multi-threaded
//! tokio runtime. Failures panic, with the case in the message.

use super::HotStates;
use colloquy_core::{State, Value};
use std::sync::Arc;

/// Two handles on one fresh, empty L1, as two worker processes hold them;
/// for a backend private to one process, the same object twice.
pub struct Handles {
    pub a: Arc<dyn HotStates>,
    pub b: Arc<dyn HotStates>,
}

/// Where backends legitimately differ (see "One copy or near copies" in the
/// [`HotStates`] docs); the suite checks each backend against what it
/// declares here, never less.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// One copy per user for all handles: a get on any handle returns the
    /// newest state any handle put, and a forget on one handle is seen by
    /// all. Without it (near copies), a handle's get may lag behind other
    /// handles' puts and forgets, but never behind its own puts.
    pub coherent: bool,
    /// `take` hands the entry over and leaves none: a get right after it
    /// misses. Without it, a get right after a take returns the newest state
    /// any handle put (the shared copy stays).
    pub take_removes: bool,
}

impl Capabilities {
    /// [`MemoryHotStates`](super::MemoryHotStates): one process, one copy.
    pub const MEMORY: Capabilities = Capabilities {
        coherent: true,
        take_removes: true,
    };
    /// `RedisHotStates`: one copy in Redis, shared by every handle.
    pub const REDIS: Capabilities = Capabilities {
        coherent: true,
        take_removes: false,
    };
    /// [`LayeredHotStates`](super::LayeredHotStates): near copies per
    /// handle in front of a shared copy.
    pub const LAYERED: Capabilities = Capabilities {
        coherent: false,
        take_removes: false,
    };
}

pub async fn run_all(caps: Capabilities, make: impl Fn() -> Handles) {
    let h = make();
    miss_then_hit(&h).await;
    no_errors(&h, "miss_then_hit");
    let h = make();
    newer_wins_on_one_handle(&h).await;
    no_errors(&h, "newer_wins_on_one_handle");
    let h = make();
    newer_wins_across_handles(&h, caps).await;
    no_errors(&h, "newer_wins_across_handles");
    let h = make();
    forget_drops_the_entry(&h, caps).await;
    no_errors(&h, "forget_drops_the_entry");
    let h = make();
    take_returns_what_get_would(&h, caps).await;
    no_errors(&h, "take_returns_what_get_would");
    let h = make();
    users_do_not_mix(&h).await;
    no_errors(&h, "users_do_not_mix");
    let h = make();
    every_get_and_take_is_counted_once(&h).await;
    no_errors(&h, "every_get_and_take_is_counted_once");
}

/// A case that met backend errors proved nothing about the behaviour.
fn no_errors(h: &Handles, case: &str) {
    for (handle, l1) in [("a", &h.a), ("b", &h.b)] {
        assert_eq!(
            l1.stats().errors,
            0,
            "{case}: backend errors on handle {handle}"
        );
    }
}

/// The state the suite puts as `user`'s at `seq`: the same arguments give
/// equal states, with slots that a changed byte would show.
pub fn state(user: &str, seq: u64) -> State {
    let mut s = State::new(user);
    s.seq = seq;
    s.last_ts_ms = 1_700_000_000_000 + seq as i64;
    s.slots.insert("size".into(), Value::Int(39 + seq as i64));
    s.slots.insert("brand".into(), Value::Text("星云".into()));
    s
}

async fn put(l1: &Arc<dyn HotStates>, user: &str, seq: u64) {
    l1.put(Arc::new(state(user, seq))).await;
}

/// Checks what `found` (a get's or take's answer on a handle) may be, once
/// `own` is the newest seq the handle put itself and `newest` the newest
/// any handle put: exactly `newest` on a coherent backend; from `own` to
/// `newest` with near copies. Either way a state that was put, unaltered.
fn lags_at_most(found: Option<State>, user: &str, own: u64, newest: u64, caps: Capabilities) {
    let seq = found.as_ref().map(|s| s.seq);
    if caps.coherent {
        assert_eq!(seq, Some(newest), "coherent: the newest of any handle");
    } else {
        assert!(
            seq.is_some_and(|seq| (own..=newest).contains(&seq)),
            "a near copy is at least the handle's own newest ({own}) and at most the \
             newest of all ({newest}); got {seq:?}"
        );
    }
    let seq = seq.expect("checked above");
    assert_eq!(found, Some(state(user, seq)), "unaltered");
}

/// After a take on a handle: nothing when take hands entries over, else
/// the shared copy, the newest any handle put.
async fn after_take(l1: &Arc<dyn HotStates>, user: &str, newest: Option<u64>, caps: Capabilities) {
    let want = if caps.take_removes {
        None
    } else {
        newest.map(|seq| state(user, seq))
    };
    assert_eq!(l1.get(user).await, want, "a get right after a take");
}

pub async fn miss_then_hit(h: &Handles) {
    let (a, b) = (&h.a, &h.b);
    let user = "hit";
    let before = a.stats();
    assert_eq!(a.get(user).await, None, "nothing put yet");
    let s = state(user, 3);
    a.put(Arc::new(s.clone())).await;
    assert_eq!(
        a.get(user).await,
        Some(s.clone()),
        "a hit, equal to what was put"
    );
    assert_eq!(b.get(user).await, Some(s), "the other worker sees it too");
    let after = a.stats();
    assert_eq!(after.misses - before.misses, 1);
    assert!(after.hits - before.hits >= 1);
    assert_eq!(after.errors, before.errors, "no backend errors");
}

pub async fn newer_wins_on_one_handle(h: &Handles) {
    let a = &h.a;
    let user = "one-handle";
    put(a, user, 5).await;
    put(a, user, 7).await;
    put(a, user, 6).await;
    assert_eq!(
        a.get(user).await,
        Some(state(user, 7)),
        "a late older put lost"
    );
    put(a, user, 7).await;
    assert_eq!(
        a.get(user).await,
        Some(state(user, 7)),
        "same seq: same state"
    );
    put(a, user, 8).await;
    assert_eq!(a.get(user).await, Some(state(user, 8)));
}

pub async fn newer_wins_across_handles(h: &Handles, caps: Capabilities) {
    let (a, b) = (&h.a, &h.b);
    let user = "two-handles";
    put(a, user, 5).await;
    put(b, user, 7).await;
    put(a, user, 6).await;
    lags_at_most(a.get(user).await, user, 6, 7, caps);
    assert_eq!(
        b.get(user).await,
        Some(state(user, 7)),
        "a late older put lost"
    );
    put(a, user, 7).await;
    assert_eq!(
        b.get(user).await,
        Some(state(user, 7)),
        "same seq: same state"
    );
    put(b, user, 8).await;
    lags_at_most(a.get(user).await, user, 7, 8, caps);

    // Many workers racing: whatever the interleaving, the newest stays.
    let seqs: Vec<u64> = (1..=40).map(|k| 100 + (k * 7919) % 40).collect();
    let newest = *seqs.iter().max().unwrap();
    let mut own = [7, 8];
    let mut puts = Vec::new();
    for (k, &seq) in seqs.iter().enumerate() {
        let l1 = Arc::clone(if k % 2 == 0 { a } else { b });
        own[k % 2] = own[k % 2].max(seq);
        puts.push(tokio::spawn(async move {
            l1.put(Arc::new(state(user, seq))).await
        }));
    }
    for p in puts {
        p.await.expect("a racing put");
    }
    lags_at_most(a.get(user).await, user, own[0], newest, caps);
    lags_at_most(b.get(user).await, user, own[1], newest, caps);
    // A take drops what a handle holds of its own, so what it reads next
    // is the shared copy: the newest of all.
    lags_at_most(a.take(user).await, user, own[0], newest, caps);
    after_take(a, user, Some(newest), caps).await;
}

pub async fn forget_drops_the_entry(h: &Handles, caps: Capabilities) {
    let (a, b) = (&h.a, &h.b);
    let user = "forget";
    put(a, user, 9).await;
    a.forget(user).await;
    assert_eq!(
        a.get(user).await,
        None,
        "forgotten by the handle that forgot"
    );
    put(a, user, 2).await;
    assert_eq!(
        a.get(user).await,
        Some(state(user, 2)),
        "after a forget any committed state may be put again"
    );

    // Forgotten by another handle.
    put(a, user, 9).await;
    b.forget(user).await;
    assert_eq!(
        b.get(user).await,
        None,
        "forgotten by the handle that forgot"
    );
    let seen = a.get(user).await;
    if caps.coherent {
        assert_eq!(seen, None, "forgotten everywhere");
    } else {
        assert!(
            seen.is_none() || seen == Some(state(user, 9)),
            "a near copy may outlive another handle's forget, unaltered: {seen:?}"
        );
    }
    assert_eq!(
        b.get(user).await,
        None,
        "a near copy left elsewhere is never written back"
    );
    a.take(user).await;
    assert_eq!(
        a.get(user).await,
        None,
        "once a handle's own copy is gone, the forget shows"
    );
    put(b, user, 3).await;
    assert_eq!(
        a.get(user).await,
        Some(state(user, 3)),
        "an older state put after the forget is kept and seen"
    );

    a.forget("never-seen-user-of-the-suite").await;
}

pub async fn take_returns_what_get_would(h: &Handles, caps: Capabilities) {
    let a = &h.a;
    let user = "take";
    assert_eq!(a.take(user).await, None, "nothing put yet");
    put(a, user, 4).await;
    assert_eq!(a.take(user).await, Some(state(user, 4)));
    after_take(a, user, Some(4), caps).await;
    put(a, user, 5).await;
    assert_eq!(a.take(user).await, Some(state(user, 5)));
    let again = a.take(user).await;
    let want = (!caps.take_removes).then(|| state(user, 5));
    assert_eq!(again, want, "a take right after a take");
}

pub async fn users_do_not_mix(h: &Handles) {
    let a = &h.a;
    let (x, y) = ("mix-x", "mix-y");
    put(a, x, 4).await;
    assert_eq!(a.get(y).await, None);
    put(a, y, 1).await;
    assert_eq!(a.get(x).await.map(|s| s.user_id), Some(x.to_string()));
    assert_eq!(a.get(y).await.map(|s| s.seq), Some(1));
    a.forget(y).await;
    assert_eq!(a.get(x).await, Some(state(x, 4)), "forgetting one user");
}

pub async fn every_get_and_take_is_counted_once(h: &Handles) {
    let (a, b) = (&h.a, &h.b);
    let user = "counted";
    let before = a.stats();
    let mut found = 0;
    put(b, user, 1).await;
    for hit in [
        a.get("counted-nobody").await.is_some(),
        a.get(user).await.is_some(),
        a.take(user).await.is_some(),
        a.take("counted-nobody").await.is_some(),
    ] {
        found += u64::from(hit);
    }
    put(a, user, 2).await;
    found += u64::from(a.get(user).await.is_some());
    let after = a.stats();
    assert_eq!(
        (after.hits + after.misses) - (before.hits + before.misses),
        5,
        "{after:?}"
    );
    assert_eq!(after.hits - before.hits, found, "{after:?}");
    assert_eq!(after.rejected, before.rejected, "nothing untrusted");
}

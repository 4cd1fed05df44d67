//! Which version of a bot answers a user: the rollout (a stable version,
//! optionally a canary for some user-id tails, the versions withdrawn by a
//! rollback) and the routing rule every process applies the same way.
//!
//! A user's **tail** is the last character of their user id when it is a
//! decimal digit, else the last decimal digit of a stable hash of the id
//! (FNV-1a, 64 bits), so `alice` always has the same tail, on every process
//! and after every restart. A rollout with canary tails `[0, 1]` sends 20 %
//! of users to the canary.
//!
//! A conversation is **pinned**: a user whose session is still running on a
//! version keeps that version until the session ends, even when the rollout
//! now assigns another, so a new version never breaks a flow in progress.
//! A withdrawn (rolled-back) version is the exception: its users move at
//! their next turn.
//!
//! A rollout with a canary may carry **guards**: limits on how much worse
//! than stable the canary may do over a sliding window (fallback, handoff
//! or action error rate, p99 turn latency), checked only once the canary
//! answered a minimum number of turns in it. [`Rollout::breached`] is the
//! pure check; the worker keeps the counts and acts on a breach.

use crate::state::State;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The versions of one bot that serve users, and how they are split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rollout {
    pub stable: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<Canary>,
    /// Versions rolled back: nobody stays pinned on them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub withdrawn: Vec<String>,
    /// Limits on the canary; a breach rolls it back. Absent from rollouts
    /// stored before guards existed, which read unchanged.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub guards: Vec<Guard>,
}

/// What a guard compares between canary and stable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GuardMetric {
    /// Turns answered with the bot's fallback response, of all turns.
    FallbackRate,
    /// Turns that handed the user to a human, of all turns.
    HandoffRate,
    /// Action calls that failed, per turn.
    ActionErrorRate,
    /// The 99th percentile of turn latency, in milliseconds.
    P99Ms,
}

impl GuardMetric {
    pub const ALL: [GuardMetric; 4] = [
        GuardMetric::FallbackRate,
        GuardMetric::HandoffRate,
        GuardMetric::ActionErrorRate,
        GuardMetric::P99Ms,
    ];

    pub fn name(self) -> &'static str {
        match self {
            GuardMetric::FallbackRate => "fallback_rate",
            GuardMetric::HandoffRate => "handoff_rate",
            GuardMetric::ActionErrorRate => "action_error_rate",
            GuardMetric::P99Ms => "p99_ms",
        }
    }

    pub fn parse(name: &str) -> Option<GuardMetric> {
        GuardMetric::ALL.into_iter().find(|m| m.name() == name)
    }
}

/// A limit on the canary: its figure may exceed stable's by at most
/// `max_increase` over the last `window`, once it answered `min_turns`
/// turns in that window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Guard {
    pub metric: GuardMetric,
    /// For a rate, in rate points (0.2: the canary's rate may be 20 points
    /// above stable's); for `p99_ms`, in milliseconds.
    pub max_increase: f64,
    #[serde(default = "default_window", with = "crate::duration::text")]
    pub window: Duration,
    /// Below this many canary turns in the window the guard never fires: a
    /// handful of turns says nothing.
    #[serde(default = "default_min_turns")]
    pub min_turns: u64,
}

fn default_window() -> Duration {
    Duration::from_secs(60)
}

fn default_min_turns() -> u64 {
    20
}

/// The longest guard window: the worker keeps this much of its turn
/// counts, one bucket a second.
pub const MAX_GUARD_WINDOW: Duration = Duration::from_secs(600);

/// Latency buckets of [`WindowCounts`]: bucket `i` holds turns of at most
/// 2^(i/4) ms (each about 19 % wider than the one before), the last one
/// everything slower; p99 is read as the upper bound of its bucket.
pub const LATENCY_BUCKETS: usize = 64;

/// One version's turns over some span, as guards read them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowCounts {
    pub turns: u64,
    pub fallbacks: u64,
    pub handoffs: u64,
    pub action_errors: u64,
    /// Turns by latency bucket (see [`LATENCY_BUCKETS`]).
    pub latency: [u64; LATENCY_BUCKETS],
}

impl Default for WindowCounts {
    fn default() -> Self {
        WindowCounts {
            turns: 0,
            fallbacks: 0,
            handoffs: 0,
            action_errors: 0,
            latency: [0; LATENCY_BUCKETS],
        }
    }
}

/// The bucket of a turn that took `ms` milliseconds.
fn latency_bucket(ms: f64) -> usize {
    if ms <= 1.0 {
        return 0;
    }
    ((4.0 * ms.log2()).ceil() as usize).min(LATENCY_BUCKETS - 1)
}

fn bucket_bound_ms(i: usize) -> f64 {
    2f64.powf(i as f64 / 4.0)
}

impl WindowCounts {
    pub fn add_turn(
        &mut self,
        fallback: bool,
        handoff: bool,
        action_errors: u64,
        latency: Duration,
    ) {
        self.turns += 1;
        self.fallbacks += u64::from(fallback);
        self.handoffs += u64::from(handoff);
        self.action_errors += action_errors;
        self.latency[latency_bucket(latency.as_secs_f64() * 1000.0)] += 1;
    }

    /// Counts carried as their latency buckets in a list (a status report
    /// between processes); extra buckets are ignored, missing ones are 0.
    pub fn from_parts(
        turns: u64,
        fallbacks: u64,
        handoffs: u64,
        action_errors: u64,
        latency: &[u64],
    ) -> WindowCounts {
        let mut c = WindowCounts {
            turns,
            fallbacks,
            handoffs,
            action_errors,
            ..WindowCounts::default()
        };
        for (a, b) in c.latency.iter_mut().zip(latency) {
            *a = *b;
        }
        c
    }

    pub fn merge(&mut self, other: &WindowCounts) {
        self.turns += other.turns;
        self.fallbacks += other.fallbacks;
        self.handoffs += other.handoffs;
        self.action_errors += other.action_errors;
        for (a, b) in self.latency.iter_mut().zip(&other.latency) {
            *a += b;
        }
    }

    /// The figure a guard compares; `None` without turns.
    pub fn figure(&self, metric: GuardMetric) -> Option<f64> {
        if self.turns == 0 {
            return None;
        }
        let n = self.turns as f64;
        Some(match metric {
            GuardMetric::FallbackRate => self.fallbacks as f64 / n,
            GuardMetric::HandoffRate => self.handoffs as f64 / n,
            GuardMetric::ActionErrorRate => self.action_errors as f64 / n,
            GuardMetric::P99Ms => {
                let rank = (self.turns * 99).div_ceil(100);
                let mut seen = 0;
                let i = self
                    .latency
                    .iter()
                    .position(|c| {
                        seen += c;
                        seen >= rank
                    })
                    .unwrap_or(LATENCY_BUCKETS - 1);
                bucket_bound_ms(i)
            }
        })
    }
}

/// A guard that fired, with the figures that tripped it.
#[derive(Debug, Clone, PartialEq)]
pub struct Breach {
    pub metric: GuardMetric,
    pub canary: f64,
    pub stable: f64,
    pub max_increase: f64,
    pub window: Duration,
    pub canary_turns: u64,
    pub stable_turns: u64,
}

/// The history's note: `fallback_rate canary 0.95 vs stable 0.10 over 60s
/// (40 turns)`.
impl std::fmt::Display for Breach {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let digits = if self.metric == GuardMetric::P99Ms {
            0
        } else {
            2
        };
        write!(
            f,
            "{} canary {:.*} vs stable {:.*} over {} ({} turns, stable {}; allowed increase {})",
            self.metric.name(),
            digits,
            self.canary,
            digits,
            self.stable,
            crate::duration::format(self.window),
            self.canary_turns,
            self.stable_turns,
            self.max_increase,
        )
    }
}

impl Guard {
    /// Whether the canary's counts over the guard's window breach it
    /// against stable's. Never before `min_turns` canary turns, and never
    /// without stable turns to compare with.
    pub fn check(&self, canary: &WindowCounts, stable: &WindowCounts) -> Option<Breach> {
        if canary.turns < self.min_turns {
            return None;
        }
        let c = canary.figure(self.metric)?;
        let s = stable.figure(self.metric)?;
        (c - s > self.max_increase).then_some(Breach {
            metric: self.metric,
            canary: c,
            stable: s,
            max_increase: self.max_increase,
            window: self.window,
            canary_turns: canary.turns,
            stable_turns: stable.turns,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Canary {
    pub version: String,
    /// User-id tails (0-9) sent to the canary, sorted, without repeats.
    pub tails: Vec<u8>,
}

/// Why a user is on the version they are on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteReason {
    /// The rollout's stable version.
    Stable,
    /// The user's tail is one of the canary's.
    Canary,
    /// The session started on this version and is still running.
    Pinned,
}

/// A user's version for one turn, and why. Folded into the state, so the
/// state API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub version: String,
    pub reason: RouteReason,
    /// The user's tail (0-9), whatever the reason.
    pub tail: u8,
}

/// Why a rollout cannot be set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RolloutError {
    #[error("canary tails must be digits 0-9, got {0}")]
    Tail(u8),
    #[error("a canary needs at least one tail")]
    NoTails,
    #[error("the canary version {0} is also the stable version")]
    CanaryIsStable(String),
    #[error("guards watch a canary: this rollout has none")]
    GuardsWithoutCanary,
    #[error("guard {metric}: {problem}")]
    Guard {
        metric: &'static str,
        problem: String,
    },
}

impl Rollout {
    /// Everyone on `version`.
    pub fn stable(version: impl Into<String>) -> Rollout {
        Rollout {
            stable: version.into(),
            canary: None,
            withdrawn: Vec::new(),
            guards: Vec::new(),
        }
    }

    /// The same rollout with its tails sorted and deduplicated, or why it
    /// is not one.
    pub fn validated(mut self) -> Result<Rollout, RolloutError> {
        if let Some(c) = &mut self.canary {
            if let Some(&t) = c.tails.iter().find(|&&t| t > 9) {
                return Err(RolloutError::Tail(t));
            }
            c.tails.sort_unstable();
            c.tails.dedup();
            if c.tails.is_empty() {
                return Err(RolloutError::NoTails);
            }
            if c.version == self.stable {
                return Err(RolloutError::CanaryIsStable(c.version.clone()));
            }
        }
        if !self.guards.is_empty() && self.canary.is_none() {
            return Err(RolloutError::GuardsWithoutCanary);
        }
        for g in &self.guards {
            let problem = if !(g.max_increase.is_finite() && g.max_increase >= 0.0) {
                Some(format!(
                    "max_increase must be a number ≥ 0, got {}",
                    g.max_increase
                ))
            } else if g.window < Duration::from_secs(1) || g.window > MAX_GUARD_WINDOW {
                Some(format!(
                    "window must be 1s to {}, got {}",
                    crate::duration::format(MAX_GUARD_WINDOW),
                    crate::duration::format(g.window)
                ))
            } else if g.min_turns == 0 {
                Some("min_turns must be at least 1".into())
            } else {
                None
            };
            if let Some(problem) = problem {
                return Err(RolloutError::Guard {
                    metric: g.metric.name(),
                    problem,
                });
            }
        }
        // A version put back into service is no longer withdrawn.
        let serving: Vec<String> = self.serving().into_iter().map(String::from).collect();
        self.withdrawn.retain(|v| !serving.contains(v));
        Ok(self)
    }

    /// The versions users are assigned to: stable, then the canary.
    pub fn serving(&self) -> Vec<&str> {
        let mut v = vec![self.stable.as_str()];
        if let Some(c) = &self.canary {
            v.push(&c.version);
        }
        v
    }

    /// The first guard the canary breaches, given each version's counts over
    /// a window (`counts(version, window)`); `None` without a canary.
    pub fn breached(&self, counts: impl Fn(&str, Duration) -> WindowCounts) -> Option<Breach> {
        let canary = self.canary.as_ref()?;
        self.guards.iter().find_map(|g| {
            g.check(
                &counts(&canary.version, g.window),
                &counts(&self.stable, g.window),
            )
        })
    }

    /// Everyone back on stable, the canary withdrawn (and its guards gone
    /// with it); `None` without a canary.
    pub fn without_canary(&self) -> Option<Rollout> {
        let canary = self.canary.as_ref()?;
        let mut withdrawn = self.withdrawn.clone();
        withdrawn.push(canary.version.clone());
        Some(Rollout {
            stable: self.stable.clone(),
            canary: None,
            withdrawn,
            guards: Vec::new(),
        })
    }

    /// The version the rollout assigns to a user, ignoring pins.
    pub fn assign(&self, user_id: &str) -> Route {
        let tail = tail(user_id);
        match &self.canary {
            Some(c) if c.tails.contains(&tail) => Route {
                version: c.version.clone(),
                reason: RouteReason::Canary,
                tail,
            },
            _ => Route {
                version: self.stable.clone(),
                reason: RouteReason::Stable,
                tail,
            },
        }
    }

    /// The version for a user's next turn at `now_ms`: the one their running
    /// session is on, unless it was withdrawn or this process cannot serve
    /// it; else the assigned one. `session_timeout_ms(v)` is the session
    /// timeout of version `v` where it is loaded, `None` where it is not.
    pub fn route(
        &self,
        state: &State,
        now_ms: i64,
        session_timeout_ms: impl Fn(&str) -> Option<i64>,
    ) -> Route {
        let assigned = self.assign(&state.user_id);
        let Some(current) = &state.route else {
            return assigned;
        };
        if current.version == assigned.version
            || state.session == 0
            || self.withdrawn.contains(&current.version)
        {
            return assigned;
        }
        match session_timeout_ms(&current.version) {
            Some(timeout) if now_ms - state.last_ts_ms <= timeout => Route {
                version: current.version.clone(),
                reason: RouteReason::Pinned,
                tail: assigned.tail,
            },
            _ => assigned,
        }
    }
}

/// FNV-1a, 64 bits: a stable hash (the same on every process and after
/// every restart) for tails, seeds and keys that must not keep the text.
pub fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A user id's tail: its last character if that is a decimal digit, else
/// the last decimal digit of the id's FNV-1a hash.
pub fn tail(user_id: &str) -> u8 {
    if let Some(&b) = user_id.as_bytes().last().filter(|b| b.is_ascii_digit()) {
        return b - b'0';
    }
    (fnv1a(user_id.bytes()) % 10) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canary(tails: &[u8]) -> Rollout {
        Rollout {
            stable: "1".into(),
            canary: Some(Canary {
                version: "2".into(),
                tails: tails.to_vec(),
            }),
            withdrawn: Vec::new(),
            guards: Vec::new(),
        }
    }

    fn on(user: &str, version: &str, reason: RouteReason, last_ts_ms: i64) -> State {
        let mut s = State::new(user);
        s.session = 1;
        s.last_ts_ms = last_ts_ms;
        s.route = Some(Route {
            version: version.into(),
            reason,
            tail: tail(user),
        });
        s
    }

    #[test]
    fn a_user_id_ending_in_a_digit_has_that_tail() {
        assert_eq!(tail("user-10"), 0);
        assert_eq!(tail("u7"), 7);
        // A non-ASCII digit is not a tail: it is hashed like any letter.
        assert_eq!(tail("u٣"), tail("u٣"));
    }

    #[test]
    fn other_ids_hash_to_a_stable_tail_spread_over_all_digits() {
        assert_eq!(tail("alice"), tail("alice"));
        let mut seen = [0u32; 10];
        for i in 0..10_000 {
            seen[tail(&format!("user-{i}x")) as usize] += 1;
        }
        for (digit, n) in seen.iter().enumerate() {
            assert!((800..1200).contains(n), "tail {digit}: {n} of 10000");
        }
    }

    #[test]
    fn canary_tails_choose_the_canary() {
        let r = canary(&[0, 1]);
        assert_eq!(r.assign("u10").version, "2");
        assert_eq!(r.assign("u10").reason, RouteReason::Canary);
        assert_eq!(r.assign("u21").version, "2");
        assert_eq!(r.assign("u22").version, "1");
        assert_eq!(r.assign("u22").reason, RouteReason::Stable);
        let share = (0..1000)
            .filter(|i| r.assign(&format!("user{i}")).version == "2")
            .count();
        assert_eq!(share, 200);
    }

    #[test]
    fn a_running_session_stays_on_its_version() {
        let r = Rollout::stable("2");
        let s = on("u5", "1", RouteReason::Stable, 1_000);
        let loaded = |_: &str| Some(60_000);
        let route = r.route(&s, 30_000, loaded);
        assert_eq!(
            (route.version.as_str(), route.reason),
            ("1", RouteReason::Pinned)
        );
        // The session ended: the new version.
        let route = r.route(&s, 70_000, loaded);
        assert_eq!(
            (route.version.as_str(), route.reason),
            ("2", RouteReason::Stable)
        );
        // A version this process does not hold cannot pin.
        let route = r.route(&s, 30_000, |_| None);
        assert_eq!(route.version, "2");
    }

    #[test]
    fn a_withdrawn_version_pins_nobody() {
        let mut r = Rollout::stable("1");
        r.withdrawn.push("2".into());
        let s = on("u0", "2", RouteReason::Canary, 1_000);
        let route = r.route(&s, 2_000, |_| Some(60_000));
        assert_eq!(
            (route.version.as_str(), route.reason),
            ("1", RouteReason::Stable)
        );
    }

    #[test]
    fn a_new_user_gets_the_assigned_version() {
        let r = canary(&[3]);
        let route = r.route(&State::new("u3"), 0, |_| Some(1));
        assert_eq!(
            (route.version.as_str(), route.reason),
            ("2", RouteReason::Canary)
        );
    }

    #[test]
    fn validation_sorts_tails_and_refuses_nonsense() {
        let r = canary(&[5, 1, 5]).validated().unwrap();
        assert_eq!(r.canary.unwrap().tails, vec![1, 5]);
        assert_eq!(canary(&[10]).validated(), Err(RolloutError::Tail(10)));
        assert_eq!(canary(&[]).validated(), Err(RolloutError::NoTails));
        let mut same = canary(&[1]);
        same.canary.as_mut().unwrap().version = "1".into();
        assert!(matches!(
            same.validated(),
            Err(RolloutError::CanaryIsStable(_))
        ));
        let mut back = canary(&[1]);
        back.withdrawn = vec!["2".into(), "3".into()];
        assert_eq!(back.validated().unwrap().withdrawn, vec!["3".to_string()]);
    }

    fn counts(turns: u64, fallbacks: u64, latency_ms: u64) -> WindowCounts {
        let mut c = WindowCounts::default();
        for i in 0..turns {
            c.add_turn(i < fallbacks, false, 0, Duration::from_millis(latency_ms));
        }
        c
    }

    fn guarded(metric: GuardMetric, max_increase: f64, min_turns: u64) -> Rollout {
        let mut r = canary(&[0]);
        r.guards = vec![Guard {
            metric,
            max_increase,
            window: Duration::from_secs(60),
            min_turns,
        }];
        r
    }

    #[test]
    fn a_guard_never_fires_below_its_minimum_of_canary_turns() {
        let r = guarded(GuardMetric::FallbackRate, 0.2, 10);
        let by = |v: &str, _| {
            if v == "2" {
                counts(9, 9, 5)
            } else {
                counts(100, 0, 5)
            }
        };
        assert_eq!(r.breached(by), None);
        // Nor without stable turns to compare with.
        let alone = |v: &str, _| {
            if v == "2" {
                counts(50, 50, 5)
            } else {
                counts(0, 0, 5)
            }
        };
        assert_eq!(r.breached(alone), None);
    }

    #[test]
    fn a_breach_fires_with_the_figures_that_tripped_it() {
        let r = guarded(GuardMetric::FallbackRate, 0.2, 10);
        let by = |v: &str, w: Duration| {
            assert_eq!(w, Duration::from_secs(60));
            if v == "2" {
                counts(40, 38, 5)
            } else {
                counts(100, 10, 5)
            }
        };
        let b = r.breached(by).expect("breached");
        assert_eq!((b.canary, b.stable, b.canary_turns), (0.95, 0.1, 40));
        assert_eq!(
            b.to_string(),
            "fallback_rate canary 0.95 vs stable 0.10 over 1m (40 turns, stable 100; allowed increase 0.2)"
        );
    }

    #[test]
    fn a_healthy_canary_passes_its_guards() {
        let r = guarded(GuardMetric::FallbackRate, 0.2, 10);
        // 10 points worse than stable: within the 20 allowed.
        let by = |v: &str, _| {
            if v == "2" {
                counts(50, 10, 5)
            } else {
                counts(100, 10, 5)
            }
        };
        assert_eq!(r.breached(by), None);
        // Handoffs and action errors are not what this guard watches.
        let mut handoffs = counts(50, 0, 5);
        handoffs.handoffs = 50;
        assert_eq!(
            r.breached(|v, _| if v == "2" {
                handoffs.clone()
            } else {
                counts(50, 0, 5)
            }),
            None
        );
        // Without a canary there is nothing to guard.
        assert_eq!(
            Rollout::stable("1").breached(|_, _| counts(50, 50, 5)),
            None
        );
    }

    #[test]
    fn p99_latency_is_compared_in_milliseconds() {
        let r = guarded(GuardMetric::P99Ms, 100.0, 10);
        let slow = |v: &str, _| {
            if v == "2" {
                counts(100, 0, 400)
            } else {
                counts(100, 0, 20)
            }
        };
        let b = r.breached(slow).expect("400 ms against 20 ms");
        // Read from buckets about 19 % wide, rounded up.
        assert!((400.0..480.0).contains(&b.canary), "{}", b.canary);
        assert!((20.0..24.0).contains(&b.stable), "{}", b.stable);
        assert!(b.to_string().starts_with("p99_ms canary 4"), "{b}");
        let close = |v: &str, _| {
            if v == "2" {
                counts(100, 0, 60)
            } else {
                counts(100, 0, 20)
            }
        };
        assert_eq!(r.breached(close), None);
        // One slow turn in a hundred is the 99th percentile's business.
        let mut one = counts(99, 0, 20);
        one.add_turn(false, false, 0, Duration::from_secs(5));
        assert!(one.figure(GuardMetric::P99Ms).unwrap() < 24.0);
    }

    #[test]
    fn guards_are_validated_and_old_rollouts_read_without_them() {
        let old: Rollout = serde_json::from_str(r#"{"stable":"1","withdrawn":["0"]}"#).unwrap();
        assert!(old.guards.is_empty());
        assert_eq!(
            serde_json::to_string(&old).unwrap(),
            r#"{"stable":"1","withdrawn":["0"]}"#
        );
        let read: Rollout = serde_json::from_str(
            r#"{"stable":"1","canary":{"version":"2","tails":[0]},
                "guards":[{"metric":"fallback_rate","max_increase":0.2}]}"#,
        )
        .unwrap();
        assert_eq!(read.guards[0].window, Duration::from_secs(60));
        assert_eq!(read.guards[0].min_turns, 20);
        assert!(read.clone().validated().is_ok());
        let mut bad = read.clone();
        bad.guards[0].max_increase = f64::NAN;
        assert!(matches!(bad.validated(), Err(RolloutError::Guard { .. })));
        let mut long = read.clone();
        long.guards[0].window = Duration::from_secs(3600);
        assert!(matches!(long.validated(), Err(RolloutError::Guard { .. })));
        let mut alone = read.clone();
        alone.canary = None;
        assert_eq!(alone.validated(), Err(RolloutError::GuardsWithoutCanary));
        assert!(serde_json::from_str::<Rollout>(
            r#"{"stable":"1","guards":[{"metric":"bogus","max_increase":1}]}"#
        )
        .is_err());
    }

    #[test]
    fn without_the_canary_everyone_is_on_stable_and_the_canary_withdrawn() {
        let r = guarded(GuardMetric::FallbackRate, 0.2, 10);
        let back = r.without_canary().unwrap();
        assert_eq!(back.canary, None);
        assert_eq!(back.withdrawn, ["2"]);
        assert!(back.guards.is_empty());
        assert_eq!(Rollout::stable("1").without_canary(), None);
    }
}

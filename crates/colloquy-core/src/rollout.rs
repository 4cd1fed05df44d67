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

use crate::state::State;
use serde::{Deserialize, Serialize};

/// The versions of one bot that serve users, and how they are split.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rollout {
    pub stable: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<Canary>,
    /// Versions rolled back: nobody stays pinned on them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub withdrawn: Vec<String>,
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
}

impl Rollout {
    /// Everyone on `version`.
    pub fn stable(version: impl Into<String>) -> Rollout {
        Rollout {
            stable: version.into(),
            canary: None,
            withdrawn: Vec::new(),
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

/// A user id's tail: its last character if that is a decimal digit, else
/// the last decimal digit of the id's FNV-1a hash.
pub fn tail(user_id: &str) -> u8 {
    if let Some(&b) = user_id.as_bytes().last().filter(|b| b.is_ascii_digit()) {
        return b - b'0';
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in user_id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % 10) as u8
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
}

//! Conversation tests for bots: a scenario file lists user lines with the
//! replies, slots and flow expected after each. `scenarios/*.yaml` beside a
//! bot are run by the test suite against the real engine and store.

use crate::engine::{Engine, EngineError};
use colloquy_core::bot::values_equal;
use colloquy_core::duration::parse_ms;
use colloquy_core::Value;
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    /// The user id the conversation runs under.
    pub user: String,
    /// When the first message is sent, in ms since the Unix epoch.
    #[serde(default = "default_start")]
    pub start_ms: i64,
    pub turns: Vec<TurnSpec>,
}

fn default_start() -> i64 {
    // 2026-01-01T10:00:00Z
    1_767_261_600_000
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TurnSpec {
    /// What the user says.
    pub say: String,
    /// Time that passes before this message (default 5s), e.g. `31m`, `1d`.
    #[serde(default)]
    pub after: Option<String>,
    /// Substrings that must all appear in the bot's replies to this message.
    #[serde(default)]
    pub expect: Vec<String>,
    /// A regular expression the joined replies must match.
    #[serde(default)]
    pub expect_regex: Option<String>,
    /// Substrings that must not appear.
    #[serde(default)]
    pub reject: Vec<String>,
    /// Slot values after the turn; `null` means the slot must be empty.
    #[serde(default)]
    pub slots: BTreeMap<String, Option<serde_yaml::Value>>,
    /// Active flow after the turn; `null` means none.
    #[serde(default, deserialize_with = "some")]
    pub flow: Option<Option<String>>,
    /// The intent the NLU must have recognised; `null` means none (fallback).
    #[serde(default, deserialize_with = "some")]
    pub intent: Option<Option<String>>,
}

/// Keep "absent" (None) apart from "null" (Some(None)).
fn some<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// One unmet expectation.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub turn: usize,
    pub say: String,
    pub problem: String,
    pub replies: Vec<String>,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "turn {} ({:?}): {}; bot said {:?}",
            self.turn + 1,
            self.say,
            self.problem,
            self.replies
        )
    }
}

const DEFAULT_GAP_MS: i64 = 5_000;

pub fn parse(text: &str) -> Result<Scenario, serde_yaml::Error> {
    serde_yaml::from_str(text)
}

/// Run a scenario; returns every failed expectation (empty = passed).
pub async fn run(engine: &Engine, scenario: &Scenario) -> Result<Vec<Failure>, EngineError> {
    let mut now = scenario.start_ms;
    let mut failures = Vec::new();
    for (i, turn) in scenario.turns.iter().enumerate() {
        now += match &turn.after {
            Some(a) => parse_ms(a).unwrap_or(DEFAULT_GAP_MS),
            None => DEFAULT_GAP_MS,
        };
        let message_id = format!("{}-{i}", scenario.name);
        let out = engine
            .handle(&scenario.user, &message_id, &turn.say, now)
            .await?;
        let joined = out.replies.join("\n");
        let mut fail = |problem: String| {
            failures.push(Failure {
                turn: i,
                say: turn.say.clone(),
                problem,
                replies: out.replies.clone(),
            });
        };
        for e in &turn.expect {
            if !joined.contains(e.as_str()) {
                fail(format!("expected a reply containing {e:?}"));
            }
        }
        for r in &turn.reject {
            if joined.contains(r.as_str()) {
                fail(format!("expected no reply containing {r:?}"));
            }
        }
        if let Some(re) = &turn.expect_regex {
            match regex::Regex::new(re) {
                Ok(re) if !re.is_match(&joined) => fail(format!("replies do not match /{re}/")),
                Err(e) => fail(format!("invalid expect_regex: {e}")),
                _ => {}
            }
        }
        for (slot, want) in &turn.slots {
            let got = out.state.slots.get(slot);
            let want: Option<Value> = want
                .as_ref()
                .and_then(|w| serde_yaml::from_value(w.clone()).ok());
            let ok = match (&want, got) {
                (None, None) => true,
                (Some(w), Some(g)) => values_equal(w, g),
                _ => false,
            };
            if !ok {
                fail(format!("slot `{slot}`: expected {want:?}, got {got:?}"));
            }
        }
        if let Some(want) = &turn.flow {
            let got = out.state.flow.as_ref().map(|f| f.flow.clone());
            if &got != want {
                fail(format!("active flow: expected {want:?}, got {got:?}"));
            }
        }
        if let Some(want) = &turn.intent {
            let got = &out.state.last_intent;
            if got != want {
                fail(format!(
                    "intent: expected {want:?}, got {got:?} ({:.2})",
                    out.state.last_confidence
                ));
            }
        }
    }
    Ok(failures)
}

//! The YAML shape of a bot, as written by its authors. Every struct denies
//! unknown fields so that a typo is an error with a line number, never a
//! silently ignored setting. `compile` turns these into the checked model.

use serde::Deserialize;
use std::collections::BTreeMap;

/// One YAML file of a bot directory. Any file may hold any of these
/// sections; a bot is the union of its files (a name defined twice is an
/// error), so a campaign can live in a file of its own.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    pub bot: Option<BotSpec>,
    #[serde(default)]
    pub intents: BTreeMap<String, IntentSpec>,
    #[serde(default)]
    pub entities: BTreeMap<String, EntitySpec>,
    #[serde(default)]
    pub slots: BTreeMap<String, SlotSpec>,
    #[serde(default)]
    pub responses: BTreeMap<String, ResponseSpec>,
    #[serde(default)]
    pub flows: BTreeMap<String, FlowSpec>,
    #[serde(default)]
    pub actions: BTreeMap<String, ActionSpec>,
    #[serde(default)]
    pub tables: BTreeMap<String, Vec<BTreeMap<String, serde_yaml::Value>>>,
    #[serde(default)]
    pub sagas: BTreeMap<String, SagaSpec>,
    /// Groups of words that mean the same to this bot (`[尺码, 码数,
    /// 鞋码]`): the classifier treats a word of a group as evidence for
    /// every intent whose examples use another word of it. Files add their
    /// groups to the bot's.
    #[serde(default)]
    pub thesaurus: Vec<Vec<String>>,
}

/// Remote actions run in order, each with the action that undoes it: when
/// a step fails for good, the steps done are compensated in reverse.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SagaSpec {
    pub steps: Vec<SagaStepSpec>,
    /// How often a compensation is requested again after it failed for
    /// good, before it is set aside (dead-lettered) for a person (default 8).
    #[serde(default)]
    pub compensation_rounds: Option<u32>,
    /// The pause before the second round, doubled for each further one,
    /// at most 30s (default 1s).
    #[serde(default)]
    pub compensation_backoff: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SagaStepSpec {
    /// A webhook action.
    pub action: String,
    /// The webhook action that undoes it, if it can be undone.
    #[serde(default)]
    pub compensate: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BotSpec {
    pub name: String,
    pub version: String,
    #[serde(default)]
    pub language: Option<String>,
    /// Inactivity after which a new session starts, e.g. `30m`, `90s`, `2h`.
    #[serde(default)]
    pub session_timeout: Option<String>,
    /// Intents below this confidence are treated as not understood.
    #[serde(default)]
    pub threshold: Option<f32>,
    /// Response said when nothing else applies.
    pub fallback: String,
    /// Response said when a user runs out of attempts at a slot.
    #[serde(default)]
    pub abandon: Option<String>,
    /// Response said when a rollback moves a user in the middle of a flow
    /// to a version that does not have it (default: `fallback`).
    #[serde(default)]
    pub withdrawn: Option<String>,
    /// Defaults for every webhook action of the bot (`url`, `timeout`,
    /// `retries`, `headers`, `token_env`), like Rasa's `action_endpoint`.
    #[serde(default)]
    pub action_endpoint: Option<WebhookSpec>,
    /// Response said when a remote action fails for good and its step has
    /// no `on_error` (default: `fallback`).
    #[serde(default)]
    pub action_failed: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntentSpec {
    pub examples: Vec<String>,
    /// Response said directly when this intent is recognised and starts no flow.
    #[serde(default)]
    pub response: Option<String>,
}

/// An entity: exactly one of `regex`, `lookup` or `builtin`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntitySpec {
    /// A regular expression; the value is capture group `group` (default:
    /// group 1 if the pattern has one, else the whole match).
    #[serde(default)]
    pub regex: Option<String>,
    #[serde(default)]
    pub group: Option<usize>,
    /// Canonical value → synonyms. The canonical value itself also matches.
    #[serde(default)]
    pub lookup: Option<BTreeMap<String, Vec<String>>>,
    /// `number`: Arabic, full-width or Chinese numerals (三十九, 两百零五).
    #[serde(default)]
    pub builtin: Option<String>,
    /// Convert the matched text: `int`, `float` or `text` (default text;
    /// numbers may be written in Chinese numerals).
    #[serde(default, rename = "type")]
    pub value_type: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlotSpec {
    #[serde(rename = "type")]
    pub slot_type: String,
    /// Shorthand for `from: [{entity: NAME}]`. Without `entity` or `from`,
    /// the entity of the same name (if any) fills the slot on every turn.
    #[serde(default)]
    pub entity: Option<String>,
    /// Where the slot is filled from, first match wins: each entry names an
    /// entity and when it counts. `from: []` fills the slot only by asking
    /// for it or by a `set` step.
    #[serde(default)]
    pub from: Option<Vec<SlotMappingSpec>>,
    /// Survives the end of a session.
    #[serde(default)]
    pub remember: bool,
    /// Masked in API responses (state and events). Not encrypted at rest
    /// yet: the log and snapshots hold the value in the clear.
    #[serde(default)]
    pub sensitive: bool,
    /// Allowed values (required for `enum`).
    #[serde(default)]
    pub values: Option<Vec<String>>,
    /// Inclusive numeric range `[min, max]`.
    #[serde(default)]
    pub range: Option<[f64; 2]>,
    /// The whole value must match this pattern.
    #[serde(default)]
    pub pattern: Option<String>,
    /// Response said when a value fails validation (then the prompt again).
    #[serde(default)]
    pub invalid: Option<String>,
}

/// One source of a slot's value, like Rasa's `from_entity` mapping: an
/// entity found in a message fills the slot whatever the intent (a
/// fallback included) unless `intents`, `not_intents` or `when` narrow it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlotMappingSpec {
    pub entity: String,
    /// Only when the message was recognised as one of these intents.
    #[serde(default)]
    pub intents: Option<Vec<String>>,
    /// Never when the message was recognised as one of these (a fallback
    /// turn has no intent, so it is never excluded by this list).
    #[serde(default)]
    pub not_intents: Option<Vec<String>>,
    /// `always` (the default) or `asked`: only in the answer to a question
    /// for this slot.
    #[serde(default)]
    pub when: Option<String>,
}

/// One response: a single template or a list of variants.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum ResponseSpec {
    One(String),
    Variants(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowSpec {
    /// Intents that start this flow.
    #[serde(default)]
    pub intents: Vec<String>,
    pub steps: Vec<StepSpec>,
}

/// One step. Exactly one verb (`ask`, `say`, `set`, `add`, `clear`,
/// `action`, `if`, `goto`, `flow`, `handoff`, `end`) per step; the other
/// fields qualify it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    #[serde(default)]
    pub label: Option<String>,
    #[serde(default)]
    pub ask: Option<String>,
    #[serde(default)]
    pub prompt: Option<String>,
    #[serde(default)]
    pub reprompt: Option<String>,
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// Ask even if the slot already holds a value.
    #[serde(default)]
    pub force: bool,
    #[serde(default)]
    pub say: Option<String>,
    #[serde(default)]
    pub set: Option<BTreeMap<String, serde_yaml::Value>>,
    #[serde(default)]
    pub add: Option<BTreeMap<String, f64>>,
    #[serde(default)]
    pub clear: Option<Vec<String>>,
    #[serde(default)]
    pub action: Option<String>,
    #[serde(default, rename = "if")]
    pub cond: Option<ConditionSpec>,
    #[serde(default)]
    pub then: Option<String>,
    #[serde(default, rename = "else")]
    pub otherwise: Option<String>,
    #[serde(default)]
    pub goto: Option<String>,
    #[serde(default)]
    pub flow: Option<String>,
    #[serde(default)]
    pub handoff: Option<String>,
    #[serde(default)]
    pub end: Option<bool>,
    /// Run a saga (see `sagas`).
    #[serde(default)]
    pub saga: Option<String>,
    /// For an `action` step calling a remote action, or a `saga` step: the
    /// label this flow goes on at when the call fails for good (after a
    /// saga's compensations).
    #[serde(default)]
    pub on_error: Option<String>,
}

/// A test on one slot, or `all` / `any` of several.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConditionSpec {
    #[serde(default)]
    pub slot: Option<String>,
    #[serde(default)]
    pub eq: Option<serde_yaml::Value>,
    #[serde(default)]
    pub ne: Option<serde_yaml::Value>,
    #[serde(default)]
    pub lt: Option<f64>,
    #[serde(default)]
    pub le: Option<f64>,
    #[serde(default)]
    pub gt: Option<f64>,
    #[serde(default)]
    pub ge: Option<f64>,
    #[serde(default, rename = "in")]
    pub within: Option<Vec<serde_yaml::Value>>,
    /// `true`: the slot has a value; `false`: it has none.
    #[serde(default)]
    pub set: Option<bool>,
    #[serde(default)]
    pub all: Option<Vec<ConditionSpec>>,
    #[serde(default)]
    pub any: Option<Vec<ConditionSpec>>,
}

/// An action: exactly one of `lookup` or `draw` (declarative, answered
/// from the bot's tables) or `webhook` (a call to an action server).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionSpec {
    #[serde(default)]
    pub lookup: Option<LookupSpec>,
    #[serde(default)]
    pub draw: Option<DrawSpec>,
    #[serde(default)]
    pub webhook: Option<WebhookSpec>,
}

/// A remote action called over Rasa's action server protocol. Fields left
/// out take the bot's `action_endpoint` values, then the defaults.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSpec {
    /// The action server's webhook, e.g. `http://127.0.0.1:5055/webhook`.
    #[serde(default)]
    pub url: Option<String>,
    /// Deadline of the whole call, retries included (default 3s).
    #[serde(default)]
    pub timeout: Option<String>,
    /// Further attempts after a retryable failure (default 2).
    #[serde(default)]
    pub retries: Option<u32>,
    /// Extra request headers.
    #[serde(default)]
    pub headers: Option<BTreeMap<String, String>>,
    /// Environment variable holding a bearer token for the call.
    #[serde(default)]
    pub token_env: Option<String>,
    /// The action's name at the action server (default: its name here).
    #[serde(default)]
    pub name: Option<String>,
    /// Slots recorded as sent with the request (default: all).
    #[serde(default)]
    pub send: Option<Vec<String>>,
    /// The circuit breaker of the endpoint (one per URL).
    #[serde(default)]
    pub breaker: Option<BreakerSpec>,
}

/// When an endpoint's breaker opens, and for how long.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerSpec {
    /// Failed attempts in a row that open it (default 5).
    #[serde(default)]
    pub failures: Option<u32>,
    /// How long it stays open before one probe may go (default 10s).
    #[serde(default)]
    pub open_for: Option<String>,
}

/// Find the first row of `table` whose columns equal the given slots (and
/// whose `[min, max]` columns contain a slot's number), then copy columns
/// into slots. With no row, the `set` slots are cleared.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LookupSpec {
    pub table: String,
    /// column → slot, compared for equality.
    #[serde(default, rename = "match")]
    pub matches: BTreeMap<String, String>,
    /// A numeric slot that must fall within two columns of the row.
    #[serde(default)]
    pub between: Option<BetweenSpec>,
    /// slot → column to copy from the row found.
    pub set: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BetweenSpec {
    pub slot: String,
    pub min: String,
    pub max: String,
}

/// Pick one row of `table` at random, weighted by the `weight` column, using
/// the seed given to the policy (so a replay draws the same), and copy
/// columns into slots.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrawSpec {
    pub table: String,
    pub weight: String,
    pub set: BTreeMap<String, String>,
}

//! The checked bot model the policy runs on. Every name in it has been
//! resolved: a `Step::Goto` holds an index, a template knows its slots.

use super::spec::EntitySpec;
use crate::event::BotRef;
use crate::value::Value;
use regex::Regex;
use std::collections::{BTreeMap, HashMap};

#[derive(Debug, Clone)]
pub struct Bot {
    pub id: BotRef,
    pub language: Option<String>,
    pub session_timeout_ms: i64,
    pub threshold: f32,
    pub fallback: String,
    pub abandon: Option<String>,
    pub withdrawn: Option<String>,
    /// Said when a remote action fails for good and its step has no
    /// `on_error`; `None`: the fallback.
    pub action_failed: Option<String>,
    pub intents: BTreeMap<String, Intent>,
    pub entities: BTreeMap<String, EntitySpec>,
    pub slots: BTreeMap<String, Slot>,
    pub responses: BTreeMap<String, Vec<Template>>,
    pub flows: BTreeMap<String, Flow>,
    pub actions: BTreeMap<String, Action>,
    pub tables: BTreeMap<String, Vec<Row>>,
    pub sagas: BTreeMap<String, Saga>,
    /// Which flow an intent starts.
    pub intent_flows: HashMap<String, String>,
    /// Synonym groups for the classifier, from every file in turn.
    pub thesaurus: Vec<Vec<String>>,
}

pub type Row = BTreeMap<String, Value>;

#[derive(Debug, Clone)]
pub struct Intent {
    pub examples: Vec<String>,
    pub response: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotType {
    Text,
    Int,
    Float,
    Bool,
    Enum,
    List,
}

impl SlotType {
    pub fn parse(s: &str) -> Option<SlotType> {
        Some(match s {
            "text" => SlotType::Text,
            "int" => SlotType::Int,
            "float" => SlotType::Float,
            "bool" => SlotType::Bool,
            "enum" => SlotType::Enum,
            "list" => SlotType::List,
            _ => return None,
        })
    }

    pub fn is_numeric(self) -> bool {
        matches!(self, SlotType::Int | SlotType::Float)
    }
}

#[derive(Debug, Clone)]
pub struct Slot {
    pub slot_type: SlotType,
    /// Where entities fill it from, in order; the first that applies and
    /// was found in the message gives the value.
    pub from: Vec<Mapping>,
    pub remember: bool,
    pub sensitive: bool,
    pub values: Option<Vec<String>>,
    pub range: Option<[f64; 2]>,
    pub pattern: Option<Regex>,
    pub invalid: Option<String>,
}

/// One source of a slot's value: an entity, and when it counts.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapping {
    pub entity: String,
    pub intents: IntentFilter,
    /// Only in the answer to a question for this very slot.
    pub only_when_asked: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum IntentFilter {
    Any,
    Only(Vec<String>),
    Except(Vec<String>),
}

impl Mapping {
    /// Any intent, on any turn: what `entity: NAME` and the default mean.
    pub fn entity(name: &str) -> Mapping {
        Mapping {
            entity: name.to_string(),
            intents: IntentFilter::Any,
            only_when_asked: false,
        }
    }

    /// Whether the mapping counts in a message recognised as `intent`
    /// (`None`: a fallback) while its slot is (`asked`) or is not being
    /// asked for.
    pub fn applies(&self, intent: Option<&str>, asked: bool) -> bool {
        let by_intent = match &self.intents {
            IntentFilter::Any => true,
            IntentFilter::Only(list) => intent.is_some_and(|i| list.iter().any(|l| l == i)),
            IntentFilter::Except(list) => !intent.is_some_and(|i| list.iter().any(|l| l == i)),
        };
        by_intent && (asked || !self.only_when_asked)
    }
}

/// A response template: literal text with `{slot}` holes.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    pub parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    Text(String),
    Slot(String),
}

impl Template {
    /// Split `text` at `{name}` holes; anything else in braces stays literal.
    pub fn parse(text: &str) -> Template {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            let after = &rest[open + 1..];
            let close = after.find('}');
            let name = close.map(|c| &after[..c]);
            match name {
                Some(n) if !n.is_empty() && n.chars().all(|c| c.is_alphanumeric() || c == '_') => {
                    lit.push_str(&rest[..open]);
                    if !lit.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut lit)));
                    }
                    parts.push(Part::Slot(n.to_string()));
                    rest = &after[n.len() + 1..];
                }
                _ => {
                    lit.push_str(&rest[..=open]);
                    rest = after;
                }
            }
        }
        lit.push_str(rest);
        if !lit.is_empty() {
            parts.push(Part::Text(lit));
        }
        Template { parts }
    }

    pub fn slots(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Slot(s) => Some(s.as_str()),
            Part::Text(_) => None,
        })
    }

    pub fn render(&self, slots: &BTreeMap<String, Value>) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Slot(s) => {
                    if let Some(v) = slots.get(s) {
                        out.push_str(&v.to_string());
                    }
                }
            }
        }
        out
    }
}

#[derive(Debug, Clone)]
pub struct Flow {
    pub intents: Vec<String>,
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone)]
pub enum Step {
    Ask {
        slot: String,
        prompt: String,
        reprompt: Option<String>,
        max_attempts: u32,
        force: bool,
    },
    Say(String),
    /// slot → value; text values are templates rendered at run time.
    Set(Vec<(String, SetValue)>),
    Add(Vec<(String, f64)>),
    Clear(Vec<String>),
    /// Run an action; `on_error` is the step a remote action's flow goes
    /// on at when the call fails for good.
    Action {
        name: String,
        on_error: Option<usize>,
    },
    Branch {
        cond: Condition,
        then: usize,
        otherwise: Option<usize>,
    },
    /// Run a saga; `on_error` as for an action, taken once the
    /// compensations are done.
    Saga {
        name: String,
        on_error: Option<usize>,
    },
    Goto(usize),
    Flow(String),
    Handoff(String),
    End,
}

#[derive(Debug, Clone)]
pub enum SetValue {
    Literal(Value),
    Template(Template),
}

#[derive(Debug, Clone)]
pub enum Condition {
    Test { slot: String, test: Test },
    All(Vec<Condition>),
    Any(Vec<Condition>),
}

#[derive(Debug, Clone)]
pub enum Test {
    Eq(Value),
    Ne(Value),
    Lt(f64),
    Le(f64),
    Gt(f64),
    Ge(f64),
    In(Vec<Value>),
    Set(bool),
}

#[derive(Debug, Clone)]
pub enum Action {
    Lookup {
        table: String,
        matches: Vec<(String, String)>,
        between: Option<(String, String, String)>,
        set: Vec<(String, String)>,
    },
    Draw {
        table: String,
        weight: String,
        set: Vec<(String, String)>,
    },
    Webhook(Webhook),
}

/// Remote actions in order, each with the one that undoes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Saga {
    pub steps: Vec<SagaStep>,
    /// Requests of one compensation before it is set aside.
    pub compensation_rounds: u32,
    /// Pause before a compensation's second round, doubled each round.
    pub compensation_backoff_ms: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SagaStep {
    pub action: String,
    pub compensate: Option<String>,
}

/// A remote action, resolved against the bot's endpoint defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Webhook {
    /// The action's name at the action server (`next_action`).
    pub remote: String,
    pub url: String,
    pub timeout_ms: u64,
    pub retries: u32,
    pub headers: Vec<(String, String)>,
    pub token_env: Option<String>,
    /// Slots recorded as sent; `None`: all of them.
    pub send: Option<Vec<String>>,
    pub breaker: Breaker,
}

/// An endpoint's circuit breaker: it opens after `failures` failed
/// attempts in a row and stays open `open_ms` before one probe may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Breaker {
    pub failures: u32,
    pub open_ms: u64,
}

/// Loose equality for comparing slot values with YAML data: `39` equals
/// `"39"`, and numbers compare numerically.
pub fn values_equal(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) if !matches!((a, b), (Value::Text(_), Value::Text(_))) => x == y,
        _ => a.to_string() == b.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_split_slot_holes_and_keep_other_braces() {
        let t = Template::parse("{model} {size}码 {not a slot} {}");
        assert_eq!(t.slots().collect::<Vec<_>>(), vec!["model", "size"]);
        let mut slots = BTreeMap::new();
        slots.insert("model".to_string(), Value::from("星云跑鞋"));
        slots.insert("size".to_string(), Value::Int(39));
        assert_eq!(t.render(&slots), "星云跑鞋 39码 {not a slot} {}");
    }

    #[test]
    fn mappings_apply_by_intent_and_question() {
        let any = Mapping::entity("model");
        assert!(any.applies(None, false) && any.applies(Some("buy"), true));
        let only = Mapping {
            intents: IntentFilter::Only(vec!["buy".into()]),
            ..Mapping::entity("n")
        };
        assert!(only.applies(Some("buy"), false));
        assert!(!only.applies(Some("hours"), false));
        assert!(
            !only.applies(None, true),
            "a fallback is not one of the intents"
        );
        let except = Mapping {
            intents: IntentFilter::Except(vec!["track".into()]),
            ..Mapping::entity("n")
        };
        assert!(!except.applies(Some("track"), true));
        assert!(except.applies(Some("buy"), false));
        assert!(except.applies(None, false), "a fallback is not excluded");
        let asked = Mapping {
            only_when_asked: true,
            ..Mapping::entity("n")
        };
        assert!(asked.applies(None, true) && asked.applies(Some("buy"), true));
        assert!(!asked.applies(Some("buy"), false));
        let both = Mapping {
            intents: IntentFilter::Only(vec!["buy".into()]),
            only_when_asked: true,
            ..Mapping::entity("n")
        };
        assert!(both.applies(Some("buy"), true));
        assert!(!both.applies(Some("buy"), false) && !both.applies(None, true));
    }

    #[test]
    fn loose_equality() {
        assert!(values_equal(&Value::Int(39), &Value::from("39")));
        assert!(values_equal(&Value::Float(39.0), &Value::Int(39)));
        assert!(!values_equal(&Value::from("a"), &Value::from("b")));
        assert!(!values_equal(&Value::from("39"), &Value::from("39.0")));
    }
}

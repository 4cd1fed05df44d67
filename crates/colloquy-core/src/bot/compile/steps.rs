//! A flow's steps: one verb each, the qualifiers that verb takes, and the
//! labels that branches and jumps go to.

use super::checks::{self, Names};
use super::conditions;
use super::ctx::{At, Ctx};
use super::slots::check_type;
use super::yaml_to_value;
use crate::bot::model::{Action, SetValue, Slot, SlotType, Step, Template};
use crate::bot::spec::StepSpec;
use std::collections::{BTreeMap, HashMap};

const VERBS: &[&str] = &[
    "ask", "say", "set", "add", "clear", "action", "if", "goto", "flow", "handoff", "end", "saga",
];

const DEFAULT_MAX_ATTEMPTS: u32 = 3;

pub(super) fn compile(
    ctx: &mut Ctx,
    names: &Names,
    slots: &BTreeMap<String, Slot>,
    actions: &BTreeMap<String, Action>,
    flow_at: &At,
    specs: &[StepSpec],
) -> Vec<Step> {
    let flow = FlowScope {
        names,
        slots,
        actions,
        at: flow_at,
        labels: labels(ctx, flow_at, specs),
    };
    let steps: Vec<Step> = specs
        .iter()
        .enumerate()
        .map(|(i, s)| flow.step(ctx, i, s))
        .collect();
    checks::reachable(ctx, flow_at, &steps);
    steps
}

/// Each label's step index; labels are local to their flow.
fn labels<'a>(ctx: &mut Ctx, flow_at: &At, specs: &'a [StepSpec]) -> HashMap<&'a str, usize> {
    let mut labels = HashMap::new();
    for (i, s) in specs.iter().enumerate() {
        if let Some(l) = &s.label {
            if labels.insert(l.as_str(), i).is_some() {
                ctx.err(
                    flow_at,
                    &format!("steps[{i}].label"),
                    format!("duplicate label `{l}` in this flow"),
                );
            }
        }
    }
    labels
}

/// The step's one verb; a step with none or several is reported.
fn verb(ctx: &mut Ctx, at: &At, s: &StepSpec) -> Option<&'static str> {
    let present: Vec<&'static str> = [
        s.ask.is_some(),
        s.say.is_some(),
        s.set.is_some(),
        s.add.is_some(),
        s.clear.is_some(),
        s.action.is_some(),
        s.cond.is_some(),
        s.goto.is_some(),
        s.flow.is_some(),
        s.handoff.is_some(),
        s.end.is_some(),
        s.saga.is_some(),
    ]
    .iter()
    .zip(VERBS)
    .filter(|(p, _)| **p)
    .map(|(_, v)| *v)
    .collect();
    if let [verb] = present[..] {
        return Some(verb);
    }
    let msg = if present.is_empty() {
        format!("a step needs one of: {}", VERBS.join(", "))
    } else {
        format!(
            "a step does one thing, this one has {}",
            present.join(" and ")
        )
    };
    ctx.err(at, "", msg);
    None
}

/// Qualifiers only make sense with one verb; elsewhere they are a mistake.
fn check_qualifiers(ctx: &mut Ctx, at: &At, s: &StepSpec, verb: &str) {
    let qualifiers: [(&str, bool, &str); 6] = [
        ("prompt", s.prompt.is_some(), "ask"),
        ("reprompt", s.reprompt.is_some(), "ask"),
        ("max_attempts", s.max_attempts.is_some(), "ask"),
        ("force", s.force, "ask"),
        ("then", s.then.is_some(), "if"),
        ("else", s.otherwise.is_some(), "if"),
    ];
    for (field, given, owner) in qualifiers {
        if given && verb != owner {
            ctx.err(
                at,
                field,
                format!("`{field}` only applies to an `{owner}` step"),
            );
        }
    }
    if s.on_error.is_some() && !matches!(verb, "action" | "saga") {
        ctx.err(
            at,
            "on_error",
            "`on_error` only applies to an `action` or `saga` step",
        );
    }
}

/// What the steps of one flow are checked against.
struct FlowScope<'a> {
    names: &'a Names,
    slots: &'a BTreeMap<String, Slot>,
    actions: &'a BTreeMap<String, Action>,
    at: &'a At,
    labels: HashMap<&'a str, usize>,
}

impl FlowScope<'_> {
    fn step(&self, ctx: &mut Ctx, i: usize, s: &StepSpec) -> Step {
        let at = self.at.child(&format!(".steps[{i}]"));
        let Some(verb) = verb(ctx, &at, s) else {
            return Step::End;
        };
        check_qualifiers(ctx, &at, s, verb);
        let names = self.names;
        match verb {
            "ask" => self.ask(ctx, &at, s),
            "say" => {
                let r = s.say.clone().unwrap_or_default();
                names.response(ctx, &at, "say", &r);
                Step::Say(r)
            }
            "set" => self.set(ctx, &at, s.set.as_ref().into_iter().flatten()),
            "add" => self.add(ctx, &at, s.add.as_ref().into_iter().flatten()),
            "clear" => {
                let list = s.clear.clone().unwrap_or_default();
                for (k, slot) in list.iter().enumerate() {
                    names.slot(ctx, &at, &format!("clear[{k}]"), slot);
                }
                Step::Clear(list)
            }
            "action" => {
                let name = s.action.clone().unwrap_or_default();
                names.action(ctx, &at, "action", &name);
                let on_error = s.on_error.as_deref().map(|label| {
                    if matches!(self.actions.get(&name), Some(a) if !matches!(a, Action::Webhook(_)))
                    {
                        ctx.err(
                            &at,
                            "on_error",
                            format!("`{name}` reads the bot's tables and cannot fail; `on_error` is for webhook actions"),
                        );
                    }
                    self.target(ctx, &format!("steps[{i}].on_error"), label)
                });
                Step::Action { name, on_error }
            }
            "saga" => {
                let name = s.saga.clone().unwrap_or_default();
                names.saga(ctx, &at, "saga", &name);
                let on_error = s
                    .on_error
                    .as_deref()
                    .map(|label| self.target(ctx, &format!("steps[{i}].on_error"), label));
                Step::Saga { name, on_error }
            }
            "if" => self.branch(ctx, &at, i, s),
            "goto" => Step::Goto(self.target(
                ctx,
                &format!("steps[{i}].goto"),
                s.goto.as_deref().unwrap_or_default(),
            )),
            "flow" => {
                let f = s.flow.clone().unwrap_or_default();
                names.flow(ctx, &at, "flow", &f);
                Step::Flow(f)
            }
            "handoff" => {
                let r = s.handoff.clone().unwrap_or_default();
                names.response(ctx, &at, "handoff", &r);
                Step::Handoff(r)
            }
            _ => {
                if s.end == Some(false) {
                    ctx.err(&at, "end", "write `end: true` (or remove the step)");
                }
                Step::End
            }
        }
    }

    /// The index of `label`'s step. Reported on the flow, with the field
    /// naming the step, so the line is the jump's.
    fn target(&self, ctx: &mut Ctx, field: &str, label: &str) -> usize {
        self.labels.get(label).copied().unwrap_or_else(|| {
            ctx.err(
                self.at,
                field,
                format!("unknown label `{label}` in this flow"),
            );
            0
        })
    }

    fn ask(&self, ctx: &mut Ctx, at: &At, s: &StepSpec) -> Step {
        let names = self.names;
        let slot = s.ask.clone().unwrap_or_default();
        names.slot(ctx, at, "ask", &slot);
        let prompt = match &s.prompt {
            Some(p) => {
                names.response(ctx, at, "prompt", p);
                p.clone()
            }
            None => {
                let default = format!("ask_{slot}");
                if !names.responses.contains(&default) {
                    ctx.err(
                        at,
                        "prompt",
                        format!("no `prompt` given and no response `{default}` to default to"),
                    );
                }
                default
            }
        };
        if let Some(r) = &s.reprompt {
            names.response(ctx, at, "reprompt", r);
        }
        let max_attempts = s.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS);
        if max_attempts == 0 {
            ctx.err(at, "max_attempts", "must be at least 1");
        }
        Step::Ask {
            slot,
            prompt,
            reprompt: s.reprompt.clone(),
            max_attempts,
            force: s.force,
        }
    }

    fn set<'s>(
        &self,
        ctx: &mut Ctx,
        at: &At,
        values: impl Iterator<Item = (&'s String, &'s serde_yaml::Value)>,
    ) -> Step {
        let mut out = Vec::new();
        for (slot, v) in values {
            let field = format!("set.{slot}");
            if !self.names.slot(ctx, at, &field, slot) {
                continue;
            }
            let value = match v {
                // Text with a hole is rendered when the step runs.
                serde_yaml::Value::String(t) if t.contains('{') => {
                    let t = Template::parse(t);
                    for used in t.slots() {
                        self.names.slot(ctx, at, &field, used);
                    }
                    SetValue::Template(t)
                }
                other => match yaml_to_value(other) {
                    Some(v) => {
                        check_type(ctx, at, &field, self.slots.get(slot), &v);
                        SetValue::Literal(v)
                    }
                    None => {
                        ctx.err(
                            at,
                            &field,
                            "a slot value must be text, a number, a boolean or a list",
                        );
                        continue;
                    }
                },
            };
            out.push((slot.clone(), value));
        }
        Step::Set(out)
    }

    fn add<'s>(
        &self,
        ctx: &mut Ctx,
        at: &At,
        values: impl Iterator<Item = (&'s String, &'s f64)>,
    ) -> Step {
        let mut out = Vec::new();
        for (slot, by) in values {
            let field = format!("add.{slot}");
            let known = self.names.slot(ctx, at, &field, slot);
            match self.slots.get(slot).filter(|_| known) {
                Some(sl) if !sl.slot_type.is_numeric() => ctx.err(
                    at,
                    &field,
                    format!("`add` needs an int or float slot, `{slot}` is not"),
                ),
                Some(sl) if sl.slot_type == SlotType::Int && by.fract() != 0.0 => ctx.err(
                    at,
                    &field,
                    format!("`{slot}` is an int slot, cannot add {by}"),
                ),
                _ => {}
            }
            out.push((slot.clone(), *by));
        }
        Step::Add(out)
    }

    fn branch(&self, ctx: &mut Ctx, at: &At, i: usize, s: &StepSpec) -> Step {
        let cond = conditions::compile(
            ctx,
            self.names,
            self.slots,
            at,
            "if",
            s.cond.as_ref().expect("verb present"),
        );
        let then = match &s.then {
            Some(l) => self.target(ctx, &format!("steps[{i}].then"), l),
            None => {
                ctx.err(at, "then", "an `if` step needs `then: LABEL`");
                0
            }
        };
        let otherwise = s
            .otherwise
            .as_ref()
            .map(|l| self.target(ctx, &format!("steps[{i}].else"), l));
        Step::Branch {
            cond,
            then,
            otherwise,
        }
    }
}

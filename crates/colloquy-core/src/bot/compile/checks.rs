//! Checks across sections: names one section uses that another must
//! define, intents claimed twice, and steps no path reaches.

use super::ctx::{At, Ctx};
use super::sources::Sections;
use crate::bot::model::Step;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Every name that can be referenced.
pub(super) struct Names {
    pub(super) slots: BTreeSet<String>,
    pub(super) responses: BTreeSet<String>,
    flows: BTreeSet<String>,
    actions: BTreeSet<String>,
    sagas: BTreeSet<String>,
    /// intent → (has a direct response, where it is defined)
    pub(super) intents: BTreeMap<String, (bool, At)>,
}

impl Names {
    pub(super) fn of(s: &Sections) -> Names {
        Names {
            slots: s.slots.keys().cloned().collect(),
            responses: s.responses.keys().cloned().collect(),
            flows: s.flows.keys().cloned().collect(),
            actions: s.actions.keys().cloned().collect(),
            sagas: s.sagas.keys().cloned().collect(),
            intents: s
                .intents
                .iter()
                .map(|(k, (i, at))| (k.clone(), (i.response.is_some(), at.clone())))
                .collect(),
        }
    }

    fn check(
        set: &BTreeSet<String>,
        ctx: &mut Ctx,
        at: &At,
        field: &str,
        kind: &str,
        name: &str,
    ) -> bool {
        if set.contains(name) {
            true
        } else {
            ctx.err(at, field, format!("unknown {kind} `{name}`"));
            false
        }
    }

    pub(super) fn slot(&self, ctx: &mut Ctx, at: &At, field: &str, name: &str) -> bool {
        Self::check(&self.slots, ctx, at, field, "slot", name)
    }

    pub(super) fn response(&self, ctx: &mut Ctx, at: &At, field: &str, name: &str) -> bool {
        Self::check(&self.responses, ctx, at, field, "response", name)
    }

    pub(super) fn action(&self, ctx: &mut Ctx, at: &At, field: &str, name: &str) -> bool {
        Self::check(&self.actions, ctx, at, field, "action", name)
    }

    pub(super) fn saga(&self, ctx: &mut Ctx, at: &At, field: &str, name: &str) -> bool {
        Names::check(&self.sagas, ctx, at, field, "saga", name)
    }

    pub(super) fn flow(&self, ctx: &mut Ctx, at: &At, field: &str, name: &str) -> bool {
        Self::check(&self.flows, ctx, at, field, "flow", name)
    }
}

/// An intent that starts a flow never gets to say its own response, so
/// having both is a mistake in one of them.
pub(super) fn intents_answer_or_start(
    ctx: &mut Ctx,
    names: &Names,
    intent_flows: &HashMap<String, String>,
) {
    for (name, (has_response, at)) in &names.intents {
        if let Some(flow) = intent_flows.get(name).filter(|_| *has_response) {
            ctx.err(
                at,
                "response",
                format!("intent `{name}` both has a response and starts flow `{flow}`"),
            );
        }
    }
}

/// Steps that no path from the first step reaches are almost always a
/// missing label or a stray `goto`; report them.
pub(super) fn reachable(ctx: &mut Ctx, flow_at: &At, steps: &[Step]) {
    let mut seen = vec![false; steps.len()];
    let mut todo = vec![0usize];
    while let Some(i) = todo.pop() {
        if i >= steps.len() || seen[i] {
            continue;
        }
        seen[i] = true;
        match &steps[i] {
            Step::Goto(t) => todo.push(*t),
            Step::Branch {
                then, otherwise, ..
            } => {
                todo.push(*then);
                todo.push(otherwise.unwrap_or(i + 1));
            }
            Step::Action {
                on_error: Some(t), ..
            }
            | Step::Saga {
                on_error: Some(t), ..
            } => {
                todo.push(*t);
                todo.push(i + 1);
            }
            Step::Flow(_) | Step::Handoff(_) | Step::End => {}
            _ => todo.push(i + 1),
        }
    }
    for (i, s) in seen.iter().enumerate() {
        if !s {
            ctx.err(flow_at, &format!("steps[{i}]"), "unreachable step: no path from the first step leads here (add a label and jump to it, or remove it)");
        }
    }
}

//! Flows: which intents start each, and their steps.

use super::checks::Names;
use super::ctx::Ctx;
use super::sources::Merged;
use super::steps;
use crate::bot::model::{Action, Flow, Slot};
use crate::bot::spec::FlowSpec;
use std::collections::{BTreeMap, HashMap};

/// The compiled flows, and which flow each intent starts.
pub(super) fn compile(
    ctx: &mut Ctx,
    names: &Names,
    slots: &BTreeMap<String, Slot>,
    actions: &BTreeMap<String, Action>,
    flows: Merged<FlowSpec>,
) -> (BTreeMap<String, Flow>, HashMap<String, String>) {
    let mut intent_flows: HashMap<String, String> = HashMap::new();
    let mut out = BTreeMap::new();
    for (name, (f, at)) in flows {
        for (i, intent) in f.intents.iter().enumerate() {
            let field = format!("intents[{i}]");
            if !names.intents.contains_key(intent) {
                ctx.err(&at, &field, format!("unknown intent `{intent}`"));
            } else if let Some(other) = intent_flows.insert(intent.clone(), name.clone()) {
                ctx.err(
                    &at,
                    &field,
                    format!("intent `{intent}` already starts flow `{other}`"),
                );
            }
        }
        if f.steps.is_empty() {
            ctx.err(&at, "steps", "a flow needs at least one step");
        }
        let steps = steps::compile(ctx, names, slots, actions, &at, &f.steps);
        out.insert(
            name,
            Flow {
                intents: f.intents,
                steps,
            },
        );
    }
    (out, intent_flows)
}

//! Intents (what the classifier learns from their examples) and entities
//! (what the extractor pulls out of a message).

use super::checks::Names;
use super::ctx::{At, Ctx};
use super::sources::Merged;
use crate::bot::model::Intent;
use crate::bot::spec::{EntitySpec, IntentSpec};
use regex::Regex;
use std::collections::{BTreeMap, BTreeSet};

pub(super) fn compile(
    ctx: &mut Ctx,
    names: &Names,
    intents: Merged<IntentSpec>,
) -> BTreeMap<String, Intent> {
    let mut out = BTreeMap::new();
    for (name, (i, at)) in intents {
        if i.examples.iter().all(|e| e.trim().is_empty()) {
            ctx.err(&at, "examples", "an intent needs at least one example");
        }
        if let Some(r) = &i.response {
            names.response(ctx, &at, "response", r);
        }
        out.insert(
            name,
            Intent {
                examples: i.examples,
                response: i.response,
            },
        );
    }
    out
}

/// Synonym groups are kept as written (the NLU normalises their words as
/// it does messages); a group must relate at least two different words.
pub(super) fn thesaurus(ctx: &mut Ctx, groups: Vec<(Vec<String>, At)>) -> Vec<Vec<String>> {
    let mut out = Vec::with_capacity(groups.len());
    for (group, at) in groups {
        if let Some(i) = group.iter().position(|w| w.trim().is_empty()) {
            ctx.err(
                &at.child(&format!("[{i}]")),
                "",
                "a thesaurus word cannot be empty",
            );
        } else if group.iter().collect::<BTreeSet<_>>().len() < 2 {
            ctx.err(
                &at,
                "",
                "a synonym group needs at least two different words",
            );
        }
        out.push(group);
    }
    out
}

/// Entities are kept as written (the NLU builds its extractors from the
/// spec); here they are only checked.
pub(super) fn check_entities(ctx: &mut Ctx, entities: &Merged<EntitySpec>) {
    for (e, at) in entities.values() {
        let kinds = [e.regex.is_some(), e.lookup.is_some(), e.builtin.is_some()]
            .iter()
            .filter(|b| **b)
            .count();
        if kinds != 1 {
            ctx.err(
                at,
                "",
                "an entity needs exactly one of `regex`, `lookup` or `builtin`",
            );
        }
        if let Some(r) = &e.regex {
            match Regex::new(r) {
                Ok(re) => {
                    if let Some(g) = e.group {
                        if g >= re.captures_len() {
                            ctx.err(at, "group", format!("the pattern has no capture group {g}"));
                        }
                    }
                }
                Err(err) => ctx.err(at, "regex", format!("invalid regular expression: {err}")),
            }
        } else if e.group.is_some() {
            ctx.err(at, "group", "`group` only applies to a `regex` entity");
        }
        if let Some(b) = &e.builtin {
            if b != "number" {
                ctx.err(
                    at,
                    "builtin",
                    format!("unknown builtin `{b}` (known: number)"),
                );
            }
        }
        if let Some(lookup) = &e.lookup {
            if lookup.is_empty() {
                ctx.err(at, "lookup", "a lookup needs at least one value");
            }
        }
        if let Some(t) = &e.value_type {
            if !matches!(t.as_str(), "int" | "float" | "text") {
                ctx.err(
                    at,
                    "type",
                    format!("unknown entity type `{t}` (known: int, float, text)"),
                );
            }
        }
    }
}

//! Slots: their types, the entities that fill each (and when), and the
//! validation a value must pass.

use super::checks::Names;
use super::ctx::{At, Ctx};
use super::sources::Merged;
use crate::bot::model::{IntentFilter, Mapping, Slot, SlotType};
use crate::bot::spec::{EntitySpec, SlotMappingSpec, SlotSpec};
use crate::value::Value;
use regex::Regex;
use std::collections::BTreeMap;

pub(super) fn compile(
    ctx: &mut Ctx,
    names: &Names,
    slots: &Merged<SlotSpec>,
    entities: &Merged<EntitySpec>,
) -> BTreeMap<String, Slot> {
    slots
        .iter()
        .map(|(name, (s, at))| (name.clone(), slot(ctx, names, entities, name, s, at)))
        .collect()
}

fn slot(
    ctx: &mut Ctx,
    names: &Names,
    entities: &Merged<EntitySpec>,
    name: &str,
    s: &SlotSpec,
    at: &At,
) -> Slot {
    let slot_type = SlotType::parse(&s.slot_type).unwrap_or_else(|| {
        ctx.err(
            at,
            "type",
            format!(
                "unknown slot type `{}` (known: text, int, float, bool, enum, list)",
                s.slot_type
            ),
        );
        SlotType::Text
    });
    let from = mappings(ctx, names, entities, name, s, at);
    if slot_type == SlotType::Enum && s.values.as_ref().is_none_or(|v| v.is_empty()) {
        ctx.err(at, "values", "an enum slot needs a non-empty `values` list");
    }
    if let Some([lo, hi]) = s.range {
        if !slot_type.is_numeric() {
            ctx.err(
                at,
                "range",
                format!(
                    "`range` needs an int or float slot, this one is {}",
                    s.slot_type
                ),
            );
        }
        if lo > hi {
            ctx.err(at, "range", format!("empty range: {lo} > {hi}"));
        }
    }
    // Anchored: the whole value must match, not some part of it.
    let pattern = s
        .pattern
        .as_ref()
        .and_then(|p| match Regex::new(&format!("^(?:{p})$")) {
            Ok(r) => Some(r),
            Err(err) => {
                ctx.err(at, "pattern", format!("invalid regular expression: {err}"));
                None
            }
        });
    if let Some(r) = &s.invalid {
        names.response(ctx, at, "invalid", r);
    }
    Slot {
        slot_type,
        from,
        remember: s.remember,
        sensitive: s.sensitive,
        values: s.values.clone(),
        range: s.range,
        pattern,
        invalid: s.invalid.clone(),
    }
}

/// Where a slot is filled from: its `from` list, the `entity` shorthand,
/// or by default the entity of the same name.
fn mappings(
    ctx: &mut Ctx,
    names: &Names,
    entities: &Merged<EntitySpec>,
    name: &str,
    s: &SlotSpec,
    at: &At,
) -> Vec<Mapping> {
    let known = |e: &str| entities.contains_key(e) || e == "number";
    match (&s.entity, &s.from) {
        (Some(_), Some(_)) => {
            ctx.err(
                at,
                "entity",
                "`entity` is the shorthand of a one-entry `from`: give one or the other",
            );
            Vec::new()
        }
        (Some(e), None) => {
            if !known(e) {
                ctx.err(at, "entity", format!("unknown entity `{e}`"));
            }
            vec![Mapping::entity(e)]
        }
        (None, Some(list)) => list
            .iter()
            .enumerate()
            .map(|(i, m)| mapping(ctx, names, &known, &at.child(&format!(".from[{i}]")), m))
            .collect(),
        // A slot named like an entity is filled by it without saying so.
        (None, None) => entities
            .contains_key(name)
            .then(|| Mapping::entity(name))
            .into_iter()
            .collect(),
    }
}

fn mapping(
    ctx: &mut Ctx,
    names: &Names,
    known: &dyn Fn(&str) -> bool,
    at: &At,
    m: &SlotMappingSpec,
) -> Mapping {
    if !known(&m.entity) {
        ctx.err(at, "entity", format!("unknown entity `{}`", m.entity));
    }
    let mut check_intents = |field: &str, list: &[String]| {
        if list.is_empty() {
            ctx.err(at, field, "an empty list: leave the field out instead");
        }
        for (i, intent) in list.iter().enumerate() {
            if !names.intents.contains_key(intent) {
                ctx.err(
                    at,
                    &format!("{field}[{i}]"),
                    format!("unknown intent `{intent}`"),
                );
            }
        }
    };
    let intents = match (&m.intents, &m.not_intents) {
        (Some(only), None) => {
            check_intents("intents", only);
            IntentFilter::Only(only.clone())
        }
        (None, Some(except)) => {
            check_intents("not_intents", except);
            IntentFilter::Except(except.clone())
        }
        (None, None) => IntentFilter::Any,
        (Some(_), Some(_)) => {
            ctx.err(
                at,
                "not_intents",
                "give `intents` (the only ones that fill the slot) or `not_intents` (the ones that never do), not both",
            );
            IntentFilter::Any
        }
    };
    let only_when_asked = match m.when.as_deref() {
        None | Some("always") => false,
        Some("asked") => true,
        Some(other) => {
            ctx.err(
                at,
                "when",
                format!("unknown `when: {other}` (expected always or asked)"),
            );
            false
        }
    };
    Mapping {
        entity: m.entity.clone(),
        intents,
        only_when_asked,
    }
}

/// Report a value written in the bot that its slot could never hold.
pub(super) fn check_type(ctx: &mut Ctx, at: &At, field: &str, slot: Option<&Slot>, v: &Value) {
    let Some(slot) = slot else { return };
    let ok = match slot.slot_type {
        SlotType::Int => matches!(v, Value::Int(_)),
        SlotType::Float => matches!(v, Value::Int(_) | Value::Float(_)),
        SlotType::Bool => matches!(v, Value::Bool(_)),
        SlotType::Text => matches!(v, Value::Text(_)),
        SlotType::Enum => {
            matches!(v, Value::Text(t) if slot.values.as_ref().is_some_and(|vals| vals.contains(t)))
        }
        SlotType::List => matches!(v, Value::List(_)),
    };
    if !ok {
        ctx.err(
            at,
            field,
            format!("value `{v}` does not fit a {:?} slot", slot.slot_type).to_lowercase(),
        );
    }
}

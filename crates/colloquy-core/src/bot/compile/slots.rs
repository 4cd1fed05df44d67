//! Slots: their types, the entity that fills each, and the validation a
//! value must pass.

use super::checks::Names;
use super::ctx::{At, Ctx};
use super::sources::Merged;
use crate::bot::model::{Slot, SlotType};
use crate::bot::spec::{EntitySpec, SlotSpec};
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
    let entity = match &s.entity {
        Some(e) => {
            if !entities.contains_key(e) && e != "number" {
                ctx.err(at, "entity", format!("unknown entity `{e}`"));
            }
            Some(e.clone())
        }
        // A slot named like an entity is filled by it without saying so.
        None => entities.contains_key(name).then(|| name.to_string()),
    };
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
        entity,
        remember: s.remember,
        sensitive: s.sensitive,
        values: s.values.clone(),
        range: s.range,
        pattern,
        invalid: s.invalid.clone(),
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

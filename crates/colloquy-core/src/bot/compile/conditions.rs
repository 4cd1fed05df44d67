//! The conditions of `if` steps: tests on one slot, nested in `all` and
//! `any`.

use super::checks::Names;
use super::ctx::{At, Ctx};
use super::yaml_to_value;
use crate::bot::model::{Condition, Slot, Test};
use crate::bot::spec::ConditionSpec;
use crate::value::Value;
use std::collections::BTreeMap;

pub(super) fn compile(
    ctx: &mut Ctx,
    names: &Names,
    slots: &BTreeMap<String, Slot>,
    at: &At,
    field: &str,
    c: &ConditionSpec,
) -> Condition {
    let nested = |ctx: &mut Ctx, list: &[ConditionSpec], key: &str| -> Vec<Condition> {
        list.iter()
            .enumerate()
            .map(|(i, c)| compile(ctx, names, slots, at, &format!("{field}.{key}[{i}]"), c))
            .collect()
    };
    if let Some(all) = &c.all {
        return Condition::All(nested(ctx, all, "all"));
    }
    if let Some(any) = &c.any {
        return Condition::Any(nested(ctx, any, "any"));
    }
    let Some(slot) = &c.slot else {
        ctx.err(at, field, "a condition needs `slot` (or `all` / `any`)");
        return Condition::All(vec![]);
    };
    names.slot(ctx, at, &format!("{field}.slot"), slot);
    let mut tests = tests(ctx, slots, at, field, slot, c);
    match tests.len() {
        0 => {
            ctx.err(
                at,
                field,
                "a condition needs one test: eq, ne, lt, le, gt, ge, in or set",
            );
            Condition::All(vec![])
        }
        1 => Condition::Test {
            slot: slot.clone(),
            test: tests.pop().expect("one test"),
        },
        _ => Condition::All(
            tests
                .into_iter()
                .map(|test| Condition::Test {
                    slot: slot.clone(),
                    test,
                })
                .collect(),
        ),
    }
}

/// The tests a condition makes on `slot`; several must all hold.
fn tests(
    ctx: &mut Ctx,
    slots: &BTreeMap<String, Slot>,
    at: &At,
    field: &str,
    slot: &str,
    c: &ConditionSpec,
) -> Vec<Test> {
    let value = |ctx: &mut Ctx, v: &serde_yaml::Value, key: &str| {
        yaml_to_value(v).unwrap_or_else(|| {
            ctx.err(
                at,
                &format!("{field}.{key}"),
                "must be text, a number, a boolean or a list",
            );
            Value::Bool(false)
        })
    };
    let mut tests = Vec::new();
    if let Some(v) = &c.eq {
        tests.push(Test::Eq(value(ctx, v, "eq")));
    }
    if let Some(v) = &c.ne {
        tests.push(Test::Ne(value(ctx, v, "ne")));
    }
    for (bound, make) in [
        (c.lt, Test::Lt as fn(f64) -> Test),
        (c.le, Test::Le),
        (c.gt, Test::Gt),
        (c.ge, Test::Ge),
    ] {
        if let Some(b) = bound {
            if slots.get(slot).is_some_and(|s| !s.slot_type.is_numeric()) {
                ctx.err(
                    at,
                    field,
                    format!("`{slot}` is not a number slot; compare it with eq, ne or in"),
                );
            }
            tests.push(make(b));
        }
    }
    if let Some(list) = &c.within {
        tests.push(Test::In(list.iter().map(|v| value(ctx, v, "in")).collect()));
    }
    if let Some(s) = c.set {
        tests.push(Test::Set(s));
    }
    tests
}

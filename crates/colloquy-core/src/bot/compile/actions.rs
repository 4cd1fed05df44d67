//! Tables (data rows shipped with the bot) and the declarative actions
//! that read them: `lookup` finds a row by slot values, `draw` picks one by
//! weight. Every table, column and slot an action names must exist.

use super::checks::Names;
use super::ctx::{At, Ctx};
use super::sources::Merged;
use super::yaml_to_value;
use crate::bot::model::{Action, Row};
use crate::bot::spec::{ActionSpec, DrawSpec, LookupSpec};
use crate::value::Value;
use std::collections::BTreeMap;

pub(super) type Tables = BTreeMap<String, Vec<Row>>;

pub(super) fn tables(
    ctx: &mut Ctx,
    tables: Merged<Vec<BTreeMap<String, serde_yaml::Value>>>,
) -> Tables {
    let mut out = BTreeMap::new();
    for (name, (rows, at)) in tables {
        if rows.is_empty() {
            ctx.err(&at, "", "a table needs at least one row");
        }
        let mut compiled = Vec::new();
        for (r, row) in rows.into_iter().enumerate() {
            let mut o = Row::new();
            for (k, v) in row {
                match yaml_to_value(&v) {
                    Some(v) => {
                        o.insert(k, v);
                    }
                    None => ctx.err(
                        &at,
                        &format!("[{r}].{k}"),
                        "table cells must be text, numbers, booleans or lists",
                    ),
                }
            }
            compiled.push(o);
        }
        out.insert(name, compiled);
    }
    out
}

pub(super) fn compile(
    ctx: &mut Ctx,
    names: &Names,
    tables: &Tables,
    actions: Merged<ActionSpec>,
) -> BTreeMap<String, Action> {
    let mut out = BTreeMap::new();
    for (name, (a, at)) in actions {
        let action = match (a.lookup, a.draw) {
            (Some(l), None) => lookup(ctx, names, tables, &at, l),
            (None, Some(d)) => draw(ctx, names, tables, &at, d),
            _ => {
                ctx.err(&at, "", "an action needs exactly one of `lookup` or `draw`");
                continue;
            }
        };
        out.insert(name, action);
    }
    out
}

fn lookup(ctx: &mut Ctx, names: &Names, tables: &Tables, at: &At, l: LookupSpec) -> Action {
    let cols = table_columns(ctx, at, "lookup.table", tables, &l.table);
    for (col, slot) in &l.matches {
        names.slot(ctx, at, &format!("lookup.match.{col}"), slot);
        check_column(ctx, at, &format!("lookup.match.{col}"), &cols, col);
    }
    if let Some(b) = &l.between {
        names.slot(ctx, at, "lookup.between.slot", &b.slot);
        check_column(ctx, at, "lookup.between.min", &cols, &b.min);
        check_column(ctx, at, "lookup.between.max", &cols, &b.max);
    }
    for (slot, col) in &l.set {
        names.slot(ctx, at, &format!("lookup.set.{slot}"), slot);
        check_column(ctx, at, &format!("lookup.set.{slot}"), &cols, col);
    }
    Action::Lookup {
        table: l.table,
        matches: l.matches.into_iter().collect(),
        between: l.between.map(|b| (b.slot, b.min, b.max)),
        set: l.set.into_iter().collect(),
    }
}

fn draw(ctx: &mut Ctx, names: &Names, tables: &Tables, at: &At, d: DrawSpec) -> Action {
    let cols = table_columns(ctx, at, "draw.table", tables, &d.table);
    check_column(ctx, at, "draw.weight", &cols, &d.weight);
    if let Some(rows) = tables.get(&d.table) {
        if rows.iter().any(|r| {
            r.get(&d.weight)
                .and_then(Value::as_f64)
                .is_none_or(|w| w < 0.0)
        }) {
            ctx.err(
                at,
                "draw.weight",
                format!(
                    "every row of `{}` needs a non-negative number in `{}`",
                    d.table, d.weight
                ),
            );
        }
    }
    for (slot, col) in &d.set {
        names.slot(ctx, at, &format!("draw.set.{slot}"), slot);
        check_column(ctx, at, &format!("draw.set.{slot}"), &cols, col);
    }
    Action::Draw {
        table: d.table,
        weight: d.weight,
        set: d.set.into_iter().collect(),
    }
}

/// The columns of `table`, or `None` (reported) if there is no such table.
fn table_columns(
    ctx: &mut Ctx,
    at: &At,
    field: &str,
    tables: &Tables,
    table: &str,
) -> Option<Vec<String>> {
    match tables.get(table) {
        Some(rows) => Some(rows.iter().flat_map(|r| r.keys().cloned()).collect()),
        None => {
            ctx.err(at, field, format!("unknown table `{table}`"));
            None
        }
    }
}

/// An unknown table was reported already; its columns are not checked.
fn check_column(ctx: &mut Ctx, at: &At, field: &str, cols: &Option<Vec<String>>, col: &str) {
    if let Some(cols) = cols {
        if !cols.iter().any(|c| c == col) {
            ctx.err(at, field, format!("the table has no column `{col}`"));
        }
    }
}

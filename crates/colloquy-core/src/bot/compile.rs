//! From YAML sources to a checked `Bot`: parse every file, merge them,
//! resolve every name, and report each problem with file, line and field.

use super::lines::LineIndex;
use super::model::*;
use super::spec::*;
use crate::event::BotRef;
use crate::value::Value;
use regex::Regex;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

/// One file of a bot directory, read by the caller (the core does no I/O).
#[derive(Debug, Clone)]
pub struct SourceFile {
    pub path: String,
    pub text: String,
}

/// A problem in a bot definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BotError {
    pub file: String,
    pub line: Option<usize>,
    /// YAML path of the offending field, e.g. `flows.order.steps[1].ask`.
    pub field: String,
    pub message: String,
}

impl fmt::Display for BotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

pub const DEFAULT_SESSION_TIMEOUT_MS: i64 = 30 * 60 * 1000;
pub const DEFAULT_THRESHOLD: f32 = 0.4;
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;

/// Where a definition came from: which file, under which YAML path.
#[derive(Clone)]
struct At {
    file: usize,
    path: String,
}

struct Ctx<'a> {
    files: &'a [SourceFile],
    lines: Vec<LineIndex>,
    errors: Vec<BotError>,
}

impl Ctx<'_> {
    fn err(&mut self, at: &At, field: &str, message: impl Into<String>) {
        let path = match field.chars().next() {
            None => at.path.clone(),
            Some('[') => format!("{}{field}", at.path),
            Some(_) => format!("{}.{field}", at.path),
        };
        self.errors.push(BotError {
            file: self.files[at.file].path.clone(),
            line: self.lines[at.file].line(&path),
            field: path,
            message: message.into(),
        });
    }
}

/// Definitions of one kind merged from all files, each with its origin.
type Merged<T> = BTreeMap<String, (T, At)>;

fn merge<T>(
    ctx: &mut Ctx,
    into: &mut Merged<T>,
    file: usize,
    section: &str,
    items: BTreeMap<String, T>,
) {
    for (name, item) in items {
        let at = At {
            file,
            path: format!("{section}.{name}"),
        };
        if let Some((_, first)) = into.get(&name) {
            let first_file = ctx.files[first.file].path.clone();
            let first_line = ctx.lines[first.file]
                .line(&first.path)
                .map(|l| format!(":{l}"))
                .unwrap_or_default();
            ctx.err(
                &at,
                "",
                format!(
                    "duplicate {section} name `{name}` (first defined at {first_file}{first_line})"
                ),
            );
        } else {
            into.insert(name, (item, at));
        }
    }
}

fn yaml_to_value(v: &serde_yaml::Value) -> Option<Value> {
    Some(match v {
        serde_yaml::Value::Bool(b) => Value::Bool(*b),
        serde_yaml::Value::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => Value::Float(n.as_f64()?),
        },
        serde_yaml::Value::String(s) => Value::Text(s.clone()),
        serde_yaml::Value::Sequence(items) => {
            Value::List(items.iter().map(yaml_to_value).collect::<Option<_>>()?)
        }
        _ => return None,
    })
}

/// Compile a bot from its files. Returns every error found, not just the first.
pub fn compile(files: &[SourceFile]) -> Result<Bot, Vec<BotError>> {
    let mut ctx = Ctx {
        files,
        lines: files.iter().map(|f| LineIndex::new(&f.text)).collect(),
        errors: Vec::new(),
    };
    let mut bot_spec: Option<(BotSpec, At)> = None;
    let mut intents = Merged::new();
    let mut entities = Merged::new();
    let mut slots = Merged::new();
    let mut responses = Merged::new();
    let mut flows = Merged::new();
    let mut actions = Merged::new();
    let mut tables = Merged::new();

    for (i, file) in files.iter().enumerate() {
        let spec: FileSpec = if file.text.trim().is_empty() {
            FileSpec::default()
        } else {
            match serde_yaml::from_str(&file.text) {
                Ok(s) => s,
                Err(e) => {
                    let msg = e.to_string();
                    // serde_yaml appends " at line L column C"; the line goes in its own field.
                    let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
                    let (field, message) = match msg.split_once(": ") {
                        Some((f, m)) if !f.contains(' ') => (f.to_string(), m.to_string()),
                        _ => (String::new(), msg),
                    };
                    ctx.errors.push(BotError {
                        file: file.path.clone(),
                        line: e.location().map(|l| l.line()),
                        field,
                        message,
                    });
                    continue;
                }
            }
        };
        if let Some(b) = spec.bot {
            let at = At {
                file: i,
                path: "bot".into(),
            };
            if let Some((_, first)) = &bot_spec {
                let first = ctx.files[first.file].path.clone();
                ctx.err(
                    &at,
                    "",
                    format!("a bot has one `bot` section; already defined in {first}"),
                );
            } else {
                bot_spec = Some((b, at));
            }
        }
        merge(&mut ctx, &mut intents, i, "intents", spec.intents);
        merge(&mut ctx, &mut entities, i, "entities", spec.entities);
        merge(&mut ctx, &mut slots, i, "slots", spec.slots);
        merge(&mut ctx, &mut responses, i, "responses", spec.responses);
        merge(&mut ctx, &mut flows, i, "flows", spec.flows);
        merge(&mut ctx, &mut actions, i, "actions", spec.actions);
        merge(&mut ctx, &mut tables, i, "tables", spec.tables);
    }
    if !ctx.errors.is_empty() {
        return Err(ctx.errors);
    }
    let Some((bot_spec, bot_at)) = bot_spec else {
        return Err(vec![BotError {
            file: files
                .first()
                .map(|f| f.path.clone())
                .unwrap_or_else(|| "(no YAML files)".into()),
            line: None,
            field: "bot".into(),
            message: "no file defines the `bot` section (name, version, fallback)".into(),
        }]);
    };

    let names = Names {
        slots: slots.keys().cloned().collect(),
        responses: responses.keys().cloned().collect(),
        flows: flows.keys().cloned().collect(),
        actions: actions.keys().cloned().collect(),
        intents: intents
            .iter()
            .map(|(k, (i, at))| (k.clone(), (i.response.is_some(), at.clone())))
            .collect(),
    };

    // bot
    let session_timeout_ms = match &bot_spec.session_timeout {
        None => DEFAULT_SESSION_TIMEOUT_MS,
        Some(s) => crate::duration::parse_ms(s).unwrap_or_else(|| {
            ctx.err(
                &bot_at,
                "session_timeout",
                format!("`{s}` is not a duration (use e.g. 30m, 90s, 2h)"),
            );
            DEFAULT_SESSION_TIMEOUT_MS
        }),
    };
    let threshold = bot_spec.threshold.unwrap_or(DEFAULT_THRESHOLD);
    if !(0.0..=1.0).contains(&threshold) {
        ctx.err(
            &bot_at,
            "threshold",
            format!("must be between 0 and 1, got {threshold}"),
        );
    }
    for (field, name) in [("name", &bot_spec.name), ("version", &bot_spec.version)] {
        if name.trim().is_empty() {
            ctx.err(&bot_at, field, "must not be empty");
        }
    }
    names.response(&mut ctx, &bot_at, "fallback", &bot_spec.fallback);
    if let Some(a) = &bot_spec.abandon {
        names.response(&mut ctx, &bot_at, "abandon", a);
    }

    // tables
    let mut c_tables = BTreeMap::new();
    for (name, (rows, at)) in tables {
        if rows.is_empty() {
            ctx.err(&at, "", "a table needs at least one row");
        }
        let mut out = Vec::new();
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
            out.push(o);
        }
        c_tables.insert(name, out);
    }

    // entities
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

    // slots
    let mut c_slots = BTreeMap::new();
    for (name, (s, at)) in &slots {
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
            None => entities.contains_key(name).then(|| name.clone()),
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
            names.response(&mut ctx, at, "invalid", r);
        }
        c_slots.insert(
            name.clone(),
            Slot {
                slot_type,
                entity,
                remember: s.remember,
                sensitive: s.sensitive,
                values: s.values.clone(),
                range: s.range,
                pattern,
                invalid: s.invalid.clone(),
            },
        );
    }

    // responses
    let mut c_responses = BTreeMap::new();
    for (name, (r, at)) in responses {
        let texts = match r {
            ResponseSpec::One(t) => vec![t],
            ResponseSpec::Variants(v) => v,
        };
        if texts.is_empty() {
            ctx.err(&at, "", "a response needs at least one variant");
        }
        let templates: Vec<Template> = texts.iter().map(|t| Template::parse(t)).collect();
        for (i, t) in templates.iter().enumerate() {
            for s in t.slots() {
                if !names.slots.contains(s) {
                    ctx.err(
                        &at,
                        &format!("[{i}]"),
                        format!("template uses unknown slot `{{{s}}}`"),
                    );
                }
            }
        }
        c_responses.insert(name, templates);
    }

    // intents
    let mut c_intents = BTreeMap::new();
    for (name, (i, at)) in intents {
        if i.examples.iter().all(|e| e.trim().is_empty()) {
            ctx.err(&at, "examples", "an intent needs at least one example");
        }
        if let Some(r) = &i.response {
            names.response(&mut ctx, &at, "response", r);
        }
        c_intents.insert(
            name,
            Intent {
                examples: i.examples,
                response: i.response,
            },
        );
    }

    // actions
    let mut c_actions = BTreeMap::new();
    for (name, (a, at)) in actions {
        let action = match (a.lookup, a.draw) {
            (Some(l), None) => {
                let cols = table_columns(&mut ctx, &at, "lookup.table", &c_tables, &l.table);
                for (col, slot) in &l.matches {
                    names.slot(&mut ctx, &at, &format!("lookup.match.{col}"), slot);
                    check_column(&mut ctx, &at, &format!("lookup.match.{col}"), &cols, col);
                }
                if let Some(b) = &l.between {
                    names.slot(&mut ctx, &at, "lookup.between.slot", &b.slot);
                    check_column(&mut ctx, &at, "lookup.between.min", &cols, &b.min);
                    check_column(&mut ctx, &at, "lookup.between.max", &cols, &b.max);
                }
                for (slot, col) in &l.set {
                    names.slot(&mut ctx, &at, &format!("lookup.set.{slot}"), slot);
                    check_column(&mut ctx, &at, &format!("lookup.set.{slot}"), &cols, col);
                }
                Action::Lookup {
                    table: l.table,
                    matches: l.matches.into_iter().collect(),
                    between: l.between.map(|b| (b.slot, b.min, b.max)),
                    set: l.set.into_iter().collect(),
                }
            }
            (None, Some(d)) => {
                let cols = table_columns(&mut ctx, &at, "draw.table", &c_tables, &d.table);
                check_column(&mut ctx, &at, "draw.weight", &cols, &d.weight);
                if let Some(rows) = c_tables.get(&d.table) {
                    if rows.iter().any(|r| {
                        r.get(&d.weight)
                            .and_then(Value::as_f64)
                            .is_none_or(|w| w < 0.0)
                    }) {
                        ctx.err(
                            &at,
                            "draw.weight",
                            format!(
                                "every row of `{}` needs a non-negative number in `{}`",
                                d.table, d.weight
                            ),
                        );
                    }
                }
                for (slot, col) in &d.set {
                    names.slot(&mut ctx, &at, &format!("draw.set.{slot}"), slot);
                    check_column(&mut ctx, &at, &format!("draw.set.{slot}"), &cols, col);
                }
                Action::Draw {
                    table: d.table,
                    weight: d.weight,
                    set: d.set.into_iter().collect(),
                }
            }
            _ => {
                ctx.err(&at, "", "an action needs exactly one of `lookup` or `draw`");
                continue;
            }
        };
        c_actions.insert(name, action);
    }

    // flows
    let mut intent_flows: HashMap<String, String> = HashMap::new();
    let mut c_flows = BTreeMap::new();
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
        let steps = compile_steps(&mut ctx, &names, &c_slots, &at, &f.steps);
        c_flows.insert(
            name,
            Flow {
                intents: f.intents,
                steps,
            },
        );
    }
    for (name, (has_response, at)) in &names.intents {
        if *has_response && intent_flows.contains_key(name) {
            ctx.err(
                at,
                "response",
                format!(
                    "intent `{name}` both has a response and starts flow `{}`",
                    intent_flows[name]
                ),
            );
        }
    }

    if !ctx.errors.is_empty() {
        ctx.errors
            .sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
        return Err(ctx.errors);
    }
    Ok(Bot {
        id: BotRef {
            name: bot_spec.name,
            version: bot_spec.version,
        },
        language: bot_spec.language,
        session_timeout_ms,
        threshold,
        fallback: bot_spec.fallback,
        abandon: bot_spec.abandon,
        intents: c_intents,
        entities: entities.into_iter().map(|(k, (e, _))| (k, e)).collect(),
        slots: c_slots,
        responses: c_responses,
        flows: c_flows,
        actions: c_actions,
        tables: c_tables,
        intent_flows,
    })
}

/// Every name that can be referenced.
struct Names {
    slots: BTreeSet<String>,
    responses: BTreeSet<String>,
    flows: BTreeSet<String>,
    actions: BTreeSet<String>,
    /// intent → (has a direct response, where it is defined)
    intents: BTreeMap<String, (bool, At)>,
}

impl Names {
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
    fn slot(&self, ctx: &mut Ctx, at: &At, field: &str, name: &str) -> bool {
        Self::check(&self.slots, ctx, at, field, "slot", name)
    }
    fn response(&self, ctx: &mut Ctx, at: &At, field: &str, name: &str) -> bool {
        Self::check(&self.responses, ctx, at, field, "response", name)
    }
}

fn table_columns(
    ctx: &mut Ctx,
    at: &At,
    field: &str,
    tables: &BTreeMap<String, Vec<Row>>,
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

fn check_column(ctx: &mut Ctx, at: &At, field: &str, cols: &Option<Vec<String>>, col: &str) {
    if let Some(cols) = cols {
        if !cols.iter().any(|c| c == col) {
            ctx.err(at, field, format!("the table has no column `{col}`"));
        }
    }
}

const VERBS: &[&str] = &[
    "ask", "say", "set", "add", "clear", "action", "if", "goto", "flow", "handoff", "end",
];

fn compile_steps(
    ctx: &mut Ctx,
    names: &Names,
    slots: &BTreeMap<String, Slot>,
    flow_at: &At,
    specs: &[StepSpec],
) -> Vec<Step> {
    let mut labels: HashMap<&str, usize> = HashMap::new();
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
    let target = |ctx: &mut Ctx, field: &str, label: &str| -> usize {
        labels.get(label).copied().unwrap_or_else(|| {
            ctx.err(
                flow_at,
                field,
                format!("unknown label `{label}` in this flow"),
            );
            0
        })
    };
    let mut steps = Vec::with_capacity(specs.len());
    for (i, s) in specs.iter().enumerate() {
        let at = At {
            file: flow_at.file,
            path: format!("{}.steps[{i}]", flow_at.path),
        };
        let present: Vec<&str> = [
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
        ]
        .iter()
        .zip(VERBS)
        .filter(|(p, _)| **p)
        .map(|(_, v)| *v)
        .collect();
        if present.len() != 1 {
            let msg = if present.is_empty() {
                format!("a step needs one of: {}", VERBS.join(", "))
            } else {
                format!(
                    "a step does one thing, this one has {}",
                    present.join(" and ")
                )
            };
            ctx.err(&at, "", msg);
            steps.push(Step::End);
            continue;
        }
        let verb = present[0];
        // Qualifiers that only make sense with one verb.
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
                    &at,
                    field,
                    format!("`{field}` only applies to an `{owner}` step"),
                );
            }
        }
        let step = match verb {
            "ask" => {
                let slot = s.ask.clone().unwrap_or_default();
                names.slot(ctx, &at, "ask", &slot);
                let prompt = match &s.prompt {
                    Some(p) => {
                        names.response(ctx, &at, "prompt", p);
                        p.clone()
                    }
                    None => {
                        let default = format!("ask_{slot}");
                        if !names.responses.contains(&default) {
                            ctx.err(
                                &at,
                                "prompt",
                                format!(
                                    "no `prompt` given and no response `{default}` to default to"
                                ),
                            );
                        }
                        default
                    }
                };
                if let Some(r) = &s.reprompt {
                    names.response(ctx, &at, "reprompt", r);
                }
                let max_attempts = s.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS);
                if max_attempts == 0 {
                    ctx.err(&at, "max_attempts", "must be at least 1");
                }
                Step::Ask {
                    slot,
                    prompt,
                    reprompt: s.reprompt.clone(),
                    max_attempts,
                    force: s.force,
                }
            }
            "say" => {
                let r = s.say.clone().unwrap_or_default();
                names.response(ctx, &at, "say", &r);
                Step::Say(r)
            }
            "set" => {
                let mut out = Vec::new();
                for (slot, v) in s.set.as_ref().into_iter().flatten() {
                    let field = format!("set.{slot}");
                    if !names.slot(ctx, &at, &field, slot) {
                        continue;
                    }
                    let value = match v {
                        serde_yaml::Value::String(t) if t.contains('{') => {
                            let t = Template::parse(t);
                            for used in t.slots() {
                                names.slot(ctx, &at, &field, used);
                            }
                            SetValue::Template(t)
                        }
                        other => match yaml_to_value(other) {
                            Some(v) => {
                                check_type(ctx, &at, &field, slots.get(slot), &v);
                                SetValue::Literal(v)
                            }
                            None => {
                                ctx.err(
                                    &at,
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
            "add" => {
                let mut out = Vec::new();
                for (slot, by) in s.add.as_ref().into_iter().flatten() {
                    let field = format!("add.{slot}");
                    if names.slot(ctx, &at, &field, slot) {
                        if let Some(sl) = slots.get(slot) {
                            if !sl.slot_type.is_numeric() {
                                ctx.err(
                                    &at,
                                    &field,
                                    format!("`add` needs an int or float slot, `{slot}` is not"),
                                );
                            } else if sl.slot_type == SlotType::Int && by.fract() != 0.0 {
                                ctx.err(
                                    &at,
                                    &field,
                                    format!("`{slot}` is an int slot, cannot add {by}"),
                                );
                            }
                        }
                    }
                    out.push((slot.clone(), *by));
                }
                Step::Add(out)
            }
            "clear" => {
                let list = s.clear.clone().unwrap_or_default();
                for (k, slot) in list.iter().enumerate() {
                    names.slot(ctx, &at, &format!("clear[{k}]"), slot);
                }
                Step::Clear(list)
            }
            "action" => {
                let a = s.action.clone().unwrap_or_default();
                Names::check(&names.actions, ctx, &at, "action", "action", &a);
                Step::Action(a)
            }
            "if" => {
                let cond = compile_condition(
                    ctx,
                    names,
                    slots,
                    &at,
                    "if",
                    s.cond.as_ref().expect("verb present"),
                );
                let then = match &s.then {
                    Some(l) => target(ctx, &format!("steps[{i}].then"), l),
                    None => {
                        ctx.err(&at, "then", "an `if` step needs `then: LABEL`");
                        0
                    }
                };
                let otherwise = s
                    .otherwise
                    .as_ref()
                    .map(|l| target(ctx, &format!("steps[{i}].else"), l));
                Step::Branch {
                    cond,
                    then,
                    otherwise,
                }
            }
            "goto" => Step::Goto(target(
                ctx,
                &format!("steps[{i}].goto"),
                s.goto.as_deref().unwrap_or_default(),
            )),
            "flow" => {
                let f = s.flow.clone().unwrap_or_default();
                Names::check(&names.flows, ctx, &at, "flow", "flow", &f);
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
        };
        steps.push(step);
    }
    check_reachable(ctx, flow_at, &steps);
    steps
}

fn check_type(ctx: &mut Ctx, at: &At, field: &str, slot: Option<&Slot>, v: &Value) {
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

fn compile_condition(
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
            .map(|(i, c)| {
                compile_condition(ctx, names, slots, at, &format!("{field}.{key}[{i}]"), c)
            })
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

/// Steps that no path from the first step reaches are almost always a
/// missing label or a stray `goto`; report them.
fn check_reachable(ctx: &mut Ctx, flow_at: &At, steps: &[Step]) {
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

//! Tables (data rows shipped with the bot), the declarative actions that
//! read them (`lookup` finds a row by slot values, `draw` picks one by
//! weight; every table, column and slot they name must exist), and remote
//! actions (`webhook`), resolved against the bot's `action_endpoint`.

use super::checks::Names;
use super::ctx::{At, Ctx};
use super::sources::Merged;
use super::yaml_to_value;
use crate::bot::model::{Action, Breaker, Row, Webhook};
use crate::bot::spec::{ActionSpec, DrawSpec, LookupSpec, WebhookSpec};
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
    (endpoint, bot_at): (Option<&WebhookSpec>, &At),
    actions: Merged<ActionSpec>,
) -> BTreeMap<String, Action> {
    let defaults = endpoint
        .map(|e| checked_webhook(ctx, bot_at, "action_endpoint", e))
        .unwrap_or_default();
    let mut out = BTreeMap::new();
    let mut ats = BTreeMap::new();
    for (name, (a, at)) in actions {
        ats.insert(name.clone(), at.clone());
        let action = match (a.lookup, a.draw, a.webhook) {
            (Some(l), None, None) => lookup(ctx, names, tables, &at, l),
            (None, Some(d), None) => draw(ctx, names, tables, &at, d),
            (None, None, Some(w)) => webhook(ctx, names, &at, &name, &defaults, &w),
            _ => {
                ctx.err(
                    &at,
                    "",
                    "an action needs exactly one of `lookup`, `draw` or `webhook`",
                );
                continue;
            }
        };
        out.insert(name, action);
    }
    one_breaker_per_endpoint(ctx, &out, &ats);
    out
}

/// A breaker belongs to an endpoint, whichever action calls it: actions
/// that share a URL must agree on its settings.
fn one_breaker_per_endpoint(
    ctx: &mut Ctx,
    actions: &BTreeMap<String, Action>,
    ats: &BTreeMap<String, At>,
) {
    let mut first: BTreeMap<&str, (&str, Breaker)> = BTreeMap::new();
    for (name, action) in actions {
        let Action::Webhook(w) = action else { continue };
        match first.get(w.url.as_str()) {
            Some((other, b)) if *b != w.breaker => ctx.err(
                &ats[name],
                "webhook.breaker",
                format!(
                    "`{}` also calls {} with other breaker settings; a breaker is per endpoint (set it in `action_endpoint`)",
                    other, w.url
                ),
            ),
            Some(_) => {}
            None => {
                first.insert(&w.url, (name, w.breaker));
            }
        }
    }
}

const DEFAULT_BREAKER: Breaker = Breaker {
    failures: 5,
    open_ms: 10_000,
};

/// Default deadline of a remote call, retries included: a user waits for
/// the answer, and Rasa's own five minutes hold a conversation hostage.
const DEFAULT_TIMEOUT_MS: u64 = 3_000;
const MAX_TIMEOUT_MS: u64 = 60_000;
const DEFAULT_RETRIES: u32 = 2;
const MAX_RETRIES: u32 = 10;

/// A webhook's fields as given in one place (an action or the endpoint
/// defaults), each checked and reported there.
#[derive(Default)]
struct Given {
    url: Option<String>,
    timeout_ms: Option<u64>,
    retries: Option<u32>,
    headers: Option<Vec<(String, String)>>,
    token_env: Option<String>,
    failures: Option<u32>,
    open_ms: Option<u64>,
}

fn checked_webhook(ctx: &mut Ctx, at: &At, prefix: &str, w: &WebhookSpec) -> Given {
    let field = |f: &str| format!("{prefix}.{f}");
    if let Some(url) = &w.url {
        if let Err(problem) = check_url(url) {
            ctx.err(at, &field("url"), problem);
        }
    }
    let timeout_ms = w.timeout.as_ref().and_then(|t| {
        match crate::duration::parse_ms(t).and_then(|ms| u64::try_from(ms).ok()) {
            Some(ms) if (1..=MAX_TIMEOUT_MS).contains(&ms) => Some(ms),
            Some(ms) => {
                ctx.err(
                    at,
                    &field("timeout"),
                    format!("must be between 1ms and 60s, got {ms}ms"),
                );
                None
            }
            None => {
                ctx.err(
                    at,
                    &field("timeout"),
                    format!("`{t}` is not a duration (use e.g. 2s, 500ms)"),
                );
                None
            }
        }
    });
    if let Some(r) = w.retries.filter(|r| *r > MAX_RETRIES) {
        ctx.err(
            at,
            &field("retries"),
            format!("must be at most {MAX_RETRIES}, got {r}"),
        );
    }
    for (name, value) in w.headers.iter().flatten() {
        let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
        if name.is_empty() || !name.chars().all(token) {
            ctx.err(
                at,
                &field("headers"),
                format!("`{name}` is not a header name"),
            );
        }
        if value.chars().any(|c| c.is_control()) {
            ctx.err(
                at,
                &field(&format!("headers.{name}")),
                "a header value may not hold control characters",
            );
        }
        if name.eq_ignore_ascii_case("idempotency-key") {
            ctx.err(
                at,
                &field("headers"),
                "`Idempotency-Key` is set by colloquy on every call",
            );
        }
    }
    if let Some(var) = &w.token_env {
        let ok = var
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_uppercase() || c == '_')
            && var
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
        if !ok {
            ctx.err(
                at,
                &field("token_env"),
                format!("`{var}` is not an environment variable name (A-Z, 0-9, _)"),
            );
        }
    }
    let breaker = w.breaker.clone().unwrap_or_default();
    if let Some(0) = breaker.failures {
        ctx.err(at, &field("breaker.failures"), "must be at least 1");
    }
    let open_ms = breaker.open_for.as_ref().and_then(|t| {
        match crate::duration::parse_ms(t).and_then(|ms| u64::try_from(ms).ok()) {
            Some(ms) if ms > 0 => Some(ms),
            _ => {
                ctx.err(
                    at,
                    &field("breaker.open_for"),
                    format!("`{t}` is not a positive duration (use e.g. 10s)"),
                );
                None
            }
        }
    });
    Given {
        failures: breaker.failures.filter(|f| *f > 0),
        open_ms,
        url: w.url.clone(),
        timeout_ms,
        retries: w.retries.filter(|r| *r <= MAX_RETRIES),
        headers: w
            .headers
            .as_ref()
            .map(|h| h.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
        token_env: w.token_env.clone(),
    }
}

/// Only plain HTTP for now: this build carries no TLS client, so an
/// `https` action server is refused here rather than failing on every call.
fn check_url(url: &str) -> Result<(), String> {
    let rest = match url.split_once("://") {
        Some(("http", rest)) => rest,
        Some(("https", _)) => {
            return Err(format!(
                "`{url}`: this build calls action servers over plain HTTP only; reach an HTTPS one through a local proxy"
            ))
        }
        _ => return Err(format!("`{url}` is not an http:// URL")),
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if host.is_empty() || host.contains('@') || url.chars().any(|c| c.is_whitespace()) {
        return Err(format!("`{url}` is not an http:// URL with a host"));
    }
    Ok(())
}

fn webhook(
    ctx: &mut Ctx,
    names: &Names,
    at: &At,
    name: &str,
    defaults: &Given,
    w: &WebhookSpec,
) -> Action {
    let own = checked_webhook(ctx, at, "webhook", w);
    for (k, slot) in w.send.iter().flatten().enumerate() {
        names.slot(ctx, at, &format!("webhook.send[{k}]"), slot);
    }
    let url = own.url.or_else(|| defaults.url.clone()).unwrap_or_else(|| {
        ctx.err(
            at,
            "webhook.url",
            "no url: give one here or in the bot's `action_endpoint`",
        );
        String::new()
    });
    let mut headers = defaults.headers.clone().unwrap_or_default();
    for (k, v) in own.headers.unwrap_or_default() {
        headers.retain(|(d, _)| !d.eq_ignore_ascii_case(&k));
        headers.push((k, v));
    }
    Action::Webhook(Webhook {
        remote: w.name.clone().unwrap_or_else(|| name.to_string()),
        url,
        timeout_ms: own
            .timeout_ms
            .or(defaults.timeout_ms)
            .unwrap_or(DEFAULT_TIMEOUT_MS),
        retries: own.retries.or(defaults.retries).unwrap_or(DEFAULT_RETRIES),
        headers,
        token_env: own.token_env.or_else(|| defaults.token_env.clone()),
        send: w.send.clone(),
        breaker: Breaker {
            failures: own
                .failures
                .or(defaults.failures)
                .unwrap_or(DEFAULT_BREAKER.failures),
            open_ms: own
                .open_ms
                .or(defaults.open_ms)
                .unwrap_or(DEFAULT_BREAKER.open_ms),
        },
    })
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

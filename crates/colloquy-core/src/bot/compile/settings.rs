//! The `bot` section: identity, thresholds and the responses said when
//! nothing else applies.

use super::checks::Names;
use super::ctx::{At, Ctx};
use crate::bot::spec::BotSpec;

const DEFAULT_SESSION_TIMEOUT_MS: i64 = 30 * 60 * 1000;
const DEFAULT_THRESHOLD: f32 = 0.4;

/// The section's values that need converting or a default.
pub(super) struct Settings {
    pub(super) session_timeout_ms: i64,
    pub(super) threshold: f32,
}

pub(super) fn compile(ctx: &mut Ctx, names: &Names, spec: &BotSpec, at: &At) -> Settings {
    let session_timeout_ms = match &spec.session_timeout {
        None => DEFAULT_SESSION_TIMEOUT_MS,
        Some(s) => crate::duration::parse_ms(s).unwrap_or_else(|| {
            ctx.err(
                at,
                "session_timeout",
                format!("`{s}` is not a duration (use e.g. 30m, 90s, 2h)"),
            );
            DEFAULT_SESSION_TIMEOUT_MS
        }),
    };
    let threshold = spec.threshold.unwrap_or(DEFAULT_THRESHOLD);
    if !(0.0..=1.0).contains(&threshold) {
        ctx.err(
            at,
            "threshold",
            format!("must be between 0 and 1, got {threshold}"),
        );
    }
    for (field, name) in [("name", &spec.name), ("version", &spec.version)] {
        if let Err(problem) = check_registry_name(name) {
            ctx.err(at, field, problem);
        }
    }
    names.response(ctx, at, "fallback", &spec.fallback);
    if let Some(a) = &spec.abandon {
        names.response(ctx, at, "abandon", a);
    }
    if let Some(w) = &spec.withdrawn {
        names.response(ctx, at, "withdrawn", w);
    }
    if let Some(r) = &spec.action_failed {
        names.response(ctx, at, "action_failed", r);
    }
    if let Some(e) = &spec.action_endpoint {
        for (field, given) in [("name", e.name.is_some()), ("send", e.send.is_some())] {
            if given {
                ctx.err(
                    at,
                    &format!("action_endpoint.{field}"),
                    "belongs to one action, not to the endpoint defaults",
                );
            }
        }
    }
    Settings {
        session_timeout_ms,
        threshold,
    }
}

/// A bot's name and version key it in the registry, in URLs and in file
/// names, so they are short and plain: letters, digits, `.`, `_`, `+`,
/// `-`, not starting with `.` (e.g. `shoe-store`, `1.2.0+lottery`).
pub fn check_registry_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.len() > 64 {
        return Err(format!("must be at most 64 characters, got {}", name.len()));
    }
    if name.starts_with('.') {
        return Err(format!("must not start with '.', got {name:?}"));
    }
    match name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '-')))
    {
        Some(c) => Err(format!(
            "may hold only letters, digits, '.', '_', '+' and '-', got {c:?} in {name:?}"
        )),
        None => Ok(()),
    }
}

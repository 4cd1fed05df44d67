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
        if name.trim().is_empty() {
            ctx.err(at, field, "must not be empty");
        }
    }
    names.response(ctx, at, "fallback", &spec.fallback);
    if let Some(a) = &spec.abandon {
        names.response(ctx, at, "abandon", a);
    }
    Settings {
        session_timeout_ms,
        threshold,
    }
}

//! Sagas: remote actions run in order, each with the remote action that
//! undoes it. Every action a saga names must be a webhook action.

use super::ctx::{At, Ctx};
use super::sources::Merged;
use crate::bot::model::{Action, Saga, SagaStep};
use crate::bot::spec::SagaSpec;
use std::collections::BTreeMap;

const DEFAULT_ROUNDS: u32 = 8;
const MAX_ROUNDS: u32 = 100;
const DEFAULT_BACKOFF_MS: u64 = 1_000;

pub(super) fn compile(
    ctx: &mut Ctx,
    actions: &BTreeMap<String, Action>,
    sagas: Merged<SagaSpec>,
) -> BTreeMap<String, Saga> {
    let mut out = BTreeMap::new();
    for (name, (spec, at)) in sagas {
        if spec.steps.is_empty() {
            ctx.err(&at, "steps", "a saga needs at least one step");
        }
        let mut steps = Vec::new();
        for (i, step) in spec.steps.into_iter().enumerate() {
            remote(
                ctx,
                actions,
                &at,
                &format!("steps[{i}].action"),
                &step.action,
            );
            if let Some(c) = &step.compensate {
                remote(ctx, actions, &at, &format!("steps[{i}].compensate"), c);
            }
            steps.push(SagaStep {
                action: step.action,
                compensate: step.compensate,
            });
        }
        let rounds = spec.compensation_rounds.unwrap_or(DEFAULT_ROUNDS);
        if !(1..=MAX_ROUNDS).contains(&rounds) {
            ctx.err(
                &at,
                "compensation_rounds",
                format!("must be between 1 and {MAX_ROUNDS}, got {rounds}"),
            );
        }
        let backoff = match &spec.compensation_backoff {
            None => DEFAULT_BACKOFF_MS,
            Some(b) => match crate::duration::parse_ms(b).and_then(|ms| u64::try_from(ms).ok()) {
                Some(ms) => ms,
                None => {
                    ctx.err(
                        &at,
                        "compensation_backoff",
                        format!("`{b}` is not a duration (use e.g. 1s, 200ms)"),
                    );
                    DEFAULT_BACKOFF_MS
                }
            },
        };
        out.insert(
            name,
            Saga {
                steps,
                compensation_rounds: rounds.clamp(1, MAX_ROUNDS),
                compensation_backoff_ms: backoff,
            },
        );
    }
    out
}

fn remote(ctx: &mut Ctx, actions: &BTreeMap<String, Action>, at: &At, field: &str, name: &str) {
    match actions.get(name) {
        None => ctx.err(at, field, format!("unknown action `{name}`")),
        Some(Action::Webhook(_)) => {}
        Some(_) => ctx.err(
            at,
            field,
            format!("`{name}` reads the bot's tables; a saga step calls a webhook action"),
        ),
    }
}

//! The admin API over the bot registry: push versions, read them, set a
//! bot's rollout, promote, roll back, read the history. Every route needs
//! a token with the `admin` scope (403 for chat tokens).
//!
//! A rollout change answers once every live process has activated the new
//! generation (or said why it could not), or after `ACTIVATION_WAIT`,
//! whichever comes first, with each process's status, so the caller knows
//! where the change took.

use super::authenticated::bearer;
use super::error::{internal, ApiError};
use super::Gateway;
use crate::auth::Principal;
use crate::server::Peer;
use axum::body::{to_bytes, Body};
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use colloquy_core::bot::{compile, BotError, SourceFile};
use colloquy_core::rollout::{GuardMetric, WindowCounts};
use colloquy_core::{Canary, Guard, Rollout};
use colloquy_store::registry::{
    Activation, AuditEntry, BotFiles, BotRegistry, Pushed, RegistryError, RolloutAction,
    RolloutChange, RolloutRecord, StoredVersion, VersionInfo,
};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// How long a rollout change waits for the processes to activate it.
const ACTIVATION_WAIT: Duration = Duration::from_secs(3);
/// A process that reported within this long is live: it follows the
/// registry and reports every few seconds even when nothing changes.
pub const LIVE_WITHIN_MS: i64 = 15_000;

/// The caller of an admin route: a verified token with the admin scope.
/// The client's address comes from the connection loop ([`Peer`]); a
/// router served without it (tests) records none.
pub struct Admin(pub Principal, pub Option<String>);

impl FromRequestParts<Arc<Gateway>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, gw: &Arc<Gateway>) -> Result<Self, ApiError> {
        let principal = gw.verifier.authenticate(bearer(&parts.headers)?).await?;
        if !principal.is_admin() {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "the admin API needs a token with the admin scope",
            ));
        }
        let from = parts.extensions.get::<Peer>().map(|p| p.0.to_string());
        Ok(Admin(principal, from))
    }
}

/// Keep an admin action in the registry's audit log. The action has
/// happened (or was refused) either way: a failure to record it is logged
/// as an error, not turned into a failed call.
async fn audit(
    gw: &Gateway,
    who: &Principal,
    from: Option<String>,
    action: &str,
    bot: &str,
    outcome: String,
) {
    let Some(reg) = gw.registry.as_ref() else {
        return;
    };
    let entry = AuditEntry {
        at_ms: (gw.clock)(),
        by: who.user_id.clone(),
        from,
        action: action.into(),
        bot: bot.into(),
        outcome,
    };
    if let Err(e) = reg.audit(entry).await {
        tracing::error!(error = %e, action, bot, by = %who.user_id, "could not record an admin action in the audit log");
    }
}

fn refused(e: &ApiError) -> String {
    format!("refused: {} {}", e.status().as_u16(), e.code())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AuditQuery {
    #[serde(default)]
    limit: Option<usize>,
}

/// `GET /v1/audit`: admin actions, newest first.
pub(super) async fn audit_log(
    State(gw): State<Arc<Gateway>>,
    _: Admin,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad("invalid_query", e.body_text()))?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let entries = registry(&gw)?
        .audit_log(limit)
        .await
        .map_err(registry_error)?;
    Ok(Json(json!({ "audit": entries })))
}

fn registry(gw: &Gateway) -> Result<&Arc<dyn BotRegistry>, ApiError> {
    gw.registry.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "no_registry",
            "this server runs without a bot registry",
        )
    })
}

fn registry_error(e: RegistryError) -> ApiError {
    match e {
        RegistryError::VersionExists { .. } => {
            ApiError::new(StatusCode::CONFLICT, "version_exists", e.to_string())
        }
        RegistryError::Stale { .. } => {
            ApiError::new(StatusCode::CONFLICT, "rollout_changed", e.to_string())
        }
        RegistryError::UnknownVersion { .. } => {
            ApiError::new(StatusCode::NOT_FOUND, "unknown_version", e.to_string())
        }
        RegistryError::Invalid(m) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", m),
        RegistryError::Unavailable(_) | RegistryError::Corrupt(_) => internal(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PushBody {
    /// Path inside the bot directory → YAML text.
    files: BotFiles,
}

/// `POST /v1/bots`: push a version. Its name and version are the ones its
/// `bot:` section declares. 201 when new, 200 when the same files were
/// there already, 409 for other files under the same version, 422 with
/// file, line and field for a bot that does not compile.
pub(super) async fn push(
    State(gw): State<Arc<Gateway>>,
    Admin(who, from): Admin,
    body: Body,
) -> Result<Response, ApiError> {
    let result = pushed(&gw, &who, body).await;
    let (bot, outcome) = match &result {
        Ok((info, status)) => (
            info.name.clone(),
            format!(
                "{} {}",
                info.version,
                if *status == StatusCode::CREATED {
                    "created"
                } else {
                    "unchanged"
                }
            ),
        ),
        Err((bot, e)) => (bot.clone().unwrap_or_else(|| "?".into()), refused(e)),
    };
    audit(&gw, &who, from, "push", &bot, outcome).await;
    let (info, status) = result.map_err(|(_, e)| e)?;
    Ok((status, Json(json!(info))).into_response())
}

/// A push, and the bot it named when that is known.
async fn pushed(
    gw: &Gateway,
    who: &Principal,
    body: Body,
) -> Result<(VersionInfo, StatusCode), (Option<String>, ApiError)> {
    let unnamed = |e| (None, e);
    let reg = registry(gw).map_err(unnamed)?;
    let limit = gw.limits.max_bot_bytes;
    let bytes = to_bytes(body, limit).await.map_err(|_| {
        unnamed(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("a bot may be at most {limit} bytes"),
        ))
    })?;
    let body: PushBody = serde_json::from_slice(&bytes).map_err(|e| {
        unnamed(ApiError::bad(
            "invalid_json",
            format!("invalid request body: {e}"),
        ))
    })?;
    for path in body.files.keys() {
        if !plain_path(path) {
            return Err(unnamed(ApiError::bad(
                "invalid_path",
                format!("{path:?}: file paths are relative, `/`-separated, without `..`, and end in .yaml or .yml"),
            )));
        }
    }
    let sources: Vec<SourceFile> = body
        .files
        .iter()
        .map(|(path, text)| SourceFile {
            path: path.clone(),
            text: text.clone(),
        })
        .collect();
    let bot = compile(&sources).map_err(|e| unnamed(invalid_bot(e)))?;
    let named = |e| (Some(bot.id.name.clone()), e);
    let version = StoredVersion::new(
        &bot.id.name,
        &bot.id.version,
        body.files,
        (gw.clock)(),
        &who.user_id,
    );
    let info = version.info.clone();
    let status = match reg
        .push(version)
        .await
        .map_err(|e| named(registry_error(e)))?
    {
        Pushed::Created => StatusCode::CREATED,
        Pushed::Unchanged => StatusCode::OK,
    };
    tracing::info!(bot = %info.name, version = %info.version, by = %info.pushed_by,
        created = status == StatusCode::CREATED, "bot version pushed");
    Ok((info, status))
}

/// What `colloquy check` says, as JSON: one entry per error.
fn invalid_bot(errors: Vec<BotError>) -> ApiError {
    let list: Vec<Value> = errors
        .iter()
        .map(|e| json!({"file": e.file, "line": e.line, "field": e.field, "message": e.message, "text": e.to_string()}))
        .collect();
    let message = errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n");
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_bot", message)
        .with_details(json!({ "errors": list }))
}

fn plain_path(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with('/')
        && path
            .split('/')
            .all(|p| !p.is_empty() && p != "." && p != "..")
        && (path.ends_with(".yaml") || path.ends_with(".yml"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct BotQuery {
    #[serde(default)]
    bot: Option<String>,
}

/// `GET /v1/bots`: every version (of `?bot=NAME` only), oldest first.
pub(super) async fn list(
    State(gw): State<Arc<Gateway>>,
    _: Admin,
    query: Result<Query<BotQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad("invalid_query", e.body_text()))?;
    let versions = registry(&gw)?
        .versions(q.bot.as_deref())
        .await
        .map_err(registry_error)?;
    Ok(Json(json!({ "versions": versions })))
}

/// `GET /v1/bots/{name}/versions/{version}`: a version with its files.
pub(super) async fn show(
    State(gw): State<Arc<Gateway>>,
    _: Admin,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    match registry(&gw)?
        .version(&name, &version)
        .await
        .map_err(registry_error)?
    {
        Some(v) => Ok(Json(json!(v))),
        None => Err(registry_error(RegistryError::UnknownVersion {
            name,
            version,
        })),
    }
}

/// `GET /v1/bots/{name}/rollout`: the current rollout and each live
/// process's activation.
pub(super) async fn get_rollout(
    State(gw): State<Arc<Gateway>>,
    _: Admin,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let reg = registry(&gw)?;
    let Some(record) = reg.rollout(&name).await.map_err(registry_error)? else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no_rollout",
            format!("{name} has no rollout yet"),
        ));
    };
    let live = live(&gw, reg.as_ref(), &name).await?;
    Ok(Json(described(&record, &live)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SetRollout {
    stable: String,
    #[serde(default)]
    canary: Option<Canary>,
    /// Limits on the canary; a breach rolls it back by itself.
    #[serde(default)]
    guards: Vec<Guard>,
    /// The generation the caller read; the change is refused (409) if the
    /// rollout moved on since. Without it the change applies on top of
    /// whatever is current.
    #[serde(default)]
    expected_generation: Option<u64>,
}

/// `PUT /v1/bots/{name}/rollout`.
pub(super) async fn set_rollout(
    State(gw): State<Arc<Gateway>>,
    Admin(who, from): Admin,
    Path(name): Path<String>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let bytes = to_bytes(body, gw.limits.max_body_bytes)
        .await
        .map_err(|_| ApiError::bad("body_too_large", "the body is too large"))?;
    let body: SetRollout = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad("invalid_json", format!("invalid request body: {e}")))?;
    let audited = Audited {
        who: &who,
        from,
        action: "rollout",
    };
    change(&gw, audited, &name, body.expected_generation, |current| {
        let withdrawn = current
            .map(|c| c.rollout.withdrawn.clone())
            .unwrap_or_default();
        Ok((
            Rollout {
                stable: body.stable.clone(),
                canary: body.canary.clone(),
                withdrawn,
                guards: body.guards.clone(),
            },
            RolloutAction::Set,
            None,
        ))
    })
    .await
}

/// `POST /v1/bots/{name}/promote`: the canary becomes the stable version
/// for everyone. Sessions running on the old stable version finish on it.
pub(super) async fn promote(
    State(gw): State<Arc<Gateway>>,
    Admin(who, from): Admin,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let audited = Audited {
        who: &who,
        from,
        action: "promote",
    };
    change(&gw, audited, &name, None, |current| {
        let current = current.ok_or_else(|| no_rollout(&name))?;
        let canary = current.rollout.canary.clone().ok_or_else(|| {
            ApiError::new(
                StatusCode::CONFLICT,
                "no_canary",
                format!("{name} has no canary to promote"),
            )
        })?;
        let note = format!("{} replaces {}", canary.version, current.rollout.stable);
        Ok((
            Rollout {
                stable: canary.version,
                canary: None,
                withdrawn: current.rollout.withdrawn.clone(),
                // They watched the canary, which is gone.
                guards: Vec::new(),
            },
            RolloutAction::Promote,
            Some(note),
        ))
    })
    .await
}

/// `POST /v1/bots/{name}/rollback`: with a canary, everyone goes back to
/// stable; without, stable goes back to the version before it. The
/// version rolled back is withdrawn: its users move at their next turn.
pub(super) async fn rollback(
    State(gw): State<Arc<Gateway>>,
    Admin(who, from): Admin,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let reg = registry(&gw)?.clone();
    let history = reg.history(&name, 1000).await.map_err(registry_error)?;
    let audited = Audited {
        who: &who,
        from,
        action: "rollback",
    };
    change(&gw, audited, &name, None, |current| {
        let current = current.ok_or_else(|| no_rollout(&name))?;
        let next = match current.rollout.without_canary() {
            Some(next) => next,
            None => {
                let previous = history
                    .iter()
                    .map(|r| &r.rollout.stable)
                    .find(|v| {
                        **v != current.rollout.stable && !current.rollout.withdrawn.contains(v)
                    })
                    .ok_or_else(|| {
                        ApiError::new(
                            StatusCode::CONFLICT,
                            "nothing_to_roll_back",
                            format!("{name} has no canary and no earlier stable version"),
                        )
                    })?;
                let mut next = current.rollout.clone();
                next.withdrawn
                    .push(std::mem::replace(&mut next.stable, previous.clone()));
                next
            }
        };
        let bad = next
            .withdrawn
            .last()
            .map(String::as_str)
            .unwrap_or_default();
        let note = format!("{bad} withdrawn; {} serves everyone", next.stable);
        Ok((next, RolloutAction::Rollback, Some(note)))
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HistoryQuery {
    #[serde(default)]
    limit: Option<usize>,
}

/// `GET /v1/bots/{name}/history`: generations, newest first.
pub(super) async fn history(
    State(gw): State<Arc<Gateway>>,
    _: Admin,
    Path(name): Path<String>,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad("invalid_query", e.body_text()))?;
    let limit = q.limit.unwrap_or(50).clamp(1, 1000);
    let history = registry(&gw)?
        .history(&name, limit)
        .await
        .map_err(registry_error)?;
    Ok(Json(json!({ "history": history })))
}

fn no_rollout(name: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no_rollout",
        format!("{name} has no rollout yet"),
    )
}

type Next = (Rollout, RolloutAction, Option<String>);

/// Read the current rollout, derive the next, write it if nothing changed
/// meanwhile, then wait for the live processes to activate it.
/// Who asked for a rollout change, and what they called it.
struct Audited<'a> {
    who: &'a Principal,
    from: Option<String>,
    action: &'static str,
}

/// A rollout change, kept in the audit log whether it was made or refused.
async fn change(
    gw: &Gateway,
    audited: Audited<'_>,
    name: &str,
    expected: Option<u64>,
    next: impl FnOnce(Option<&RolloutRecord>) -> Result<Next, ApiError>,
) -> Result<Json<Value>, ApiError> {
    let result = changed(gw, audited.who, name, expected, next).await;
    let outcome = match &result {
        Ok(record) => format!(
            "generation {}: stable {}{}",
            record.generation,
            record.rollout.stable,
            record
                .rollout
                .canary
                .as_ref()
                .map(|c| format!(", canary {} for tails {:?}", c.version, c.tails))
                .unwrap_or_default()
        ),
        Err(e) => refused(e),
    };
    audit(gw, audited.who, audited.from, audited.action, name, outcome).await;
    let record = result?;
    let reg = registry(gw)?;
    let activations = wait_for_activation(gw, reg.as_ref(), name, record.generation).await?;
    Ok(Json(described(&record, &activations)))
}

async fn changed(
    gw: &Gateway,
    who: &Principal,
    name: &str,
    expected: Option<u64>,
    next: impl FnOnce(Option<&RolloutRecord>) -> Result<Next, ApiError>,
) -> Result<RolloutRecord, ApiError> {
    let reg = registry(gw)?;
    let current = reg.rollout(name).await.map_err(registry_error)?;
    let generation = current.as_ref().map_or(0, |r| r.generation);
    if let Some(e) = expected.filter(|e| *e != generation) {
        return Err(registry_error(RegistryError::Stale {
            name: format!("{name} (expected generation {e})"),
            current: generation,
        }));
    }
    let (rollout, action, note) = next(current.as_ref())?;
    let record = reg
        .set_rollout(
            name,
            generation,
            RolloutChange {
                rollout,
                action,
                by: who.user_id.clone(),
                at_ms: (gw.clock)(),
                note,
            },
        )
        .await
        .map_err(registry_error)?;
    tracing::info!(bot = %name, generation = record.generation, action = ?record.action,
        by = %record.by, stable = %record.rollout.stable, "rollout changed");
    Ok(record)
}

/// The live processes' reports, once all of them have answered for
/// `generation` or the wait is over.
async fn wait_for_activation(
    gw: &Gateway,
    reg: &dyn BotRegistry,
    name: &str,
    generation: u64,
) -> Result<Vec<Activation>, ApiError> {
    let deadline = tokio::time::Instant::now() + ACTIVATION_WAIT;
    loop {
        let live = live(gw, reg, name).await?;
        let answered = live.iter().all(|a| a.generation >= generation);
        if answered || tokio::time::Instant::now() >= deadline {
            return Ok(live);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn live(
    gw: &Gateway,
    reg: &dyn BotRegistry,
    name: &str,
) -> Result<Vec<Activation>, ApiError> {
    let now = (gw.clock)();
    let mut live: Vec<Activation> = reg
        .activations(name)
        .await
        .map_err(registry_error)?
        .into_iter()
        .filter(|a| now - a.at_ms <= LIVE_WITHIN_MS)
        .collect();
    live.sort_by(|a, b| a.process.cmp(&b.process));
    Ok(live)
}

/// A rollout record with each live process's status for its generation:
/// `active`, `failed` (with the error) or `pending`.
fn described(record: &RolloutRecord, activations: &[Activation]) -> Value {
    let processes: Vec<Value> = activations
        .iter()
        .map(|a| {
            let status = match (&a.error, a.generation >= record.generation) {
                (Some(_), true) => "failed",
                (None, true) => "active",
                (_, false) => "pending",
            };
            json!({"process": a.process, "generation": a.generation, "status": status, "error": a.error})
        })
        .collect();
    json!({"rollout": record, "processes": processes, "versions": by_version(activations)})
}

/// Every version's figures over the last minute, added up over the live
/// processes: users, turns, the rates a guard can watch and p99 (ms).
/// A user's turns go to one policy worker at a time, so users add up too.
fn by_version(activations: &[Activation]) -> Value {
    let mut merged: BTreeMap<&str, (u64, WindowCounts)> = BTreeMap::new();
    for a in activations {
        for (v, f) in &a.figures {
            let (users, counts) = merged.entry(v).or_default();
            *users += f.users;
            counts.merge(&WindowCounts::from_parts(
                f.turns,
                f.fallbacks,
                f.handoffs,
                f.action_errors,
                &f.latency,
            ));
        }
    }
    let figures: serde_json::Map<String, Value> = merged
        .into_iter()
        .map(|(v, (users, c))| {
            (
                v.to_string(),
                json!({
                    "users": users,
                    "turns": c.turns,
                    "fallback_rate": c.figure(GuardMetric::FallbackRate),
                    "action_error_rate": c.figure(GuardMetric::ActionErrorRate),
                    "handoff_rate": c.figure(GuardMetric::HandoffRate),
                    "p99_ms": c.figure(GuardMetric::P99Ms),
                }),
            )
        })
        .collect();
    Value::Object(figures)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bot_file_paths_stay_inside_the_bot() {
        for ok in ["bot.yaml", "flows/lottery.yml", "a/b/c.yaml"] {
            assert!(plain_path(ok), "{ok}");
        }
        for bad in [
            "",
            "/etc/x.yaml",
            "../x.yaml",
            "a/../x.yaml",
            "a//x.yaml",
            "x.txt",
            "./x.yaml",
        ] {
            assert!(!plain_path(bad), "{bad}");
        }
    }

    #[test]
    fn a_failed_process_is_told_apart_from_a_pending_one() {
        let record = RolloutRecord {
            name: "b".into(),
            generation: 3,
            rollout: Rollout::stable("1"),
            action: RolloutAction::Set,
            by: "a".into(),
            at_ms: 0,
            note: None,
        };
        let a = |p: &str, g, e: Option<&str>| Activation {
            process: p.into(),
            generation: g,
            error: e.map(String::from),
            at_ms: 0,
            figures: Default::default(),
        };
        let v = described(
            &record,
            &[a("w1", 3, None), a("w2", 3, Some("bad")), a("w3", 2, None)],
        );
        let status: Vec<&str> = v["processes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["status"].as_str().unwrap())
            .collect();
        assert_eq!(status, ["active", "failed", "pending"]);
    }
}

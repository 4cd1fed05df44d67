//! The REST handlers: post a message, read a user's events and state, and
//! the operational endpoints.

use super::authenticated::Authenticated;
use super::error::{internal, ApiError};
use super::intake::{accept, MessageBody};
use super::{render_metrics, Gateway, MAX_PAGE};
use axum::body::{to_bytes, Body};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use colloquy_core::redact::{self, Secrets};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

const DEFAULT_PAGE: usize = 100;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WaitQuery {
    #[serde(default)]
    wait_ms: Option<u64>,
}

pub(super) async fn post_message(
    State(gw): State<Arc<Gateway>>,
    Authenticated { principal, user }: Authenticated,
    query: Result<Query<WaitQuery>, QueryRejection>,
    body: Body,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad("invalid_query", e.body_text()))?;
    let bytes = to_bytes(body, gw.limits.max_body_bytes)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the body is larger than {} bytes", gw.limits.max_body_bytes),
            )
        })?;
    let body = MessageBody::parse(&bytes)?;
    let wait = q
        .wait_ms
        .map(|w| w.min(gw.limits.max_wait_ms))
        .filter(|w| *w > 0);
    let mut ack = accept(&gw, &principal, &user, body, wait.is_some()).await?;
    let (Some(wait_ms), Some(rx)) = (wait, ack.waiter.take()) else {
        return Ok((StatusCode::ACCEPTED, Json(ack.body())).into_response());
    };
    match tokio::time::timeout(Duration::from_millis(wait_ms), rx).await {
        Ok(Ok(outcome)) => Ok((StatusCode::OK, Json(ack.replied(&outcome))).into_response()),
        _ => {
            gw.hub.abandon(&user, &ack.message_id);
            Ok((StatusCode::ACCEPTED, Json(ack.body())).into_response())
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Page {
    #[serde(default)]
    after: u64,
    #[serde(default)]
    limit: Option<usize>,
}

/// A page of the user's log, sensitive values masked.
pub(super) async fn get_events(
    State(gw): State<Arc<Gateway>>,
    Authenticated { user, .. }: Authenticated,
    query: Result<Query<Page>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(page) = query.map_err(|e| ApiError::bad("invalid_query", e.body_text()))?;
    let limit = page.limit.unwrap_or(DEFAULT_PAGE);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::bad(
            "invalid_query",
            format!("limit must be 1..={MAX_PAGE}"),
        ));
    }
    let store = gw.conversations.store();
    let mut events = store
        .events_after(&user, page.after, limit)
        .await
        .map_err(internal)?;
    let state = gw.conversations.load(&user).await.map_err(internal)?;
    // More to read whenever the page ends before the log does: a store may
    // return fewer events than asked (the event log bounds a read's bytes).
    let next = events.last().map(|e| e.seq).filter(|&seq| seq < state.seq);
    let secrets = Secrets::of(&state, &events);
    redact::mask_events(&mut events, &secrets);
    let events: Vec<Value> = events
        .iter()
        .map(|e| serde_json::to_value(e).unwrap_or(Value::Null))
        .collect();
    Ok(Json(json!({"events": events, "next_after": next})))
}

/// The user's current state, sensitive slots masked.
pub(super) async fn get_state(
    State(gw): State<Arc<Gateway>>,
    Authenticated { user, .. }: Authenticated,
) -> Result<Json<Value>, ApiError> {
    let s = gw.conversations.load(&user).await.map_err(internal)?;
    let slots: serde_json::Map<String, Value> = redact::mask_slots(&s)
        .into_iter()
        .map(|(k, v)| (k, serde_json::to_value(v).unwrap_or(Value::Null)))
        .collect();
    Ok(Json(json!({
        "user": s.user_id,
        "seq": s.seq,
        "session": s.session,
        "last_active_ms": s.last_ts_ms,
        "slots": slots,
        "flow": s.flow,
        "last_intent": s.last_intent,
        "last_confidence": s.last_confidence,
        "handed_off": s.handed_off,
        // The bot version the user's turns go to and why (stable, canary,
        // pinned), with their user-id tail; null before the first routed turn.
        "route": s.route,
    })))
}

pub(super) async fn readyz(State(gw): State<Arc<Gateway>>) -> Response {
    if gw.ready.load(Ordering::Relaxed) {
        Json(json!({"status": "ready"})).into_response()
    } else {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "starting or shutting down",
        )
        .into_response()
    }
}

pub(super) async fn metrics(State(gw): State<Arc<Gateway>>) -> Response {
    let mut sampled = gw.sources.sample().await;
    sampled.waiting_requests = gw.hub.waiting();
    sampled.jwks = gw.verifier.jwks_stats();
    render_metrics(&gw.metrics, &sampled)
}

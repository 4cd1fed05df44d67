//! The HTTP and WebSocket API.

use crate::auth::{AuthError, Principal, Verifier};
use crate::hub::Hub;
use crate::input::{InputPolicy, Limits};
use crate::metrics::{Metrics, Sampled, Sources};
use crate::openapi;
use axum::body::{to_bytes, Body};
use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use colloquy_bus::{Bus, BusError};
use colloquy_core::redact::{self, Secrets};
use colloquy_core::wire::{Inbound, Outcome, TOPIC_IN};
use colloquy_core::{check_user_id, user_event_id, Event, EventKind};
use colloquy_store::Conversations;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Everything the handlers share.
pub struct Gateway {
    pub verifier: Verifier,
    pub bus: Arc<dyn Bus>,
    pub conversations: Arc<Conversations>,
    pub hub: Arc<Hub>,
    pub limits: Limits,
    pub input: InputPolicy,
    pub metrics: Arc<Metrics>,
    pub sources: Sources,
    pub ready: AtomicBool,
    /// Recently accepted (user, message id) → acknowledgement, so that a
    /// client retrying with the same id gets the same answer.
    accepted: Mutex<Recent>,
    pub clock: fn() -> i64,
}

/// How many acknowledgements are remembered for idempotent retries.
const RECENT_ACKS: usize = 100_000;
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;

#[derive(Default)]
struct Recent {
    map: HashMap<(String, String), Ack>,
    order: VecDeque<(String, String)>,
}

#[derive(Debug, Clone, Copy)]
struct Ack {
    /// Position of the message in the inbound queue.
    seq: u64,
}

impl Gateway {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        verifier: Verifier,
        bus: Arc<dyn Bus>,
        conversations: Arc<Conversations>,
        hub: Arc<Hub>,
        limits: Limits,
        metrics: Arc<Metrics>,
        sources: Sources,
    ) -> Result<Gateway, String> {
        let input = InputPolicy::new(&limits)?;
        Ok(Gateway {
            verifier,
            bus,
            conversations,
            hub,
            limits,
            input,
            metrics,
            sources,
            ready: AtomicBool::new(false),
            accepted: Mutex::new(Recent::default()),
            clock: now_ms,
        })
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// An API error: status, stable code, message. Internals are never leaked.
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    fn bad(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (
            self.status,
            Json(json!({"error": {"code": self.code, "message": self.message}})),
        )
            .into_response();
        if let Some(s) = self.retry_after {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        r
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::UNAUTHORIZED);
        let mut err = ApiError::new(status, e.code(), e.to_string());
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %e, "authentication is misconfigured");
            err.message = "internal error".into();
        }
        err
    }
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "request failed");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "the service cannot handle this now; retry later",
    )
}

pub fn router(gw: Arc<Gateway>) -> Router {
    Router::new()
        .route("/v1/conversations/{user}/messages", post(post_message))
        .route("/v1/conversations/{user}/events", get(get_events))
        .route("/v1/conversations/{user}/state", get(get_state))
        .route("/v1/stream", get(stream))
        .route(
            "/v1/openapi.json",
            get(|| async { Json(openapi::document()) }),
        )
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed on this route",
            )
        })
        .layer(middleware::from_fn_with_state(gw.clone(), observe))
        .with_state(gw)
}

async fn observe(State(gw): State<Arc<Gateway>>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().to_string();
    let resp = next.run(req).await;
    gw.metrics.observe_request(
        &route,
        &method,
        resp.status().as_u16(),
        start.elapsed().as_secs_f64(),
    );
    resp
}

/// The token of `Authorization: Bearer <token>` (scheme case-insensitive,
/// RFC 7235 §2.1). Only an absent header is `Missing`: a header that is
/// there but names no token is malformed.
fn bearer(headers: &HeaderMap) -> Result<&str, AuthError> {
    let h = headers
        .get(header::AUTHORIZATION)
        .ok_or(AuthError::Missing)?;
    let h = h
        .to_str()
        .map_err(|_| AuthError::Malformed("Authorization header is not ASCII".into()))?;
    match h.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(token.trim())
        }
        _ => Err(AuthError::Malformed(
            "expected `Authorization: Bearer <token>`".into(),
        )),
    }
}

/// Authenticate and authorise acting on `user`.
fn authorise(gw: &Gateway, token: &str, user: &str) -> Result<Principal, ApiError> {
    let p = gw.verifier.verify(token)?;
    check_user_id(user).map_err(|e| ApiError::bad("invalid_user", e))?;
    if !p.can_act_for(user) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this token may not act for that user",
        ));
    }
    Ok(p)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PostBody {
    text: String,
    #[serde(default)]
    id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WaitQuery {
    #[serde(default)]
    wait_ms: Option<u64>,
}

async fn post_message(
    State(gw): State<Arc<Gateway>>,
    Path(user): Path<String>,
    query: Result<Query<WaitQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    authorise(&gw, bearer(&headers)?, &user)?;
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
    let text = std::str::from_utf8(&bytes)
        .map_err(|e| ApiError::bad("invalid_utf8", format!("the body is not UTF-8: {e}")))?;
    let body: PostBody = serde_json::from_str(text)
        .map_err(|e| ApiError::bad("invalid_json", format!("invalid request body: {e}")))?;
    let wait = q
        .wait_ms
        .map(|w| w.min(gw.limits.max_wait_ms))
        .filter(|w| *w > 0);
    let ack = accept(&gw, &user, body.text, body.id, wait.is_some()).await?;
    let Some(wait_ms) = wait else {
        return Ok((StatusCode::ACCEPTED, Json(ack.body())).into_response());
    };
    let mut ack = ack;
    let rx = ack
        .waiter
        .take()
        .expect("a waiter is registered when waiting");
    match tokio::time::timeout(Duration::from_millis(wait_ms), rx).await {
        Ok(Ok(outcome)) => Ok((StatusCode::OK, Json(replied(&ack, &outcome))).into_response()),
        _ => {
            gw.hub.abandon(&user, &ack.message_id);
            Ok((StatusCode::ACCEPTED, Json(ack.body())).into_response())
        }
    }
}

struct Accepted {
    message_id: String,
    event_id: uuid::Uuid,
    seq: u64,
    waiter: Option<tokio::sync::oneshot::Receiver<Arc<Outcome>>>,
}

impl Accepted {
    fn body(&self) -> Value {
        json!({"event_id": self.event_id, "message_id": self.message_id, "seq": self.seq})
    }
}

fn replied(ack: &Accepted, outcome: &Outcome) -> Value {
    json!({
        "event_id": ack.event_id,
        "message_id": ack.message_id,
        "seq": ack.seq,
        "log_seq": outcome.seq,
        "replies": outcome.replies,
    })
}

fn check_message_id(id: &str) -> Result<(), ApiError> {
    if id.is_empty()
        || id.len() > 128
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-:".contains(c))
    {
        return Err(ApiError::bad(
            "invalid_id",
            "id must be 1-128 characters of A-Z a-z 0-9 . _ - :",
        ));
    }
    Ok(())
}

/// Check, normalise and durably enqueue one message.
async fn accept(
    gw: &Gateway,
    user: &str,
    raw: String,
    id: Option<String>,
    wait: bool,
) -> Result<Accepted, ApiError> {
    let text = gw.input.normalise(&raw).map_err(|e| {
        let status = if matches!(e, crate::input::InputError::Denied) {
            StatusCode::UNPROCESSABLE_ENTITY
        } else {
            StatusCode::BAD_REQUEST
        };
        ApiError::new(status, e.code(), e.to_string())
    })?;
    if let Some(id) = &id {
        check_message_id(id)?;
    }
    let message_id = id.unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let event_id = user_event_id(user, &message_id);
    let waiter = wait.then(|| gw.hub.wait_for(user, &message_id));
    let key = (user.to_string(), message_id.clone());
    let prev = gw.accepted.lock().expect("ack lock").map.get(&key).copied();
    if let Some(prev) = prev {
        if wait {
            // It may have been handled already: ask the pipeline again; the
            // policy answers a repeat from the log without re-running it.
            republish(gw, user, &message_id, &text).await?;
        }
        return Ok(Accepted {
            message_id,
            event_id,
            seq: prev.seq,
            waiter,
        });
    }
    let pos = republish(gw, user, &message_id, &text).await?;
    let mut recent = gw.accepted.lock().expect("ack lock");
    if recent.order.len() >= RECENT_ACKS {
        if let Some(old) = recent.order.pop_front() {
            recent.map.remove(&old);
        }
    }
    recent.order.push_back(key.clone());
    recent.map.insert(key, Ack { seq: pos });
    Ok(Accepted {
        message_id,
        event_id,
        seq: pos,
        waiter,
    })
}

async fn republish(
    gw: &Gateway,
    user: &str,
    message_id: &str,
    text: &str,
) -> Result<u64, ApiError> {
    let msg = Inbound {
        user: user.into(),
        message_id: message_id.into(),
        text: text.into(),
        ts_ms: (gw.clock)(),
    };
    let payload = serde_json::to_vec(&msg).map_err(internal)?;
    match gw.bus.publish(TOPIC_IN, user, payload, Vec::new()).await {
        Ok(pos) => Ok(pos.offset),
        Err(BusError::Full { .. } | BusError::Overloaded { .. }) => {
            let mut e = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "too many messages are queued; retry shortly",
            );
            e.retry_after = Some(1);
            Err(e)
        }
        Err(e) => Err(internal(e)),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Page {
    #[serde(default)]
    after: u64,
    #[serde(default)]
    limit: Option<usize>,
}

async fn get_events(
    State(gw): State<Arc<Gateway>>,
    Path(user): Path<String>,
    query: Result<Query<Page>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorise(&gw, bearer(&headers)?, &user)?;
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
    let next = (events.len() == limit)
        .then(|| events.last().map(|e| e.seq))
        .flatten();
    let secrets = Secrets::of(&state, &events);
    redact::mask_events(&mut events, &secrets);
    let events: Vec<Value> = events
        .iter()
        .map(|e| serde_json::to_value(e).unwrap_or(Value::Null))
        .collect();
    Ok(Json(json!({"events": events, "next_after": next})))
}

async fn get_state(
    State(gw): State<Arc<Gateway>>,
    Path(user): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorise(&gw, bearer(&headers)?, &user)?;
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
    })))
}

async fn readyz(State(gw): State<Arc<Gateway>>) -> Response {
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

async fn metrics(State(gw): State<Arc<Gateway>>) -> Response {
    let mut sampled = gw.sources.sample().await;
    sampled.waiting_requests = gw.hub.waiting();
    render_metrics(&gw.metrics, &sampled)
}

fn render_metrics(metrics: &Metrics, sampled: &Sampled) -> Response {
    let mut r = metrics.render(sampled).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    r
}

/// `/metrics` and `/healthz` alone, for processes without the API (stage
/// workers).
pub fn metrics_router(metrics: Arc<Metrics>, sources: Sources) -> Router {
    let state = Arc::new((metrics, sources));
    Router::new()
        .route(
            "/metrics",
            get(|State(s): State<Arc<(Arc<Metrics>, Sources)>>| async move {
                render_metrics(&s.0, &s.1.sample().await)
            }),
        )
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .with_state(state)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StreamQuery {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    after: Option<u64>,
}

async fn stream(
    State(gw): State<Arc<Gateway>>,
    query: Result<Query<StreamQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad("invalid_query", e.body_text()))?;
    let token = match &q.token {
        Some(t) => t.as_str(),
        None => bearer(&headers)?,
    };
    let principal = gw.verifier.verify(token)?;
    let user = q.user.clone().unwrap_or_else(|| principal.user_id.clone());
    authorise(&gw, token, &user)?;
    Ok(ws
        .max_message_size(gw.limits.max_body_bytes)
        .on_upgrade(move |socket| session(gw, socket, user, q.after)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientFrame {
    #[serde(rename = "type")]
    kind: String,
    text: String,
    #[serde(default)]
    id: Option<String>,
}

async fn session(gw: Arc<Gateway>, mut socket: WebSocket, user: String, after: Option<u64>) {
    // Subscribe before catching up, so nothing falls between the two.
    let mut live = gw.hub.subscribe(&user);
    let mut sent = after.unwrap_or(0);
    if after.is_some() {
        if let Err(e) = catch_up(&gw, &mut socket, &user, &mut sent).await {
            tracing::debug!(user, error = %e, "websocket closed during catch-up");
            return;
        }
    } else {
        sent = gw.conversations.store().last_seq(&user).await.unwrap_or(0);
    }
    loop {
        tokio::select! {
            frame = socket.recv() => {
                let Some(Ok(frame)) = frame else { return };
                let reply = match frame {
                    WsMessage::Text(t) => client_message(&gw, &user, t.as_str()).await,
                    WsMessage::Binary(_) => frame_error("invalid_frame", "send JSON text frames"),
                    WsMessage::Close(_) => return,
                    _ => continue,
                };
                if socket.send(WsMessage::Text(reply.to_string().into())).await.is_err() {
                    return;
                }
            }
            outcome = live.recv() => {
                match outcome {
                    Ok(o) => {
                        let mut frames = reply_frames(&o.events, &mut sent, Some(&o.message_id));
                        // Closes the turn: all of its replies, also for a repeated
                        // message whose replies were streamed the first time.
                        frames.push(json!({"type": "done", "message_id": o.message_id, "seq": o.seq, "replies": o.replies}));
                        for frame in frames {
                            if socket.send(WsMessage::Text(frame.to_string().into())).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        if catch_up(&gw, &mut socket, &user, &mut sent).await.is_err() {
                            return;
                        }
                    }
                    Err(_) => return,
                }
            }
        }
    }
}

fn frame_error(code: &str, message: impl Into<String>) -> Value {
    json!({"type": "error", "error": {"code": code, "message": message.into()}})
}

async fn client_message(gw: &Gateway, user: &str, frame: &str) -> Value {
    let f: ClientFrame = match serde_json::from_str(frame) {
        Ok(f) => f,
        Err(e) => return frame_error("invalid_json", format!("invalid frame: {e}")),
    };
    if f.kind != "message" {
        return frame_error(
            "invalid_frame",
            format!("unknown frame type `{}` (expected `message`)", f.kind),
        );
    }
    match accept(gw, user, f.text, f.id, false).await {
        Ok(ack) => {
            let mut v = ack.body();
            v["type"] = json!("accepted");
            v
        }
        Err(e) => frame_error(e.code, e.message),
    }
}

/// Send the replies the log holds after `sent`.
async fn catch_up(
    gw: &Gateway,
    socket: &mut WebSocket,
    user: &str,
    sent: &mut u64,
) -> Result<(), String> {
    loop {
        let events = gw
            .conversations
            .store()
            .events_after(user, *sent, MAX_PAGE)
            .await
            .map_err(|e| e.to_string())?;
        let last = events.last().map(|e| e.seq);
        for frame in reply_frames(&events, sent, None) {
            socket
                .send(WsMessage::Text(frame.to_string().into()))
                .await
                .map_err(|e| e.to_string())?;
        }
        match last {
            Some(l) if events.len() == MAX_PAGE => *sent = l,
            Some(l) => {
                *sent = l;
                return Ok(());
            }
            None => return Ok(()),
        }
    }
}

/// Reply frames for the bot's lines among `events` newer than `sent`.
fn reply_frames(events: &[Event], sent: &mut u64, message_id: Option<&str>) -> Vec<Value> {
    let mut frames = Vec::new();
    let mut current = message_id.map(str::to_string);
    for e in events {
        if e.seq <= *sent {
            continue;
        }
        *sent = e.seq;
        match &e.kind {
            EventKind::UserSaid { message_id, .. } => current = Some(message_id.clone()),
            EventKind::BotSaid { text, .. } => frames
                .push(json!({"type": "reply", "seq": e.seq, "message_id": current, "text": text})),
            _ => {}
        }
    }
    frames
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bearer_of(value: Option<&[u8]>) -> Result<String, AuthError> {
        let mut headers = HeaderMap::new();
        if let Some(v) = value {
            headers.insert(header::AUTHORIZATION, HeaderValue::from_bytes(v).unwrap());
        }
        bearer(&headers).map(str::to_string)
    }

    #[test]
    fn bearer_header_parsing() {
        assert_eq!(
            bearer_of(Some(b"Bearer abc.def.ghi")),
            Ok("abc.def.ghi".into())
        );
        assert_eq!(
            bearer_of(Some(b"bearer  abc.def.ghi ")),
            Ok("abc.def.ghi".into())
        );
        assert_eq!(bearer_of(None), Err(AuthError::Missing));
        for malformed in [
            &b""[..],
            b"Bearer",
            b"Bearer   ",
            b"Basic dXNlcjpwYXNz",
            b"Bearerabc",
            b"Bearer \xff",
        ] {
            assert!(
                matches!(bearer_of(Some(malformed)), Err(AuthError::Malformed(_))),
                "{malformed:?}"
            );
        }
    }
}

//! The WebSocket session: messages in through the shared intake, replies
//! pushed as the pipeline produces them, and catch-up from the event log
//! after a reconnect or when the client fell behind.

use super::authenticated::{bearer, permit};
use super::error::ApiError;
use super::intake::{accept, rate_limited, MessageBody};
use super::{Gateway, MAX_PAGE};
use crate::auth::{AuthError, Principal};
use crate::ratelimit::{Limited, Single};
use crate::server::ConnectionSlot;
use axum::extract::rejection::QueryRejection;
use axum::extract::ws::{CloseFrame, Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{Extension, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use colloquy_core::{redact, Event, EventKind};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tracing::Instrument;

/// Open sessions per user.
#[derive(Default)]
pub(super) struct Sessions(Mutex<HashMap<String, usize>>);

/// One open session of a user; counted until dropped.
struct SessionGuard {
    gw: Arc<Gateway>,
    user: String,
}

impl Sessions {
    fn open(gw: &Arc<Gateway>, user: &str) -> Option<SessionGuard> {
        let mut open = gw.sessions.0.lock().expect("sessions lock");
        let n = open.entry(user.to_string()).or_default();
        if *n >= gw.limits.max_sessions_per_user {
            return None;
        }
        *n += 1;
        Some(SessionGuard {
            gw: Arc::clone(gw),
            user: user.to_string(),
        })
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        let mut open = self.gw.sessions.0.lock().expect("sessions lock");
        if let Some(n) = open.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.user);
            }
        }
    }
}

/// Close codes (RFC 6455 §7.4.1).
const CLOSE_NORMAL: u16 = 1000;
const CLOSE_POLICY: u16 = 1008;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StreamQuery {
    /// For clients that cannot set an Authorization header (browsers).
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    after: Option<u64>,
}

pub(super) async fn stream(
    State(gw): State<Arc<Gateway>>,
    query: Result<Query<StreamQuery>, QueryRejection>,
    slot: Option<Extension<ConnectionSlot>>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad("invalid_query", e.body_text()))?;
    let token = match &q.token {
        Some(t) => t.as_str(),
        None => bearer(&headers)?,
    };
    let principal = gw.verifier.authenticate(token).await?;
    let user = q.user.clone().unwrap_or_else(|| principal.user_id.clone());
    permit(&principal, &user)?;
    let token = token.to_string();
    let guard = Sessions::open(&gw, &user).ok_or_else(|| {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_sessions",
            format!(
                "this user already has {} WebSocket sessions open",
                gw.limits.max_sessions_per_user
            ),
        )
        .retry_after(1)
    })?;
    // The session keeps a connection slot for as long as it lives; a
    // router served without the connection loop (tests) has none to keep.
    let slot = match slot {
        Some(Extension(slot)) => Some(slot.take().ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "too_many_connections",
                "the server holds as many connections as it allows; retry later",
            )
            .retry_after(1)
        })?),
        None => None,
    };
    let ends = Ends {
        token_refused_from: gw.verifier.refused_from(&principal),
        idle: gw.limits.ws_idle_timeout,
        ping: gw.limits.ws_ping_interval,
    };
    let credentials = Credentials { principal, token };
    Ok(ws
        .max_message_size(gw.limits.max_body_bytes)
        .max_frame_size(gw.limits.max_body_bytes)
        .on_upgrade(move |socket| async move {
            let _held = (guard, slot);
            session(gw, socket, credentials, user, q.after, ends).await
        }))
}

/// What ends a session besides the client: its token's expiry, silence,
/// and a peer that stopped answering pings.
#[derive(Clone, Copy)]
struct Ends {
    /// Unix second from which the token is refused.
    token_refused_from: u64,
    idle: Duration,
    ping: Duration,
}

impl Ends {
    fn token_deadline(&self) -> Instant {
        let now = crate::clock::unix_secs();
        Instant::now() + Duration::from_secs(self.token_refused_from.saturating_sub(now))
    }
}

/// Who the session acts for, and the token that said so: checked again on
/// every message and ping, since the key that signed it may leave the key
/// set (a JWKS refresh drops it) while the session is open.
struct Credentials {
    principal: Principal,
    token: String,
}

impl Credentials {
    /// Closes the session with 1008 and says so when the token no longer
    /// verifies (a cached check: a lookup under a lock).
    async fn refused(&self, gw: &Gateway, socket: &mut WebSocket) -> bool {
        let reason = match gw.verifier.verify(&self.token) {
            Ok(_) => return false,
            Err(AuthError::Expired) => "token expired",
            Err(e) => {
                tracing::debug!(user = self.principal.user_id, error = %e, "websocket token no longer verifies");
                "token no longer valid"
            }
        };
        close(socket, CLOSE_POLICY, reason).await;
        true
    }
}

async fn close(socket: &mut WebSocket, code: u16, reason: &'static str) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    let _ = socket.send(WsMessage::Close(Some(frame))).await;
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

async fn session(
    gw: Arc<Gateway>,
    mut socket: WebSocket,
    credentials: Credentials,
    user: String,
    after: Option<u64>,
    ends: Ends,
) {
    // A connection's own budget, besides its user's and its token's.
    let mut budget = Single::new(gw.limiter.connection, std::time::Instant::now());
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
    let token_deadline = ends.token_deadline();
    let mut last_message = Instant::now();
    let mut pings = tokio::time::interval_at(Instant::now() + ends.ping, ends.ping);
    let mut heard = true;
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(token_deadline) => {
                close(&mut socket, CLOSE_POLICY, "token expired").await;
                return;
            }
            () = tokio::time::sleep_until(last_message + ends.idle) => {
                close(&mut socket, CLOSE_NORMAL, "idle").await;
                return;
            }
            _ = pings.tick() => {
                if credentials.refused(&gw, &mut socket).await {
                    return;
                }
                if !heard {
                    tracing::debug!(user, "websocket peer stopped answering pings");
                    return;
                }
                heard = false;
                if socket.send(WsMessage::Ping(Default::default())).await.is_err() {
                    return;
                }
            }
            frame = socket.recv() => {
                let Some(Ok(frame)) = frame else { return };
                heard = true;
                if matches!(frame, WsMessage::Text(_) | WsMessage::Binary(_)) {
                    last_message = Instant::now();
                }
                if matches!(frame, WsMessage::Text(_)) && credentials.refused(&gw, &mut socket).await {
                    return;
                }
                let reply = match frame {
                    WsMessage::Text(t) => match budget.take(std::time::Instant::now()) {
                        Ok(()) => client_message(&gw, &credentials.principal, &user, t.as_str())
                            .instrument(super::trace::ws_receive())
                            .await,
                        Err(wait) => rate_limited(&gw, Limited::Connection, wait).frame(),
                    },
                    WsMessage::Binary(_) => ApiError::bad("invalid_frame", "send JSON text frames").frame(),
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

async fn client_message(gw: &Gateway, principal: &Principal, user: &str, frame: &str) -> Value {
    let f: ClientFrame = match serde_json::from_str(frame) {
        Ok(f) => f,
        Err(e) => return ApiError::bad("invalid_json", format!("invalid frame: {e}")).frame(),
    };
    if f.kind != "message" {
        return ApiError::bad(
            "invalid_frame",
            format!("unknown frame type `{}` (expected `message`)", f.kind),
        )
        .frame();
    }
    match accept(
        gw,
        principal,
        user,
        MessageBody {
            text: f.text,
            id: f.id,
        },
        false,
    )
    .await
    {
        Ok(ack) => {
            let mut v = ack.body();
            v["type"] = json!("accepted");
            v
        }
        Err(e) => e.frame(),
    }
}

/// Send the replies the log holds after `sent`, page by page up to where
/// the log ended when the catch-up began (a store may return a short page
/// before the end).
async fn catch_up(
    gw: &Gateway,
    socket: &mut WebSocket,
    user: &str,
    sent: &mut u64,
) -> Result<(), String> {
    // The state, for the sensitive values to mask in the replies (as on
    // the log's pages), and for where the log ends.
    let state = gw
        .conversations
        .load(user)
        .await
        .map_err(|e| e.to_string())?;
    let end = state.seq;
    while *sent < end {
        let mut events = gw
            .conversations
            .store()
            .events_after(user, *sent, MAX_PAGE)
            .await
            .map_err(|e| e.to_string())?;
        let secrets = redact::Secrets::of(&state, &events);
        redact::mask_events(&mut events, &secrets);
        let last = events.last().map(|e| e.seq);
        for frame in reply_frames(&events, sent, None) {
            socket
                .send(WsMessage::Text(frame.to_string().into()))
                .await
                .map_err(|e| e.to_string())?;
        }
        match last {
            Some(l) => *sent = l,
            None => return Ok(()),
        }
    }
    Ok(())
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

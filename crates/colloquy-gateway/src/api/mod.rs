//! The HTTP and WebSocket API.
//!
//! `rest` and `ws` are the two doors; both hand messages to the one
//! `intake`, authenticate through `authenticated` and answer errors in
//! the one shape of `error`. `trace` opens a message's span.

mod admin;
mod authenticated;
mod error;
mod intake;
mod rest;
mod trace;
mod ws;

pub use admin::LIVE_WITHIN_MS;
pub use authenticated::Authenticated;
pub use error::ApiError;
pub use intake::MessageBody;

use crate::auth::Verifier;
use crate::hub::Hub;
use crate::input::{InputPolicy, Limits};
use crate::metrics::{Metrics, Sampled, Sources};
use crate::openapi;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use colloquy_bus::Bus;
use colloquy_store::{BotRegistry, Conversations};
use intake::Acks;
use serde_json::json;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

/// Events per page at most, for the events API and for WebSocket catch-up.
const MAX_PAGE: usize = 1000;

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
    /// Where the admin API keeps bot versions and rollouts; without one
    /// the admin routes answer 404 `no_registry`.
    pub registry: Option<Arc<dyn BotRegistry>>,
    /// Put the authenticated user id on a message's receive span and in
    /// the baggage of what it publishes, so an operator can find a user's
    /// turns; off unless the operator opts in (`telemetry.user_id_baggage`).
    pub user_id_baggage: bool,
    /// Acknowledgements of recent messages, for idempotent retries.
    acks: Acks,
    /// Open WebSocket sessions per user, for the per-user cap.
    sessions: ws::Sessions,
    limiter: crate::ratelimit::Limiter,
    pub clock: fn() -> i64,
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
        let limiter = crate::ratelimit::Limiter::new(&limits)?;
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
            registry: None,
            user_id_baggage: false,
            acks: Acks::default(),
            sessions: ws::Sessions::default(),
            limiter,
            clock: crate::clock::unix_ms,
        })
    }
}

pub fn router(gw: Arc<Gateway>) -> Router {
    Router::new()
        .route(
            "/v1/conversations/{user}/messages",
            post(rest::post_message).layer(middleware::from_fn(trace::receive)),
        )
        .route("/v1/conversations/{user}/events", get(rest::get_events))
        .route("/v1/conversations/{user}/state", get(rest::get_state))
        .route("/v1/stream", get(ws::stream))
        .route("/v1/bots", post(admin::push).get(admin::list))
        .route("/v1/bots/{name}/versions/{version}", get(admin::show))
        .route(
            "/v1/bots/{name}/rollout",
            get(admin::get_rollout).put(admin::set_rollout),
        )
        .route("/v1/bots/{name}/promote", post(admin::promote))
        .route("/v1/bots/{name}/rollback", post(admin::rollback))
        .route("/v1/bots/{name}/history", get(admin::history))
        .route("/v1/audit", get(admin::audit_log))
        .route(
            "/v1/openapi.json",
            get(|| async { Json(openapi::document()) }),
        )
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(rest::readyz))
        .route("/metrics", get(rest::metrics))
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

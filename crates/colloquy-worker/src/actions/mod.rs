//! The action stage: calls the remote action a conversation waits for and
//! turns the answer into an [`ActionResult`] for [`colloquy_core::resume`].
//!
//! Every attempt at one call carries the same `Idempotency-Key` (the
//! `action_requested` event's id), across retries and across a redelivered
//! turn after a crash, so an action server that keys its effects on it
//! applies them once. A call has one deadline for all its attempts; only
//! failures a retry can mend are retried (no connection, a timeout, a 5xx,
//! a 429 after its `Retry-After`), never a 400 or a 404. A breaker per
//! endpoint (settings from the bot's YAML) stops calling a server that
//! keeps failing. Connections are
//! pooled per host by one shared client.

mod breaker;
pub mod rasa;

pub use breaker::{Breaker, BreakerState};

use crate::pipeline::StageObserver;
use colloquy_core::bot::{Action, Bot, Webhook};
use colloquy_core::{ActionOutcome, ActionResult, Event, PendingAction, State};
use serde_json::Value as Json;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tracing::Instrument;

/// First pause between attempts; doubled each time, with jitter.
const BACKOFF_BASE: Duration = Duration::from_millis(50);

pub struct ActionStage {
    client: reqwest::Client,
    breakers: Mutex<HashMap<String, Breaker>>,
    /// Each bot version's domain and its digest, built once.
    domains: Mutex<HashMap<(String, String), Domain>>,
    /// Endpoints that were sent a domain (by digest): later calls send the
    /// digest alone, and the server asks (449) if it lost it.
    sent: Mutex<HashSet<(String, Arc<str>)>>,
    observer: OnceLock<Arc<dyn StageObserver>>,
}

impl Default for ActionStage {
    fn default() -> Self {
        ActionStage::new()
    }
}

/// A bot version's Rasa domain and the digest that names it.
type Domain = (Arc<Json>, Arc<str>);

/// What one attempt came to.
enum Attempt {
    Answered(rasa::Answer),
    /// The server will not run it; a retry would get the same.
    Refused(String),
    /// The server lost the domain (449): send it and try again at once.
    NeedsDomain,
    /// A retry may succeed, after `after` if the server said so.
    Retry {
        why: String,
        after: Option<Duration>,
    },
}

impl ActionStage {
    pub fn new() -> ActionStage {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .build()
            .expect("a plain HTTP client needs no TLS setup and always builds");
        ActionStage {
            client,
            breakers: Mutex::new(HashMap::new()),
            domains: Mutex::new(HashMap::new()),
            sent: Mutex::new(HashSet::new()),
            observer: OnceLock::new(),
        }
    }

    /// Report calls and breaker changes to `observer` (the first one set).
    pub fn observe(&self, observer: Arc<dyn StageObserver>) {
        let _ = self.observer.set(observer);
    }

    /// Call the action `pending` waits for, with the conversation as it
    /// stands (`state`, and `recent`, the end of its log, for the
    /// tracker). Never fails: a failure is an outcome the flow handles.
    pub async fn call(
        &self,
        bot: &Bot,
        state: &State,
        pending: &PendingAction,
        recent: &[Event],
    ) -> ActionResult {
        let span = tracing::debug_span!(
            "action.call",
            otel.kind = "client",
            action = %pending.action,
            outcome = tracing::field::Empty,
        );
        let outcome = match bot.actions.get(&pending.action) {
            Some(Action::Webhook(hook)) => {
                self.webhook(bot, hook, pending, state, recent)
                    .instrument(span.clone())
                    .await
            }
            _ => ActionOutcome::Failed {
                reason: format!(
                    "version {} has no remote action `{}`",
                    bot.id.version, pending.action
                ),
                attempts: 0,
            },
        };
        span.record(
            "outcome",
            match &outcome {
                ActionOutcome::Completed { .. } => "completed",
                ActionOutcome::Failed { .. } => "failed",
            },
        );
        ActionResult {
            key: pending.key,
            outcome,
        }
    }

    async fn webhook(
        &self,
        bot: &Bot,
        hook: &Webhook,
        pending: &PendingAction,
        state: &State,
        recent: &[Event],
    ) -> ActionOutcome {
        let deadline = Instant::now() + Duration::from_millis(hook.timeout_ms);
        let token = match &hook.token_env {
            None => None,
            Some(var) => match std::env::var(var) {
                Ok(t) => Some(t),
                Err(_) => {
                    return ActionOutcome::Failed {
                        reason: format!("{var} is not set: no token for the action server"),
                        attempts: 0,
                    }
                }
            },
        };
        let (domain, digest) = self.domain(bot);
        let mut with_domain = !self
            .sent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&(hook.url.clone(), digest.clone()));
        let mut attempts = 0;
        let mut failures = 0;
        loop {
            let now = Instant::now();
            if now >= deadline {
                return failed(format!("no answer within {} ms", hook.timeout_ms), attempts);
            }
            if !self.admit(hook, now) {
                self.report(&pending.action, "circuit_open", Duration::ZERO);
                return failed(format!("circuit open for {}", hook.url), attempts);
            }
            attempts += 1;
            let body = rasa::request(
                bot,
                &hook.remote,
                state,
                recent,
                with_domain.then_some(&*domain),
                &digest,
            );
            let started = Instant::now();
            let attempt = self
                .attempt(hook, pending, token.as_deref(), &body, deadline - now)
                .await;
            let took = started.elapsed();
            match attempt {
                Attempt::Answered(answer) => {
                    self.settle(&hook.url, true);
                    self.report(&pending.action, "ok", took);
                    if with_domain {
                        self.sent
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert((hook.url.clone(), digest.clone()));
                    }
                    return ActionOutcome::Completed {
                        effects: answer.effects,
                        responses: answer.responses,
                        ignored: answer.ignored,
                    };
                }
                Attempt::Refused(why) => {
                    self.settle(&hook.url, true);
                    self.report(&pending.action, "refused", took);
                    return failed(why, attempts);
                }
                Attempt::NeedsDomain if !with_domain => {
                    self.settle(&hook.url, true);
                    self.report(&pending.action, "needs_domain", took);
                    with_domain = true;
                }
                Attempt::NeedsDomain => {
                    self.settle(&hook.url, true);
                    self.report(&pending.action, "refused", took);
                    return failed(
                        "the action server asked for the domain it was sent".into(),
                        attempts,
                    );
                }
                Attempt::Retry { why, after } => {
                    self.settle(&hook.url, false);
                    self.report(&pending.action, "error", took);
                    failures += 1;
                    if failures > hook.retries {
                        return failed(why, attempts);
                    }
                    let pause = after.unwrap_or_else(|| backoff(pending, failures));
                    if Instant::now() + pause >= deadline {
                        return failed(
                            format!(
                                "{why}; no time left for another attempt within {} ms",
                                hook.timeout_ms
                            ),
                            attempts,
                        );
                    }
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }

    async fn attempt(
        &self,
        hook: &Webhook,
        pending: &PendingAction,
        token: Option<&str>,
        body: &Json,
        left: Duration,
    ) -> Attempt {
        let mut request = self
            .client
            .post(&hook.url)
            .timeout(left)
            .header("Idempotency-Key", pending.key.to_string())
            .header("Content-Type", "application/json")
            .body(body.to_string());
        for (k, v) in &hook.headers {
            request = request.header(k, v);
        }
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        // The action server may continue the turn's trace.
        for (k, v) in colloquy_bus::trace::current_headers() {
            request = request.header(k, v);
        }
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) if e.is_timeout() => {
                return Attempt::Retry {
                    why: format!("no answer within {} ms", hook.timeout_ms),
                    after: None,
                }
            }
            Err(e) => {
                return Attempt::Retry {
                    why: format!("calling {}: {}", hook.url, error_chain(&e)),
                    after: None,
                }
            }
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = match response.bytes().await {
            Ok(b) => b,
            Err(e) => {
                return Attempt::Retry {
                    why: format!("reading the answer: {}", error_chain(&e)),
                    after: None,
                }
            }
        };
        let detail = || {
            serde_json::from_slice::<Json>(&body)
                .ok()
                .and_then(|j| j["error"].as_str().map(String::from))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(200).collect())
        };
        match status {
            200..=299 => match rasa::answer(&body) {
                Ok(a) => Attempt::Answered(a),
                Err(why) => Attempt::Refused(format!("{} answered {status}, but {why}", hook.url)),
            },
            400 => Attempt::Refused(format!("the action rejected the call: {}", detail())),
            404 => Attempt::Refused(format!(
                "the action server has no action `{}`: {}",
                hook.remote,
                detail()
            )),
            449 => Attempt::NeedsDomain,
            429 => Attempt::Retry {
                why: format!("{} is throttling (429)", hook.url),
                after: retry_after,
            },
            500..=599 => Attempt::Retry {
                why: format!("the action server failed ({status}): {}", detail()),
                after: retry_after.filter(|_| status == 503),
            },
            _ => Attempt::Refused(format!("unexpected status {status}: {}", detail())),
        }
    }

    /// May an attempt at `hook` go now? Its endpoint's breaker is made on
    /// first use, with the settings every action of that URL shares
    /// (`colloquy check` sees to that).
    fn admit(&self, hook: &Webhook, now: Instant) -> bool {
        let endpoint = hook.url.as_str();
        let mut breakers = self.breakers.lock().unwrap_or_else(|p| p.into_inner());
        let b = breakers.entry(endpoint.to_string()).or_insert_with(|| {
            Breaker::new(
                hook.breaker.failures,
                Duration::from_millis(hook.breaker.open_ms),
            )
        });
        let before = b.state(now);
        let admitted = b.admit(now);
        if before != BreakerState::Open || b.state(now) != before {
            self.breaker_changed(endpoint, b.state(now));
        }
        admitted
    }

    fn settle(&self, endpoint: &str, healthy: bool) {
        let now = Instant::now();
        let mut breakers = self.breakers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = breakers.get_mut(endpoint) {
            let before = b.state(now);
            if healthy {
                b.success();
            } else {
                b.failure(now);
            }
            let after = b.state(now);
            if after != before {
                tracing::warn!(endpoint, state = ?after, "action endpoint circuit changed");
                self.breaker_changed(endpoint, after);
            }
        }
    }

    fn breaker_changed(&self, endpoint: &str, state: BreakerState) {
        if let Some(o) = self.observer.get() {
            o.breaker(endpoint, state);
        }
    }

    /// A compensation of `saga` was set aside after all its rounds.
    pub fn abandoned(&self, saga: &str) {
        if let Some(o) = self.observer.get() {
            o.compensation_abandoned(saga);
        }
    }

    fn report(&self, action: &str, outcome: &'static str, took: Duration) {
        if let Some(o) = self.observer.get() {
            o.action_call(action, outcome, took);
        }
    }

    /// The bot version's domain and digest, built on first use.
    fn domain(&self, bot: &Bot) -> Domain {
        let id = (bot.id.name.clone(), bot.id.version.clone());
        let mut domains = self.domains.lock().unwrap_or_else(|p| p.into_inner());
        domains
            .entry(id)
            .or_insert_with(|| {
                let domain = rasa::domain(bot);
                let digest = format!(
                    "{:016x}",
                    colloquy_core::rollout::fnv1a(domain.to_string().bytes())
                );
                (Arc::new(domain), Arc::from(digest))
            })
            .clone()
    }
}

fn failed(reason: String, attempts: u32) -> ActionOutcome {
    ActionOutcome::Failed { reason, attempts }
}

/// Exponential backoff with jitter from the call's key, so the retries of
/// many calls to one failed server do not arrive together.
fn backoff(pending: &PendingAction, failures: u32) -> Duration {
    let base = BACKOFF_BASE * 2u32.saturating_pow(failures.saturating_sub(1).min(10));
    let spread = colloquy_core::rollout::fnv1a(
        pending
            .key
            .as_bytes()
            .iter()
            .copied()
            .chain([failures as u8]),
    ) % 1000;
    base / 2 + base.mul_f64(spread as f64 / 1000.0)
}

/// An error with its causes ("connection refused" is a cause of reqwest's
/// "error sending request").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

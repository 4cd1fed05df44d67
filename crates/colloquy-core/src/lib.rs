//! colloquy-core: the dialogue model. Events and the state fold, the bot
//! model (loaded from YAML and validated), the pure policy
//! `(bot, state, nlu, now, seed) → next state + events + replies`, the
//! stage messages ([`wire`]) every role exchanges, and the masking of
//! sensitive values ([`redact`]) wherever events are shown.
//!
//! This crate must not do I/O (callers read a bot's files and hand over
//! their text), read clocks, draw random numbers or spawn tasks: time and
//! seeds are inputs.

pub mod action;
pub mod bot;
pub mod duration;
pub mod event;
pub mod nlu;
pub mod policy;
pub mod redact;
pub mod rollout;
pub mod state;
pub mod value;
pub mod wire;

pub use action::{ActionOutcome, ActionResult, Effect, Said};
pub use bot::Bot;
pub use event::{
    action_event_id, check_user_id, seal, user_event_id, BotRef, Event, EventKind, FlowEnd,
    SagaCall, SagaOutcome,
};
pub use nlu::{EntityMatch, IntentScore, NluResult};
pub use policy::{resume, step, Input, Turn};
pub use rollout::{Canary, Guard, GuardMetric, Rollout, Route, RouteReason};
pub use state::{FlowPosition, PendingAction, State};
pub use value::Value;

//! colloquy-core: the dialogue model. Events and the state fold, the bot
//! model (loaded from YAML and validated), and the pure policy
//! `(bot, state, nlu, now, seed) → events + replies`.
//!
//! This crate must not do I/O beyond reading a bot directory on request,
//! read clocks, draw random numbers or spawn tasks: time and seeds are inputs.

pub mod bot;
pub mod event;
pub mod nlu;
pub mod state;
pub mod value;

pub use event::{seal, BotRef, Event, EventKind, FlowEnd};
pub use nlu::{EntityMatch, IntentScore, NluResult};
pub use state::{FlowPosition, State};
pub use value::Value;

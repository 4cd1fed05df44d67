//! Bots as data: the YAML spec, its compilation into a checked model with
//! errors that name file, line and field, and the model the policy runs on.

mod compile;
mod lines;
mod model;
pub mod spec;

pub use compile::{check_registry_name, compile, BotError, SourceFile};
pub use model::*;

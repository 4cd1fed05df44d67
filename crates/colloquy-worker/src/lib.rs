//! colloquy-worker: the stage runtime. Loads a bot from its directory
//! (YAML compiled by the core, NLU trained on its examples) and handles a
//! user's message: load state → NLU → pure policy → append events.
//!
//! This crate serves no HTTP; it is driven by the bus consumers of each
//! stage. It calls action servers as an HTTP client (`actions`).

pub mod actions;
mod engine;
mod loader;
#[cfg(feature = "redis")]
pub mod ownership;
pub mod pipeline;
pub mod scenario;
pub mod versions;

// Where the binary has found it; the store's L1 module owns it now.
pub use engine::{Classified, Engine, EngineError, Reply, TurnFacts};
pub use loader::{load_bot, load_files, read_files, read_sources, LoadError, LoadedBot};

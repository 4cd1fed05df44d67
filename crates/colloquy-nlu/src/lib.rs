//! colloquy-nlu: understanding one user message, in Chinese or English.
//! `normalize` puts the text in canonical form, `classifier` ranks the
//! bot's intents, `entities` pulls out slot values (regexes, lookup lists,
//! numbers in digits, Chinese numerals or English words), `thesaurus`
//! lets a bot's synonym groups count as the same feature, and
//! `pipeline::BotNlu` puts them
//! together into the `NluResult` the policy consumes. `eval` measures a
//! classifier on labelled data.
//!
//! This crate must not do I/O: no files, network or clock reads in library
//! code (only `eval` reads a monotonic timer to report speed). Everything is
//! deterministic: the same examples give the same model and the same
//! answers. Benchmarks and tests may read data files.

pub mod baseline;
pub mod classifier;
pub mod entities;
pub mod eval;
mod neighbours;
mod normalize;
pub mod numbers;
pub mod pipeline;
pub mod thesaurus;
pub mod tokenize;

pub use classifier::{Classifier, Fallback, TrainConfig};
pub use entities::EntityExtractor;
pub use normalize::normalize;
pub use pipeline::BotNlu;
pub use thesaurus::Thesaurus;

/// Why a model or extractor could not be built from a bot's definition.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum NluError {
    #[error("no training examples")]
    NoExamples,
    #[error("intent `{0}` has no examples")]
    IntentWithoutExamples(String),
    #[error("invalid training configuration: {0}")]
    InvalidConfig(&'static str),
    #[error("training data uses the reserved out-of-scope label `oos`")]
    OosInTraining,
    #[error("entity `{entity}`: {problem}")]
    Entity { entity: String, problem: String },
}

//! Bots as data: the YAML spec, its compilation into a checked model, and
//! the error report `colloquy check` prints.

pub mod spec;

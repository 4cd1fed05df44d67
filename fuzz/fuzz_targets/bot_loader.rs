//! The bot loader: any bytes given as a bot's YAML files compile to a
//! `Bot` or fail with errors that name the problem, never panic. NUL bytes
//! split the input into files (`bot.yaml` first), because a bot spreads
//! its sections over files and most checks are across them.
#![no_main]

use colloquy_core::bot::{compile, SourceFile};
use colloquy_nlu::EntityExtractor;
use libfuzzer_sys::fuzz_target;

/// Files a bot in the seeds has at most; more add nothing but time.
const MAX_FILES: usize = 8;

fuzz_target!(|data: &[u8]| {
    let files: Vec<SourceFile> = data
        .split(|&b| b == 0)
        .take(MAX_FILES)
        .enumerate()
        .map(|(i, text)| SourceFile {
            path: if i == 0 {
                "bot.yaml".into()
            } else {
                format!("part-{i}.yaml")
            },
            text: String::from_utf8_lossy(text).into_owned(),
        })
        .collect();
    match compile(&files) {
        // What the worker does next with a compiled bot's own patterns.
        Ok(bot) => drop(EntityExtractor::new(&bot.entities)),
        Err(errors) => {
            assert!(!errors.is_empty(), "a bot that fails names why");
            for e in errors {
                // Errors are printed to the operator and returned by the admin API.
                let _ = e.to_string();
            }
        }
    }
});

//! `colloquy check`: validate bots without running them.

use colloquy_core::bot::compile;
use colloquy_worker::read_sources;
use std::path::PathBuf;
use std::process::ExitCode;

pub fn run(paths: &[PathBuf]) -> anyhow::Result<ExitCode> {
    let mut failed = false;
    for path in paths {
        if path.extension().is_some_and(|e| e == "toml") {
            match crate::config::Config::load(Some(path), std::iter::empty()) {
                Ok(_) => println!("ok: {} (configuration)", path.display()),
                Err(e) => {
                    eprintln!("{e:#}");
                    failed = true;
                }
            }
            continue;
        }
        let files = match read_sources(path) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("{e}");
                failed = true;
                continue;
            }
        };
        match compile(&files) {
            Ok(bot) => println!(
                "ok: {} {} ({}): {} intents, {} entities, {} slots, {} flows, {} actions, {} responses",
                bot.id.name,
                bot.id.version,
                path.display(),
                bot.intents.len(),
                bot.entities.len(),
                bot.slots.len(),
                bot.flows.len(),
                bot.actions.len(),
                bot.responses.len()
            ),
            Err(errors) => {
                for e in &errors {
                    eprintln!("{e}");
                }
                eprintln!("{}: {} error{}", path.display(), errors.len(), if errors.len() == 1 { "" } else { "s" });
                failed = true;
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

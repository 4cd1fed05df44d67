//! `colloquy check`: validate bots and configuration files without running
//! them.

use anyhow::Context;
use colloquy_core::bot::compile;
use colloquy_gateway::auth::{Algorithm, Verifier};
use colloquy_worker::read_sources;
use std::path::PathBuf;
use std::process::ExitCode;

pub fn run(paths: &[PathBuf]) -> anyhow::Result<ExitCode> {
    let mut failed = false;
    for path in paths {
        if path.extension().is_some_and(|e| e == "toml") {
            // Errors of the file itself name it (and the line); those of
            // the keys it points to get its name here.
            let checked = crate::config::Config::load(Some(path), std::iter::empty())
                .and_then(|cfg| auth_keys(&cfg).with_context(|| path.display().to_string()));
            match checked {
                Ok(None) => println!("ok: {} (configuration)", path.display()),
                Ok(Some(keys)) => println!("ok: {} (configuration; {keys})", path.display()),
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

/// Reads the public keys of an RS256/ES256 config as the server would at
/// startup (the PEM file, or the JWKS from its file or URL), so that a key
/// the server would refuse fails here. An HS256 secret may come from the
/// environment or the data directory when the server starts: it is not
/// looked for here.
fn auth_keys(cfg: &crate::config::Config) -> anyhow::Result<Option<String>> {
    if cfg.auth.algorithm == Algorithm::HS256 {
        return Ok(None);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let verifier = runtime.block_on(Verifier::start(&cfg.auth, None))?;
    Ok(Some(match verifier.jwks_stats() {
        Some(jwks) => format!("{} usable keys in the JWKS", jwks.keys),
        None => "public key read".into(),
    }))
}

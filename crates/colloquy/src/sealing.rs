//! `colloquy keys`: the key ring that seals personal data. `list` shows
//! it, `rotate` adds a new current key while every process keeps running,
//! `reencrypt` rewrites what older keys sealed under the current one.

use crate::config::{Config, ConfigArgs};
use crate::wiring;
use anyhow::Context;
use colloquy_store::seal::{rotate_file, Resealer};
use colloquy_store::KeyRing;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(clap::Subcommand)]
pub enum KeysCommand {
    /// Show the ring's key ids and which one seals.
    List(ConfigArgs),
    /// Add a new key and make it current. Running processes read the ring
    /// file again within seconds and seal with it from then on; what older
    /// keys sealed still opens.
    Rotate(ConfigArgs),
    /// Rewrite every sealed event and snapshot of the store under the
    /// current key, in place: the events (ids, seqs, contents) stay as they
    /// were; only the ciphertext of each sealed value is replaced. The
    /// embedded stores are one process's: stop the server first.
    Reencrypt(ConfigArgs),
}

pub fn run(command: KeysCommand) -> anyhow::Result<ExitCode> {
    match command {
        KeysCommand::List(args) => {
            let cfg = Config::from_args(&args)?;
            let (ring, source) = ring(&cfg)?;
            println!("key ring: {source}");
            for id in ring.ids() {
                let mark = if id == ring.current() {
                    "  (current: seals)"
                } else {
                    ""
                };
                println!("  {id}{mark}");
            }
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::Rotate(args) => {
            let cfg = Config::from_args(&args)?;
            if std::env::var_os(wiring::SEALING_KEYS_ENV).is_some_and(|v| !v.is_empty()) {
                anyhow::bail!(
                    "{} holds the ring: rotate it where it is kept (add a key, make it current) and restart the processes one by one",
                    wiring::SEALING_KEYS_ENV
                );
            }
            let path = wiring::ring_file(&cfg);
            // Made first if this data directory has none yet.
            KeyRing::open_or_create(&path)?;
            let id = rotate_file(&path)?;
            println!(
                "{id} is now the current key of {}; processes seal with it within seconds, and `colloquy keys reencrypt` rewrites what older keys sealed",
                path.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::Reencrypt(args) => {
            let cfg = Config::from_args(&args)?;
            wiring::runtime()?.block_on(reencrypt(cfg))
        }
    }
}

fn ring(cfg: &Config) -> anyhow::Result<(KeyRing, String)> {
    if let Ok(json) = std::env::var(wiring::SEALING_KEYS_ENV) {
        if !json.is_empty() {
            let ring = KeyRing::from_json(&json, wiring::SEALING_KEYS_ENV)?;
            return Ok((ring, wiring::SEALING_KEYS_ENV.to_string()));
        }
    }
    let path = wiring::ring_file(cfg);
    let ring = KeyRing::open_or_create(&path)?;
    Ok((ring, path.display().to_string()))
}

async fn reencrypt(cfg: Config) -> anyhow::Result<ExitCode> {
    let (ring, source) = ring(&cfg)?;
    let ring = Arc::new(ring);
    let store = colloquy_store::open(&cfg.store, &cfg.server.data_dir)
        .await
        .context("opening the store")?;
    let bar = indicatif::ProgressBar::new_spinner().with_message("re-sealing");
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    let resealer = Resealer::new(ring.clone(), {
        let bar = bar.clone();
        move |seen| bar.set_message(format!("re-sealing: {seen} records read"))
    });
    let report = store.reseal(&resealer).await?;
    bar.finish_and_clear();
    println!(
        "{} records read, {} rewritten under key {} (ring: {source})",
        report.read,
        report.rewritten,
        ring.current()
    );
    println!("hot copies (Redis) are sealed again on their next write and expire after store.l1.redis.ttl; bus records expire with the topics' retention: retire an older key only after both");
    Ok(ExitCode::SUCCESS)
}

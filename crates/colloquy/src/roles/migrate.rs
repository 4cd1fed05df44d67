//! `colloquy migrate`: create or upgrade the schema of every shard of the
//! configured SQL store.

use crate::config::{Config, ConfigArgs};
use crate::wiring;
use anyhow::Context;
use colloquy_store::StoreBackend;
use std::process::ExitCode;

pub fn run(args: ConfigArgs) -> anyhow::Result<ExitCode> {
    let cfg = Config::from_args(&args)?;
    if matches!(
        cfg.store.backend,
        StoreBackend::EventLog | StoreBackend::Sqlite
    ) {
        println!("the embedded stores upgrade themselves when they open; nothing to migrate");
        return Ok(ExitCode::SUCCESS);
    }
    wiring::runtime()?.block_on(async {
        let report = colloquy_store::sql::migrate(&cfg.store.sql)
            .await
            .context("migrating store.sql")?;
        for u in &report.upgraded {
            println!(
                "{} shard {:02}: schema {} -> {}",
                u.database, u.shard, u.from, u.to
            );
        }
        println!(
            "{} shards upgraded, {} already current",
            report.upgraded.len(),
            report.current
        );
        Ok(ExitCode::SUCCESS)
    })
}

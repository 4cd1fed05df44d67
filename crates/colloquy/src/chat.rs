//! `colloquy chat`: a terminal conversation on the embedded store.

use crate::keys;
use anyhow::Context;
use colloquy_store::{sqlite::SqliteStore, Conversations, SnapshotKey, SnapshotPolicy};
use colloquy_worker::{load_bot, Engine};
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(clap::Args)]
pub struct ChatArgs {
    /// Bot directory.
    #[arg(long, default_value = "bots/shoe-store")]
    bot: PathBuf,
    /// User id the conversation is kept under.
    #[arg(long, default_value = "guest")]
    user: String,
    /// Data directory of the embedded store.
    #[arg(long, default_value = "data", env = "COLLOQUY_DATA_DIR")]
    data: PathBuf,
    /// Read the user's lines from FILE instead of the terminal.
    #[arg(long, value_name = "FILE")]
    script: Option<PathBuf>,
    /// Make the conversation happen at this time (RFC 3339), e.g. to try
    /// session expiry without waiting.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    now: Option<i64>,
    /// Snapshot a user's state after this many events since the last one.
    #[arg(long, value_name = "N", default_value_t = SnapshotPolicy::default().every_events)]
    snapshot_events: u64,
    /// Snapshot after this much conversation time since the last one (e.g. 30s, 5m).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_interval)]
    snapshot_interval: i64,
}

fn parse_interval(s: &str) -> Result<i64, String> {
    colloquy_core::bot::parse_duration_ms(s)
        .ok_or_else(|| format!("`{s}` is not a duration (e.g. 30s, 5m)"))
}

fn parse_time(s: &str) -> Result<i64, String> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_millis())
        .map_err(|e| format!("{e} (expected RFC 3339, e.g. 2026-01-02T10:00:00Z)"))
}

pub fn run(args: ChatArgs) -> anyhow::Result<ExitCode> {
    colloquy_core::check_user_id(&args.user).map_err(|e| anyhow::anyhow!("--user: {e}"))?;
    let loaded = load_bot(&args.bot).map_err(|e| anyhow::anyhow!("{e}"))?;
    let key = keys::load_or_create(&args.data, "snapshot.key", "COLLOQUY_SNAPSHOT_KEY")?;
    let key = SnapshotKey::new(key).context("snapshot key")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let store = SqliteStore::open(&args.data)
            .with_context(|| format!("opening the store in {}", args.data.display()))?;
        let conversations = Conversations::new(
            Arc::new(store),
            key,
            SnapshotPolicy {
                every_events: args.snapshot_events.max(1),
                every_ms: args.snapshot_interval,
            },
        );
        let engine = Engine::new(Arc::new(loaded), conversations);
        let interactive = args.script.is_none() && std::io::stdin().is_terminal();
        let input: Box<dyn BufRead> = match &args.script {
            Some(path) => Box::new(std::io::BufReader::new(
                std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?,
            )),
            None => Box::new(std::io::stdin().lock()),
        };
        if interactive {
            let bot = &engine.bot().bot.id;
            println!(
                "colloquy chat with {} {} as {} (data in {}); Ctrl-D to quit",
                bot.name,
                bot.version,
                args.user,
                args.data.display()
            );
        }
        let mut out = std::io::stdout().lock();
        let prompt = |out: &mut std::io::StdoutLock| -> std::io::Result<()> {
            if interactive {
                write!(out, "you> ")?;
                out.flush()?;
            }
            Ok(())
        };
        prompt(&mut out)?;
        for line in input.lines() {
            let line = line.context("reading input")?;
            let text = line.trim();
            if text.is_empty() || (!interactive && text.starts_with('#')) {
                prompt(&mut out)?;
                continue;
            }
            let now = args
                .now
                .unwrap_or_else(|| chrono::Utc::now().timestamp_millis());
            let message_id = uuid::Uuid::now_v7().to_string();
            let reply = engine.handle(&args.user, &message_id, text, now).await?;
            if !interactive {
                writeln!(out, "> {text}")?;
            }
            for r in &reply.replies {
                if interactive {
                    writeln!(out, "bot> {r}")?;
                } else {
                    writeln!(out, "{r}")?;
                }
            }
            prompt(&mut out)?;
        }
        if interactive {
            writeln!(out)?;
        }
        anyhow::Ok(ExitCode::SUCCESS)
    })
}

//! `colloquy chat`: a terminal conversation, on the embedded store in this
//! process or with a running server over WebSocket.

use crate::keys;
use anyhow::Context;
use colloquy_store::{Conversations, KeyRing, Sealed, SnapshotKey, SnapshotPolicy, StoreConfig};
use colloquy_worker::{load_bot, Engine};
use futures_util::{SinkExt, StreamExt};
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use tokio_tungstenite::tungstenite::Message;

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
    /// Talk to a running server at this URL over WebSocket instead of
    /// running the bot here, e.g. http://127.0.0.1:8080.
    #[arg(long, value_name = "URL")]
    url: Option<String>,
    /// Bearer token for --url; by default one is minted for --user from the
    /// secret in --data (the server's own data directory).
    #[arg(long)]
    token: Option<String>,
}

fn parse_interval(s: &str) -> Result<i64, String> {
    colloquy_core::duration::parse_ms(s)
        .ok_or_else(|| format!("`{s}` is not a duration (e.g. 30s, 5m)"))
}

fn parse_time(s: &str) -> Result<i64, String> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_millis())
        .map_err(|e| format!("{e} (expected RFC 3339, e.g. 2026-01-02T10:00:00Z)"))
}

/// Where the conversation happens: in this process, or on a server.
enum Peer {
    Local { engine: Engine, now: Option<i64> },
    Remote { ws: WsStream },
}

type WsStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// How long the remote REPL waits for a turn's replies.
const REMOTE_TURN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

impl Peer {
    async fn say(&mut self, user: &str, text: &str) -> anyhow::Result<Vec<String>> {
        let message_id = uuid::Uuid::now_v7().to_string();
        match self {
            Peer::Local { engine, now } => {
                let now = now.unwrap_or_else(colloquy_gateway::clock::unix_ms);
                Ok(engine.handle(user, &message_id, text, now).await?.replies)
            }
            Peer::Remote { ws } => {
                let frame = serde_json::json!({"type": "message", "text": text, "id": message_id});
                ws.send(Message::text(frame.to_string()))
                    .await
                    .context("sending to the server")?;
                loop {
                    let next = tokio::time::timeout(REMOTE_TURN_TIMEOUT, ws.next())
                        .await
                        .map_err(|_| {
                            anyhow::anyhow!(
                                "no reply from the server within {REMOTE_TURN_TIMEOUT:?}"
                            )
                        })?;
                    let m =
                        next.ok_or_else(|| anyhow::anyhow!("the server closed the connection"))??;
                    let Ok(v) =
                        serde_json::from_str::<serde_json::Value>(m.to_text().unwrap_or_default())
                    else {
                        continue;
                    };
                    match v["type"].as_str() {
                        Some("done") if v["message_id"] == message_id.as_str() => {
                            let replies = v["replies"].as_array().cloned().unwrap_or_default();
                            return Ok(replies
                                .iter()
                                .filter_map(|r| r.as_str().map(str::to_string))
                                .collect());
                        }
                        Some("error") => {
                            anyhow::bail!("{}: {}", v["error"]["code"], v["error"]["message"])
                        }
                        _ => {}
                    }
                }
            }
        }
    }
}

async fn connect(url: &str, token: &str, user: &str) -> anyhow::Result<WsStream> {
    let ws_url = format!(
        "{}/v1/stream?token={token}&user={user}",
        url.trim_end_matches('/').replacen("http", "ws", 1)
    );
    let (ws, _) = tokio_tungstenite::connect_async(&ws_url)
        .await
        .map_err(|e| anyhow::anyhow!("connecting to {url}: {e}"))?;
    Ok(ws)
}

pub fn run(args: ChatArgs) -> anyhow::Result<ExitCode> {
    colloquy_core::check_user_id(&args.user).map_err(|e| anyhow::anyhow!("--user: {e}"))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let (mut peer, banner) = match &args.url {
            Some(url) => {
                let token = match &args.token {
                    Some(t) => t.clone(),
                    None => {
                        let secret =
                            keys::load_or_create(&args.data, "jwt.secret", "COLLOQUY_JWT_SECRET")?;
                        let issuer =
                            colloquy_gateway::auth::Issuer::hs256(&secret.bytes, None, None);
                        issuer.issue_now(
                            &args.user,
                            colloquy_gateway::auth::Scope::Chat,
                            std::time::Duration::from_secs(3600),
                        )?
                    }
                };
                let ws = connect(url, &token, &args.user).await?;
                (
                    Peer::Remote { ws },
                    format!("colloquy chat with {url} as {}", args.user),
                )
            }
            None => {
                let loaded = load_bot(&args.bot).map_err(|e| anyhow::anyhow!("{e}"))?;
                let key =
                    keys::load_or_create(&args.data, "snapshot.key", "COLLOQUY_SNAPSHOT_KEY")?;
                let key = SnapshotKey::new(key.bytes).context("snapshot key")?;
                let store = colloquy_store::open(&StoreConfig::default(), &args.data)
                    .await
                    .context("opening the event log")?;
                // Sealed as `serve` seals the same data directory.
                let ring = KeyRing::open_or_create(&KeyRing::default_file(&args.data))?;
                let store = Arc::new(Sealed::new(store, Arc::new(ring)));
                let policy = SnapshotPolicy {
                    every_events: args.snapshot_events.max(1),
                    every_ms: args.snapshot_interval,
                };
                let bot = loaded.bot.id.clone();
                let engine = Engine::new(Arc::new(loaded), Conversations::new(store, key, policy));
                let banner = format!(
                    "colloquy chat with {} {} as {} (data in {})",
                    bot.name,
                    bot.version,
                    args.user,
                    args.data.display()
                );
                (
                    Peer::Local {
                        engine,
                        now: args.now,
                    },
                    banner,
                )
            }
        };
        let interactive = args.script.is_none() && std::io::stdin().is_terminal();
        let input: Box<dyn BufRead> = match &args.script {
            Some(path) => Box::new(std::io::BufReader::new(
                std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?,
            )),
            None => Box::new(std::io::stdin().lock()),
        };
        let mut out = std::io::stdout().lock();
        if interactive {
            writeln!(out, "{banner}; Ctrl-D to quit")?;
        }
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
            let replies = peer.say(&args.user, text).await?;
            if !interactive {
                writeln!(out, "> {text}")?;
            }
            for r in &replies {
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

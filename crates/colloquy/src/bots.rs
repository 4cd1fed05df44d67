//! `colloquy bots`: the admin API's bot registry from the terminal: push
//! a bot directory as a version, list versions, set, promote and roll back
//! a rollout, show its status and history.

use crate::keys;
use anyhow::{bail, Context};
use colloquy_worker::read_files;
use reqwest::Method;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct BotsArgs {
    #[command(subcommand)]
    command: BotsCommand,
    /// The server's URL.
    #[arg(
        long,
        global = true,
        default_value = "http://127.0.0.1:8080",
        env = "COLLOQUY_URL"
    )]
    url: String,
    /// Admin bearer token; by default one is minted from the secret in
    /// --data (the server's own data directory).
    #[arg(long, global = true, env = "COLLOQUY_TOKEN")]
    token: Option<String>,
    /// The server's data directory, for minting a token.
    #[arg(long, global = true, default_value = "data", env = "COLLOQUY_DATA_DIR")]
    data: PathBuf,
}

#[derive(clap::Subcommand)]
enum BotsCommand {
    /// Push a bot directory as a version (the name and version its `bot:`
    /// section declares). Refused if that version exists with other files,
    /// or if the bot does not compile.
    Push { dir: PathBuf },
    /// List the versions in the registry.
    List {
        /// Only this bot's.
        name: Option<String>,
    },
    /// Set a bot's rollout: a stable version, optionally a canary for the
    /// users whose user-id tail is in --tails.
    Rollout {
        name: String,
        #[arg(long)]
        stable: String,
        #[arg(long, requires = "tails")]
        canary: Option<String>,
        /// User-id tails (0-9) sent to the canary, e.g. 0,1 for 20 %.
        #[arg(long, value_delimiter = ',', requires = "canary")]
        tails: Vec<u8>,
        /// Roll the canary back by itself when it does worse than stable:
        /// METRIC:MAX_INCREASE[:MIN_TURNS[:WINDOW]], repeatable. METRIC is
        /// fallback_rate, handoff_rate, action_error_rate (MAX_INCREASE in
        /// rate points: 0.2 = 20 points) or p99_ms (in milliseconds);
        /// MIN_TURNS (default 20) canary turns in WINDOW (default 60s, at
        /// most 10m) before it can fire. E.g. --guard fallback_rate:0.2:50:5m
        #[arg(long = "guard", value_name = "GUARD", requires = "canary", value_parser = parse_guard)]
        guards: Vec<Value>,
    },
    /// Make the canary the stable version for everyone.
    Promote { name: String },
    /// Withdraw the canary (or, without one, the stable version in favour
    /// of the one before it).
    Rollback { name: String },
    /// The current rollout and where each live process stands.
    Status { name: String },
    /// The rollout's generations, newest first.
    History {
        name: String,
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
}

pub fn run(args: BotsArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let token = match &args.token {
            Some(t) => t.clone(),
            None => mint(&args.data)?,
        };
        let client = Client {
            http: reqwest::Client::new(),
            url: args.url.trim_end_matches('/').to_string(),
            token,
        };
        match args.command {
            BotsCommand::Push { dir } => {
                let files = read_files(&dir).map_err(|e| anyhow::anyhow!("{e}"))?;
                let v = client
                    .call(Method::POST, "/v1/bots", Some(json!({ "files": files })))
                    .await?;
                println!(
                    "{} {} pushed ({} files, sha256 {})",
                    v["name"].as_str().unwrap_or("?"),
                    v["version"].as_str().unwrap_or("?"),
                    files.len(),
                    v["hash"].as_str().unwrap_or("?")
                );
            }
            BotsCommand::List { name } => {
                let path = match &name {
                    Some(n) => format!("/v1/bots?bot={n}"),
                    None => "/v1/bots".into(),
                };
                let v = client.call(Method::GET, &path, None).await?;
                let row = |cells: [&str; 5]| {
                    println!(
                        "{:<20} {:<24} {:<14} {:<20} {}",
                        cells[0], cells[1], cells[2], cells[3], cells[4]
                    )
                };
                row(["bot", "version", "hash", "pushed by", "pushed at"]);
                for v in v["versions"].as_array().into_iter().flatten() {
                    let hash = v["hash"].as_str().unwrap_or("");
                    row([
                        v["name"].as_str().unwrap_or(""),
                        v["version"].as_str().unwrap_or(""),
                        hash.get(..12).unwrap_or(hash),
                        v["pushed_by"].as_str().unwrap_or(""),
                        &time(v["pushed_at_ms"].as_i64()),
                    ]);
                }
            }
            BotsCommand::Rollout {
                name,
                stable,
                canary,
                tails,
                guards,
            } => {
                let canary = canary.map(|c| json!({"version": c, "tails": tails}));
                let v = client
                    .call(
                        Method::PUT,
                        &format!("/v1/bots/{name}/rollout"),
                        Some(json!({"stable": stable, "canary": canary, "guards": guards})),
                    )
                    .await?;
                return Ok(report(&v));
            }
            BotsCommand::Promote { name } => {
                let v = client
                    .call(Method::POST, &format!("/v1/bots/{name}/promote"), None)
                    .await?;
                return Ok(report(&v));
            }
            BotsCommand::Rollback { name } => {
                let v = client
                    .call(Method::POST, &format!("/v1/bots/{name}/rollback"), None)
                    .await?;
                return Ok(report(&v));
            }
            BotsCommand::Status { name } => {
                let v = client
                    .call(Method::GET, &format!("/v1/bots/{name}/rollout"), None)
                    .await?;
                return Ok(report(&v));
            }
            BotsCommand::History { name, limit } => {
                let v = client
                    .call(
                        Method::GET,
                        &format!("/v1/bots/{name}/history?limit={limit}"),
                        None,
                    )
                    .await?;
                for r in v["history"].as_array().into_iter().flatten() {
                    println!(
                        "{:>4}  {}  {:<9} by {:<20} {}{}",
                        r["generation"],
                        time(r["at_ms"].as_i64()),
                        r["action"].as_str().unwrap_or(""),
                        r["by"].as_str().unwrap_or(""),
                        rollout_line(&r["rollout"]),
                        r["note"]
                            .as_str()
                            .map(|n| format!("  ({n})"))
                            .unwrap_or_default()
                    );
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

struct Client {
    http: reqwest::Client,
    url: String,
    token: String,
}

impl Client {
    /// Call the admin API; an error answer becomes an error that says what
    /// the server said (every error line of a bot that does not compile).
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("calling {}{path}", self.url))?;
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            let message = v["error"]["message"].as_str().unwrap_or("no details");
            let code = v["error"]["code"].as_str().unwrap_or("error");
            bail!("{status} {code}: {message}");
        }
        Ok(v)
    }
}

fn mint(data: &std::path::Path) -> anyhow::Result<String> {
    let secret = keys::load_or_create(data, "jwt.secret", "COLLOQUY_JWT_SECRET")?;
    let issuer = colloquy_gateway::auth::Issuer::hs256(&secret.bytes, None, None);
    Ok(issuer.issue_now(
        "colloquy-bots",
        colloquy_gateway::auth::Scope::Admin,
        std::time::Duration::from_secs(300),
    )?)
}

/// `--guard METRIC:MAX_INCREASE[:MIN_TURNS[:WINDOW]]` as the admin API's
/// guard; the server checks the ranges.
fn parse_guard(text: &str) -> Result<Value, String> {
    let parts: Vec<&str> = text.split(':').collect();
    if !(2..=4).contains(&parts.len()) {
        return Err("expected METRIC:MAX_INCREASE[:MIN_TURNS[:WINDOW]]".into());
    }
    let metric = colloquy_core::GuardMetric::parse(parts[0]).ok_or_else(|| {
        let names: Vec<&str> = colloquy_core::GuardMetric::ALL
            .iter()
            .map(|m| m.name())
            .collect();
        format!("unknown metric {}: one of {}", parts[0], names.join(", "))
    })?;
    let max_increase: f64 = parts[1]
        .parse()
        .map_err(|_| format!("MAX_INCREASE {} is not a number", parts[1]))?;
    let mut guard = json!({"metric": metric, "max_increase": max_increase});
    if let Some(n) = parts.get(2) {
        let n: u64 = n
            .parse()
            .map_err(|_| format!("MIN_TURNS {n} is not a whole number"))?;
        guard["min_turns"] = json!(n);
    }
    if let Some(w) = parts.get(3) {
        colloquy_core::duration::parse(w)
            .ok_or_else(|| format!("WINDOW {w} is not {}", colloquy_core::duration::EXPECTED))?;
        guard["window"] = json!(w);
    }
    Ok(guard)
}

fn rollout_line(r: &Value) -> String {
    let mut s = format!("stable {}", r["stable"].as_str().unwrap_or("?"));
    if let Some(c) = r.get("canary").filter(|c| !c.is_null()) {
        s.push_str(&format!(
            ", canary {} for tails {}",
            c["version"].as_str().unwrap_or("?"),
            c["tails"]
        ));
    }
    if let Some(w) = r.get("withdrawn").and_then(Value::as_array) {
        if !w.is_empty() {
            s.push_str(&format!(", withdrawn {}", Value::Array(w.clone())));
        }
    }
    for g in r
        .get("guards")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        s.push_str(&format!(
            ", guard {} +{} over {} after {} turns",
            g["metric"].as_str().unwrap_or("?"),
            g["max_increase"],
            g["window"].as_str().unwrap_or("?"),
            g["min_turns"]
        ));
    }
    s
}

/// Print a rollout with each live process's status; exit 1 when a process
/// failed to activate it, so scripts notice.
fn report(v: &Value) -> ExitCode {
    let r = &v["rollout"];
    println!(
        "{} generation {}: {}",
        r["name"].as_str().unwrap_or("?"),
        r["generation"],
        rollout_line(&r["rollout"])
    );
    let mut failed = false;
    for p in v["processes"].as_array().into_iter().flatten() {
        let status = p["status"].as_str().unwrap_or("?");
        failed |= status == "failed";
        println!(
            "  {:<40} {:<8} generation {}{}",
            p["process"].as_str().unwrap_or("?"),
            status,
            p["generation"],
            p["error"]
                .as_str()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        );
    }
    if let Some(versions) = v["versions"].as_object().filter(|m| !m.is_empty()) {
        println!(
            "  {:<24} {:>7} {:>7} {:>9} {:>9} {:>9} {:>8}",
            "last minute", "users", "turns", "fallback", "handoff", "act.err", "p99 ms"
        );
        let pct = |x: &Value| {
            x.as_f64()
                .map(|r| format!("{:.1}%", r * 100.0))
                .unwrap_or_else(|| "-".into())
        };
        for (version, f) in versions {
            println!(
                "  {:<24} {:>7} {:>7} {:>9} {:>9} {:>9} {:>8}",
                version,
                f["users"],
                f["turns"],
                pct(&f["fallback_rate"]),
                pct(&f["handoff_rate"]),
                pct(&f["action_error_rate"]),
                f["p99_ms"]
                    .as_f64()
                    .map(|p| format!("{p:.1}"))
                    .unwrap_or_else(|| "-".into())
            );
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn time(ms: Option<i64>) -> String {
    ms.and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guard_flag_becomes_the_api_guard() {
        assert_eq!(
            parse_guard("fallback_rate:0.2").unwrap(),
            json!({"metric": "fallback_rate", "max_increase": 0.2})
        );
        assert_eq!(
            parse_guard("p99_ms:150:50:5m").unwrap(),
            json!({"metric": "p99_ms", "max_increase": 150.0, "min_turns": 50, "window": "5m"})
        );
        for bad in [
            "fallback_rate",
            "latency:1",
            "handoff_rate:x",
            "p99_ms:1:many",
            "p99_ms:1:5:soon",
            "a:1:2:3s:4",
        ] {
            assert!(parse_guard(bad).is_err(), "{bad}");
        }
    }
}

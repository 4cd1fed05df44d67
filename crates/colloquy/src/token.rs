//! `colloquy token`: a development token (HS256) that a server with the
//! same settings accepts.

use crate::config::{Config, ConfigArgs};
use crate::wiring;
use colloquy_gateway::auth::{Algorithm, Issuer, Scope};
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct TokenArgs {
    /// User id the token acts for (its `sub`).
    #[arg(long)]
    user: String,
    /// `chat` acts only for the user; `admin` for anyone.
    #[arg(long, default_value = "chat", value_parser = ["chat", "admin"])]
    scope: String,
    /// Lifetime, e.g. 30m, 1h, 7d.
    #[arg(long, default_value = "1h")]
    ttl: String,
    #[command(flatten)]
    config: ConfigArgs,
}

pub fn run(args: TokenArgs) -> anyhow::Result<ExitCode> {
    colloquy_core::check_user_id(&args.user).map_err(|e| anyhow::anyhow!("--user: {e}"))?;
    let cfg = Config::from_args(&args.config)?;
    if cfg.auth.algorithm != Algorithm::HS256 {
        anyhow::bail!("tokens for {:?} are issued by whoever holds the private key; colloquy only issues HS256", cfg.auth.algorithm);
    }
    let ttl =
        colloquy_gateway::auth::parse_ttl(&args.ttl).map_err(|e| anyhow::anyhow!("--ttl: {e}"))?;
    if ttl > cfg.auth.max_token_lifetime {
        anyhow::bail!(
            "--ttl: {} is longer than auth.max_token_lifetime ({}); the server would refuse the token",
            args.ttl,
            colloquy_core::duration::format(cfg.auth.max_token_lifetime)
        );
    }
    let scope = if args.scope == "admin" {
        Scope::Admin
    } else {
        Scope::Chat
    };
    println!("{}", issuer(&cfg)?.issue_now(&args.user, scope, ttl)?);
    Ok(ExitCode::SUCCESS)
}

/// The HS256 issuer of the server with these settings.
pub fn issuer(cfg: &Config) -> anyhow::Result<Issuer> {
    let secret = wiring::hs_secret(cfg)?;
    Ok(Issuer::hs256(
        &secret.bytes,
        cfg.auth.issuer.clone(),
        cfg.auth.audience.clone(),
    ))
}

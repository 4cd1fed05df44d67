//! Settings for the server roles: one TOML file plus `COLLOQUY_*`
//! environment overrides. Unknown keys are an error, in the file and in
//! the environment alike (`COLLOQUY_SECTION_KEY`).

use anyhow::{bail, Context};
use colloquy_bus::BusConfig;
use colloquy_gateway::auth::AuthConfig;
use colloquy_gateway::input::Limits;
use colloquy_store::StoreConfig;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The options every server role takes: where its settings are, and the
/// few a developer changes most often.
#[derive(clap::Args)]
pub struct ConfigArgs {
    /// TOML settings file; `COLLOQUY_<SECTION>_<KEY>` variables override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Data directory [default: ./data].
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// Bot directory [default: bots/shoe-store].
    #[arg(long, value_name = "DIR")]
    bot: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: Server,
    pub auth: AuthConfig,
    pub limits: Limits,
    pub bus: BusConfig,
    pub store: StoreConfig,
    pub cluster: ClusterSettings,
    pub sealing: Sealing,
    pub telemetry: Telemetry,
}

/// Where the key ring that seals personal data is kept.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Sealing {
    /// The ring file (JSON: the current key's id and every key by id).
    /// Empty: `keys/sealing.json` in the data directory, created on first
    /// start. `COLLOQUY_SEALING_KEYS` (a ring as JSON) takes precedence.
    pub keys_file: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Server {
    pub listen: String,
    pub data_dir: PathBuf,
    pub bot: PathBuf,
    /// Classifications run at once (per stage; they share the runtime threads).
    pub nlu_workers: usize,
    /// Longest wait for in-flight work on shutdown.
    #[serde(with = "colloquy_core::duration::text")]
    pub shutdown_timeout: Duration,
    /// Longest time a request may take once its headers are in.
    #[serde(with = "colloquy_core::duration::text")]
    pub request_timeout: Duration,
    /// Longest time a client may take to send a request's headers; also
    /// how long an idle keep-alive connection is kept open.
    #[serde(with = "colloquy_core::duration::text")]
    pub header_timeout: Duration,
    /// Connections open at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// How often a process asks the bot registry whether the rollout
    /// changed; a change takes effect everywhere within about this long.
    #[serde(with = "colloquy_core::duration::text")]
    pub registry_poll: Duration,
}

impl Default for Server {
    fn default() -> Self {
        Server {
            listen: "127.0.0.1:8080".into(),
            data_dir: "data".into(),
            bot: "bots/shoe-store".into(),
            nlu_workers: 2,
            shutdown_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            header_timeout: Duration::from_secs(10),
            max_connections: 10_000,
            registry_poll: Duration::from_millis(250),
        }
    }
}

/// Membership of separate worker processes (`colloquy worker`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSettings {
    /// Redis holding the members and partition leases.
    pub redis_url: String,
    /// Prefix of those keys; deployments sharing a Redis need distinct ones.
    pub key_prefix: String,
    /// A worker that stopped heartbeating is gone after this long, and its
    /// partitions move to the others.
    #[serde(with = "colloquy_core::duration::text")]
    pub member_ttl: Duration,
    /// How often workers heartbeat and look for ring changes.
    #[serde(with = "colloquy_core::duration::text")]
    pub heartbeat: Duration,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings {
            redis_url: "redis://127.0.0.1:6379".into(),
            key_prefix: "colloquy".into(),
            member_ttl: Duration::from_secs(3),
            heartbeat: Duration::from_millis(250),
        }
    }
}

/// Distributed tracing: spans of every turn exported over OTLP/HTTP.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Telemetry {
    /// The collector's OTLP/HTTP base URL (`http://HOST:4318`); spans go
    /// to `<endpoint>/v1/traces`. Empty: no spans are made or exported.
    pub endpoint: String,
    /// Share of new traces recorded (0.0 to 1.0), decided by trace id; a
    /// trace begun by a client or another process follows its parent's
    /// decision.
    pub sampling_ratio: f64,
    /// The `service.name` each role reports.
    pub serve_service_name: String,
    pub gateway_service_name: String,
    pub worker_service_name: String,
    /// Put the authenticated user id in the baggage of a turn (and on its
    /// spans), so a complaint can be traced to its turn. Personal data:
    /// off unless the operator opts in.
    pub user_id_baggage: bool,
}

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry {
            endpoint: String::new(),
            sampling_ratio: 1.0,
            serve_service_name: "colloquy-serve".into(),
            gateway_service_name: "colloquy-gateway".into(),
            worker_service_name: "colloquy-worker".into(),
            user_id_baggage: false,
        }
    }
}

impl Telemetry {
    fn check(&self) -> anyhow::Result<()> {
        if !(0.0..=1.0).contains(&self.sampling_ratio) {
            bail!(
                "telemetry.sampling_ratio: {} is not between 0.0 and 1.0",
                self.sampling_ratio
            );
        }
        // The exporter's client speaks plain HTTP: a collector behind TLS
        // is reached through a local agent.
        if !self.endpoint.is_empty() {
            let rest = self.endpoint.strip_prefix("http://").with_context(|| {
                format!(
                    "telemetry.endpoint: `{}` is not an http:// URL (like http://127.0.0.1:4318)",
                    self.endpoint
                )
            })?;
            if rest.is_empty() || self.traces_url().parse::<axum::http::Uri>().is_err() {
                bail!("telemetry.endpoint: `{}` is not a URL", self.endpoint);
            }
        }
        for (key, name) in [
            ("serve_service_name", &self.serve_service_name),
            ("gateway_service_name", &self.gateway_service_name),
            ("worker_service_name", &self.worker_service_name),
        ] {
            if name.trim().is_empty() {
                bail!("telemetry.{key}: must not be empty");
            }
        }
        Ok(())
    }

    /// Where spans are posted.
    pub fn traces_url(&self) -> String {
        format!("{}/v1/traces", self.endpoint.trim_end_matches('/'))
    }
}

/// Environment variables that are not config keys but are read directly.
const DIRECT_ENV: &[&str] = &[
    "COLLOQUY_JWT_SECRET",
    "COLLOQUY_SNAPSHOT_KEY",
    "COLLOQUY_SEALING_KEYS",
    "COLLOQUY_LOG_FORMAT",
    "COLLOQUY_DATA_DIR",
    "COLLOQUY_DATA",
    "COLLOQUY_BENCH_OUT",
];

impl Config {
    /// The settings of `args.config` and the environment, with the
    /// command-line options on top.
    pub fn from_args(args: &ConfigArgs) -> anyhow::Result<Config> {
        let mut cfg = Config::load(args.config.as_deref(), std::env::vars())?;
        if let Some(l) = &args.listen {
            cfg.server.listen = l.clone();
        }
        if let Some(d) = &args.data {
            cfg.server.data_dir = d.clone();
        }
        if let Some(b) = &args.bot {
            cfg.server.bot = b.clone();
        }
        Ok(cfg)
    }

    /// Read `path` (if any), apply the environment, and check the result.
    /// Every error names where the bad value came from: the file, line and
    /// key, or the environment variable.
    pub fn load(
        path: Option<&Path>,
        env: impl Iterator<Item = (String, String)>,
    ) -> anyhow::Result<Config> {
        let mut table: toml::Table = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("reading {}", p.display()))?;
                // Typed first: its errors point at the line of the bad key.
                let typed =
                    toml::Deserializer::parse(&text).map_err(|e| file_error(p, &text, &e, None))?;
                serde_path_to_error::deserialize::<_, Config>(typed).map_err(|e| {
                    let key = e.path().to_string();
                    file_error(p, &text, e.inner(), Some(&key))
                })?;
                toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?
            }
            None => toml::Table::new(),
        };
        let defaults = toml::Table::try_from(Config::default()).context("serializing defaults")?;
        // (section.key, variable) of every setting the environment gave.
        let mut from_env: Vec<(String, String)> = Vec::new();
        for (name, value) in env {
            let Some(rest) = name.strip_prefix("COLLOQUY_") else {
                continue;
            };
            if DIRECT_ENV.contains(&name.as_str()) {
                continue;
            }
            let Some((section, key)) = find_key(&defaults, rest) else {
                bail!("{name}: unknown setting (expected COLLOQUY_<SECTION>_<KEY>, e.g. COLLOQUY_SERVER_LISTEN)");
            };
            let parsed: toml::Value = format!("v = {value}")
                .parse::<toml::Table>()
                .ok()
                .and_then(|mut t| t.remove("v"))
                .unwrap_or(toml::Value::String(value.clone()));
            from_env.push((format!("{section}.{key}"), format!("{name}={value}")));
            let section = table
                .entry(section)
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            match section.as_table_mut() {
                Some(t) => {
                    t.insert(key, parsed);
                }
                None => bail!("{name}: the config file has a value where the section should be"),
            }
        }
        let cfg: Config = serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(
            |e: serde_path_to_error::Error<toml::de::Error>| {
                let key = e.path().to_string();
                let source = from_env
                    .iter()
                    .find(|(k, _)| *k == key)
                    .map(|(_, var)| var.clone())
                    .or_else(|| path.map(|p| p.display().to_string()))
                    .unwrap_or_else(|| "environment".into());
                anyhow::anyhow!("{source}: {key}: {}", e.inner().message().trim_end())
            },
        )?;
        cfg.check()?;
        Ok(cfg)
    }

    fn check(&self) -> anyhow::Result<()> {
        self.server
            .listen
            .parse::<std::net::SocketAddr>()
            .with_context(|| {
                format!(
                    "server.listen: `{}` is not an address like 127.0.0.1:8080",
                    self.server.listen
                )
            })?;
        if self.server.nlu_workers == 0 || self.server.max_connections == 0 {
            bail!("server.nlu_workers and server.max_connections must be at least 1");
        }
        self.auth.validate()?;
        self.bus.validate()?;
        if self.limits.max_wait_ms > 10_000 {
            bail!("limits.max_wait_ms: at most 10000");
        }
        colloquy_gateway::input::InputPolicy::new(&self.limits).map_err(|e| anyhow::anyhow!(e))?;
        self.store.validate()?;
        if self.cluster.heartbeat * 2 > self.cluster.member_ttl {
            bail!("cluster.member_ttl must be at least twice cluster.heartbeat, or live workers expire between heartbeats");
        }
        self.telemetry.check()?;
        Ok(())
    }
}

/// `FILE:LINE: KEY: problem`, as precise as the error allows.
fn file_error(path: &Path, text: &str, e: &toml::de::Error, key: Option<&str>) -> anyhow::Error {
    let line = e
        .span()
        .map(|s| text[..s.start].matches('\n').count() + 1)
        .or_else(|| unknown_key_line(text, e.message()));
    let at = line.map(|l| format!(":{l}")).unwrap_or_default();
    let key = key
        .filter(|k| !k.is_empty() && *k != ".")
        .map(|k| format!("{k}: "))
        .unwrap_or_default();
    anyhow::anyhow!("{}{at}: {key}{}", path.display(), e.message().trim_end())
}

/// toml does not always carry a span for unknown keys: find the line that
/// defines the key named in the message.
fn unknown_key_line(text: &str, message: &str) -> Option<usize> {
    let key = message.strip_prefix("unknown field `")?.split('`').next()?;
    text.lines()
        .position(|l| {
            let l = l.trim_start().trim_start_matches('[');
            l.strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with(['=', ']', '.']))
        })
        .map(|i| i + 1)
}

/// `SERVER_LISTEN` → ("server", "listen"), matched against the known keys.
fn find_key(defaults: &toml::Table, rest: &str) -> Option<(String, String)> {
    let rest = rest.to_ascii_lowercase();
    defaults.iter().find_map(|(section, v)| {
        let key = rest.strip_prefix(&format!("{section}_"))?;
        v.as_table()?
            .contains_key(key)
            .then(|| (section.clone(), key.to_string()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Iterator<Item = (String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<Vec<_>>()
            .into_iter()
    }

    #[test]
    fn defaults_then_file_then_environment() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(
            &p,
            "[server]\nlisten = \"127.0.0.1:9000\"\n[bus]\npartitions = 4\n",
        )
        .unwrap();
        let c = Config::load(
            Some(&p),
            env(&[
                ("COLLOQUY_BUS_PARTITIONS", "16"),
                ("COLLOQUY_JWT_SECRET", "x"),
                ("PATH", "/bin"),
            ]),
        )
        .unwrap();
        assert_eq!(c.server.listen, "127.0.0.1:9000");
        assert_eq!(c.bus.partitions, 16);
        assert_eq!(c.limits.max_body_bytes, 65536);
        let c = Config::load(None, env(&[("COLLOQUY_SERVER_DATA_DIR", "/tmp/x")])).unwrap();
        assert_eq!(c.server.data_dir, PathBuf::from("/tmp/x"));
    }

    #[test]
    fn unknown_keys_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "[server]\nlisen = \"127.0.0.1:9000\"\n").unwrap();
        let e = Config::load(Some(&p), env(&[])).unwrap_err().to_string();
        assert!(
            e.contains("c.toml:2: server.lisen: unknown field `lisen`"),
            "{e}"
        );
        let e = Config::load(None, env(&[("COLLOQUY_SERVER_LISEN", "x")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("COLLOQUY_SERVER_LISEN: unknown setting"), "{e}");
        let e = Config::load(None, env(&[("COLLOQUY_SERVER_LISTEN", "nowhere")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("server.listen"), "{e}");
    }

    #[test]
    fn durations_are_read_as_durations_with_precise_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(
            &p,
            "[server]\nshutdown_timeout = \"2s\"\n[cluster]\nheartbeat = \"100ms\"\n",
        )
        .unwrap();
        let c = Config::load(Some(&p), env(&[])).unwrap();
        assert_eq!(c.server.shutdown_timeout, Duration::from_secs(2));
        assert_eq!(c.cluster.heartbeat, Duration::from_millis(100));

        std::fs::write(
            &p,
            "[server]\nlisten = \"127.0.0.1:1\"\nrequest_timeout = \"soon\"\n",
        )
        .unwrap();
        let e = Config::load(Some(&p), env(&[])).unwrap_err().to_string();
        assert!(
            e.contains("c.toml:3: server.request_timeout: `soon` is not a duration"),
            "{e}"
        );
        let e = Config::load(None, env(&[("COLLOQUY_SERVER_HEADER_TIMEOUT", "0s")]))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(
                "COLLOQUY_SERVER_HEADER_TIMEOUT=0s: server.header_timeout: `0s` is not a duration"
            ),
            "{e}"
        );
    }

    #[test]
    fn telemetry_is_off_unless_an_endpoint_is_given_and_checked_when_it_is() {
        let c = Config::load(None, env(&[])).unwrap();
        assert_eq!(c.telemetry, Telemetry::default());
        assert!(c.telemetry.endpoint.is_empty() && !c.telemetry.user_id_baggage);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(
            &p,
            "[telemetry]\nendpoint = \"http://127.0.0.1:4318/\"\nsampling_ratio = 0.1\n",
        )
        .unwrap();
        let c = Config::load(
            Some(&p),
            env(&[
                ("COLLOQUY_TELEMETRY_USER_ID_BAGGAGE", "true"),
                ("COLLOQUY_TELEMETRY_WORKER_SERVICE_NAME", "chat-worker"),
            ]),
        )
        .unwrap();
        assert_eq!(c.telemetry.traces_url(), "http://127.0.0.1:4318/v1/traces");
        assert_eq!(c.telemetry.sampling_ratio, 0.1);
        assert!(c.telemetry.user_id_baggage);
        assert_eq!(c.telemetry.worker_service_name, "chat-worker");
        assert_eq!(c.telemetry.gateway_service_name, "colloquy-gateway");

        for (var, value, problem) in [
            (
                "COLLOQUY_TELEMETRY_SAMPLING_RATIO",
                "1.5",
                "not between 0.0 and 1.0",
            ),
            (
                "COLLOQUY_TELEMETRY_ENDPOINT",
                "https://collector:4318",
                "not an http:// URL",
            ),
            ("COLLOQUY_TELEMETRY_ENDPOINT", "http://", "not a URL"),
            (
                "COLLOQUY_TELEMETRY_SERVE_SERVICE_NAME",
                " ",
                "must not be empty",
            ),
        ] {
            let e = Config::load(None, env(&[(var, value)]))
                .unwrap_err()
                .to_string();
            assert!(e.contains("telemetry.") && e.contains(problem), "{e}");
        }
        std::fs::write(&p, "[telemetry]\nendpoints = \"http://x\"\n").unwrap();
        let e = Config::load(Some(&p), env(&[])).unwrap_err().to_string();
        assert!(
            e.contains("c.toml:2: telemetry.endpoints: unknown field"),
            "{e}"
        );
    }

    #[test]
    fn event_log_settings_are_checked_before_anything_opens() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "[store.eventlog]\nsegment_bytes = 100\n").unwrap();
        let e = Config::load(Some(&p), env(&[])).unwrap_err().to_string();
        assert!(
            e.contains("store.eventlog") && e.contains("at least 4096"),
            "{e}"
        );
        std::fs::write(&p, "[store.eventlog]\nsegment_bytes = 4096\n").unwrap();
        assert_eq!(
            Config::load(Some(&p), env(&[]))
                .unwrap()
                .store
                .eventlog
                .segment_bytes,
            4096
        );
    }
}

//! Settings for the server roles: one TOML file plus `COLLOQUY_*`
//! environment overrides. Unknown keys are an error, in the file and in
//! the environment alike (`COLLOQUY_SECTION_KEY`).

use anyhow::{bail, Context};
use colloquy_bus::kafka::KafkaConfig;
use colloquy_bus::EmbeddedConfig;
use colloquy_gateway::auth::AuthConfig;
use colloquy_gateway::input::Limits;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

// `[store]` is the store crate's, which also opens what it picks.
pub use colloquy_store::l1::L1Backend;
pub use colloquy_store::{StoreBackend, StoreConfig};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: Server,
    pub auth: AuthConfig,
    pub limits: Limits,
    pub bus: BusSettings,
    pub store: StoreConfig,
    pub cluster: ClusterSettings,
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
    pub shutdown_timeout: String,
    /// Longest time a request may take once its headers are in.
    pub request_timeout: String,
    /// Longest time a client may take to send a request's headers; also
    /// how long an idle keep-alive connection is kept open.
    pub header_timeout: String,
    /// Connections open at once; more wait in the listen backlog.
    pub max_connections: usize,
}

impl Default for Server {
    fn default() -> Self {
        Server {
            listen: "127.0.0.1:8080".into(),
            data_dir: "data".into(),
            bot: "bots/shoe-store".into(),
            nlu_workers: 2,
            shutdown_timeout: "10s".into(),
            request_timeout: "30s".into(),
            header_timeout: "10s".into(),
            max_connections: 10_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BusSettings {
    /// `embedded` (one process, on disk in the data directory) or `kafka`.
    pub backend: BusBackend,
    /// Partitions of each stage topic created; fixed once it exists.
    pub partitions: u32,
    /// Messages handled at once per partition (different users).
    pub max_in_flight: usize,
    /// Attempts before a message goes to the dead-letter topic.
    pub max_attempts: u32,
    pub embedded: EmbeddedConfig,
    pub kafka: KafkaConfig,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BusBackend {
    #[default]
    Embedded,
    Kafka,
}

impl Default for BusSettings {
    fn default() -> Self {
        BusSettings {
            backend: BusBackend::Embedded,
            partitions: 8,
            max_in_flight: 256,
            max_attempts: 3,
            embedded: EmbeddedConfig::default(),
            kafka: KafkaConfig::default(),
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
    pub member_ttl: String,
    /// How often workers heartbeat and look for ring changes.
    pub heartbeat: String,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings {
            redis_url: "redis://127.0.0.1:6379".into(),
            key_prefix: "colloquy".into(),
            member_ttl: "3s".into(),
            heartbeat: "250ms".into(),
        }
    }
}

/// Environment variables that are not config keys but are read directly.
const DIRECT_ENV: &[&str] = &[
    "COLLOQUY_JWT_SECRET",
    "COLLOQUY_SNAPSHOT_KEY",
    "COLLOQUY_LOG_FORMAT",
    "COLLOQUY_DATA_DIR",
    "COLLOQUY_DATA",
    "COLLOQUY_BENCH_OUT",
];

impl Config {
    /// Read `path` (if any), apply the environment, and check the result.
    pub fn load(
        path: Option<&Path>,
        env: impl Iterator<Item = (String, String)>,
    ) -> anyhow::Result<Config> {
        let mut table: toml::Table = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("reading {}", p.display()))?;
                // Typed first: its errors point at the line of the bad key.
                toml::from_str::<Config>(&text).map_err(|e| {
                    let line = e
                        .span()
                        .map(|s| text[..s.start].matches('\n').count() + 1)
                        .or_else(|| unknown_key_line(&text, e.message()));
                    let at = line.map(|l| format!(":{l}")).unwrap_or_default();
                    anyhow::anyhow!("{}{at}: {}", p.display(), e.message().trim_end())
                })?;
                toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?
            }
            None => toml::Table::new(),
        };
        let defaults = toml::Table::try_from(Config::default()).context("serializing defaults")?;
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
                .unwrap_or(toml::Value::String(value));
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
        let cfg: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| {
                anyhow::anyhow!(
                    "{}: {}",
                    path.map(|p| p.display().to_string())
                        .unwrap_or_else(|| "environment".into()),
                    e
                )
            })?;
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
        for (field, v) in [
            ("server.shutdown_timeout", &self.server.shutdown_timeout),
            ("server.request_timeout", &self.server.request_timeout),
            ("server.header_timeout", &self.server.header_timeout),
            ("cluster.member_ttl", &self.cluster.member_ttl),
            ("cluster.heartbeat", &self.cluster.heartbeat),
        ] {
            if colloquy_core::duration::parse_ms(v).is_none() {
                bail!("{field}: `{v}` is not a duration (e.g. 500ms, 30s, 5m)");
            }
        }
        if self.bus.partitions == 0
            || self.bus.max_in_flight == 0
            || self.bus.max_attempts == 0
            || self.server.nlu_workers == 0
            || self.server.max_connections == 0
        {
            bail!("bus.partitions, bus.max_in_flight, bus.max_attempts, server.nlu_workers and server.max_connections must be at least 1");
        }
        if self.limits.max_wait_ms > 10_000 {
            bail!("limits.max_wait_ms: at most 10000");
        }
        colloquy_gateway::input::InputPolicy::new(&self.limits).map_err(|e| anyhow::anyhow!(e))?;
        self.store.validate()?;
        if Config::ms(&self.cluster.heartbeat) * 2 > Config::ms(&self.cluster.member_ttl) {
            bail!("cluster.member_ttl must be at least twice cluster.heartbeat, or live workers expire between heartbeats");
        }
        Ok(())
    }

    pub fn ms(v: &str) -> i64 {
        colloquy_core::duration::parse_ms(v).unwrap_or(0)
    }
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
        assert!(e.contains("c.toml:2: unknown field `lisen`"), "{e}");
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

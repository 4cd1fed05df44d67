//! `[bus]` of colloquy's config file, and [`open`], which makes a bus of it.
//!
//! Every backend's settings are here whether or not the backend is compiled
//! in, so a config file means the same to every build: a build without
//! Kafka refuses `backend = "kafka"` when validating or opening, never the
//! `[bus.kafka]` section of a file written for another build.

use crate::runner::{RetryPolicy, StageConfig};
use crate::{Bus, BusError, EmbeddedBus, EmbeddedConfig};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BusConfig {
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

impl Default for BusConfig {
    fn default() -> Self {
        BusConfig {
            backend: BusBackend::Embedded,
            partitions: 8,
            max_in_flight: 256,
            max_attempts: 3,
            embedded: EmbeddedConfig::default(),
            kafka: KafkaConfig::default(),
        }
    }
}

impl BusConfig {
    /// Check everything [`open`] would, without opening anything: the
    /// settings of the chosen backend only, since the other's are unused.
    pub fn validate(&self) -> Result<(), BusError> {
        if self.partitions == 0 || self.max_in_flight == 0 || self.max_attempts == 0 {
            return Err(BusError::Config(
                "bus.partitions, bus.max_in_flight and bus.max_attempts must be at least 1".into(),
            ));
        }
        let problem = match self.backend {
            BusBackend::Embedded => self
                .embedded
                .problem()
                .map(|p| format!("bus.embedded: {p}")),
            BusBackend::Kafka if !cfg!(feature = "kafka") => return Err(kafka_not_built()),
            BusBackend::Kafka => self.kafka.problem().map(|p| format!("bus.kafka: {p}")),
        };
        problem.map_or(Ok(()), |p| Err(BusError::Config(p)))
    }

    /// The settings of a stage consuming `topic` as `group`: the runner's
    /// defaults within this section's bounds.
    pub fn stage(&self, topic: &str, group: &str) -> StageConfig {
        StageConfig {
            max_in_flight: self.max_in_flight,
            retry: RetryPolicy {
                max_attempts: self.max_attempts,
                ..RetryPolicy::default()
            },
            ..StageConfig::new(topic, group)
        }
    }
}

/// The bus `config` chooses, validated first. The embedded bus lives in
/// `data_dir/bus`; Kafka keeps nothing on this machine.
pub fn open(config: &BusConfig, data_dir: &Path) -> Result<Arc<dyn Bus>, BusError> {
    config.validate()?;
    Ok(match config.backend {
        BusBackend::Embedded => Arc::new(EmbeddedBus::open(
            &data_dir.join("bus"),
            config.embedded.clone(),
        )?),
        #[cfg(feature = "kafka")]
        BusBackend::Kafka => Arc::new(crate::KafkaBus::new(config.kafka.clone())?),
        #[cfg(not(feature = "kafka"))]
        BusBackend::Kafka => return Err(kafka_not_built()),
    })
}

fn kafka_not_built() -> BusError {
    BusError::Config(
        "bus.backend = \"kafka\" needs a colloquy built with the `kafka` cargo feature \
         (it is on by default)"
            .into(),
    )
}

/// Properties the Kafka backend's guarantees rest on; `properties` may not
/// change them.
const FIXED_PROPERTIES: [&str; 7] = [
    "enable.idempotence",
    "acks",
    "request.required.acks",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "group.id",
    "bootstrap.servers",
];

/// The Kafka backend's settings (see `colloquy_bus::kafka`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap brokers, `host:port` each.
    pub brokers: Vec<String>,
    /// Partitions of the stage topics colloquy creates. Fixed once a topic
    /// exists: more partitions would move keys and break per-key order.
    pub partitions: u32,
    /// Replicas of each topic created; unset, the broker's
    /// `default.replication.factor`.
    pub replication_factor: Option<u16>,
    /// Topic configuration for the topics created (`retention.ms`, …).
    pub topic_config: BTreeMap<String, String>,
    /// `client.id` of every client, for the broker's logs and quotas.
    pub client_id: String,
    /// How long a metadata, offset or topic request may take, and how long
    /// a fetch waits for records known to exist before it gives up.
    pub request_timeout_ms: u64,
    /// How long a publish may wait for the broker's acknowledgement (and
    /// librdkafka may retry it) before it fails as transient.
    pub delivery_timeout_ms: u64,
    /// Records prefetched per partition, at most, in KiB: the memory a
    /// partition's consumer holds ahead of the stage.
    pub prefetch_kbytes: u32,
    /// A partition's consumer nobody fetched from this long is closed (the
    /// partition moved to another process, or its stage stopped).
    pub idle_reader_ms: u64,
    /// Further librdkafka properties for every client (`security.protocol`,
    /// `sasl.*`, `linger.ms`, …), applied last. The ones the guarantees
    /// rest on (acks, idempotence, offset storing, group ids) are refused.
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: vec!["127.0.0.1:9092".to_string()],
            partitions: 8,
            replication_factor: None,
            topic_config: BTreeMap::new(),
            client_id: "colloquy".to_string(),
            request_timeout_ms: 10_000,
            delivery_timeout_ms: 30_000,
            prefetch_kbytes: 1024,
            idle_reader_ms: 60_000,
            properties: BTreeMap::new(),
        }
    }
}

impl KafkaConfig {
    /// What is wrong with these settings, if anything.
    pub(crate) fn problem(&self) -> Option<String> {
        if self.brokers.is_empty() {
            Some("brokers must name at least one broker".to_string())
        } else if self.partitions == 0 {
            Some("partitions must be at least 1".to_string())
        } else if self.replication_factor == Some(0) {
            Some("replication_factor must be at least 1".to_string())
        } else if [
            self.request_timeout_ms,
            self.delivery_timeout_ms,
            self.idle_reader_ms,
        ]
        .contains(&0)
        {
            Some(
                "request_timeout_ms, delivery_timeout_ms and idle_reader_ms must be above 0"
                    .to_string(),
            )
        } else if self.prefetch_kbytes == 0 {
            Some("prefetch_kbytes must be at least 1".to_string())
        } else {
            self.properties
                .keys()
                .find(|key| FIXED_PROPERTIES.contains(&key.as_str()))
                .map(|key| format!("property {key} is set by the Kafka backend itself"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How colloquy's config file holds the section.
    #[derive(Debug, Deserialize, Serialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        bus: BusConfig,
    }

    fn parse(toml: &str) -> Result<BusConfig, String> {
        toml::from_str::<File>(toml)
            .map(|file| file.bus)
            .map_err(|e| e.to_string())
    }

    fn config_error(result: Result<(), BusError>) -> String {
        match result {
            Err(BusError::Config(problem)) => problem,
            other => panic!("expected a configuration error, got {other:?}"),
        }
    }

    #[test]
    fn every_key_of_the_section_is_read() {
        let bus = parse(
            r#"
            [bus]
            backend = "kafka"
            partitions = 4
            max_in_flight = 16
            max_attempts = 5

            [bus.embedded]
            segment_bytes = 4096
            max_backlog = 10
            max_queued = 3
            max_record_bytes = 1000
            tail_cache_bytes = 0

            [bus.kafka]
            brokers = ["k1:9092", "k2:9092"]
            partitions = 3
            replication_factor = 2
            client_id = "c"
            request_timeout_ms = 1
            delivery_timeout_ms = 2
            prefetch_kbytes = 3
            idle_reader_ms = 4
            topic_config = { "retention.ms" = "1000" }
            properties = { "linger.ms" = "5" }
            "#,
        )
        .unwrap();
        let expected = BusConfig {
            backend: BusBackend::Kafka,
            partitions: 4,
            max_in_flight: 16,
            max_attempts: 5,
            embedded: EmbeddedConfig {
                segment_bytes: 4096,
                max_backlog: 10,
                max_queued: 3,
                max_record_bytes: 1000,
                tail_cache_bytes: 0,
            },
            kafka: KafkaConfig {
                brokers: vec!["k1:9092".into(), "k2:9092".into()],
                partitions: 3,
                replication_factor: Some(2),
                topic_config: [("retention.ms".into(), "1000".into())].into(),
                client_id: "c".into(),
                request_timeout_ms: 1,
                delivery_timeout_ms: 2,
                prefetch_kbytes: 3,
                idle_reader_ms: 4,
                properties: [("linger.ms".into(), "5".into())].into(),
            },
        };
        assert_eq!(bus, expected);
    }

    #[test]
    fn missing_keys_are_defaults_and_unknown_keys_errors() {
        assert_eq!(parse("[bus]\n").unwrap(), BusConfig::default());
        let some = parse("[bus]\nmax_attempts = 7\n[bus.kafka]\nclient_id = \"x\"\n").unwrap();
        assert_eq!(
            (some.backend, some.max_attempts, some.partitions),
            (BusBackend::Embedded, 7, 8)
        );
        assert_eq!(some.kafka.client_id, "x");
        assert_eq!(some.kafka.brokers, KafkaConfig::default().brokers);
        for unknown in [
            "[bus]\nbackends = \"kafka\"\n",
            "[bus.embedded]\nmax_backlogs = 1\n",
            "[bus.kafka]\nbroker = [\"k1:9092\"]\n",
        ] {
            let e = parse(unknown).unwrap_err();
            assert!(e.contains("unknown field"), "{unknown}: {e}");
        }
        let e = parse("[bus]\nbackend = \"rabbitmq\"\n").unwrap_err();
        assert!(e.contains("embedded") && e.contains("kafka"), "{e}");
    }

    /// colloquy finds the keys its environment overrides may set in the
    /// defaults written out as TOML.
    #[test]
    fn defaults_survive_a_trip_through_toml() {
        let file = File {
            bus: BusConfig::default(),
        };
        let text = toml::to_string(&file).unwrap();
        assert_eq!(parse(&text).unwrap(), BusConfig::default());
        let table: toml::Table = text.parse().unwrap();
        let bus = table["bus"].as_table().unwrap();
        assert_eq!(bus["backend"].as_str(), Some("embedded"));
        assert!(bus["kafka"].as_table().unwrap().contains_key("brokers"));
    }

    #[test]
    fn config_has_defaults_and_refuses_unknown_keys() {
        let cfg: KafkaConfig = serde_json::from_str(
            r#"{"brokers": ["k1:9092", "k2:9092"], "replication_factor": 3,
                "properties": {"linger.ms": "10"}}"#,
        )
        .unwrap();
        assert_eq!(cfg.partitions, 8);
        assert_eq!(cfg.replication_factor, Some(3));
        assert_eq!(cfg.problem(), None);
        let unknown = serde_json::from_str::<KafkaConfig>(r#"{"broker": ["k1:9092"]}"#);
        assert!(unknown.is_err());
    }

    #[test]
    fn config_guards_the_properties_delivery_rests_on() {
        for key in ["enable.auto.offset.store", "acks", "group.id"] {
            let mut cfg = KafkaConfig::default();
            cfg.properties.insert(key.to_string(), "x".to_string());
            let problem = cfg.problem().unwrap();
            assert!(problem.contains(key), "{problem}");
        }
        let no_brokers = KafkaConfig {
            brokers: vec![],
            ..KafkaConfig::default()
        };
        assert!(no_brokers.problem().is_some());
    }

    #[test]
    fn validation_names_the_setting_at_fault() {
        BusConfig::default().validate().unwrap();
        for zero in [
            BusConfig {
                partitions: 0,
                ..BusConfig::default()
            },
            BusConfig {
                max_in_flight: 0,
                ..BusConfig::default()
            },
            BusConfig {
                max_attempts: 0,
                ..BusConfig::default()
            },
        ] {
            let problem = config_error(zero.validate());
            assert!(problem.contains("bus.max_attempts"), "{problem}");
        }
        let tiny_segments = BusConfig {
            embedded: EmbeddedConfig {
                segment_bytes: 0,
                ..EmbeddedConfig::default()
            },
            ..BusConfig::default()
        };
        let problem = config_error(tiny_segments.validate());
        assert!(
            problem.starts_with("bus.embedded: segment_bytes"),
            "{problem}"
        );
        // The Kafka section is not used by the embedded backend.
        let no_brokers = BusConfig {
            kafka: KafkaConfig {
                brokers: vec![],
                ..KafkaConfig::default()
            },
            ..BusConfig::default()
        };
        no_brokers.validate().unwrap();
    }

    #[cfg(feature = "kafka")]
    #[test]
    fn kafka_settings_are_checked_when_kafka_is_chosen() {
        let kafka = BusConfig {
            backend: BusBackend::Kafka,
            ..BusConfig::default()
        };
        kafka.validate().unwrap();
        let mut no_brokers = kafka.clone();
        no_brokers.kafka.brokers.clear();
        let problem = config_error(no_brokers.validate());
        assert!(problem.starts_with("bus.kafka: brokers"), "{problem}");
        let mut fixed = kafka;
        fixed.kafka.properties.insert("acks".into(), "1".into());
        let problem = config_error(fixed.validate());
        assert!(problem.contains("property acks"), "{problem}");
        // Refused before any client is made.
        assert!(matches!(
            open(&no_brokers, Path::new("/nonexistent")),
            Err(BusError::Config(_))
        ));
    }

    #[cfg(not(feature = "kafka"))]
    #[test]
    fn kafka_without_the_feature_is_refused_by_name() {
        let kafka = BusConfig {
            backend: BusBackend::Kafka,
            ..BusConfig::default()
        };
        let problem = config_error(kafka.validate());
        assert!(
            problem.contains("bus.backend = \"kafka\"")
                && problem.contains("`kafka` cargo feature"),
            "{problem}"
        );
        let opened = open(&kafka, Path::new("/nonexistent")).map(drop);
        assert_eq!(config_error(opened), problem);
    }

    #[test]
    fn stages_take_the_sections_bounds() {
        let bus = BusConfig {
            max_in_flight: 7,
            max_attempts: 9,
            ..BusConfig::default()
        };
        let stage = bus.stage("chat.in", "workers");
        assert_eq!(
            (stage.topic.as_str(), stage.group.as_str()),
            ("chat.in", "workers")
        );
        let defaults = StageConfig::new("chat.in", "workers");
        let expected = StageConfig {
            max_in_flight: 7,
            retry: RetryPolicy {
                max_attempts: 9,
                ..defaults.retry
            },
            ..defaults
        };
        assert_eq!(stage, expected);
    }
}

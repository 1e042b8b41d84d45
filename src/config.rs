//! Configuration: one TOML file, parsed and checked before anything runs.
//!
//! Unknown keys are errors (a typo never silently falls back to a default). Secrets are
//! referenced (`{ env = "NAME" }`, `{ file = "path" }`), resolved at load and never
//! printed. This is the lowest layer: it describes what is written and checks it, and
//! imports nothing it configures (no vendor, engine or app code); building the sinks from
//! it is [`crate::load`]'s job, and each vendor's checks of its own table live with the
//! vendor.
//!
//! # Files
//! - `config.rs`: [`Config`] (the whole file: parse, check), [`ConfigError`], `[metrics]`, `[log]`.
//! - `config/kafka.rs`: `[kafka]` and `[kafka.properties]`, their defaults and secret resolution.
//! - `config/sink.rs`: `[[sinks]]` common settings (rate limit, retry, batch, heartbeats, daily
//!   push), defaults and checks, [`parse_time`].
//! - `config/bindings.rs`: lot bindings inline or from CSV, with their secrets resolved.
//! - [`vendor`] (`config/vendor.rs`, `config/vendor/`): the four vendor tables as written
//!   (`[sinks.barrier_coupon]`, ...), the enums their values take, and [`VendorKind`].

mod bindings;
mod kafka;
mod sink;
pub mod vendor;

pub use bindings::{load_bindings, Binding, BindingConfig, Bindings};
pub use kafka::{KafkaConfig, PropertyValue};
pub use sink::{parse_time, BatchConfig, HeartbeatLots, RateLimitConfig, RetryConfig, SinkConfig};
pub use vendor::VendorKind;

use crate::secret::SecretError;
use serde::Deserialize;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// Why a configuration is unusable. Messages name the file, sink and key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The TOML is malformed or has unknown or mistyped keys.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and key.
        message: String,
    },
    /// A value is out of range or inconsistent.
    #[error("{0}")]
    Invalid(String),
    /// A secret could not be resolved.
    #[error("{context}: {source}")]
    Secret {
        /// Which sink and key.
        context: String,
        /// What went wrong.
        source: SecretError,
    },
    /// A sink's `[sinks.network]` settings are unusable.
    #[error("sink {sink:?} network.{source}")]
    Network {
        /// The sink.
        sink: String,
        /// What is wrong.
        source: crate::net::NetworkError,
    },
    /// A binding CSV file is malformed.
    #[error("{path}: {message}")]
    Csv {
        /// The file.
        path: PathBuf,
        /// Row and column at fault.
        message: String,
    },
}

pub(crate) fn invalid(msg: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(msg.into())
}

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Kafka cluster, topics and consumer settings.
    pub kafka: KafkaConfig,
    /// Metrics and health endpoints.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// The vendor platforms to deliver to.
    pub sinks: Vec<SinkConfig>,
}

/// `[metrics]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address of `/metrics`, `/healthz` and `/readyz`.
    #[serde(default = "default_metrics_listen")]
    pub listen: String,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig { listen: default_metrics_listen() }
    }
}

fn default_metrics_listen() -> String {
    "127.0.0.1:9898".into()
}

/// `[log]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// JSON lines instead of text.
    #[serde(default)]
    pub json: bool,
    /// `tracing` filter, e.g. `info,lotbridge=debug` (overridden by `RUST_LOG`).
    #[serde(default)]
    pub filter: Option<String>,
}

impl Config {
    /// Parses TOML text.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse { path: path.to_path_buf(), message: e.to_string() })
    }

    /// Reads and parses a file (no checks yet: see [`Config::check`]).
    pub fn read(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        Config::parse(&text, path)
    }

    /// Checks every value that does not need a vendor's own rules and resolves the
    /// `[kafka.properties]` secrets; `base` is the config file's folder.
    pub fn check(mut self, base: &Path) -> Result<Config, ConfigError> {
        self.validate()?;
        self.kafka.resolve_properties(base)?;
        Ok(self)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let k = &self.kafka;
        if k.brokers.trim().is_empty() {
            return Err(invalid("kafka.brokers: must name at least one broker"));
        }
        if k.topics.is_empty() || k.topics.iter().any(|t| t.trim().is_empty()) {
            return Err(invalid("kafka.topics: must list at least one topic, none empty"));
        }
        for (key, topic) in [("dead_letter_topic", &k.dead_letter_topic), ("results_topic", &k.results_topic)] {
            if k.topics.contains(topic) {
                return Err(invalid(format!("kafka.{key}: {topic:?} is also an input topic")));
            }
        }
        if self.sinks.is_empty() {
            return Err(invalid("sinks: configure at least one [[sinks]] entry"));
        }
        let mut names = HashSet::new();
        for sink in &self.sinks {
            if !names.insert(sink.name.as_str()) {
                return Err(invalid(format!("sinks: the name {:?} is used twice", sink.name)));
            }
            sink.validate()?;
        }
        Ok(())
    }
}

//! Configuration: one TOML file, parsed and checked before anything runs.
//!
//! Unknown keys are errors (a typo never silently falls back to a default). Secrets are
//! referenced (`{ env = "NAME" }`, `{ file = "path" }`), resolved at load and never
//! printed. Lot bindings come inline or from a CSV file with the columns
//! `lot,vendor_lot,token` (`token` as `env:NAME` or `file:PATH`, optional). Building the
//! sinks from a checked configuration is [`crate::load`]'s job.

use crate::net::NetworkConfig;
use crate::photo::PhotoPolicy;
use crate::secret::{Secret, SecretError, SecretRef};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub mod vendor;

pub use vendor::VendorKind;

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

/// `[kafka]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// `bootstrap.servers`.
    pub brokers: String,
    /// Topics carrying contract events.
    pub topics: Vec<String>,
    /// Each sink consumes as the group `<group_prefix>.<sink name>`.
    #[serde(default = "default_group_prefix")]
    pub group_prefix: String,
    /// Where undeliverable records go, with the reason in headers.
    #[serde(default = "default_dead_letter_topic")]
    pub dead_letter_topic: String,
    /// Where `member.coupons.listed` answers go.
    #[serde(default = "default_results_topic")]
    pub results_topic: String,
    /// How often stored offsets are committed, in milliseconds.
    #[serde(default = "default_commit_interval_ms")]
    pub commit_interval_ms: u64,
    /// How long a revoked or stopping sink may drain before it lets go, in milliseconds
    /// (keep it below `session.timeout.ms`).
    #[serde(default = "default_drain_timeout_ms")]
    pub drain_timeout_ms: u64,
    /// Largest record accepted, in bytes; larger ones are dead-lettered.
    #[serde(default = "default_max_record_bytes")]
    pub max_record_bytes: usize,
    /// Topics the daily lot list (Inspur ISP) is rebuilt from at start, read from the
    /// beginning: point this at a compacted topic of lot events (default: `topics`).
    #[serde(default)]
    pub lot_topics: Option<Vec<String>>,
    /// Pass-through librdkafka properties (SASL, SSL, timeouts...), applied last. A value
    /// is a string or a secret reference (`{ env = "NAME" }`, `{ file = "path" }`).
    #[serde(default)]
    pub properties: BTreeMap<String, PropertyValue>,
}

/// One `[kafka.properties]` value: plain text, or a secret that is never printed.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(
    untagged,
    expecting = "a string (\"5000\", quoted) or a secret reference ({ env = \"NAME\" } or { file = \"path\" })"
)]
pub enum PropertyValue {
    /// Written inline (`"SASL_SSL"`).
    Text(String),
    /// `{ env = "NAME" }`, `{ file = "path" }` or `{ value = "..." }`.
    Secret(SecretRef),
}

impl std::fmt::Debug for PropertyValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PropertyValue::Text(text) => write!(f, "{text:?}"),
            PropertyValue::Secret(reference) => write!(f, "{reference:?}"),
        }
    }
}

impl KafkaConfig {
    /// Reads every secret reference in `[kafka.properties]` (files relative to `base`, the
    /// config file's folder) and keeps the values inline, never printed. Sensitive keys
    /// written inline (`sasl.password = "..."`) become secrets too, so they never print.
    pub fn resolve_properties(&mut self, base: &Path) -> Result<(), ConfigError> {
        for (key, value) in self.properties.iter_mut() {
            let secret = match value {
                PropertyValue::Secret(reference) => reference
                    .resolve(base)
                    .map_err(|source| ConfigError::Secret { context: format!("kafka.properties.{key:?}"), source })?,
                PropertyValue::Text(text) if is_sensitive(key) => Secret::new(std::mem::take(text)),
                PropertyValue::Text(_) => continue,
            };
            *value = PropertyValue::Secret(SecretRef::Value(secret));
        }
        Ok(())
    }

    /// `[kafka.properties]` in config words for `check-config`; secrets show as `***`.
    pub fn properties_summary(&self) -> String {
        let shown = self.properties.iter().map(|(key, value)| match value {
            PropertyValue::Text(text) if !is_sensitive(key) => format!("{key}={text}"),
            _ => format!("{key}=***"),
        });
        shown.collect::<Vec<_>>().join(" ")
    }
}

/// Whether a property's value must never be printed even when written inline.
pub(crate) fn is_sensitive(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["password", "secret", "key.pem", "keystore", ".key", "token", "jaas", "oauthbearer.config"]
        .iter()
        .any(|word| key.contains(word))
}

fn default_group_prefix() -> String {
    "lotbridge".into()
}
fn default_dead_letter_topic() -> String {
    "lotbridge.dead-letters".into()
}
fn default_results_topic() -> String {
    "lotbridge.results".into()
}
fn default_commit_interval_ms() -> u64 {
    1_000
}
fn default_drain_timeout_ms() -> u64 {
    10_000
}
fn default_max_record_bytes() -> usize {
    10 * 1024 * 1024
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

/// One `[[sinks]]` entry: a vendor platform and the lots bound to it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// Unique name: consumer group suffix, metric label, dead-letter header.
    pub name: String,
    /// Inline lot bindings.
    #[serde(default)]
    pub bindings: Vec<BindingConfig>,
    /// A CSV file of lot bindings (relative to the config file).
    #[serde(default)]
    pub bindings_csv: Option<PathBuf>,
    /// Requests-per-second limits.
    #[serde(default)]
    pub rate_limit: RateLimitConfig,
    /// Retry policy.
    #[serde(default)]
    pub retry: RetryConfig,
    /// Batching policy.
    #[serde(default)]
    pub batch: BatchConfig,
    /// Most requests in flight at once for this sink (lanes run up to this many).
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// What to do with photos over the vendor's limit.
    #[serde(default)]
    pub photo: PhotoPolicy,
    /// Bytes of records this sink may hold in memory before it pauses its partitions.
    #[serde(default = "default_memory_budget_bytes")]
    pub memory_budget_bytes: usize,
    /// How this sink reaches its vendor: trusted CAs, client certificate, proxy, connect timeout.
    #[serde(default)]
    pub network: NetworkConfig,
    /// Timeout of one vendor request, in milliseconds.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// A lot is live while it sent anything within this many seconds (heartbeats in
    /// `heartbeat_lots = "live"` mode).
    #[serde(default = "default_live_window_secs")]
    pub live_window_secs: u64,
    /// Which lots get heartbeats, for vendors that require them: every bound lot whose
    /// partition this replica owns (`bound`, the default), or only lots live within
    /// `live_window_secs` (`live`).
    #[serde(default)]
    pub heartbeat_lots: HeartbeatLots,
    /// Heartbeat period in seconds for vendors that require heartbeats (default: the
    /// vendor's own, 60 s for Bingzhouxing; the vendor's at-most-once-a-minute limit still
    /// applies per lot).
    #[serde(default)]
    pub heartbeat_secs: Option<u64>,
    /// When vendors that want the full lot list daily (Inspur ISP) get it: `HH:MM` or
    /// `HH:MM:SS` in China time (UTC+8).
    #[serde(default = "default_daily_push_at")]
    pub daily_push_at: String,
    /// Barrier-gate coupon platform settings (exactly one vendor table per sink).
    #[serde(default)]
    pub barrier_coupon: Option<vendor::barrier::Config>,
    /// Inspur ISP settings.
    #[serde(default)]
    pub inspur_isp: Option<vendor::isp::Config>,
    /// Bingzhouxing settings.
    #[serde(default)]
    pub bingzhouxing: Option<vendor::bingzhouxing::Config>,
    /// zvcms settings.
    #[serde(default)]
    pub zvcms: Option<vendor::zvcms::Config>,
}

/// Parses a time of day written `HH:MM` or `HH:MM:SS` (`daily_push_at`).
pub fn parse_time(text: &str) -> Option<chrono::NaiveTime> {
    let parse = |format| chrono::NaiveTime::parse_from_str(text, format);
    parse("%H:%M:%S").or_else(|_| parse("%H:%M")).ok()
}

fn default_daily_push_at() -> String {
    "01:00".into()
}
fn default_concurrency() -> usize {
    32
}
fn default_memory_budget_bytes() -> usize {
    256 * 1024 * 1024
}
fn default_request_timeout_ms() -> u64 {
    10_000
}
fn default_live_window_secs() -> u64 {
    180
}

/// Which lots a sink sends heartbeats for (vendors that require a heartbeat per lot).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HeartbeatLots {
    /// Every bound lot whose partition this replica owns (Kafka's default partitioner,
    /// murmur2 of the lot code, over the first input topic's partitions): a quiet lot, or
    /// one that has sent nothing since a restart, stays online at the vendor.
    #[default]
    Bound,
    /// Only lots that sent something within `live_window_secs`: the vendor shows a lot
    /// offline once its own traffic stops.
    Live,
}

/// One inline binding.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BindingConfig {
    /// Platform lot code (the events' `lot`).
    pub lot: String,
    /// The vendor's code for the lot (defaults to `lot`).
    #[serde(default)]
    pub vendor_lot: Option<String>,
    /// Per-lot secret (Bingzhouxing's lot token).
    #[serde(default)]
    pub token: Option<SecretRef>,
}

/// `[sinks.rate_limit]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Sustained requests per second for the whole sink, shared by the replicas in
    /// proportion to the input partitions each owns.
    #[serde(default = "default_rps")]
    pub requests_per_second: u32,
    /// Requests allowed in a burst.
    #[serde(default = "default_burst")]
    pub burst: u32,
    /// Optional sustained requests per second per lot.
    #[serde(default)]
    pub per_lot_per_second: Option<u32>,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig { requests_per_second: default_rps(), burst: default_burst(), per_lot_per_second: None }
    }
}

fn default_rps() -> u32 {
    200
}
fn default_burst() -> u32 {
    50
}

/// `[sinks.retry]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// First backoff, in milliseconds.
    #[serde(default = "default_initial_ms")]
    pub initial_ms: u64,
    /// Longest backoff, in milliseconds.
    #[serde(default = "default_max_interval_ms")]
    pub max_interval_ms: u64,
    /// Growth factor between attempts.
    #[serde(default = "default_multiplier")]
    pub multiplier: f64,
    /// Dead-letter a record still failing after this many seconds (default: retry forever,
    /// the backlog stays in Kafka).
    #[serde(default)]
    pub give_up_after_secs: Option<u64>,
    /// Dead-letter a record still failing after this many attempts (default: retry
    /// forever). A sink fault (a hold) never counts towards either limit.
    #[serde(default)]
    pub give_up_after_attempts: Option<u32>,
    /// How many times a stale-signature answer is re-signed and retried before the record
    /// is dead-lettered.
    #[serde(default = "default_stale_signature_retries")]
    pub stale_signature_retries: u32,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            initial_ms: default_initial_ms(),
            max_interval_ms: default_max_interval_ms(),
            multiplier: default_multiplier(),
            give_up_after_secs: None,
            give_up_after_attempts: None,
            stale_signature_retries: default_stale_signature_retries(),
        }
    }
}

fn default_initial_ms() -> u64 {
    200
}
fn default_max_interval_ms() -> u64 {
    30_000
}
fn default_multiplier() -> f64 {
    2.0
}
fn default_stale_signature_retries() -> u32 {
    3
}

/// `[sinks.batch]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    /// Most records per request (capped by the vendor's own limit).
    #[serde(default = "default_max_records")]
    pub max_records: usize,
    /// Most serialized bytes per request.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: usize,
    /// How long a lane waits for more records before sending a partial batch, in milliseconds.
    #[serde(default = "default_linger_ms")]
    pub linger_ms: u64,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_records: default_max_records(),
            max_bytes: default_max_bytes(),
            linger_ms: default_linger_ms(),
        }
    }
}

fn default_max_records() -> usize {
    100
}
fn default_max_bytes() -> usize {
    4 * 1024 * 1024
}
fn default_linger_ms() -> u64 {
    20
}

/// A lot bound to a sink, with its secret resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// Platform lot code.
    pub lot: String,
    /// The vendor's code for it.
    pub vendor_lot: String,
    /// Its per-lot secret, if the vendor issues one.
    pub token: Option<Secret>,
}

/// The lots bound to one sink, by platform lot code.
#[derive(Debug, Clone, Default)]
pub struct Bindings(HashMap<String, Binding>);

impl Bindings {
    /// The binding of a platform lot.
    pub fn get(&self, lot: &str) -> Option<&Binding> {
        self.0.get(lot)
    }

    /// Number of bound lots.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no lot is bound.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Every platform lot code, sorted.
    pub fn lots(&self) -> Vec<String> {
        let mut lots: Vec<String> = self.0.keys().cloned().collect();
        lots.sort();
        lots
    }

    /// Every binding.
    pub fn iter(&self) -> impl Iterator<Item = &Binding> {
        self.0.values()
    }

    /// Builds bindings from a list (used by tests and the demo).
    pub fn from_list(list: Vec<Binding>) -> Self {
        Bindings(list.into_iter().map(|b| (b.lot.clone(), b)).collect())
    }
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

impl SinkConfig {
    /// Which vendor table is present; exactly one must be.
    pub fn kind(&self) -> Result<VendorKind, ConfigError> {
        let present: Vec<VendorKind> = [
            (self.barrier_coupon.is_some(), VendorKind::BarrierCoupon),
            (self.inspur_isp.is_some(), VendorKind::InspurIsp),
            (self.bingzhouxing.is_some(), VendorKind::Bingzhouxing),
            (self.zvcms.is_some(), VendorKind::Zvcms),
        ]
        .into_iter()
        .filter_map(|(on, kind)| on.then_some(kind))
        .collect();
        match present.as_slice() {
            [kind] => Ok(*kind),
            [] => Err(invalid(format!(
                "sink {:?}: add one vendor table: [sinks.barrier_coupon], [sinks.inspur_isp], [sinks.bingzhouxing] or [sinks.zvcms]",
                self.name
            ))),
            _ => Err(invalid(format!("sink {:?}: has more than one vendor table", self.name))),
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let n = &self.name;
        let ok_name =
            !n.is_empty() && n.len() <= 64 && n.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !ok_name {
            return Err(invalid(format!("sinks: name {n:?} must be 1-64 characters of A-Z a-z 0-9 - _ .")));
        }
        self.kind()?;
        self.network.validate().map_err(|source| ConfigError::Network { sink: n.clone(), source })?;
        let checks = [
            (self.concurrency == 0, "concurrency must be at least 1"),
            (self.rate_limit.requests_per_second == 0, "rate_limit.requests_per_second must be at least 1"),
            (self.rate_limit.burst == 0, "rate_limit.burst must be at least 1"),
            (self.rate_limit.per_lot_per_second == Some(0), "rate_limit.per_lot_per_second must be at least 1"),
            (self.batch.max_records == 0, "batch.max_records must be at least 1"),
            (self.batch.max_bytes < 1024, "batch.max_bytes must be at least 1024"),
            (self.retry.multiplier < 1.0, "retry.multiplier must be at least 1.0"),
            (self.retry.initial_ms == 0, "retry.initial_ms must be at least 1"),
            (
                self.retry.max_interval_ms < self.retry.initial_ms,
                "retry.max_interval_ms must be at least retry.initial_ms",
            ),
            (self.memory_budget_bytes < 1024 * 1024, "memory_budget_bytes must be at least 1 MiB"),
            (self.request_timeout_ms == 0, "request_timeout_ms must be at least 1"),
        ];
        if parse_time(&self.daily_push_at).is_none() {
            return Err(invalid(format!(
                "sink {n:?}: daily_push_at must be HH:MM or HH:MM:SS, not {:?}",
                self.daily_push_at
            )));
        }
        if let Some((_, msg)) = checks.iter().find(|(bad, _)| *bad) {
            return Err(invalid(format!("sink {n:?}: {msg}")));
        }
        Ok(())
    }

    /// The vendor's base URL, from whichever vendor table is present.
    pub fn base_url(&self) -> Option<&str> {
        let urls = [
            self.barrier_coupon.as_ref().map(|v| v.base_url.as_str()),
            self.inspur_isp.as_ref().map(|v| v.base_url.as_str()),
            self.bingzhouxing.as_ref().map(|v| v.base_url.as_str()),
            self.zvcms.as_ref().map(|v| v.base_url.as_str()),
        ];
        urls.into_iter().flatten().next()
    }

    /// Request timeout.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CsvRow {
    lot: String,
    #[serde(default)]
    vendor_lot: Option<String>,
    #[serde(default)]
    token: Option<String>,
}

/// Reads a sink's inline and CSV bindings and resolves their secrets.
pub fn load_bindings(sink: &SinkConfig, base: &Path) -> Result<Bindings, ConfigError> {
    let mut out: HashMap<String, Binding> = HashMap::new();
    let mut add = |b: Binding, origin: &dyn Fn() -> String| -> Result<(), ConfigError> {
        if b.lot.is_empty() || b.vendor_lot.is_empty() {
            return Err(invalid(format!("{}: lot and vendor_lot must not be empty", origin())));
        }
        if out.contains_key(&b.lot) {
            return Err(invalid(format!("{}: lot {:?} is bound twice", origin(), b.lot)));
        }
        out.insert(b.lot.clone(), b);
        Ok(())
    };
    for (i, b) in sink.bindings.iter().enumerate() {
        let origin = || format!("sink {:?} bindings[{i}]", sink.name);
        let token = resolve_opt(b.token.as_ref(), base, &origin)?;
        let vendor_lot = b.vendor_lot.clone().unwrap_or_else(|| b.lot.clone());
        add(Binding { lot: b.lot.clone(), vendor_lot, token }, &origin)?;
    }
    if let Some(csv_path) = &sink.bindings_csv {
        let path = base.join(csv_path);
        let csv_err = |message: String| ConfigError::Csv { path: path.clone(), message };
        let mut reader =
            csv::ReaderBuilder::new().trim(csv::Trim::All).from_path(&path).map_err(|e| csv_err(e.to_string()))?;
        for (i, row) in reader.deserialize::<CsvRow>().enumerate() {
            let line = i + 2;
            let row = row.map_err(|e| csv_err(format!("line {line}: {e}")))?;
            let origin = || format!("{} line {line}", path.display());
            let token = match row.token.as_deref().filter(|t| !t.is_empty()) {
                Some(text) => Some(
                    SecretRef::parse_compact(text)
                        .map_err(|source| ConfigError::Secret { context: origin(), source })?,
                ),
                None => None,
            };
            let token = resolve_opt(token.as_ref(), base, &origin)?;
            let vendor_lot = row.vendor_lot.filter(|v| !v.is_empty()).unwrap_or_else(|| row.lot.clone());
            add(Binding { lot: row.lot, vendor_lot, token }, &origin)?;
        }
    }
    Ok(Bindings(out))
}

fn resolve_opt(r: Option<&SecretRef>, base: &Path, origin: &dyn Fn() -> String) -> Result<Option<Secret>, ConfigError> {
    r.map(|r| r.resolve(base).map_err(|source| ConfigError::Secret { context: origin(), source })).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daily_push_times_parse() {
        assert_eq!(parse_time("01:00"), chrono::NaiveTime::from_hms_opt(1, 0, 0));
        assert_eq!(parse_time("01:02:03"), chrono::NaiveTime::from_hms_opt(1, 2, 3));
        assert_eq!(parse_time("25:00"), None);
        assert_eq!(parse_time("1am"), None);
    }

    #[test]
    fn sensitive_keys_are_recognised() {
        for key in ["sasl.password", "ssl.key.password", "ssl.keystore.location", "sasl.oauthbearer.client.secret"] {
            assert!(is_sensitive(key), "{key}");
        }
        for key in ["security.protocol", "sasl.mechanism", "sasl.username", "ssl.ca.location"] {
            assert!(!is_sensitive(key), "{key}");
        }
    }
}

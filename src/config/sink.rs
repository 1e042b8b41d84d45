//! `[[sinks]]`: one vendor platform's common settings (rate limit, retry, batch, memory,
//! network, heartbeats, the daily push), their defaults and checks. The vendor's own table
//! (exactly one per sink) is in [`super::vendor`].

use super::vendor::{self, VendorKind};
use super::{invalid, BindingConfig, ConfigError};
use crate::net::NetworkConfig;
use crate::photo::PhotoPolicy;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

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

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
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
}

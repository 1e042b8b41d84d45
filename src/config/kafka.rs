//! `[kafka]`: the cluster, topics and consumer settings, and `[kafka.properties]`, the
//! librdkafka pass-through whose secret references are resolved at load and never printed.

use super::ConfigError;
use crate::secret::{Secret, SecretRef};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

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

/// Whether a property's value must never be printed even when written inline.
pub(crate) fn is_sensitive(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["password", "secret", "key.pem", "keystore", ".key", "token", "jaas", "oauthbearer.config"]
        .iter()
        .any(|word| key.contains(word))
}

#[cfg(test)]
mod tests {
    use super::*;

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

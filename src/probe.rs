//! `lotbridge check-config --connect`: the go-live check. Without sending any event it
//! connects to Kafka (brokers, topics and their partitions, each sink's group) and to every
//! sink's vendor (DNS, TCP and TLS to the base URL, a token where the vendor issues one, the
//! clock skew against the vendor's `Date` header), and prints one ✓/✗ line per check.

use crate::config::KafkaConfig;
use crate::load::{Loaded, LoadedSink};
use crate::vendors::PrepareError;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::{ClientContext, TopicPartitionList};
use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

/// How far the vendor's clock may be from ours: half of Bingzhouxing's 10 s window, so a
/// request still arrives in time after its own latency.
pub const SKEW_LIMIT_SECS: i64 = 5;
/// The longest one Kafka call may take.
const KAFKA_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest a DNS lookup or token fetch may take.
const VENDOR_TIMEOUT: Duration = Duration::from_secs(15);

/// The result of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// Whether it passed.
    pub ok: bool,
    /// What was checked (`kafka topic parking.events`, `sink bzx tls`...).
    pub name: String,
    /// What was found, or why it failed.
    pub detail: String,
}

impl Check {
    fn pass(name: impl Into<String>, detail: impl Into<String>) -> Check {
        Check { ok: true, name: name.into(), detail: detail.into() }
    }

    fn fail(name: impl Into<String>, detail: impl Into<String>) -> Check {
        Check { ok: false, name: name.into(), detail: detail.into() }
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", if self.ok { "✓" } else { "✗" }, self.name, self.detail)
    }
}

/// Runs every check, printing one line each to `out`; true when all passed.
pub async fn run(loaded: &Loaded, out: &mut impl std::io::Write) -> bool {
    let checks = checks(loaded).await;
    for check in &checks {
        let _ = writeln!(out, "{check}");
    }
    checks.iter().all(|c| c.ok)
}

/// Every check: Kafka first, then each sink.
pub async fn checks(loaded: &Loaded) -> Vec<Check> {
    let kafka = loaded.config.kafka.clone();
    let groups: Vec<String> =
        loaded.sinks.iter().map(|s| format!("{}.{}", kafka.group_prefix, s.config.name)).collect();
    let mut out = tokio::task::spawn_blocking(move || kafka_checks(&kafka, &groups))
        .await
        .unwrap_or_else(|e| vec![Check::fail("kafka", format!("check aborted: {e}"))]);
    for sink in &loaded.sinks {
        out.extend(sink_checks(sink).await);
    }
    out
}

/// Keeps librdkafka's last error report, which names the cause (a TLS handshake failure,
/// an authentication failure) where the failed call only says "transport failure".
#[derive(Default)]
struct LastError(Mutex<Option<String>>);

impl ClientContext for LastError {
    fn error(&self, error: KafkaError, reason: &str) {
        if let Ok(mut last) = self.0.lock() {
            *last = Some(format!("{error}: {reason}"));
        }
    }
}

impl ConsumerContext for LastError {}

impl LastError {
    fn explain(&self, e: &KafkaError) -> String {
        match self.0.lock().ok().and_then(|last| last.clone()) {
            Some(reason) => format!("{e} ({reason})"),
            None => e.to_string(),
        }
    }
}

/// The failed call's error with the cause librdkafka reported as an event (delivered by
/// polling, so poll once first).
fn explain(client: &BaseConsumer<LastError>, e: &KafkaError) -> String {
    let _ = client.poll(Duration::from_millis(200));
    client.context().explain(e)
}

fn consumer(kafka: &KafkaConfig, group: &str) -> Result<BaseConsumer<LastError>, KafkaError> {
    let mut cfg = crate::kafka::client_config(kafka);
    cfg.set("group.id", group).set("enable.auto.commit", "false");
    cfg.create_with_context(LastError::default())
}

/// Brokers, topics and groups (blocking).
fn kafka_checks(kafka: &KafkaConfig, groups: &[String]) -> Vec<Check> {
    let brokers = format!("kafka brokers {}", kafka.brokers);
    let first_group = groups.first().cloned().unwrap_or_else(|| format!("{}.check", kafka.group_prefix));
    let client = match consumer(kafka, &first_group) {
        Ok(client) => client,
        Err(e) => return vec![Check::fail(brokers, format!("cannot create a client: {e}"))],
    };
    let metadata = match client.fetch_metadata(None, KAFKA_TIMEOUT) {
        Ok(metadata) => metadata,
        Err(e) => return vec![Check::fail(brokers, explain(&client, &e))],
    };
    let mut out = vec![Check::pass(brokers, format!("{} broker(s) answered", metadata.brokers().len()))];
    let mut partitions = Vec::new();
    for (topic, role) in topics(kafka) {
        let name = format!("kafka topic {topic} ({role})");
        match metadata.topics().iter().find(|t| t.name() == topic) {
            None => out.push(Check::fail(name, "does not exist")),
            Some(t) => match t.error() {
                Some(e) => out.push(Check::fail(name, rdkafka::error::RDKafkaErrorCode::from(e).to_string())),
                None if t.partitions().is_empty() => out.push(Check::fail(name, "does not exist")),
                None => {
                    if role == "input" {
                        partitions.extend(t.partitions().iter().map(|p| (topic.clone(), p.id())));
                    }
                    out.push(Check::pass(name, format!("{} partitions", t.partitions().len())));
                }
            },
        }
    }
    out.extend(groups.iter().map(|group| group_check(kafka, group, &partitions)));
    out
}

/// Every topic lotbridge reads or writes, with its role.
fn topics(kafka: &KafkaConfig) -> Vec<(String, &'static str)> {
    let mut out: Vec<(String, &'static str)> = kafka.topics.iter().map(|t| (t.clone(), "input")).collect();
    for t in kafka.lot_topics.iter().flatten() {
        if !out.iter().any(|(known, _)| known == t) {
            out.push((t.clone(), "lot list"));
        }
    }
    out.push((kafka.dead_letter_topic.clone(), "dead letters"));
    out.push((kafka.results_topic.clone(), "results"));
    out
}

/// Reads the group's committed offsets: the broker checks the group permission.
fn group_check(kafka: &KafkaConfig, group: &str, partitions: &[(String, i32)]) -> Check {
    let name = format!("kafka group {group}");
    let client = match consumer(kafka, group) {
        Ok(client) => client,
        Err(e) => return Check::fail(name, e.to_string()),
    };
    let mut tpl = TopicPartitionList::new();
    partitions.iter().for_each(|(topic, p)| {
        tpl.add_partition(topic, *p);
    });
    if tpl.count() == 0 {
        return Check::fail(name, "no input partition to read offsets of");
    }
    match client.committed_offsets(tpl, KAFKA_TIMEOUT) {
        Ok(committed) => {
            let stored = committed.elements().iter().filter(|e| e.offset().to_raw().is_some_and(|o| o >= 0)).count();
            Check::pass(name, format!("offsets readable ({stored} of {} partitions committed)", committed.count()))
        }
        Err(e) => Check::fail(name, explain(&client, &e)),
    }
}

/// DNS, connection and TLS, clock skew and token of one sink.
async fn sink_checks(sink: &LoadedSink) -> Vec<Check> {
    let label = format!("sink {}", sink.config.name);
    let Some(base_url) = sink.config.base_url() else { return vec![Check::fail(label, "no base_url")] };
    let url = match reqwest::Url::parse(base_url) {
        Ok(url) => url,
        Err(e) => return vec![Check::fail(label, format!("base_url {base_url:?}: {e}"))],
    };
    let host = url.host_str().unwrap_or_default().to_string();
    let port = url.port_or_known_default().unwrap_or(443);
    let lookup = tokio::time::timeout(VENDOR_TIMEOUT, tokio::net::lookup_host((host.as_str(), port))).await;
    match lookup {
        Ok(Ok(mut addrs)) => match addrs.next() {
            Some(addr) => {
                let mut out = vec![Check::pass(format!("{label} dns"), format!("{host} is {}", addr.ip()))];
                out.extend(open(sink, &label, &url).await);
                out
            }
            None => vec![Check::fail(format!("{label} dns"), format!("{host} has no address"))],
        },
        Ok(Err(e)) => vec![Check::fail(format!("{label} dns"), format!("cannot resolve {host}: {e}"))],
        Err(_) => vec![Check::fail(format!("{label} dns"), format!("no answer for {host} in 15 s"))],
    }
}

/// Opens the base URL with the sink's own client (its CA, certificate and proxy); any HTTP
/// answer proves the route. Then the clock and the token.
async fn open(sink: &LoadedSink, label: &str, url: &reqwest::Url) -> Vec<Check> {
    let name = if url.scheme() == "https" { format!("{label} tls") } else { format!("{label} connect") };
    let response = match sink.http.get(url.clone()).timeout(sink.config.request_timeout()).send().await {
        Ok(response) => response,
        Err(e) => return vec![Check::fail(name, transport_error(&e))],
    };
    let how = if url.scheme() == "https" { "TLS handshake done, " } else { "" };
    let mut out = vec![Check::pass(name, format!("{how}{} answered HTTP {}", url, response.status().as_u16()))];
    out.push(clock(label, response.headers()));
    if sink.adapter.token_stats().is_some() {
        out.push(token(sink, label).await);
    }
    out
}

/// The vendor's clock against ours, from its `Date` header.
fn clock(label: &str, headers: &reqwest::header::HeaderMap) -> Check {
    let name = format!("{label} clock");
    let date = headers.get(reqwest::header::DATE).and_then(|v| v.to_str().ok());
    let Some(date) = date.and_then(|d| chrono::DateTime::parse_from_rfc2822(d).ok()) else {
        return Check::pass(name, "not measured: the vendor sends no Date header");
    };
    let skew = date.timestamp() - chrono::Utc::now().timestamp();
    let text = match skew {
        0 => "in step with this host".to_string(),
        s if s > 0 => format!("the vendor is {s} s ahead of this host"),
        s => format!("the vendor is {} s behind this host", -s),
    };
    if skew.abs() <= SKEW_LIMIT_SECS {
        Check::pass(name, text)
    } else {
        Check::fail(
            name,
            format!("{text} (limit {SKEW_LIMIT_SECS} s; Bingzhouxing refuses requests 10 s off): fix NTP"),
        )
    }
}

/// Fetches a token as the sink would.
async fn token(sink: &LoadedSink, label: &str) -> Check {
    let name = format!("{label} token");
    match tokio::time::timeout(VENDOR_TIMEOUT, sink.adapter.check_auth()).await {
        Ok(Ok(())) => Check::pass(name, "obtained"),
        Ok(Err(PrepareError::AuthRejected(why))) => Check::fail(name, format!("credentials refused: {why}")),
        Ok(Err(e)) => Check::fail(name, e.to_string()),
        Err(_) => Check::fail(name, "no token in 15 s"),
    }
}

/// A transport error with its causes (the TLS reason sits a few levels down), never the URL.
fn transport_error(e: &reqwest::Error) -> String {
    let mut causes = Vec::new();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !causes.iter().any(|c: &String| c.contains(&text)) {
            causes.push(text);
        }
        source = cause.source();
    }
    let kind = if e.is_timeout() { "timed out" } else { "cannot connect" };
    if causes.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}: {}", causes.join(": "))
    }
}

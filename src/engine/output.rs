//! What lotbridge writes back to Kafka: dead letters (the original bytes and key, with the
//! reason in headers) and `member.coupons.listed` answers. Both are written with
//! `acks=all` and awaited: a record's offset is stored only after its dead letter or its
//! answer is acknowledged by the cluster.

use crate::config::KafkaConfig;
use bytes::Bytes;
use prometheus::IntCounter;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use std::future::Future;
use std::time::Duration;

/// Where a record failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Not a valid contract event.
    Decode,
    /// Valid, but the vendor cannot express it.
    Map,
    /// The vendor refused it permanently, or retries gave up.
    Deliver,
}

impl Stage {
    /// Header and label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Decode => "decode",
            Stage::Map => "map",
            Stage::Deliver => "deliver",
        }
    }
}

/// Everything a dead letter says about its record.
#[derive(Debug, Clone)]
pub struct DeadLetter<'a> {
    /// Sink that gave up on it.
    pub sink: &'a str,
    /// Vendor kind of the sink.
    pub vendor: &'a str,
    /// Where it failed.
    pub stage: Stage,
    /// Why, in plain words (never a secret).
    pub error: &'a str,
    /// Original topic.
    pub topic: &'a str,
    /// Original partition.
    pub partition: i32,
    /// Original offset.
    pub offset: i64,
    /// Original key.
    pub key: Option<&'a [u8]>,
    /// Original value.
    pub value: &'a [u8],
    /// Delivery attempts made.
    pub attempts: u32,
}

/// Header names of dead letters (documented for replay tools).
pub mod headers {
    /// Sink name.
    pub const SINK: &str = "lotbridge.sink";
    /// Vendor kind.
    pub const VENDOR: &str = "lotbridge.vendor";
    /// `decode`, `map` or `deliver`.
    pub const STAGE: &str = "lotbridge.stage";
    /// The reason.
    pub const ERROR: &str = "lotbridge.error";
    /// Original topic.
    pub const TOPIC: &str = "lotbridge.original.topic";
    /// Original partition.
    pub const PARTITION: &str = "lotbridge.original.partition";
    /// Original offset.
    pub const OFFSET: &str = "lotbridge.original.offset";
    /// Delivery attempts.
    pub const ATTEMPTS: &str = "lotbridge.attempts";
    /// Set when the original value was too large for the dead-letter topic: its size.
    pub const TRUNCATED: &str = "lotbridge.value_truncated_from";
}

/// The producer behind dead letters and answers.
#[derive(Clone)]
pub struct Output {
    producer: FutureProducer,
    dead_letter_topic: String,
    results_topic: String,
}

/// Bytes kept of a value the dead-letter topic refuses as too large.
const TRUNCATED_VALUE_BYTES: usize = 64 * 1024;

impl Output {
    /// A producer for `kafka` (its pass-through properties apply).
    pub fn new(kafka: &KafkaConfig) -> Result<Output, KafkaError> {
        let mut cfg = ClientConfig::new();
        cfg.set("bootstrap.servers", &kafka.brokers)
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .set("message.timeout.ms", "30000")
            .set("message.max.bytes", (kafka.max_record_bytes + 1024 * 1024).to_string());
        crate::kafka::apply(&mut cfg, kafka);
        Ok(Output {
            producer: cfg.create()?,
            dead_letter_topic: kafka.dead_letter_topic.clone(),
            results_topic: kafka.results_topic.clone(),
        })
    }

    /// Writes one dead letter and waits for the cluster's acknowledgement. A value the
    /// topic refuses as too large is cut to 64 KiB and marked, rather than blocking forever.
    pub async fn dead_letter(&self, dl: &DeadLetter<'_>) -> Result<(), KafkaError> {
        match self.send_dead_letter(dl, dl.value, None).await {
            Err(KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge)) => {
                let cut = &dl.value[..dl.value.len().min(TRUNCATED_VALUE_BYTES)];
                self.send_dead_letter(dl, cut, Some(dl.value.len())).await
            }
            other => other,
        }
    }

    async fn send_dead_letter(&self, dl: &DeadLetter<'_>, value: &[u8], cut: Option<usize>) -> Result<(), KafkaError> {
        let (partition, offset, attempts) = (dl.partition.to_string(), dl.offset.to_string(), dl.attempts.to_string());
        let cut = cut.map(|n| n.to_string());
        let mut h = OwnedHeaders::new_with_capacity(9);
        for (key, v) in [
            (headers::SINK, dl.sink),
            (headers::VENDOR, dl.vendor),
            (headers::STAGE, dl.stage.as_str()),
            (headers::ERROR, dl.error),
            (headers::TOPIC, dl.topic),
            (headers::PARTITION, &partition),
            (headers::OFFSET, &offset),
            (headers::ATTEMPTS, &attempts),
        ] {
            h = h.insert(Header { key, value: Some(v) });
        }
        if let Some(n) = &cut {
            h = h.insert(Header { key: headers::TRUNCATED, value: Some(n) });
        }
        let mut record = FutureRecord::<[u8], [u8]>::to(&self.dead_letter_topic).payload(value).headers(h);
        if let Some(key) = dl.key {
            record = record.key(key);
        }
        self.producer.send(record, Duration::from_secs(30)).await.map(|_| ()).map_err(|(e, _)| e)
    }

    /// Publishes an answer (key = member id) and waits for the acknowledgement.
    pub async fn publish_result(&self, key: &str, value: &Bytes) -> Result<(), KafkaError> {
        let record = FutureRecord::<str, [u8]>::to(&self.results_topic).key(key).payload(&value[..]);
        self.producer.send(record, Duration::from_secs(30)).await.map(|_| ()).map_err(|(e, _)| e)
    }

    /// Waits for every queued write (shutdown).
    pub fn flush(&self, timeout: Duration) {
        use rdkafka::producer::Producer;
        let _ = self.producer.flush(timeout);
    }
}

/// Retries a write to Kafka until the cluster acknowledges it, backing off up to 30 s: the
/// offset of the record it is for waits meanwhile, so nothing is lost and nothing is
/// skipped. `ok` and `failed` count the attempts.
pub(crate) async fn until_acked<F, Fut>(
    what: &'static str,
    sink: &str,
    ok: &IntCounter,
    failed: &IntCounter,
    mut write: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), KafkaError>>,
{
    let mut wait = Duration::from_millis(200);
    loop {
        match write().await {
            Ok(()) => {
                ok.inc();
                return;
            }
            Err(e) => {
                failed.inc();
                tracing::error!(sink, write = what, error = %e, "write to Kafka failed; retrying, offsets held");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(30));
            }
        }
    }
}

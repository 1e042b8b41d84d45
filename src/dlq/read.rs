//! Reading a dead-letter topic once, from the beginning to the high watermarks taken at
//! start, without a consumer group.

use super::DlqError;
use crate::config::KafkaConfig;
use crate::engine::output::headers;
use chrono::{DateTime, Utc};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::collections::HashMap;
use std::time::Duration;

/// How long metadata and watermark requests may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the reader waits for the next record before it calls the read stalled.
const STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// One dead letter as read back: where it sits, its original key and bytes, and what the
/// engine wrote about it in headers (absent headers stay `None`).
#[derive(Debug, Clone, Default)]
pub struct Letter {
    /// Partition of the dead-letter topic.
    pub partition: i32,
    /// Offset in the dead-letter topic.
    pub offset: i64,
    /// When the dead letter was written.
    pub timestamp: Option<DateTime<Utc>>,
    /// The original record's key.
    pub key: Option<Vec<u8>>,
    /// The original record's value (cut short when `truncated`).
    pub value: Vec<u8>,
    /// `lotbridge.sink`.
    pub sink: Option<String>,
    /// `lotbridge.stage`.
    pub stage: Option<String>,
    /// `lotbridge.error`.
    pub error: Option<String>,
    /// `lotbridge.original.topic`.
    pub original_topic: Option<String>,
    /// `lotbridge.original.partition`.
    pub original_partition: Option<i32>,
    /// The value was too large for the dead-letter topic and only its start was kept.
    pub truncated: bool,
}

impl Letter {
    /// The lot this dead letter is about: the original event's `lot` field, or, when the
    /// value is not a readable event (a `decode` dead letter, a truncated value), the
    /// record's key (producers key by lot).
    pub fn lot(&self) -> Option<String> {
        /// Only the field wanted; the rest of the event (a photo) is skipped, not kept.
        #[derive(serde::Deserialize)]
        struct LotOnly {
            lot: Option<serde_json::Value>,
        }
        let from_event = match serde_json::from_slice::<LotOnly>(&self.value) {
            Ok(LotOnly { lot: Some(serde_json::Value::String(lot)) }) => Some(lot),
            _ => None,
        };
        from_event.or_else(|| self.key.as_deref().map(|k| String::from_utf8_lossy(k).into_owned()))
    }

    fn from_message(m: &BorrowedMessage<'_>) -> Letter {
        let mut letter = Letter {
            partition: m.partition(),
            offset: m.offset(),
            timestamp: m.timestamp().to_millis().and_then(DateTime::from_timestamp_millis),
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
            ..Letter::default()
        };
        for h in m.headers().into_iter().flat_map(|hs| hs.iter()) {
            let text = || h.value.map(|v| String::from_utf8_lossy(v).into_owned());
            match h.key {
                headers::SINK => letter.sink = text(),
                headers::STAGE => letter.stage = text(),
                headers::ERROR => letter.error = text(),
                headers::TOPIC => letter.original_topic = text(),
                headers::PARTITION => letter.original_partition = text().and_then(|t| t.parse().ok()),
                headers::TRUNCATED => letter.truncated = true,
                _ => {}
            }
        }
        letter
    }
}

/// The cluster connection settings of the configuration (brokers and pass-through
/// properties such as SASL), for the tools' own clients.
pub(super) fn client_config(kafka: &KafkaConfig) -> ClientConfig {
    crate::kafka::client_config(kafka)
}

/// Reads a topic from its low to its high watermarks as they were when it was opened.
pub struct Reader {
    consumer: StreamConsumer,
    topic: String,
    /// Partitions not yet read to their end, with the offset that ends them.
    ends: HashMap<i32, i64>,
    total: u64,
}

impl Reader {
    /// Assigns every partition of `topic` from the beginning and notes where each ends.
    pub fn open(kafka: &KafkaConfig, topic: &str) -> Result<Reader, DlqError> {
        let consumer: StreamConsumer = client_config(kafka)
            // Never used to join a group or commit: assign() reads without one.
            .set("group.id", "lotbridge-dlq-reader")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "true")
            .set("auto.offset.reset", "earliest")
            .create()?;
        let md = consumer.fetch_metadata(Some(topic), REQUEST_TIMEOUT)?;
        let partitions: Vec<i32> = match md.topics().first() {
            Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
                t.partitions().iter().map(|p| p.id()).collect()
            }
            _ => return Err(DlqError::NoSuchTopic(topic.to_string())),
        };
        let mut tpl = TopicPartitionList::new();
        let (mut ends, mut total) = (HashMap::new(), 0u64);
        for p in partitions {
            let (low, high) = consumer.fetch_watermarks(topic, p, REQUEST_TIMEOUT)?;
            if high > low {
                ends.insert(p, high);
                total += (high - low) as u64;
                tpl.add_partition_offset(topic, p, Offset::Beginning)?;
            }
        }
        consumer.assign(&tpl)?;
        Ok(Reader { consumer, topic: topic.to_string(), ends, total })
    }

    /// Records between the low and high watermarks at open (compaction may leave fewer).
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The next dead letter, or `None` once every partition reached its end.
    pub async fn next(&mut self) -> Result<Option<Letter>, DlqError> {
        while !self.ends.is_empty() {
            let received = tokio::time::timeout(STALL_TIMEOUT, self.consumer.recv()).await;
            let stalled = || DlqError::Stalled { topic: self.topic.clone(), secs: STALL_TIMEOUT.as_secs() };
            match received.map_err(|_| stalled())? {
                Err(KafkaError::PartitionEOF(p)) => {
                    self.ends.remove(&p);
                }
                Err(e) => return Err(e.into()),
                Ok(m) => {
                    let Some(&end) = self.ends.get(&m.partition()) else { continue };
                    if m.offset() + 1 >= end {
                        self.ends.remove(&m.partition());
                    }
                    if m.offset() < end {
                        return Ok(Some(Letter::from_message(&m)));
                    }
                }
            }
        }
        Ok(None)
    }
}

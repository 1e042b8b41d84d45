//! The daily full lot list some vendors want (Inspur ISP: every lot pushed at 01:00 China
//! time besides the real-time updates).
//!
//! The latest `lot.upserted` per lot is kept in a [`LotBook`], rebuilt at start by reading
//! the lot topics from the beginning (make them compacted, keyed by lot, so this stays
//! cheap) and kept current by intake. When and by which replica each lot is pushed is
//! decided in `schedule.rs`: by the partition its code hashes to, so each lot is pushed by
//! exactly one replica whatever topic its lot events came from.

use super::intake::submit;
use super::lane::Item;
use super::offsets::TopicPartition;
use super::sink::Sink;
use crate::config::KafkaConfig;
use crate::event::{decode_with, DecodeLimits, Event, EventData};
use crate::vendors::Mapping;
use chrono::{DateTime, Duration as ChronoDuration, FixedOffset, NaiveTime, Offset as _, Utc};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// Records larger than this are not lot events (those carry no photos): not decoded.
const MAX_LOT_EVENT_BYTES: usize = 64 * 1024;

/// The latest `lot.upserted` of every lot, with the partition it came from.
#[derive(Default)]
pub(crate) struct LotBook {
    lots: Mutex<HashMap<String, (Event, TopicPartition)>>,
}

impl LotBook {
    /// Keeps the newest state: an upsert replaces, a delete removes.
    pub(crate) fn observe(&self, event: &Event, tp: &TopicPartition) {
        let mut lots = self.lots.lock().unwrap_or_else(|p| p.into_inner());
        match &event.data {
            EventData::LotUpserted(_) => {
                lots.insert(event.lot.clone(), (event.clone(), tp.clone()));
            }
            EventData::LotDeleted => {
                lots.remove(&event.lot);
            }
            _ => {}
        }
    }

    /// Every known lot.
    pub(crate) fn snapshot(&self) -> Vec<(Event, TopicPartition)> {
        self.lots.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
    }

    /// Takes the contents of `fresh` (a book read again from the lot topics), dropping
    /// lots that are no longer there.
    pub fn replace_with(&self, fresh: LotBook) {
        let fresh = fresh.lots.into_inner().unwrap_or_else(|p| p.into_inner());
        *self.lots.lock().unwrap_or_else(|p| p.into_inner()) = fresh;
    }
}

/// China Standard Time, the vendors' clock.
pub fn china() -> FixedOffset {
    FixedOffset::east_opt(8 * 3600).unwrap_or_else(|| Utc.fix())
}

/// The next moment after `now` when the clock in UTC+8 shows `at`.
pub fn next_push(now: DateTime<Utc>, at: NaiveTime) -> DateTime<Utc> {
    let local = now.with_timezone(&china());
    let today = local.date_naive().and_time(at);
    let candidate = today.and_local_timezone(china()).single().map(|t| t.with_timezone(&Utc)).unwrap_or(now);
    if candidate > now {
        candidate
    } else {
        candidate + ChronoDuration::days(1)
    }
}

/// Reads the lot topics from the beginning up to their current end (blocking: run it on
/// the blocking pool) and fills `book`. Returns how many lot events were read.
pub(crate) fn rebuild(kafka: &KafkaConfig, topics: &[String], book: &LotBook) -> Result<usize, KafkaError> {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", &kafka.brokers)
        .set("group.id", format!("{}.lot-book", kafka.group_prefix))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false");
    crate::kafka::apply(&mut cfg, kafka);
    let consumer: BaseConsumer = cfg.create()?;
    let mut tpl = TopicPartitionList::new();
    let mut remaining: HashMap<(String, i32), i64> = HashMap::new();
    for topic in topics {
        let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
        for p in md.topics().iter().flat_map(|t| t.partitions()) {
            let (low, high) = consumer.fetch_watermarks(topic, p.id(), Duration::from_secs(10))?;
            if high > low {
                tpl.add_partition_offset(topic, p.id(), Offset::Beginning)?;
                remaining.insert((topic.clone(), p.id()), high);
            }
        }
    }
    consumer.assign(&tpl)?;
    let limits = DecodeLimits { max_record_bytes: MAX_LOT_EVENT_BYTES };
    let (mut read, mut idle) = (0usize, 0u32);
    while !remaining.is_empty() && idle < 100 {
        let Some(msg) = consumer.poll(Duration::from_millis(100)) else {
            idle += 1;
            continue;
        };
        let Ok(msg) = msg else { continue };
        idle = 0;
        let key = (msg.topic().to_string(), msg.partition());
        if let Ok(event) = decode_with(msg.payload().unwrap_or_default(), &limits) {
            if matches!(event.data, EventData::LotUpserted(_) | EventData::LotDeleted) {
                book.observe(&event, &(Arc::from(msg.topic()), msg.partition()));
                read += 1;
            }
        }
        if remaining.get(&key).is_some_and(|end| msg.offset() + 1 >= *end) {
            remaining.remove(&key);
        }
    }
    Ok(read)
}

/// Queues the full list of the lots `owns` says this replica is responsible for (the
/// daily push; `schedule.rs` decides when and who owns what). Returns how many.
pub(crate) fn push_owned(sink: &Arc<Sink>, book: &LotBook, owns: impl Fn(&str) -> bool) -> usize {
    let mut pushed = 0;
    for (event, _) in book.snapshot() {
        if !owns(&event.lot) {
            continue;
        }
        if let Ok(Mapping::Record(mapped)) = sink.adapter.map(&event) {
            let item = Item {
                mapped,
                origin: None,
                event_type: event.event_type(),
                event_at: event.at,
                read_at: Instant::now(),
                reply_to: None,
                backlog: false,
            };
            submit(sink, &event.lot, item);
            pushed += 1;
        }
    }
    pushed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_push_is_the_next_0100_china_time() {
        let at = NaiveTime::from_hms_opt(1, 0, 0).unwrap();
        let now = DateTime::parse_from_rfc3339("2026-11-23T10:00:00Z").unwrap().with_timezone(&Utc);
        assert_eq!(next_push(now, at).to_rfc3339(), "2026-11-23T17:00:00+00:00", "01:00 +08:00 is 17:00 UTC");
        let just_after = DateTime::parse_from_rfc3339("2026-11-23T17:00:01Z").unwrap().with_timezone(&Utc);
        assert_eq!(next_push(just_after, at).to_rfc3339(), "2026-11-24T17:00:00+00:00");
    }

    #[test]
    fn the_book_keeps_the_latest_upsert_and_forgets_deleted_lots() {
        let book = LotBook::default();
        let tp: TopicPartition = (Arc::from("t"), 0);
        let ev = |id: &str, ty: &str, lot: &str, data: serde_json::Value| {
            let json = serde_json::json!({"v": 1, "id": id, "type": ty, "lot": lot, "at": "2026-11-23T08:00:00Z", "data": data});
            crate::event::decode(json.to_string().as_bytes()).unwrap()
        };
        book.observe(
            &ev("1", "lot.upserted", "A", serde_json::json!({"name": "old", "coordinate_system": "BD09"})),
            &tp,
        );
        book.observe(
            &ev("2", "lot.upserted", "A", serde_json::json!({"name": "new", "coordinate_system": "BD09"})),
            &tp,
        );
        book.observe(&ev("3", "lot.upserted", "B", serde_json::json!({"coordinate_system": "BD09"})), &tp);
        book.observe(&ev("4", "lot.deleted", "B", serde_json::json!({})), &tp);
        let lots = book.snapshot();
        assert_eq!(lots.len(), 1);
        assert_eq!(lots[0].0.id, "2");
    }
}

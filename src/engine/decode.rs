//! Records as read, and their decoding and mapping for one sink: done once per record,
//! ahead of routing, on the blocking pool for large batches.

use super::intake::READ_BATCH;
use super::offsets::{Partitions, TopicPartition};
use super::output::Stage;
use super::sink::Sink;
use super::task::guard;
use crate::event::{decode_with, DecodeLimits, Event};
use crate::vendors::Mapping;
use bytes::Bytes;
use rdkafka::message::{BorrowedMessage, Message};
use std::collections::HashMap;
use std::sync::Arc;

/// Batches larger than this (in bytes, or a quarter of `READ_BATCH` in records) are decoded
/// and mapped on the blocking pool, in parallel with reading and routing.
const OFFLOAD_BATCH_BYTES: usize = 32 * 1024;

/// Records read together, after decoding and mapping (done ahead, possibly on the blocking
/// pool), in read order.
pub(crate) struct Batch {
    pub(crate) records: Vec<Prepared>,
    /// More records were ready than one batch takes: the consumer is behind.
    pub(crate) backlog: bool,
}

/// A record after decoding and mapping.
pub(crate) struct Prepared {
    pub(crate) origin_tp: TopicPartition,
    pub(crate) offset: i64,
    /// The partition's assignment generation when the record was read.
    pub(crate) generation: Option<u64>,
    pub(crate) key: Option<Bytes>,
    pub(crate) raw: Bytes,
    /// A replayed dead letter is for this sink only.
    pub(crate) replay_for: Option<String>,
    pub(crate) result: Result<Routed, (Stage, String)>,
}

/// A valid record: mapped for the sink, or skipped.
pub(crate) struct Routed {
    pub(crate) lot: String,
    pub(crate) mapping: Mapping,
    pub(crate) event: Event,
}

/// A record copied out of librdkafka's buffer (the only copy of its bytes we make).
pub(crate) struct RawRecord {
    pub(crate) tp: TopicPartition,
    pub(crate) offset: i64,
    /// The partition's assignment generation when the record was read.
    pub(crate) generation: Option<u64>,
    pub(crate) key: Option<Bytes>,
    pub(crate) raw: Bytes,
    pub(crate) replay_for: Option<String>,
}

impl RawRecord {
    /// Copies a record; `topic` is the previous record's topic name, reused when the same;
    /// `stamps` says under which assignment generation it was read.
    pub(crate) fn copy(msg: &BorrowedMessage<'_>, topic: &mut Option<Arc<str>>, stamps: &mut Stamps) -> RawRecord {
        let name = match topic {
            Some(t) if **t == *msg.topic() => t.clone(),
            _ => topic.insert(Arc::from(msg.topic())).clone(),
        };
        let tp = (name, msg.partition());
        RawRecord {
            generation: stamps.of(&tp),
            tp,
            offset: msg.offset(),
            key: msg.key().map(Bytes::copy_from_slice),
            raw: msg.payload().map(Bytes::copy_from_slice).unwrap_or_default(),
            replay_for: replay_target(msg),
        }
    }
}

/// The assignment generation of each partition as its records are read; looked up again
/// only when the assignment changed (the rebalance callbacks run while the consumer is
/// polled, so a record returned after them belongs to the new assignment).
pub(crate) struct Stamps {
    partitions: Arc<Partitions>,
    changes: Option<u64>,
    generations: HashMap<TopicPartition, u64>,
}

impl Stamps {
    /// Stamps for the partitions of one sink.
    pub(crate) fn new(partitions: Arc<Partitions>) -> Stamps {
        Stamps { partitions, changes: None, generations: HashMap::new() }
    }

    fn of(&mut self, tp: &TopicPartition) -> Option<u64> {
        let now = self.partitions.changes();
        if self.changes != Some(now) {
            self.generations = self.partitions.generations();
            self.changes = Some(now);
        }
        self.generations.get(tp).copied()
    }
}

/// The sink a replayed dead letter is meant for (`lotbridge dlq replay` sets the header).
fn replay_target(msg: &BorrowedMessage<'_>) -> Option<String> {
    use rdkafka::message::Headers;
    let headers = msg.headers()?;
    let header = headers.iter().find(|h| h.key == crate::dlq::headers::REPLAY_SINK)?;
    header.value.map(|v| String::from_utf8_lossy(v).into_owned())
}

/// Decodes and maps one record. A panic in either step (a bug, or third-party code such as
/// JPEG decoding meeting bytes it cannot handle) is caught and becomes this record's
/// failure, dead-lettered with an `internal error` reason like any invalid record.
fn prepare(sink: &Sink, rec: RawRecord, limits: DecodeLimits) -> Prepared {
    let decoded = guard("decoding", || decode_with(&rec.raw, &limits));
    let result = match decoded {
        Err(panic) => Err((Stage::Decode, panic)),
        Ok(Err(e)) => Err((Stage::Decode, e.to_string())),
        Ok(Ok(event)) => match guard("mapping", || sink.adapter.map(&event)) {
            Err(panic) => Err((Stage::Map, panic)),
            Ok(Err(e)) => Err((Stage::Map, e.to_string())),
            Ok(Ok(mapping)) => Ok(Routed { lot: event.lot.clone(), mapping, event }),
        },
    };
    Prepared {
        origin_tp: rec.tp,
        offset: rec.offset,
        generation: rec.generation,
        key: rec.key,
        raw: rec.raw,
        replay_for: rec.replay_for,
        result,
    }
}

/// Decodes and maps a batch; large ones (photos, backlogs) on the blocking pool. `Err`
/// only if the blocking task itself was lost (the runtime shutting down): the batch was
/// never registered, so reading must stop rather than go on past it.
pub(crate) async fn decode_ahead(
    sink: Arc<Sink>,
    records: Vec<RawRecord>,
    limits: DecodeLimits,
    backlog: bool,
) -> Result<Batch, String> {
    let bytes: usize = records.iter().map(|r| r.raw.len()).sum();
    let heavy = bytes > OFFLOAD_BATCH_BYTES || records.len() > READ_BATCH / 4;
    let prepare_all = move || {
        let records = records.into_iter().map(|r| prepare(&sink, r, limits)).collect();
        Batch { records, backlog }
    };
    if heavy {
        tokio::task::spawn_blocking(prepare_all).await.map_err(|e| e.to_string())
    } else {
        Ok(prepare_all())
    }
}

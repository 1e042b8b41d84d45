//! One sink's Kafka consumer: its own consumer group, decode and map once per record,
//! routing to lanes, dead letters for invalid records, backpressure by pausing partitions,
//! drain and commit on revoke, and the heartbeat schedule of the partitions it owns.

use super::deliver::run_lane;
use super::lane::{Item, Origin, ReplyTo};
use super::offsets::{Partitions, TopicPartition};
use super::output::Stage;
use super::sink::{OffsetStore, Outcome, Sink};
use crate::config::KafkaConfig;
use crate::event::{decode_with, DecodeLimits, Event, EventData};
use crate::photo::PhotoOutcome;
use crate::vendors::{Mapping, SkipReason};
use bytes::Bytes;
use futures::stream::FuturesOrdered;
use futures::{FutureExt, StreamExt};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// Most records read per wake-up: what librdkafka has ready is read, decoded, mapped and
/// routed as one batch, so per-record costs (task wake-ups, locks, metric lookups) are paid
/// per batch.
const READ_BATCH: usize = 512;
/// Batches decoded ahead of routing, in order.
const DECODE_AHEAD: usize = 4;
/// Batches larger than this (in bytes, or a quarter of `READ_BATCH` in records) are decoded
/// and mapped on the blocking pool, in parallel with reading and routing.
const OFFLOAD_BATCH_BYTES: usize = 32 * 1024;

/// Most bytes read per batch: a small share of the sink's memory budget, since batches
/// decoded ahead are not yet counted in it.
fn read_batch_bytes(memory_budget_bytes: usize) -> usize {
    (memory_budget_bytes / 32).clamp(64 * 1024, 2 * 1024 * 1024)
}

/// Consumer callbacks: drain and commit on revoke, track assignments.
pub struct Context {
    partitions: Arc<Partitions>,
    drain: Duration,
    sink: String,
}

impl ClientContext for Context {}

impl ConsumerContext for Context {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let tps = topic_partitions(tpl);
            let deadline = std::time::Instant::now() + self.drain;
            // Lanes keep delivering on other threads; wait for them, bounded.
            while self.partitions.unfinished(&tps) > 0 && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            let left = self.partitions.unfinished(&tps);
            if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
                tracing::debug!(sink = %self.sink, error = %e, "nothing committed on revoke");
            }
            self.partitions.revoke(&tps);
            tracing::info!(sink = %self.sink, partitions = tps.len(), unfinished = left, "partitions revoked");
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        if result.is_err() {
            return;
        }
        for e in offsets.elements() {
            // A partition's own error (e.g. revoked meanwhile) means it was not committed.
            if let (Offset::Offset(next), Ok(())) = (e.offset(), e.error()) {
                self.partitions.committed(&(Arc::from(e.topic()), e.partition()), next);
            }
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let tps = topic_partitions(tpl);
            tracing::info!(sink = %self.sink, partitions = tps.len(), "partitions assigned");
            self.partitions.assign(tps);
        }
    }
}

fn topic_partitions(tpl: &TopicPartitionList) -> Vec<TopicPartition> {
    tpl.elements().iter().map(|e| (Arc::from(e.topic()), e.partition())).collect()
}

/// The consumer type of a sink.
pub type SinkConsumer = StreamConsumer<Context>;

/// Creates the sink's consumer in group `<prefix>.<sink>` and subscribes it.
pub fn consumer(kafka: &KafkaConfig, sink: &Sink) -> Result<Arc<SinkConsumer>, KafkaError> {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", &kafka.brokers)
        .set("group.id", format!("{}.{}", kafka.group_prefix, sink.name()))
        .set("client.id", format!("lotbridge.{}", sink.name()))
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", kafka.commit_interval_ms.to_string())
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("queued.max.messages.kbytes", prefetch_kbytes(sink.config.memory_budget_bytes).to_string())
        .set("fetch.message.max.bytes", (kafka.max_record_bytes + 1024 * 1024).to_string())
        .set("session.timeout.ms", "45000")
        .set("max.poll.interval.ms", "300000");
    crate::kafka::apply(&mut cfg, kafka);
    let ctx = Context {
        partitions: sink.partitions.clone(),
        drain: Duration::from_millis(kafka.drain_timeout_ms),
        sink: sink.name().to_string(),
    };
    let consumer: SinkConsumer = cfg.create_with_context(ctx)?;
    let topics: Vec<&str> = kafka.topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    Ok(Arc::new(consumer))
}

/// librdkafka's fetch-ahead queue: a quarter of the sink's memory budget, at least 64 MiB.
/// A small queue starves the consumer when records carry photos (measured: 7x fewer photo
/// events per second with 16 MiB, see BENCHMARKS.md).
fn prefetch_kbytes(memory_budget_bytes: usize) -> usize {
    (memory_budget_bytes / 4 / 1024).clamp(64 * 1024, 2_097_151)
}

/// Records read together, after decoding and mapping (done ahead, possibly on the blocking
/// pool), in read order.
struct Batch {
    records: Vec<Prepared>,
    /// More records were ready than one batch takes: the consumer is behind.
    backlog: bool,
}

/// A record after decoding and mapping.
struct Prepared {
    origin_tp: TopicPartition,
    offset: i64,
    key: Option<Bytes>,
    raw: Bytes,
    /// A replayed dead letter is for this sink only.
    replay_for: Option<String>,
    result: Result<Routed, (Stage, String)>,
}

/// A valid record: mapped for the sink, or skipped.
struct Routed {
    lot: String,
    mapping: Mapping,
    event: Event,
}

/// A record copied out of librdkafka's buffer (the only copy of its bytes we make).
struct RawRecord {
    tp: TopicPartition,
    offset: i64,
    key: Option<Bytes>,
    raw: Bytes,
    replay_for: Option<String>,
}

impl RawRecord {
    /// Copies a record; `topic` is the previous record's topic name, reused when the same.
    fn copy(msg: &BorrowedMessage<'_>, topic: &mut Option<Arc<str>>) -> RawRecord {
        let name = match topic {
            Some(t) if **t == *msg.topic() => t.clone(),
            _ => topic.insert(Arc::from(msg.topic())).clone(),
        };
        RawRecord {
            tp: (name, msg.partition()),
            offset: msg.offset(),
            key: msg.key().map(Bytes::copy_from_slice),
            raw: msg.payload().map(Bytes::copy_from_slice).unwrap_or_default(),
            replay_for: replay_target(msg),
        }
    }
}

/// The sink a replayed dead letter is meant for (`lotbridge dlq replay` sets the header).
fn replay_target(msg: &BorrowedMessage<'_>) -> Option<String> {
    use rdkafka::message::Headers;
    let headers = msg.headers()?;
    let header = headers.iter().find(|h| h.key == crate::dlq::headers::REPLAY_SINK)?;
    header.value.map(|v| String::from_utf8_lossy(v).into_owned())
}

fn prepare(sink: &Sink, rec: RawRecord, limits: DecodeLimits) -> Prepared {
    let result = match decode_with(&rec.raw, &limits) {
        Err(e) => Err((Stage::Decode, e.to_string())),
        Ok(event) => match sink.adapter.map(&event) {
            Err(e) => Err((Stage::Map, e.to_string())),
            Ok(mapping) => Ok(Routed { lot: event.lot.clone(), mapping, event }),
        },
    };
    Prepared { origin_tp: rec.tp, offset: rec.offset, key: rec.key, raw: rec.raw, replay_for: rec.replay_for, result }
}

/// Decodes and maps a batch; large ones (photos, backlogs) on the blocking pool.
async fn decode_ahead(sink: Arc<Sink>, records: Vec<RawRecord>, limits: DecodeLimits, backlog: bool) -> Option<Batch> {
    let bytes: usize = records.iter().map(|r| r.raw.len()).sum();
    let heavy = bytes > OFFLOAD_BATCH_BYTES || records.len() > READ_BATCH / 4;
    let prepare_all = move || {
        let records = records.into_iter().map(|r| prepare(&sink, r, limits)).collect();
        Batch { records, backlog }
    };
    if heavy {
        tokio::task::spawn_blocking(prepare_all).await.ok()
    } else {
        Some(prepare_all())
    }
}

/// Reads, decodes, maps and routes records until `stop` turns true.
pub async fn run_intake(
    sink: Arc<Sink>,
    consumer: Arc<SinkConsumer>,
    kafka: KafkaConfig,
    mut stop: watch::Receiver<bool>,
) {
    let limits = DecodeLimits { max_record_bytes: kafka.max_record_bytes };
    let budget = sink.config.memory_budget_bytes;
    let batch_bytes = read_batch_bytes(budget);
    let mut ahead = FuturesOrdered::new();
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let probe = crate::metrics::LagProbe::new(sink.metrics.clone(), sink.name());
    tokio::spawn(crate::metrics::run_lag_probe(probe, consumer.clone(), stop.clone()));
    let mut stream = consumer.stream();
    let mut topic = None;
    // Backpressure in two steps. Over the budget, reading stops at once (librdkafka's own
    // queue stays bounded by `queued.max.messages.kbytes`) and goes on as soon as memory is
    // under the resume mark. Only if that lasts `PAUSE_AFTER` are the partitions paused, so
    // the consumer can be polled (group liveness) without reading: a pause makes librdkafka
    // drop what it fetched ahead, which then has to be fetched again, a cost that brief
    // stops of a busy sink should not pay.
    let mut gated_at: Option<Instant> = None;
    let mut paused = false;
    loop {
        let reading = gated_at.is_none() || paused;
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            _ = tick.tick() => {
                relieve(&sink, &consumer, &mut gated_at, &mut paused);
                if gated_at.is_some_and(|t| t.elapsed() >= PAUSE_AFTER) && !paused {
                    set_paused(&sink, &consumer, true);
                    paused = true;
                }
                housekeeping(&sink);
            }
            _ = sink.relieved.notified() => relieve(&sink, &consumer, &mut gated_at, &mut paused),
            Some(batch) = ahead.next(), if !ahead.is_empty() => match batch {
                Some(batch) => {
                    route_all(&sink, batch);
                    if sink.held_bytes() > budget && !sink.backpressured.swap(true, Ordering::Relaxed) {
                        gated_at = Some(Instant::now());
                        tracing::debug!(sink = sink.name(), held_bytes = sink.held_bytes(), "memory budget: reading stops");
                    }
                }
                None => tracing::error!(sink = sink.name(), "decoder task failed"),
            },
            Some(first) = stream.next(), if reading && ahead.len() < DECODE_AHEAD => {
                let mut records = Vec::new();
                let mut bytes = take(&sink, first, &mut topic, &mut records);
                // Whatever else is ready, without waiting.
                let mut full = false;
                while !full {
                    match stream.next().now_or_never() {
                        Some(Some(msg)) => bytes += take(&sink, msg, &mut topic, &mut records),
                        _ => break,
                    }
                    full = records.len() >= READ_BATCH || bytes >= batch_bytes;
                }
                if !records.is_empty() {
                    ahead.push_back(decode_ahead(sink.clone(), records, limits, full));
                }
            },
        }
    }
}

/// How long reading may stop for the memory budget before the partitions are paused.
const PAUSE_AFTER: Duration = Duration::from_secs(1);

/// Ends backpressure once held memory is under the resume mark: reading goes on, and
/// paused partitions resume.
fn relieve(sink: &Sink, consumer: &SinkConsumer, gated_at: &mut Option<Instant>, paused: &mut bool) {
    if sink.held_bytes() >= sink.resume_mark() || !sink.backpressured.swap(false, Ordering::Relaxed) {
        return;
    }
    *gated_at = None;
    if std::mem::take(paused) {
        set_paused(sink, consumer, false);
    }
}

/// Copies a read record into `records`; returns its size.
fn take(
    sink: &Sink,
    msg: KafkaResult<BorrowedMessage<'_>>,
    topic: &mut Option<Arc<str>>,
    records: &mut Vec<RawRecord>,
) -> usize {
    match msg {
        Ok(m) => {
            let record = RawRecord::copy(&m, topic);
            let size = record.raw.len();
            records.push(record);
            size
        }
        Err(e) => {
            tracing::warn!(sink = sink.name(), error = %e, "kafka consumer error");
            0
        }
    }
}

fn set_paused(sink: &Sink, consumer: &SinkConsumer, pause: bool) {
    let Ok(assignment) = consumer.assignment() else { return };
    if !pause {
        seek_to_read_positions(sink, consumer);
    }
    let result = if pause { consumer.pause(&assignment) } else { consumer.resume(&assignment) };
    if let Err(e) = result {
        tracing::warn!(sink = sink.name(), error = %e, pause, "cannot pause/resume partitions");
    }
    let n = if pause { assignment.count() as i64 } else { 0 };
    sink.metrics.paused_partitions.with_label_values(&[sink.name()]).set(n);
    tracing::info!(sink = sink.name(), held_bytes = sink.held_bytes(), pause, "memory budget backpressure");
}

/// Reading must go on right after the last record routed, whatever librdkafka fetched ahead
/// and purged while paused: seek there explicitly rather than rely on its resume position
/// (a record read twice is ignored by the offset tracker).
fn seek_to_read_positions(sink: &Sink, consumer: &SinkConsumer) {
    let mut tpl = TopicPartitionList::new();
    for (tp, next) in sink.partitions.read_positions() {
        let _ = tpl.add_partition_offset(&tp.0, tp.1, Offset::Offset(next));
    }
    if tpl.count() == 0 {
        return;
    }
    if let Err(e) = consumer.seek_partitions(tpl, Duration::from_secs(5)) {
        tracing::warn!(sink = sink.name(), error = %e, "cannot seek back after backpressure");
    }
}

fn housekeeping(sink: &Sink) {
    let age = sink.partitions.oldest().map_or(0, |t| t.elapsed().as_secs());
    sink.metrics.oldest_unacked_seconds.with_label_values(&[sink.name()]).set(age as i64);
    let uncommitted = sink.partitions.uncommitted();
    sink.metrics.finished_uncommitted.with_label_values(&[sink.name()]).set(uncommitted as i64);
    sink.metrics.assigned_partitions.with_label_values(&[sink.name()]).set(sink.partitions.assigned().len() as i64);
    sink.export_token_stats();
}

/// Routes a batch: registers its offsets, counts it, dead-letters the invalid, completes
/// the skipped, and queues the rest on their lanes, each lane once per batch.
fn route_all(sink: &Arc<Sink>, batch: Batch) {
    count_consumed(sink, &batch.records);
    let tickets = sink.partitions.register_all(batch.records.iter().map(|p| (&p.origin_tp, p.offset)));
    let read_at = Instant::now();
    let mut lanes: HashMap<String, Vec<Item>> = HashMap::new();
    let mut finished = Vec::new();
    for (p, ticket) in batch.records.into_iter().zip(tickets) {
        let Some(ticket) = ticket else {
            continue; // a late record of a revoked partition, or read twice: handled elsewhere
        };
        if p.replay_for.as_deref().is_some_and(|target| target != sink.name()) {
            sink.metrics.skipped.with_label_values(&[sink.name(), "replayed_for_other_sink"]).inc();
            finished.push(ticket);
            continue;
        }
        if let (Some(book), Ok(routed)) = (&sink.lot_book, &p.result) {
            book.observe(&routed.event, &p.origin_tp);
        }
        match p.result {
            Err((stage, error)) => {
                let origin = Arc::new(Origin { ticket, key: p.key, raw: p.raw });
                dead_letter_invalid(sink, origin, stage, error);
            }
            Ok(Routed { mapping: Mapping::Skip(reason), .. }) => {
                sink.metrics.skipped.with_label_values(&[sink.name(), reason.as_str()]).inc();
                finished.push(ticket);
            }
            Ok(Routed { lot, mapping: Mapping::Record(mapped), event }) => {
                count_photo(sink, mapped.photo.as_ref());
                let item = Item {
                    reply_to: reply_to(&event),
                    event_type: event.event_type(),
                    event_at: event.at,
                    read_at,
                    origin: Some(Arc::new(Origin { ticket, key: p.key, raw: p.raw })),
                    mapped,
                    backlog: batch.backlog,
                };
                lanes.entry(lot).or_default().push(item);
            }
        }
    }
    sink.complete_all(&finished);
    for (lot, items) in lanes {
        if let Some(origin) = items.first().and_then(|i| i.origin.as_ref()) {
            note_live(sink, &lot, &origin.ticket.tp);
        }
        submit_all(sink, &lot, items);
    }
}

/// Counts a batch's records by topic (nearly always one topic per batch).
fn count_consumed(sink: &Sink, records: &[Prepared]) {
    let mut runs: Vec<(&str, u64)> = Vec::new();
    for p in records {
        match runs.last_mut() {
            Some((topic, n)) if *topic == &*p.origin_tp.0 => *n += 1,
            _ => runs.push((&p.origin_tp.0, 1)),
        }
    }
    for (topic, n) in runs {
        sink.metrics.consumed.with_label_values(&[sink.name(), topic]).inc_by(n);
    }
}

fn dead_letter_invalid(sink: &Arc<Sink>, origin: Arc<Origin>, stage: Stage, error: String) {
    sink.metrics.invalid.with_label_values(&[sink.name(), stage.as_str()]).inc();
    let size = origin.raw.len();
    sink.hold(size);
    let sink = sink.clone();
    tokio::spawn(async move {
        sink.dead_letter(&origin, stage, &error, 0).await;
        sink.release(size);
        sink.metrics.outcomes.with_label_values(&[sink.name(), "invalid", "dead_lettered"]).inc();
        sink.complete(&origin.ticket);
    });
}

/// Queues an item on its lane, settling what coalesced and starting the lane if new.
pub fn submit(sink: &Arc<Sink>, lot: &str, item: Item) {
    submit_all(sink, lot, vec![item]);
}

/// Queues items of one lot on its lane, in order, with one wake-up of the lane.
pub fn submit_all(sink: &Arc<Sink>, lot: &str, items: Vec<Item>) {
    sink.hold_many(items.iter().map(Item::size).sum(), items.len());
    let (settled, new_lane) = sink.enqueue_all(lot, items);
    for (item, how) in settled {
        sink.finish(&item, Outcome::Settled(how));
    }
    if let Some(lane) = new_lane {
        tokio::spawn(run_lane(sink.clone(), lot.to_string(), lane));
    }
}

fn reply_to(event: &Event) -> Option<ReplyTo> {
    match &event.data {
        EventData::MemberCouponsRequested(q) => {
            Some(ReplyTo { request_id: event.id.clone(), member_id: q.member_id.clone(), lot: event.lot.clone() })
        }
        _ => None,
    }
}

fn note_live(sink: &Sink, lot: &str, tp: &TopicPartition) {
    let mut live = sink.live.lock().unwrap_or_else(|p| p.into_inner());
    match live.get_mut(lot) {
        Some(entry) => *entry = (Instant::now(), tp.clone()),
        None => {
            live.insert(lot.to_string(), (Instant::now(), tp.clone()));
        }
    }
}

fn count_photo(sink: &Sink, photo: Option<&PhotoOutcome>) {
    let Some(photo) = photo else { return };
    let outcome = match photo {
        PhotoOutcome::Unchanged => "unchanged",
        PhotoOutcome::Recompressed { before_bytes, after_bytes } => {
            let saved = before_bytes.saturating_sub(*after_bytes) as u64;
            sink.metrics.photo_bytes_saved.with_label_values(&[sink.name()]).inc_by(saved);
            "recompressed"
        }
        PhotoOutcome::Dropped(reason) => reason.as_str(),
    };
    sink.metrics.photos.with_label_values(&[sink.name(), outcome]).inc();
}

/// Every `period`, queues a heartbeat for each bound lot that is live and whose partition
/// this instance owns, so heartbeats move with partitions on rebalance.
pub async fn run_heartbeats(sink: Arc<Sink>, period: Duration, mut stop: watch::Receiver<bool>) {
    let window = Duration::from_secs(sink.config.live_window_secs);
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => {}
        }
        let lots = live_lots(&sink, window);
        sink.metrics.live_lots.with_label_values(&[sink.name()]).set(lots.len() as i64);
        for lot in lots {
            queue_heartbeat(&sink, &lot);
        }
    }
}

fn live_lots(sink: &Sink, window: Duration) -> Vec<String> {
    let mut live = sink.live.lock().unwrap_or_else(|p| p.into_inner());
    live.retain(|_, (seen, _)| seen.elapsed() <= window);
    live.iter().filter(|(_, (_, tp))| sink.partitions.owns(tp)).map(|(lot, _)| lot.clone()).collect()
}

fn queue_heartbeat(sink: &Arc<Sink>, lot: &str) {
    let now = chrono::Utc::now().fixed_offset();
    let event = Event {
        id: format!("heartbeat.{lot}.{}", now.timestamp()),
        lot: lot.to_string(),
        at: now,
        data: EventData::LotHeartbeat,
    };
    match sink.adapter.map(&event) {
        Ok(Mapping::Record(mapped)) => {
            let item = Item {
                mapped,
                origin: None,
                event_type: event.event_type(),
                event_at: now,
                read_at: Instant::now(),
                reply_to: None,
                backlog: false,
            };
            submit(sink, lot, item);
        }
        Ok(Mapping::Skip(SkipReason::LotNotBound | SkipReason::TypeNotHandled)) => {}
        Err(e) => tracing::warn!(sink = sink.name(), lot, error = %e, "cannot map a heartbeat"),
    }
}

impl OffsetStore for SinkConsumer {
    fn store(&self, tp: &TopicPartition, next: i64) {
        let mut tpl = TopicPartitionList::new();
        if tpl.add_partition_offset(&tp.0, tp.1, Offset::Offset(next)).is_ok() {
            if let Err(e) = self.store_offsets(&tpl) {
                tracing::debug!(topic = %tp.0, partition = tp.1, error = %e, "offset not stored (partition revoked?)");
            }
        }
    }
}

//! One sink's read loop: reads what librdkafka has ready as a batch, has it decoded and
//! mapped ahead, routes it, and keeps the memory budget's backpressure and the housekeeping
//! metrics going.

use super::consumer::SinkConsumer;
use super::decode::{decode_ahead, RawRecord, Stamps};

use super::route::route_all;
pub(crate) use super::route::submit;
use super::sink::Sink;
use crate::config::KafkaConfig;
use crate::event::DecodeLimits;
use futures::stream::FuturesOrdered;
use futures::{FutureExt, StreamExt};
use rdkafka::error::KafkaResult;
use rdkafka::message::BorrowedMessage;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Most records read per wake-up: what librdkafka has ready is read, decoded, mapped and
/// routed as one batch, so per-record costs (task wake-ups, locks, metric lookups) are paid
/// per batch.
pub(crate) const READ_BATCH: usize = 512;
/// Batches decoded ahead of routing, in order.
const DECODE_AHEAD: usize = 4;

/// Most bytes read per batch: a small share of the sink's memory budget, since batches
/// decoded ahead are not yet counted in it.
fn read_batch_bytes(memory_budget_bytes: usize) -> usize {
    (memory_budget_bytes / 32).clamp(64 * 1024, 2 * 1024 * 1024)
}

/// Reads, decodes, maps and routes records until `stop` turns true.
pub(crate) async fn run_intake(
    sink: Arc<Sink>,
    consumer: Arc<SinkConsumer>,
    kafka: KafkaConfig,
    mut stop: watch::Receiver<bool>,
) {
    let limits = DecodeLimits { max_record_bytes: kafka.max_record_bytes };
    let batch_bytes = read_batch_bytes(sink.budget.limit());
    let mut ahead = FuturesOrdered::new();
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let probe = crate::metrics::LagProbe::new(sink.metrics.clone(), sink.name());
    tokio::spawn(crate::metrics::run_lag_probe(probe, consumer.clone(), stop.clone()));
    tokio::spawn(run_partition_total(sink.clone(), consumer.clone(), kafka.topics.clone(), stop.clone()));
    let mut stream = consumer.stream();
    let mut topic = None;
    let mut stamps = Stamps::new(sink.partitions.clone());
    let commit_every = Duration::from_millis(kafka.commit_interval_ms.max(1));
    let mut maps_committed = tokio::time::Instant::now();
    loop {
        let reading = sink.budget.may_read();
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            _ = tick.tick() => {
                sink.budget.tick(&*consumer, &sink.partitions);
                housekeeping(&sink);
                if maps_committed.elapsed() >= commit_every {
                    maps_committed = tokio::time::Instant::now();
                    sink.acks.commit_changed_maps();
                }
            }
            _ = sink.budget.relieved() => sink.budget.relieve(&*consumer, &sink.partitions),
            Some(batch) = ahead.next(), if !ahead.is_empty() => match batch {
                Ok::<_, String>(batch) => {
                    route_all(&sink, batch);
                    sink.budget.check(&sink.partitions);
                }
                Err(e) => {
                    // Its records were never registered: reading on would commit past them.
                    sink.fail("decoding a batch", &e);
                    break;
                }
            },
            Some(first) = stream.next(), if reading && ahead.len() < DECODE_AHEAD => {
                let mut records = Vec::new();
                let mut bytes = take(&sink, first, &mut topic, &mut stamps, &mut records);
                // Whatever else is ready, without waiting.
                let mut full = false;
                while !full {
                    match stream.next().now_or_never() {
                        Some(Some(msg)) => bytes += take(&sink, msg, &mut topic, &mut stamps, &mut records),
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

/// Copies a read record into `records`; returns its size.
fn take(
    sink: &Sink,
    msg: KafkaResult<BorrowedMessage<'_>>,
    topic: &mut Option<Arc<str>>,
    stamps: &mut Stamps,
    records: &mut Vec<RawRecord>,
) -> usize {
    match msg {
        Ok(m) => {
            let record = RawRecord::copy(&m, topic, stamps);
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

/// How often the partition count of the input topics is asked again once known (it
/// changes only when an operator adds partitions, which also triggers a rebalance).
const TOTAL_EVERY: Duration = Duration::from_secs(30);
/// How often it is asked while not known.
const TOTAL_RETRY: Duration = Duration::from_secs(1);

/// Keeps the sink's rate share told how many partitions its input topics have in all (the
/// rebalance callbacks tell it how many this replica owns, see `gate.rs`): asked at start,
/// after each rebalance, and every [`TOTAL_EVERY`]. The metadata request blocks, so it runs
/// here on the blocking pool rather than in a rebalance callback on the polling thread.
async fn run_partition_total(
    sink: Arc<Sink>,
    consumer: Arc<SinkConsumer>,
    topics: Vec<String>,
    mut stop: watch::Receiver<bool>,
) {
    let share = sink.gate.rate_share();
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let mut asked: Option<(tokio::time::Instant, usize)> = None;
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => return,
            _ = tick.tick() => {}
        }
        let owned = sink.partitions.assigned().len();
        let due = match (asked, share.total()) {
            (None, _) => true,
            (Some((_, seen)), _) if seen != owned => true,
            (Some((at, _)), None) => at.elapsed() >= TOTAL_RETRY,
            (Some((at, _)), Some(_)) => at.elapsed() >= TOTAL_EVERY,
        };
        if !due {
            continue;
        }
        asked = Some((tokio::time::Instant::now(), owned));
        let (consumer, topics) = (consumer.clone(), topics.clone());
        let total = tokio::task::spawn_blocking(move || {
            topics.iter().map(|t| super::schedule::partition_count(consumer.as_ref(), t)).sum::<Option<i32>>()
        });
        match total.await {
            Ok(Some(total)) => {
                share.set_total(usize::try_from(total).unwrap_or(0));
                share.set_owned(sink.partitions.assigned().len());
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(sink = sink.name(), error = %e, "asking the partition total failed on the blocking pool")
            }
        }
    }
}

fn housekeeping(sink: &Sink) {
    let age = sink.partitions.oldest().map_or(0, |t| t.elapsed().as_secs());
    sink.metrics.oldest_unacked_seconds.with_label_values(&[sink.name()]).set(age as i64);
    let uncommitted = sink.partitions.uncommitted();
    sink.metrics.finished_uncommitted.with_label_values(&[sink.name()]).set(uncommitted as i64);
    sink.metrics.assigned_partitions.with_label_values(&[sink.name()]).set(sink.partitions.assigned().len() as i64);
    sink.export_token_stats();
    if let Some(adjusted) = sink.adapter.adjustments() {
        sink.metrics.export_adjustments(sink.name(), adjusted);
    }
    sink.gate.prune();
}

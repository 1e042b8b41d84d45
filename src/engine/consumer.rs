//! One sink's Kafka consumer: its own consumer group, its settings, and the callbacks of
//! the group protocol: drain and commit on revoke, track assignments and commits.

use super::acks::OffsetStore;
use super::ahead::Ahead;
use super::budget::Budget;
use super::gate::RateShare;
use super::offsets::{Partitions, TopicPartition};
use super::sink::Sink;
use crate::config::KafkaConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use std::sync::Arc;
use std::time::Duration;

/// Consumer callbacks: drain and commit on revoke, track assignments.
pub(crate) struct Context {
    /// A client of the same group that never joins it: reads the committed offsets and
    /// their finished-ahead maps of newly assigned partitions.
    reader: BaseConsumer,
    partitions: Arc<Partitions>,
    budget: Arc<Budget>,
    share: Arc<RateShare>,
    drain: Duration,
    sink: String,
}

impl ClientContext for Context {}

impl Context {
    /// Waits, bounded by the drain timeout, for the records of `tps` to finish; returns how
    /// many did not.
    fn drain(&self, tps: &[TopicPartition]) -> usize {
        let deadline = std::time::Instant::now() + self.drain;
        while self.partitions.unfinished(tps) > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.partitions.unfinished(tps)
    }
}

/// Runs blocking work from a runtime worker without starving that worker's other tasks:
/// `block_in_place` on a multi-threaded runtime, inline elsewhere (a current-thread runtime
/// or a plain thread, where nothing else could run meanwhile anyway).
fn off_the_runtime<T>(work: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(work),
        _ => work(),
    }
}

impl Context {
    /// Reads the committed offsets of `assigned` with their finished-ahead maps, and tells
    /// the trackers which records are finished already. Bounded by [`COMMITTED_TIMEOUT`];
    /// without an answer, every record after the committed offset is sent again.
    fn load_finished_before(&self, assigned: &TopicPartitionList) {
        let committed = match self.reader.committed_offsets(assigned.clone(), COMMITTED_TIMEOUT) {
            Ok(committed) => committed,
            Err(e) => {
                tracing::warn!(sink = %self.sink, error = %e, "committed offsets not read: records finished ahead of them are sent again");
                return;
            }
        };
        for e in committed.elements() {
            let Offset::Offset(offset) = e.offset() else { continue };
            let Some(ahead) = metadata_text(&e).and_then(|t| Ahead::decode(&t, offset)) else { continue };
            tracing::info!(sink = %self.sink, topic = e.topic(), partition = e.partition(), offset, "records finished ahead of the committed offset are not sent again");
            self.partitions.set_finished_before(&(Arc::from(e.topic()), e.partition()), ahead);
        }
    }
}

/// A committed offset's metadata as text; `None` if it is not UTF-8 (another client's
/// commit), on which rdkafka's accessor panics.
fn metadata_text(e: &rdkafka::topic_partition_list::TopicPartitionListElem<'_>) -> Option<String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| e.metadata().to_string())).ok()
}

/// How long the assignment waits for the committed offsets' maps.
const COMMITTED_TIMEOUT: Duration = Duration::from_secs(5);

impl ConsumerContext for Context {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let tps = topic_partitions(tpl);
            // Lanes keep delivering on other threads; wait for them, bounded. This callback
            // runs where the consumer is polled, on a runtime worker: tell the runtime, so
            // the worker's other tasks (the very lanes being waited for, other sinks) move
            // to other threads instead of starving behind the wait.
            let left = off_the_runtime(|| self.drain(&tps));
            // What finished behind a record the drain did not see finish goes with the
            // commit, for the next owner.
            let maps = self.partitions.changed_maps();
            if !maps.is_empty() {
                if let Err(e) =
                    consumer.store_offsets(&offsets_with_maps(maps.iter().map(|(tp, n, m)| (tp, *n, m.as_str()))))
                {
                    tracing::debug!(sink = %self.sink, error = %e, "finished-ahead maps not stored on revoke");
                }
            }
            if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
                tracing::debug!(sink = %self.sink, error = %e, "nothing committed on revoke");
            }
            self.partitions.revoke(&tps);
            // After the drain: the revoked records went out under the old share, while the
            // next owners wait for this revoke to end.
            self.share.set_owned(self.partitions.assigned().len());
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
                let named = metadata_text(&e).and_then(|t| Ahead::decode(&t, next)).map_or(0, |a| a.len());
                self.partitions.committed(&(Arc::from(e.topic()), e.partition()), next, named);
            }
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let tps = topic_partitions(tpl);
            tracing::info!(sink = %self.sink, partitions = tps.len(), "partitions assigned");
            self.partitions.assign(tps);
            off_the_runtime(|| self.load_finished_before(tpl));
            // Before any record of the new assignment is read.
            self.share.set_owned(self.partitions.assigned().len());
            self.budget.on_assign(consumer, tpl);
        }
    }
}

fn topic_partitions(tpl: &TopicPartitionList) -> Vec<TopicPartition> {
    tpl.elements().iter().map(|e| (Arc::from(e.topic()), e.partition())).collect()
}

/// The consumer type of a sink.
pub(crate) type SinkConsumer = StreamConsumer<Context>;

/// Creates the sink's consumer in group `<prefix>.<sink>` and subscribes it.
pub(crate) fn consumer(kafka: &KafkaConfig, sink: &Sink) -> Result<Arc<SinkConsumer>, KafkaError> {
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
    let reader: BaseConsumer = cfg.create()?;
    let ctx = Context {
        reader,
        partitions: sink.partitions.clone(),
        budget: sink.budget.clone(),
        share: sink.gate.rate_share(),
        drain: Duration::from_millis(kafka.drain_timeout_ms),
        sink: sink.name().to_string(),
    };
    let consumer: SinkConsumer = cfg.create_with_context(ctx)?;
    let topics: Vec<&str> = kafka.topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    Ok(Arc::new(consumer))
}

/// librdkafka's fetch-ahead queue: a quarter of the sink's memory budget (at least 4 MiB),
/// so what a sink can hold is bounded by its budget: records held plus tracker slots up to
/// the budget, and librdkafka's queue a quarter on top (it may overshoot by one fetch).
/// The default budget (256 MiB) gives the 64 MiB queue photos need; a small queue starves
/// the consumer when records carry photos (measured: 7x fewer photo events per second with
/// 16 MiB, see BENCHMARKS.md), so a small budget trades photo throughput for memory.
fn prefetch_kbytes(memory_budget_bytes: usize) -> usize {
    (memory_budget_bytes / 4 / 1024).clamp(4 * 1024, 2_097_151)
}

/// A list of offsets, each with its map as metadata (`None` if an offset is invalid).
fn offsets_with_maps<'a>(entries: impl IntoIterator<Item = (&'a TopicPartition, i64, &'a str)>) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for (tp, next, map) in entries {
        if tpl.add_partition_offset(&tp.0, tp.1, Offset::Offset(next)).is_ok() && !map.is_empty() {
            if let Some(mut elem) = tpl.find_partition(&tp.0, tp.1) {
                elem.set_metadata(map);
            }
        }
    }
    tpl
}

impl OffsetStore for SinkConsumer {
    fn store(&self, tp: &TopicPartition, next: i64, map: &str) {
        let tpl = offsets_with_maps([(tp, next, map)]);
        if let Err(e) = self.store_offsets(&tpl) {
            tracing::debug!(topic = %tp.0, partition = tp.1, error = %e, "offset not stored (partition revoked?)");
        }
    }

    fn commit_maps(&self, maps: &[(TopicPartition, i64, String)]) {
        let tpl = offsets_with_maps(maps.iter().map(|(tp, next, map)| (tp, *next, map.as_str())));
        if let Err(e) = self.store_offsets(&tpl) {
            tracing::debug!(error = %e, "finished-ahead maps not stored (partitions revoked?)");
            return;
        }
        if let Err(e) = self.commit(&tpl, CommitMode::Async) {
            tracing::debug!(error = %e, "finished-ahead maps not committed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The revoke drain waits for lanes that run on the same runtime. On a runtime whose
    /// only worker runs the drain, a plain sleep would starve the lane it waits for.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn the_revoke_drain_lets_the_lanes_it_waits_for_run() {
        let partitions = Arc::new(Partitions::default());
        let tp: TopicPartition = (Arc::from("t"), 0);
        partitions.assign([tp.clone()]);
        let ticket = partitions.register_all([(&tp, 7)]).pop().flatten().unwrap();
        let metrics = crate::metrics::Metrics::new().unwrap();
        let budget = Arc::new(Budget::new(1 << 20, &metrics, "s"));
        let gate = super::super::gate::Gate::new(&Default::default(), 1, &metrics, "s");
        let ctx = Arc::new(Context {
            reader: ClientConfig::new().set("group.id", "t").create().unwrap(),
            partitions: partitions.clone(),
            budget,
            share: gate.rate_share(),
            drain: Duration::from_secs(3),
            sink: "s".into(),
        });
        let left = tokio::spawn(async move {
            // The lane finishing the record is queued on the same, only worker.
            let lane = tokio::spawn(async move {
                partitions.complete_all([&ticket]);
            });
            let left = off_the_runtime(|| ctx.drain(&[tp]));
            let _ = lane.await;
            left
        })
        .await
        .unwrap();
        assert_eq!(left, 0, "the lane ran while the drain waited");
    }
}

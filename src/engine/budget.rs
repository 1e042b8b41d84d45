//! The memory budget of one sink, the whole protocol in one place: what is held (records
//! read and not yet finished), when reading stops, when partitions are paused, when both
//! end, and how a rebalance finds the partitions in the state the budget wants.
//!
//! Backpressure comes in two steps. Over the budget, intake stops reading at once
//! (librdkafka's own queue stays bounded by `queued.max.messages.kbytes`) and goes on as
//! soon as memory is under the resume mark: the release that crosses it rings intake, not
//! a timer. Only if reading has been stopped for [`PAUSE_AFTER`] are the partitions paused,
//! so the consumer keeps being polled (group liveness) without reading: a pause makes
//! librdkafka drop what it fetched ahead, which then has to be fetched again, a cost that
//! brief stops of a busy sink should not pay.

use super::offsets::Partitions;
use crate::metrics::Metrics;
use prometheus::IntGauge;
use rdkafka::consumer::{Consumer, ConsumerContext};
use rdkafka::{Offset, TopicPartitionList};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// What one tracked record costs in the offset trackers (offset, state, read time), counted
/// against the budget: a record that never finishes keeps every later record's slot, and
/// that memory must be bounded like the records themselves.
pub(crate) const TRACKER_SLOT_BYTES: usize = 32;

/// How long reading may stop for the memory budget before the partitions are paused.
pub(crate) const PAUSE_AFTER: Duration = Duration::from_secs(1);

/// Bytes and records one sink holds, against its budget.
pub(crate) struct Budget {
    sink: String,
    limit: usize,
    held_bytes: AtomicUsize,
    held_records: AtomicUsize,
    /// Since when reading is stopped for the budget (`None`: reading).
    gated_since: Mutex<Option<Instant>>,
    /// Whether the assigned partitions are paused (the second step).
    paused: AtomicBool,
    relieved: Notify,
    held_bytes_gauge: IntGauge,
    held_records_gauge: IntGauge,
    paused_gauge: IntGauge,
}

impl Budget {
    /// A budget of `limit` bytes for `sink`.
    pub(crate) fn new(limit: usize, metrics: &Metrics, sink: &str) -> Budget {
        Budget {
            sink: sink.to_string(),
            limit,
            held_bytes: AtomicUsize::new(0),
            held_records: AtomicUsize::new(0),
            gated_since: Mutex::new(None),
            paused: AtomicBool::new(false),
            relieved: Notify::new(),
            held_bytes_gauge: metrics.held_bytes.with_label_values(&[sink]),
            held_records_gauge: metrics.held_records.with_label_values(&[sink]),
            paused_gauge: metrics.paused_partitions.with_label_values(&[sink]),
        }
    }

    /// The budget in bytes.
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// Counts `records` records of `bytes` bytes in all entering memory.
    pub(crate) fn hold(&self, bytes: usize, records: usize) {
        let held = self.held_bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
        let count = self.held_records.fetch_add(records, Ordering::Relaxed) + records;
        self.held_bytes_gauge.set(held as i64);
        self.held_records_gauge.set(count as i64);
    }

    /// Counts `records` records of `bytes` bytes in all leaving memory; rings intake when
    /// this brings a stopped sink under the resume mark.
    pub(crate) fn release(&self, bytes: usize, records: usize) {
        let held = self.held_bytes.fetch_sub(bytes, Ordering::Relaxed).saturating_sub(bytes);
        let count = self.held_records.fetch_sub(records, Ordering::Relaxed).saturating_sub(records);
        self.held_bytes_gauge.set(held as i64);
        self.held_records_gauge.set(count as i64);
        if held < self.resume_mark() && self.is_gated() {
            self.relieved.notify_one();
        }
    }

    /// Held bytes under which reading goes on: 75 % of the budget.
    pub(crate) fn resume_mark(&self) -> usize {
        self.limit / 4 * 3
    }

    /// Bytes held without a final outcome.
    pub(crate) fn held_bytes(&self) -> usize {
        self.held_bytes.load(Ordering::Relaxed)
    }

    fn gated_since(&self) -> Option<Instant> {
        *self.gated_since.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn is_gated(&self) -> bool {
        self.gated_since().is_some()
    }

    /// Whether the partitions are paused for the budget.
    pub(crate) fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Relaxed)
    }

    /// Whether intake may read: not stopped, or stopped long enough that the partitions are
    /// paused (polling then only serves the group and callbacks).
    pub(crate) fn may_read(&self) -> bool {
        !self.is_gated() || self.is_paused()
    }

    /// Bytes counted against the budget: records held, and the trackers' slots.
    fn used(&self, partitions: &Partitions) -> usize {
        self.held_bytes() + partitions.slots() * TRACKER_SLOT_BYTES
    }

    /// After routing a batch: stops reading when the sink went over its budget.
    pub(crate) fn check(&self, partitions: &Partitions) {
        if self.used(partitions) <= self.limit {
            return;
        }
        let mut gated = self.gated_since.lock().unwrap_or_else(|p| p.into_inner());
        if gated.is_none() {
            *gated = Some(Instant::now());
            tracing::debug!(sink = %self.sink, held_bytes = self.held_bytes(), "memory budget: reading stops");
        }
    }

    /// Completes when a release brought a stopped sink under the resume mark.
    pub(crate) async fn relieved(&self) {
        self.relieved.notified().await
    }

    /// The housekeeping step: ends backpressure if memory allows, else pauses the
    /// partitions once reading has been stopped for [`PAUSE_AFTER`].
    pub(crate) fn tick<X: ConsumerContext, C: Consumer<X>>(&self, consumer: &C, partitions: &Partitions) {
        self.relieve(consumer, partitions);
        let due = self.gated_since().is_some_and(|t| t.elapsed() >= PAUSE_AFTER);
        if due && !self.paused.swap(true, Ordering::Relaxed) {
            self.apply(consumer, partitions, true);
        }
    }

    /// Ends backpressure once held memory is under the resume mark: reading goes on, and
    /// paused partitions resume.
    pub(crate) fn relieve<X: ConsumerContext, C: Consumer<X>>(&self, consumer: &C, partitions: &Partitions) {
        if self.used(partitions) >= self.resume_mark() {
            return;
        }
        if self.gated_since.lock().unwrap_or_else(|p| p.into_inner()).take().is_none() {
            return;
        }
        if self.paused.swap(false, Ordering::Relaxed) {
            self.apply(consumer, partitions, false);
        }
    }

    /// Brings newly assigned partitions into the state the budget wants, on every assign:
    /// librdkafka keeps a partition's pause flag across revoke and re-assignment, so a
    /// partition paused before it left could come back paused for good, and one gained
    /// while the sink is over its budget would be read without limit.
    pub(crate) fn on_assign<X: ConsumerContext, C: Consumer<X>>(&self, consumer: &C, assigned: &TopicPartitionList) {
        let pause = self.is_paused();
        let result = if pause { consumer.pause(assigned) } else { consumer.resume(assigned) };
        if let Err(e) = result {
            tracing::warn!(sink = %self.sink, error = %e, pause, "cannot reconcile the pause state of assigned partitions");
        }
        if pause {
            let count = consumer.assignment().map_or(0, |a| a.count());
            self.paused_gauge.set(count as i64);
        }
    }

    fn apply<X: ConsumerContext, C: Consumer<X>>(&self, consumer: &C, partitions: &Partitions, pause: bool) {
        let Ok(assignment) = consumer.assignment() else { return };
        if !pause {
            seek_to_read_positions(&self.sink, consumer, partitions);
        }
        let result = if pause { consumer.pause(&assignment) } else { consumer.resume(&assignment) };
        if let Err(e) = result {
            tracing::warn!(sink = %self.sink, error = %e, pause, "cannot pause/resume partitions");
        }
        self.paused_gauge.set(if pause { assignment.count() as i64 } else { 0 });
        tracing::info!(sink = %self.sink, held_bytes = self.held_bytes(), pause, "memory budget backpressure");
    }
}

/// Reading must go on right after the last record routed, whatever librdkafka fetched ahead
/// and purged while paused: seek there explicitly rather than rely on its resume position
/// (a record read twice is ignored by the offset tracker).
fn seek_to_read_positions<X: ConsumerContext, C: Consumer<X>>(sink: &str, consumer: &C, partitions: &Partitions) {
    let mut tpl = TopicPartitionList::new();
    for (tp, next) in partitions.read_positions() {
        let _ = tpl.add_partition_offset(&tp.0, tp.1, Offset::Offset(next));
    }
    if tpl.count() == 0 {
        return;
    }
    if let Err(e) = consumer.seek_partitions(tpl, Duration::from_secs(5)) {
        tracing::warn!(sink, error = %e, "cannot seek back after backpressure");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A record that never finishes keeps the slots of every later, finished record: the
    /// trackers' memory counts against the budget, so reading stops instead of growing
    /// without bound.
    #[test]
    fn tracker_slots_behind_a_stuck_record_count_against_the_budget() {
        let budget = Budget::new(1024 * 1024, &Metrics::new().unwrap(), "s");
        let partitions = Partitions::default();
        let tp: super::super::offsets::TopicPartition = (Arc::from("t"), 0);
        partitions.assign([tp.clone()]);
        let tickets: Vec<_> = partitions.register_all((0..40_000).map(|o| (&tp, o))).into_iter().flatten().collect();
        partitions.complete_all(&tickets[1..]);
        assert_eq!(budget.held_bytes(), 0, "every record but the first finished: no record bytes held");
        budget.check(&partitions);
        assert!(!budget.may_read(), "40 000 tracked slots (1.2 MiB) are over a 1 MiB budget: reading stops");
    }
}

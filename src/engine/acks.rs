//! Acknowledgement: what happens when records reach a final outcome. Outcomes are counted
//! and timed, the records' tickets complete in the partition trackers, and each watermark
//! that moved is stored once for the next commit.

use super::lane::{Item, Settled};
use super::offsets::{Partitions, Ticket, TopicPartition};
use crate::event::EventType;
use crate::metrics::Metrics;
use prometheus::{Histogram, IntCounterVec};
use std::sync::{Arc, Mutex};
use tokio::time::Instant;

/// Stores a partition's watermark (implemented by the sink's Kafka consumer).
pub(crate) trait OffsetStore: Send + Sync {
    /// Stores `next` (the next offset to consume) for the partition with its finished-ahead
    /// map (`ahead.rs`; empty for none); committed later.
    fn store(&self, tp: &TopicPartition, next: i64, map: &str);
    /// Stores and commits (without waiting) maps whose watermark did not move: the
    /// periodic commit commits only offsets that moved.
    fn commit_maps(&self, maps: &[(TopicPartition, i64, String)]);
}

/// A final outcome, as counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The vendor accepted it.
    Delivered,
    /// The vendor already had it.
    Duplicate,
    /// Finished without a request.
    Settled(Settled),
    /// Written to the dead-letter topic.
    DeadLettered,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::Duplicate => "duplicate",
            Outcome::Settled(s) => s.as_str(),
            Outcome::DeadLettered => "dead_lettered",
        }
    }
}

/// The outcome bookkeeping of one sink.
pub(crate) struct Acks {
    sink: String,
    partitions: Arc<Partitions>,
    store: Mutex<Option<Arc<dyn OffsetStore>>>,
    outcomes: IntCounterVec,
    // Updated for every record: resolving their labels each time costs more than the update.
    event_to_ack: Histogram,
    consume_to_ack: Histogram,
}

impl Acks {
    /// Bookkeeping over `partitions` for `sink`.
    pub(crate) fn new(partitions: Arc<Partitions>, metrics: &Metrics, sink: &str) -> Acks {
        Acks {
            sink: sink.to_string(),
            partitions,
            store: Mutex::new(None),
            outcomes: metrics.outcomes.clone(),
            event_to_ack: metrics.event_to_ack_seconds.with_label_values(&[sink]),
            consume_to_ack: metrics.consume_to_ack_seconds.with_label_values(&[sink]),
        }
    }

    /// Sets (or, with `None` at shutdown, releases) where watermarks are stored.
    pub(crate) fn set_store(&self, store: Option<Arc<dyn OffsetStore>>) {
        *self.store.lock().unwrap_or_else(|p| p.into_inner()) = store;
    }

    /// Counts and times a batch's outcome (the caller releases memory and completes).
    pub(crate) fn count(&self, items: &[Item], outcome: Outcome) {
        let Some(first) = items.first() else { return };
        // A batch nearly always holds one event type: count runs, not records.
        let mut run = (first.event_type, 0u64);
        for item in items {
            if item.event_type != run.0 {
                self.count_run(run, outcome);
                run = (item.event_type, 0);
            }
            run.1 += 1;
        }
        self.count_run(run, outcome);
        if matches!(outcome, Outcome::Delivered | Outcome::Duplicate) {
            let (now, acked) = (chrono::Utc::now().fixed_offset(), Instant::now());
            for item in items {
                let age = (now - item.event_at).num_milliseconds().max(0) as f64 / 1000.0;
                self.event_to_ack.observe(age);
                self.consume_to_ack.observe(acked.saturating_duration_since(item.read_at).as_secs_f64());
            }
        }
    }

    fn count_run(&self, (event_type, n): (EventType, u64), outcome: Outcome) {
        let labels = [self.sink.as_str(), event_type.as_str(), outcome.as_str()];
        self.outcomes.with_label_values(&labels).inc_by(n);
    }

    /// Counts an outcome of `n` records outside any lane (invalid records).
    pub(crate) fn count_label(&self, event_type: &str, outcome: &str, n: u64) {
        self.outcomes.with_label_values(&[self.sink.as_str(), event_type, outcome]).inc_by(n);
    }

    /// Marks Kafka records finished and stores each watermark that moved, once, with its
    /// finished-ahead map. Stores are made one at a time, so what is stored for a partition
    /// never goes back.
    pub(crate) fn complete<'a>(&self, tickets: impl IntoIterator<Item = &'a Ticket>) {
        let store = self.store.lock().unwrap_or_else(|p| p.into_inner());
        let moved = self.partitions.complete_all(tickets);
        if let Some(store) = store.as_ref() {
            for (tp, next, map) in &moved {
                store.store(tp, *next, map);
            }
        }
    }

    /// Stores and commits the finished-ahead maps that changed while their watermark stood
    /// still (run every commit interval).
    pub(crate) fn commit_changed_maps(&self) {
        let store = self.store.lock().unwrap_or_else(|p| p.into_inner());
        let Some(store) = store.as_ref() else { return };
        let maps = self.partitions.changed_maps();
        if !maps.is_empty() {
            store.commit_maps(&maps);
        }
    }
}

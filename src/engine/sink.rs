//! One running sink: its vendor adapter and the parts that each own one concern: the
//! [`Gate`] (pause, rate limits, concurrency), the [`Budget`] (memory), the [`Lanes`]
//! registry and the [`Acks`] (outcomes and watermarks). This file only wires them
//! together; the rules live in the parts.

use super::acks::{Acks, OffsetStore, Outcome};
use super::budget::Budget;
use super::gate::Gate;
use super::lane::{Item, Limits, Origin, Settled};
use super::lanes::{Lane, Lanes};
use super::offsets::{Partitions, Ticket, TopicPartition};
use super::output::{until_acked, DeadLetter, Output, Stage};
use crate::config::SinkConfig;
use crate::metrics::Metrics;
use crate::vendors::{Adapter, VendorKind};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// How long a lane waits to fill a batch from a backlog: ten lingers, at least 100 ms (none
/// if the sink lingers not at all). Long enough that a catch-up sends full batches (at
/// 150 k records/s over 128 lots, a lot gets 100 records in about 85 ms), short enough to
/// cost nothing next to the backlog.
fn backlog_linger(linger: Duration) -> Duration {
    if linger.is_zero() {
        return linger;
    }
    (linger * 10).max(Duration::from_millis(100))
}

/// A running sink.
pub struct Sink {
    /// Its configuration.
    pub(crate) config: SinkConfig,
    /// Vendor kind.
    pub(crate) kind: VendorKind,
    /// Vendor logic.
    pub(crate) adapter: Arc<dyn Adapter>,
    /// Offsets of assigned partitions.
    pub(crate) partitions: Arc<Partitions>,
    /// Metrics.
    pub(crate) metrics: Metrics,
    /// Dead letters and answers.
    pub(crate) output: Output,
    /// The shared HTTP client.
    pub(crate) http: reqwest::Client,
    /// Pause, rate limits and concurrency.
    pub(crate) gate: Gate,
    /// Memory held against the budget, and backpressure.
    pub(crate) budget: Arc<Budget>,
    /// Lanes by platform lot.
    pub(crate) lanes: Lanes,
    /// Outcomes and watermarks.
    pub(crate) acks: Acks,
    /// Lot → (last seen, its partition), for heartbeats.
    pub(crate) live: Mutex<HashMap<String, (Instant, TopicPartition)>>,
    /// Latest lot information, for vendors that want the full list daily.
    pub(crate) lot_book: Option<Arc<super::lots::LotBook>>,
    stop: tokio::sync::watch::Sender<bool>,
    /// Set once a task of the sink died: the engine stops, `/healthz` fails.
    failed: tokio::sync::watch::Sender<Option<String>>,
    token_seen: Mutex<[u64; 3]>,
}

impl Sink {
    /// A sink ready to start.
    pub(crate) fn new(
        config: SinkConfig,
        kind: VendorKind,
        adapter: Arc<dyn Adapter>,
        metrics: Metrics,
        output: Output,
        http: reqwest::Client,
    ) -> Sink {
        let name = config.name.clone();
        let partitions = Arc::new(Partitions::default());
        let lot_book = adapter.daily_full_push().then(Default::default);
        Sink {
            gate: Gate::new(&config.rate_limit, config.concurrency, &metrics, &name),
            budget: Arc::new(Budget::new(config.memory_budget_bytes, &metrics, &name)),
            lanes: Lanes::new(metrics.lanes.with_label_values(&[&name])),
            acks: Acks::new(partitions.clone(), &metrics, &name),
            config,
            kind,
            adapter,
            partitions,
            metrics,
            output,
            http,
            live: Mutex::new(HashMap::new()),
            lot_book,
            stop: tokio::sync::watch::channel(false).0,
            failed: tokio::sync::watch::channel(None).0,
            token_seen: Mutex::new([0; 3]),
        }
    }

    /// Sets (or, with `None` at shutdown, releases) where watermarks are stored.
    pub(crate) fn set_offset_store(&self, store: Option<Arc<dyn OffsetStore>>) {
        self.acks.set_store(store);
    }

    /// The sink's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Batch limits for lanes.
    pub(crate) fn limits(&self) -> Limits {
        let linger = Duration::from_millis(self.config.batch.linger_ms);
        Limits { max_bytes: self.config.batch.max_bytes, linger, backlog_linger: backlog_linger(linger) }
    }

    /// Records a final outcome: metrics, memory, and the partition's watermark.
    pub(crate) fn finish(&self, item: &Item, outcome: Outcome) {
        self.finish_all(std::slice::from_ref(item), outcome);
    }

    /// Records the same final outcome for a batch: metrics, memory, and the watermarks,
    /// each partition's stored once.
    pub(crate) fn finish_all(&self, items: &[Item], outcome: Outcome) {
        self.acks.count(items, outcome);
        self.budget.release(items.iter().map(Item::size).sum(), items.len());
        self.complete_all(items.iter().filter_map(|i| i.origin.as_ref().map(|o| &o.ticket)));
    }

    /// Marks Kafka records finished and stores each watermark that moved, once.
    pub(crate) fn complete_all<'a>(&self, tickets: impl IntoIterator<Item = &'a Ticket>) {
        self.acks.complete(tickets);
    }

    /// Forgets an item of a revoked partition: no outcome (the new owner delivers it).
    pub(crate) fn drop_revoked(&self, item: &Item) {
        self.budget.release(item.size(), 1);
    }

    /// Writes a dead letter for `origin`, retrying until the cluster acknowledges it.
    pub(crate) async fn dead_letter(&self, origin: &Origin, stage: Stage, error: &str, attempts: u32) {
        let dl = DeadLetter {
            sink: self.name(),
            vendor: self.kind.as_str(),
            stage,
            error,
            topic: &origin.ticket.tp.0,
            partition: origin.ticket.tp.1,
            offset: origin.ticket.offset,
            key: origin.key.as_deref(),
            value: &origin.raw,
            attempts,
        };
        let ok = self.metrics.dead_letter_writes.with_label_values(&[self.name(), "ok"]);
        let failed = self.metrics.dead_letter_writes.with_label_values(&[self.name(), "error"]);
        until_acked("dead letter", self.name(), &ok, &failed, || self.output.dead_letter(&dl)).await;
        let lot = origin.key.as_deref().map(String::from_utf8_lossy);
        tracing::warn!(
            sink = self.name(),
            lot = lot.as_deref().unwrap_or(""),
            stage = stage.as_str(),
            topic = dl.topic,
            partition = dl.partition,
            offset = dl.offset,
            error,
            "record dead-lettered"
        );
    }

    /// Queues items of one lot on its lane, in order, with one wake-up. Returns the items
    /// settled without a request, and the lane if it was just created.
    pub(crate) fn enqueue_all(&self, lot: &str, items: Vec<Item>) -> (Vec<(Item, Settled)>, Option<Arc<Lane>>) {
        self.lanes.enqueue(lot, items)
    }

    /// Adds what the adapter's token cache counted since the last call to the token metrics.
    pub(crate) fn export_token_stats(&self) {
        let Some(stats) = self.adapter.token_stats() else { return };
        let now = [&stats.fetches, &stats.failures, &stats.invalidations].map(|c| c.load(Ordering::Relaxed));
        let mut seen = self.token_seen.lock().unwrap_or_else(|p| p.into_inner());
        let delta: Vec<u64> = now.iter().zip(seen.iter()).map(|(n, s)| n.saturating_sub(*s)).collect();
        *seen = now;
        let m = &self.metrics;
        m.token_fetches.with_label_values(&[self.name(), "ok"]).inc_by(delta[0]);
        m.token_fetches.with_label_values(&[self.name(), "error"]).inc_by(delta[1]);
        m.token_invalidations.with_label_values(&[self.name()]).inc_by(delta[2]);
    }

    /// Tells lanes to stop after their current request (shutdown, after the drain).
    pub(crate) fn stop(&self) {
        self.stop.send_replace(true);
    }

    /// Whether the sink is stopping.
    pub(crate) fn is_stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// Completes once the sink is stopping.
    pub(crate) async fn stopped(&self) {
        let mut rx = self.stop.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// Marks the sink failed: a task of it died (`what` it was doing, and why). The first
    /// failure is kept and logged at ERROR; the engine stops and the process exits non-zero.
    pub(crate) fn fail(&self, what: &str, why: &str) {
        let first = self.failed.send_if_modified(|f| {
            let first = f.is_none();
            if first {
                *f = Some(format!("{what}: {why}"));
            }
            first
        });
        if first {
            tracing::error!(sink = self.name(), task = what, error = why, "a task of the sink died; stopping");
        }
    }

    /// Why the sink failed, if it did.
    pub fn failure(&self) -> Option<String> {
        self.failed.borrow().clone()
    }

    /// Completes once the sink failed; returns why.
    pub(crate) async fn failed(&self) -> String {
        let mut rx = self.failed.subscribe();
        let failed = rx.wait_for(Option::is_some).await.map(|f| f.clone().unwrap_or_default());
        match failed {
            Ok(why) => why,
            Err(_) => std::future::pending().await,
        }
    }

    /// Active lanes.
    pub(crate) fn lane_count(&self) -> usize {
        self.lanes.count()
    }
}

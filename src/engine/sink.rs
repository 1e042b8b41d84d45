//! The shared state of one running sink: its adapter, limits, lanes, offsets, memory budget
//! and the bookkeeping of final outcomes.

use super::lane::{Item, Limits, Origin, Queue, Settled};
use super::offsets::{Partitions, Ticket, TopicPartition};
use super::output::{DeadLetter, Output, Stage};
use crate::config::SinkConfig;
use crate::event::EventType;
use crate::metrics::Metrics;
use crate::vendors::{Adapter, VendorKind};
use governor::clock::DefaultClock;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use prometheus::{Histogram, IntGauge};
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;

/// Stores a partition's watermark (implemented by the sink's Kafka consumer).
pub trait OffsetStore: Send + Sync {
    /// Stores `next` (the next offset to consume) for the partition; committed later.
    fn store(&self, tp: &TopicPartition, next: i64);
}

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

/// A final outcome, as counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
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

/// One lane's queue and wake-up.
#[derive(Default)]
pub struct Lane {
    /// The queue.
    pub queue: Mutex<Queue>,
    /// Rung when something is queued.
    pub notify: Notify,
}

impl Lane {
    /// The queue, locked.
    pub fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

type DirectLimiter = RateLimiter<NotKeyed, InMemoryState, DefaultClock>;
type LotLimiter = RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock>;

/// A running sink.
pub struct Sink {
    /// Its configuration.
    pub config: SinkConfig,
    /// Vendor kind.
    pub kind: VendorKind,
    /// Vendor logic.
    pub adapter: Arc<dyn Adapter>,
    /// Offsets of assigned partitions.
    pub partitions: Arc<Partitions>,
    /// Where watermarks go (set once the consumer exists).
    offsets: Mutex<Option<Arc<dyn OffsetStore>>>,
    /// Metrics.
    pub metrics: Metrics,
    /// Dead letters and answers.
    pub output: Output,
    /// The shared HTTP client.
    pub http: reqwest::Client,
    /// Requests per second for the whole sink.
    pub limiter: DirectLimiter,
    /// Optional requests per second per lot.
    pub lot_limiter: Option<LotLimiter>,
    /// Requests in flight.
    pub permits: Semaphore,
    /// Lanes by platform lot.
    pub lanes: Mutex<HashMap<String, Arc<Lane>>>,
    /// Lot → (last seen, its partition), for heartbeats.
    pub live: Mutex<HashMap<String, (Instant, TopicPartition)>>,
    paused_until: Mutex<Option<Instant>>,
    held_bytes: AtomicUsize,
    held_records: AtomicUsize,
    /// Whether intake paused its partitions for the memory budget.
    pub backpressured: AtomicBool,
    /// Rung when memory drops below the resume mark while backpressured, so reading goes
    /// on at once rather than at the next housekeeping tick (a 200 ms stall per pause
    /// halved photo throughput).
    pub relieved: Notify,
    stop: tokio::sync::watch::Sender<bool>,
    token_seen: Mutex<[u64; 3]>,
    /// Latest lot information, for vendors that want the full list daily.
    pub lot_book: Option<Arc<super::lots::LotBook>>,
    /// This sink's series of the per-record metrics, looked up once.
    hot: HotMetrics,
}

/// Series updated for every record: resolving their labels each time costs more than the
/// update itself.
struct HotMetrics {
    held_bytes: IntGauge,
    held_records: IntGauge,
    event_to_ack: Histogram,
    consume_to_ack: Histogram,
}

impl HotMetrics {
    fn new(metrics: &Metrics, sink: &str) -> HotMetrics {
        HotMetrics {
            held_bytes: metrics.held_bytes.with_label_values(&[sink]),
            held_records: metrics.held_records.with_label_values(&[sink]),
            event_to_ack: metrics.event_to_ack_seconds.with_label_values(&[sink]),
            consume_to_ack: metrics.consume_to_ack_seconds.with_label_values(&[sink]),
        }
    }
}

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n.max(1)).unwrap_or(NonZeroU32::MIN)
}

impl Sink {
    /// A sink ready to start.
    pub fn new(
        config: SinkConfig,
        kind: VendorKind,
        adapter: Arc<dyn Adapter>,
        metrics: Metrics,
        output: Output,
        http: reqwest::Client,
    ) -> Sink {
        let rl = &config.rate_limit;
        let limiter = RateLimiter::direct(Quota::per_second(nz(rl.requests_per_second)).allow_burst(nz(rl.burst)));
        let lot_limiter = rl.per_lot_per_second.map(|n| RateLimiter::keyed(Quota::per_second(nz(n))));
        let permits = Semaphore::new(config.concurrency);
        let adapter_wants_lots = adapter.daily_full_push();
        let hot = HotMetrics::new(&metrics, &config.name);
        Sink {
            config,
            kind,
            adapter,
            partitions: Arc::new(Partitions::default()),
            offsets: Mutex::new(None),
            metrics,
            output,
            http,
            limiter,
            lot_limiter,
            permits,
            lanes: Mutex::new(HashMap::new()),
            live: Mutex::new(HashMap::new()),
            paused_until: Mutex::new(None),
            held_bytes: AtomicUsize::new(0),
            held_records: AtomicUsize::new(0),
            backpressured: AtomicBool::new(false),
            relieved: Notify::new(),
            stop: tokio::sync::watch::channel(false).0,
            lot_book: adapter_wants_lots.then(Default::default),
            token_seen: Mutex::new([0; 3]),
            hot,
        }
    }

    /// Sets (or, with `None` at shutdown, releases) where watermarks are stored.
    pub fn set_offset_store(&self, store: Option<Arc<dyn OffsetStore>>) {
        *self.offsets.lock().unwrap_or_else(|p| p.into_inner()) = store;
    }

    /// The sink's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Batch limits for lanes.
    pub fn limits(&self) -> Limits {
        let linger = Duration::from_millis(self.config.batch.linger_ms);
        Limits { max_bytes: self.config.batch.max_bytes, linger, backlog_linger: backlog_linger(linger) }
    }

    /// Counts bytes and records entering memory.
    pub fn hold(&self, bytes: usize) {
        self.hold_many(bytes, 1);
    }

    /// Counts `records` records of `bytes` bytes in all entering memory.
    pub fn hold_many(&self, bytes: usize, records: usize) {
        let held = self.held_bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
        let count = self.held_records.fetch_add(records, Ordering::Relaxed) + records;
        self.hot.held_bytes.set(held as i64);
        self.hot.held_records.set(count as i64);
    }

    /// Counts bytes and records leaving memory.
    pub fn release(&self, bytes: usize) {
        self.release_many(bytes, 1);
    }

    /// Counts `records` records of `bytes` bytes in all leaving memory.
    pub fn release_many(&self, bytes: usize, records: usize) {
        let held = self.held_bytes.fetch_sub(bytes, Ordering::Relaxed).saturating_sub(bytes);
        let count = self.held_records.fetch_sub(records, Ordering::Relaxed).saturating_sub(records);
        self.hot.held_bytes.set(held as i64);
        self.hot.held_records.set(count as i64);
        if held < self.resume_mark() && self.backpressured.load(Ordering::Relaxed) {
            self.relieved.notify_one();
        }
    }

    /// Held bytes under which paused partitions resume: 75 % of the memory budget.
    pub fn resume_mark(&self) -> usize {
        self.config.memory_budget_bytes / 4 * 3
    }

    /// Bytes held without a final outcome.
    pub fn held_bytes(&self) -> usize {
        self.held_bytes.load(Ordering::Relaxed)
    }

    /// Records a final outcome: metrics, memory, and the partition's watermark.
    pub fn finish(&self, item: &Item, outcome: Outcome) {
        self.finish_all(std::slice::from_ref(item), outcome);
    }

    /// Records the same final outcome for a batch: metrics, memory, and the watermarks,
    /// each partition's stored once.
    pub fn finish_all(&self, items: &[Item], outcome: Outcome) {
        let Some(first) = items.first() else { return };
        // A batch nearly always holds one event type: count runs, not records.
        let mut run = (first.event_type, 0u64);
        for item in items {
            if item.event_type != run.0 {
                self.count_outcomes(run, outcome);
                run = (item.event_type, 0);
            }
            run.1 += 1;
        }
        self.count_outcomes(run, outcome);
        if matches!(outcome, Outcome::Delivered | Outcome::Duplicate) {
            let (now, acked) = (chrono::Utc::now().fixed_offset(), Instant::now());
            for item in items {
                let age = (now - item.event_at).num_milliseconds().max(0) as f64 / 1000.0;
                self.hot.event_to_ack.observe(age);
                self.hot.consume_to_ack.observe(acked.saturating_duration_since(item.read_at).as_secs_f64());
            }
        }
        self.release_many(items.iter().map(Item::size).sum(), items.len());
        self.complete_all(items.iter().filter_map(|i| i.origin.as_ref().map(|o| &o.ticket)));
    }

    fn count_outcomes(&self, (event_type, n): (EventType, u64), outcome: Outcome) {
        let labels = [self.name(), event_type.as_str(), outcome.as_str()];
        self.metrics.outcomes.with_label_values(&labels).inc_by(n);
    }

    /// Marks a Kafka record finished and stores the watermark when it moved.
    pub fn complete(&self, ticket: &Ticket) {
        self.complete_all([ticket]);
    }

    /// Marks Kafka records finished and stores each watermark that moved, once.
    pub fn complete_all<'a>(&self, tickets: impl IntoIterator<Item = &'a Ticket>) {
        let moved = self.partitions.complete_all(tickets);
        if moved.is_empty() {
            return;
        }
        let store = self.offsets.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(store) = store {
            for (tp, next) in &moved {
                store.store(tp, *next);
            }
        }
    }

    /// Forgets an item of a revoked partition: no outcome (the new owner delivers it).
    pub fn drop_revoked(&self, item: &Item) {
        self.release(item.size());
    }

    /// Writes a dead letter for `origin`, retrying until the cluster acknowledges it.
    pub async fn dead_letter(&self, origin: &Origin, stage: Stage, error: &str, attempts: u32) {
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
        let mut wait = Duration::from_millis(200);
        loop {
            match self.output.dead_letter(&dl).await {
                Ok(()) => {
                    self.metrics.dead_letter_writes.with_label_values(&[self.name(), "ok"]).inc();
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
                    return;
                }
                Err(e) => {
                    self.metrics.dead_letter_writes.with_label_values(&[self.name(), "error"]).inc();
                    tracing::error!(sink = self.name(), error = %e, "dead-letter write failed; retrying, offsets held");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(30));
                }
            }
        }
    }

    /// Pauses every lane of the sink (a 429 or a "busy" answer).
    pub fn pause_for(&self, period: Duration) {
        let until = Instant::now() + period;
        let mut guard = self.paused_until.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none_or(|u| u < until) {
            *guard = Some(until);
        }
        self.metrics.sink_paused.with_label_values(&[self.name()]).set(1);
    }

    /// Waits while the sink is paused.
    pub async fn wait_unpaused(&self) {
        loop {
            let until = *self.paused_until.lock().unwrap_or_else(|p| p.into_inner());
            match until {
                Some(u) if u > Instant::now() => tokio::time::sleep_until(u).await,
                Some(_) => {
                    *self.paused_until.lock().unwrap_or_else(|p| p.into_inner()) = None;
                    self.metrics.sink_paused.with_label_values(&[self.name()]).set(0);
                    return;
                }
                None => return,
            }
        }
    }

    /// Waits for the rate limiters; records the time spent.
    pub async fn wait_rate(&self, lot: &str) {
        let start = Instant::now();
        self.limiter.until_ready().await;
        if let Some(per_lot) = &self.lot_limiter {
            per_lot.until_key_ready(&lot.to_string()).await;
        }
        let waited = start.elapsed().as_secs_f64();
        self.metrics.rate_limit_wait_seconds.with_label_values(&[self.name()]).observe(waited);
        if waited >= 0.001 {
            self.metrics.rate_limit_waits.with_label_values(&[self.name()]).inc();
        }
    }

    /// Queues an item on the lane of `lot`, under the lanes lock so a lane cannot retire
    /// between lookup and push. Returns the items settled without a request, and the lane
    /// if it was just created (its task must be started).
    pub fn enqueue(&self, lot: &str, item: Item) -> (Vec<(Item, Settled)>, Option<Arc<Lane>>) {
        self.enqueue_all(lot, vec![item])
    }

    /// [`Sink::enqueue`] for several items of one lot, in order, with one wake-up of the lane.
    pub fn enqueue_all(&self, lot: &str, items: Vec<Item>) -> (Vec<(Item, Settled)>, Option<Arc<Lane>>) {
        let mut lanes = self.lanes.lock().unwrap_or_else(|p| p.into_inner());
        let (lane, created) = match lanes.get(lot) {
            Some(lane) => (lane.clone(), false),
            None => {
                let lane = Arc::new(Lane::default());
                lanes.insert(lot.to_string(), lane.clone());
                self.metrics.lanes.with_label_values(&[self.name()]).set(lanes.len() as i64);
                (lane, true)
            }
        };
        let now = Instant::now();
        let settled = {
            let mut queue = lane.lock();
            items.into_iter().flat_map(|item| queue.push(item, now)).collect()
        };
        lane.notify.notify_one();
        (settled, created.then_some(lane))
    }

    /// Adds what the adapter's token cache counted since the last call to the token metrics.
    pub fn export_token_stats(&self) {
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
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }

    /// Whether the sink is stopping.
    pub fn is_stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// Completes once the sink is stopping.
    pub async fn stopped(&self) {
        let mut rx = self.stop.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// Active lanes.
    pub fn lane_count(&self) -> usize {
        self.lanes.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Removes a lane whatever it holds (shutdown): its records are read again later.
    pub fn remove_lane(&self, lot: &str, lane: &Arc<Lane>) {
        let mut lanes = self.lanes.lock().unwrap_or_else(|p| p.into_inner());
        if lanes.get(lot).is_some_and(|l| Arc::ptr_eq(l, lane)) {
            lanes.remove(lot);
        }
        self.metrics.lanes.with_label_values(&[self.name()]).set(lanes.len() as i64);
    }

    /// Removes an idle lane; false if something arrived meanwhile (the lane goes on).
    pub fn retire_lane(&self, lot: &str, lane: &Arc<Lane>) -> bool {
        let mut lanes = self.lanes.lock().unwrap_or_else(|p| p.into_inner());
        if !lane.lock().is_empty() {
            return false;
        }
        lanes.remove(lot);
        self.metrics.lanes.with_label_values(&[self.name()]).set(lanes.len() as i64);
        true
    }
}

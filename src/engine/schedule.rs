//! Records lotbridge makes itself, on a schedule: the heartbeats some vendors want from
//! every lot every period (Bingzhouxing: every minute), and the trigger of the daily full
//! lot list (Inspur ISP).
//!
//! # Heartbeats
//! Every lot has a slot: one of the 60 windows of its period (a second each for a minute),
//! chosen by a hash of its code, so 20,000 lots make about 333 heartbeats a second rather
//! than 20,000 at one tick. Windows are counted on the wall clock, so a lot keeps its slot
//! on every replica (and across restarts): when its partition moves, the new owner beats in
//! the same second of the minute as the old one did. A lot's heartbeat is queued at the
//! start of its window once per period, so two queued heartbeats of a lot are one period
//! apart. Its lane never drops a scheduled heartbeat: one that comes within the period of
//! the lot's own heartbeat (from Kafka) waits until the period has passed (less 5 % slack,
//! see `lane.rs`), so the gap the vendor sees is at most the period, plus the jitter of
//! delivery: the time the request waits for the rate limiter and for its lane's request in
//! flight, and the vendor's answer time beyond 3 s (the slack). With a healthy vendor that
//! is under a second.
//!
//! Which lots (`heartbeat_lots`, per sink):
//! - `bound` (default): every bound lot whose partition this replica owns, the partition
//!   being where Kafka's default partitioner puts the lot code as key in the first input
//!   topic ([`partition_for`]); producers must key events by lot with that partitioner
//!   (the Java client's default; librdkafka needs `partitioner=murmur2_random`). A lot
//!   that has sent nothing since a restart, or is quiet at night, stays online.
//! - `live`: the lots this replica read something from within `live_window_secs` (their
//!   partition still owned). The set is taken once per period, so a lot that becomes live
//!   gets its first heartbeat within two periods.
//!
//! # Daily lot list
//! At `daily_push_at` (UTC+8) each replica pushes the lots it is responsible for by the
//! same rule as `bound` heartbeats, so each lot is pushed by exactly one replica whatever
//! topic the lot events came from. With a separate lot topic (`kafka.lot_topics`), the book
//! is read again from it just before the push, so lot changes made since the start count.

use super::intake::submit;
use super::lane::Item;
use super::lots::{self, LotBook};
use super::offsets::TopicPartition;
use super::sink::Sink;
use crate::config::{HeartbeatLots, KafkaConfig};
use crate::event::{Event, EventData};
use crate::vendors::{Mapping, SkipReason};
use chrono::{DateTime, Utc};
use rdkafka::consumer::{Consumer, ConsumerContext};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// How long a partition count request may take.
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// Kafka's `Utils.murmur2` (the Java client's default partitioner hash), bit for bit.
pub(crate) fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    // Java's `seed ^ length` on ints: the length wraps as an int would.
    let mut h = SEED ^ (data.len() as u32);
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        for (i, b) in tail.iter().enumerate().rev() {
            h ^= u32::from(*b) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition Kafka's default partitioner gives a record with this key:
/// `toPositive(murmur2(key)) % partitions`. `partitions` must be positive.
pub(crate) fn partition_for(key: &[u8], partitions: i32) -> i32 {
    (murmur2(key) & 0x7fff_ffff) % partitions.max(1)
}

/// Where a lot's records are: the partition of the first input topic its code hashes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LotPartitioner {
    topic: Arc<str>,
    partitions: i32,
}

impl LotPartitioner {
    /// For `topic` with `partitions` partitions; `None` when it has none.
    pub(crate) fn new(topic: &str, partitions: i32) -> Option<LotPartitioner> {
        (partitions > 0).then(|| LotPartitioner { topic: Arc::from(topic), partitions })
    }

    /// The lot's partition.
    pub(crate) fn partition_of(&self, lot: &str) -> TopicPartition {
        (self.topic.clone(), partition_for(lot.as_bytes(), self.partitions))
    }

    /// Whether this replica is responsible for `lot`: it owns the lot's partition.
    pub(crate) fn owns(&self, sink: &Sink, lot: &str) -> bool {
        sink.partitions.owns(&self.partition_of(lot))
    }
}

/// Asks the cluster how many partitions a topic has (blocking).
type PartitionCount = Arc<dyn Fn(&str) -> Option<i32> + Send + Sync>;

/// Finds the [`LotPartitioner`] of the sink's first input topic.
#[derive(Clone)]
struct Owner {
    topic: String,
    count: PartitionCount,
}

impl Owner {
    /// Asks the cluster (on the blocking pool); `None` when it does not answer.
    async fn partitioner(&self) -> Option<LotPartitioner> {
        let (count, topic) = (self.count.clone(), self.topic.clone());
        let n = match tokio::task::spawn_blocking(move || count(&topic)).await {
            Ok(n) => n?,
            Err(e) => {
                tracing::error!(topic = %self.topic, error = %e, "asking the partition count failed on the blocking pool");
                return None;
            }
        };
        LotPartitioner::new(&self.topic, n)
    }
}

pub(crate) fn partition_count<X: ConsumerContext, C: Consumer<X>>(consumer: &C, topic: &str) -> Option<i32> {
    let md = match consumer.fetch_metadata(Some(topic), METADATA_TIMEOUT) {
        Ok(md) => md,
        Err(e) => {
            tracing::warn!(topic, error = %e, "partition count unknown; lot ownership waits");
            return None;
        }
    };
    let t = md.topics().first()?;
    if t.error().is_some() {
        return None;
    }
    i32::try_from(t.partitions().len()).ok().filter(|n| *n > 0)
}

/// Starts a sink's scheduled records: heartbeats if its vendor wants them, the lot book and
/// its daily push if its vendor wants the full list. `consumer` answers metadata requests.
pub(crate) fn start<X, C>(kafka: &KafkaConfig, sink: &Arc<Sink>, consumer: &Arc<C>, stop: &watch::Receiver<bool>)
where
    X: ConsumerContext + 'static,
    C: Consumer<X> + Send + Sync + 'static,
{
    let consumer = consumer.clone();
    let count: PartitionCount = Arc::new(move |topic| partition_count(consumer.as_ref(), topic));
    let owner = Owner { topic: kafka.topics.first().cloned().unwrap_or_default(), count };
    if let Some(period) = heartbeat_period(sink) {
        let source = SinkLots { sink: sink.clone(), owner: owner.clone(), partitioner: None };
        super::task::spawn_guarded(sink, "scheduling heartbeats", run_heartbeats(source, period, stop.clone()));
    }
    if let Some(book) = &sink.lot_book {
        let list = run_lot_list(kafka.clone(), sink.clone(), book.clone(), owner, stop.clone());
        super::task::spawn_guarded(sink, "pushing the lot list", list);
    }
}

/// The sink's heartbeat period: `heartbeat_secs`, or the vendor's own; `None` when the
/// vendor wants no heartbeats.
fn heartbeat_period(sink: &Sink) -> Option<Duration> {
    let configured = sink.config.heartbeat_secs.map(|s| Duration::from_secs(s.max(1)));
    sink.adapter.heartbeat_every().map(|own| configured.unwrap_or(own))
}

/// A period cut into windows: 60 of them (one a second for a minute), fewer for periods
/// under 600 ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Windows {
    count: u64,
    step: Duration,
}

impl Windows {
    fn of(period: Duration) -> Windows {
        let ms = u64::try_from(period.as_millis()).unwrap_or(u64::MAX).max(1);
        let count = (ms / 10).clamp(1, 60);
        Windows { count, step: Duration::from_millis(ms / count) }
    }

    /// The lot's window within the period (FNV-1a of its code: stable everywhere, and not
    /// the partitioner's hash, so the lots of one partition spread over the minute too).
    fn slot(&self, lot: &str) -> u64 {
        let hash = lot.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
        hash % self.count
    }

    /// The first window to run after `wall` (its number, counted from the Unix epoch) and
    /// when it starts: windows are aligned on the wall clock, so every replica gives a lot
    /// the same second of the minute.
    fn first_after(&self, wall: DateTime<Utc>, now: Instant) -> (u64, Instant) {
        let step = u64::try_from(self.step.as_millis()).unwrap_or(1).max(1);
        let wall = u64::try_from(wall.timestamp_millis()).unwrap_or(0);
        let next = wall / step + 1;
        (next, now + Duration::from_millis(next * step - wall))
    }
}

/// The lots to heartbeat, by window.
struct Plan {
    windows: Windows,
    slots: Vec<Vec<String>>,
}

impl Plan {
    fn new(windows: Windows, lots: Vec<String>) -> Plan {
        let mut slots = vec![Vec::new(); usize::try_from(windows.count).unwrap_or(1)];
        for lot in lots {
            let slot = usize::try_from(windows.slot(&lot)).unwrap_or(0);
            if let Some(s) = slots.get_mut(slot) {
                s.push(lot);
            }
        }
        Plan { windows, slots }
    }

    /// The lots whose heartbeat is due in window number `window`.
    fn due(&self, window: u64) -> &[String] {
        let slot = usize::try_from(window % self.windows.count).unwrap_or(0);
        self.slots.get(slot).map_or(&[], Vec::as_slice)
    }
}

/// What the heartbeat loop needs from a sink (tests drive it without Kafka).
trait LotSource {
    /// The partitions assigned now; a change makes the loop ask for the lots again.
    fn assignment(&self) -> Vec<TopicPartition>;
    /// The lots to heartbeat; `None` when they cannot be known now (the last plan stays).
    async fn lots(&mut self, assignment_changed: bool) -> Option<Vec<String>>;
    /// Queues a heartbeat for `lot`.
    fn beat(&self, lot: &str);
}

/// Queues each lot's heartbeat at the start of its window, every period, until `stop`. The
/// lots are asked for again at the start of every period and when the assignment changes.
async fn run_heartbeats(mut source: impl LotSource, period: Duration, mut stop: watch::Receiver<bool>) {
    let windows = Windows::of(period);
    let (mut window, mut at) = windows.first_after(Utc::now(), Instant::now());
    let mut plan: Option<Plan> = None;
    let mut assignment = Vec::new();
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep_until(at) => {}
        }
        let now_assigned = source.assignment();
        let changed = now_assigned != assignment;
        if plan.is_none() || changed || window % windows.count == 0 {
            if let Some(lots) = source.lots(changed).await {
                plan = Some(Plan::new(windows, lots));
                assignment = now_assigned;
            }
        }
        for lot in plan.as_ref().map_or(&[][..], |p| p.due(window)) {
            source.beat(lot);
        }
        // Late (a busy runtime, a slow metadata request)? The windows missed run at once,
        // in order: every lot still gets its heartbeat, late rather than never.
        window += 1;
        at += windows.step;
    }
}

/// A sink's lots for heartbeats, by its `heartbeat_lots` mode.
struct SinkLots {
    sink: Arc<Sink>,
    owner: Owner,
    partitioner: Option<LotPartitioner>,
}

impl LotSource for SinkLots {
    fn assignment(&self) -> Vec<TopicPartition> {
        let mut tps = self.sink.partitions.assigned();
        tps.sort();
        tps
    }

    async fn lots(&mut self, assignment_changed: bool) -> Option<Vec<String>> {
        let lots = match self.sink.config.heartbeat_lots {
            HeartbeatLots::Live => live_lots(&self.sink),
            HeartbeatLots::Bound => {
                if self.partitioner.is_none() || assignment_changed {
                    // Partitions added to the topic make the group rebalance: asked again then.
                    self.partitioner = self.owner.partitioner().await.or(self.partitioner.take());
                }
                let partitioner = self.partitioner.as_ref()?;
                let mut lots = self.sink.adapter.bound_lots();
                lots.retain(|lot| partitioner.owns(&self.sink, lot));
                lots
            }
        };
        self.sink.metrics.live_lots.with_label_values(&[self.sink.name()]).set(lots.len() as i64);
        Some(lots)
    }

    fn beat(&self, lot: &str) {
        queue_heartbeat(&self.sink, lot);
    }
}

/// Notes that `lot` sent something, read from `tp` (for `live` heartbeats only).
pub(crate) fn note_live(sink: &Sink, lot: &str, tp: &TopicPartition) {
    if sink.config.heartbeat_lots != HeartbeatLots::Live || sink.adapter.heartbeat_every().is_none() {
        return;
    }
    let mut live = sink.live.lock().unwrap_or_else(|p| p.into_inner());
    match live.get_mut(lot) {
        Some(entry) => *entry = (Instant::now(), tp.clone()),
        None => {
            live.insert(lot.to_string(), (Instant::now(), tp.clone()));
        }
    }
}

/// Lots live within the window whose partition is still owned; forgets the others.
fn live_lots(sink: &Sink) -> Vec<String> {
    let window = Duration::from_secs(sink.config.live_window_secs);
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

/// Rebuilds a sink's lot book from the lot topics, then pushes the full list daily.
async fn run_lot_list(
    kafka: KafkaConfig,
    sink: Arc<Sink>,
    book: Arc<LotBook>,
    owner: Owner,
    mut stop: watch::Receiver<bool>,
) {
    let Some(at) = crate::config::parse_time(&sink.config.daily_push_at) else { return };
    let separate = kafka.lot_topics.as_ref().is_some_and(|t| *t != kafka.topics);
    rebuild(&kafka, &sink, &book).await;
    loop {
        let now = Utc::now();
        let wait = (lots::next_push(now, at) - now).to_std().unwrap_or_default();
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        if separate {
            rebuild(&kafka, &sink, &book).await;
        }
        push_lot_list(&sink, &book, &owner).await;
    }
}

/// Reads the lot topics again into a fresh book and replaces `book` with it.
async fn rebuild(kafka: &KafkaConfig, sink: &Sink, book: &Arc<LotBook>) {
    let topics = kafka.lot_topics.clone().unwrap_or_else(|| kafka.topics.clone());
    let (kafka, target) = (kafka.clone(), book.clone());
    let rebuilt = tokio::task::spawn_blocking(move || {
        let fresh = LotBook::default();
        let n = lots::rebuild(&kafka, &topics, &fresh)?;
        target.replace_with(fresh);
        Ok::<usize, rdkafka::error::KafkaError>(n)
    })
    .await;
    match rebuilt {
        Ok(Ok(n)) => tracing::info!(sink = sink.name(), lot_events = n, "lot list rebuilt"),
        Ok(Err(e)) => tracing::warn!(sink = sink.name(), error = %e, "lot list not rebuilt; real-time updates only"),
        Err(e) => tracing::warn!(sink = sink.name(), error = %e, "lot list rebuild failed"),
    }
}

/// Pushes the lots this replica is responsible for.
async fn push_lot_list(sink: &Arc<Sink>, book: &LotBook, owner: &Owner) {
    let Some(partitioner) = owner.partitioner().await else {
        tracing::warn!(sink = sink.name(), "daily lot list not pushed: the input topic's partitions are unknown");
        return;
    };
    let pushed = lots::push_owned(sink, book, |lot| partitioner.owns(sink, lot));
    tracing::info!(sink = sink.name(), lots = pushed, "daily full lot list queued");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::Mutex;

    /// Kafka's own vectors (`UtilsTest.testMurmur2`, clients module).
    #[test]
    fn murmur2_is_kafkas() {
        for (key, hash) in [
            (&b"21"[..], -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58_897_971),
            (b"abc", 479_470_107),
        ] {
            assert_eq!(murmur2(key), hash, "{}", String::from_utf8_lossy(key));
        }
    }

    #[test]
    fn the_partition_is_to_positive_of_murmur2_modulo_the_count() {
        // toPositive(-973932308) = 1173551340; 1173551340 % 12 = 0, % 7 = 4.
        assert_eq!(partition_for(b"21", 12), 1_173_551_340 % 12);
        assert_eq!(partition_for(b"21", 7), 1_173_551_340 % 7);
        assert_eq!(partition_for(b"abc", 1), 0);
        assert_eq!(partition_for(b"", 0), 0, "no panic on a topic without partitions");
        let p = LotPartitioner::new("events", 6).expect("partitions");
        assert_eq!(p.partition_of("abc"), (Arc::from("events"), 479_470_107 % 6));
        assert!(LotPartitioner::new("events", 0).is_none());
    }

    #[test]
    fn twenty_thousand_lots_spread_evenly_over_the_minute() {
        let windows = Windows::of(Duration::from_secs(60));
        assert_eq!(windows, Windows { count: 60, step: Duration::from_secs(1) });
        let plan = Plan::new(windows, (0..20_000).map(|i| format!("P{i:05}")).collect());
        let sizes: Vec<usize> = (0..60).map(|w| plan.due(w).len()).collect();
        assert_eq!(sizes.iter().sum::<usize>(), 20_000);
        let (min, max) = (sizes.iter().min().copied(), sizes.iter().max().copied());
        assert!(min >= Some(280) && max <= Some(390), "per second: {min:?}..{max:?} (mean 333)");
        assert_eq!(Windows::of(Duration::from_secs(1)).step, Duration::from_millis(16));
        assert_eq!(Windows::of(Duration::from_millis(5)).count, 1);
    }

    #[test]
    fn windows_are_aligned_on_the_wall_clock() {
        let windows = Windows::of(Duration::from_secs(60));
        let now = Instant::now();
        let wall = DateTime::from_timestamp_millis(1_700_000_000_250).expect("time");
        let (first, at) = windows.first_after(wall, now);
        assert_eq!(first, 1_700_000_001, "the next whole second");
        assert_eq!(at, now + Duration::from_millis(750));
    }

    /// A scripted sink: lots and assignment set by the test, heartbeats recorded with the
    /// (paused) time they were queued.
    #[derive(Clone, Default)]
    struct Script {
        lots: Arc<Mutex<Vec<String>>>,
        assignment: Arc<Mutex<Vec<TopicPartition>>>,
        beats: Arc<Mutex<Vec<(String, Instant)>>>,
    }

    impl LotSource for Script {
        fn assignment(&self) -> Vec<TopicPartition> {
            self.assignment.lock().expect("lock").clone()
        }
        async fn lots(&mut self, _changed: bool) -> Option<Vec<String>> {
            Some(self.lots.lock().expect("lock").clone())
        }
        fn beat(&self, lot: &str) {
            self.beats.lock().expect("lock").push((lot.to_string(), Instant::now()));
        }
    }

    impl Script {
        fn times(&self) -> HashMap<String, Vec<Instant>> {
            let mut out: HashMap<String, Vec<Instant>> = HashMap::new();
            for (lot, at) in self.beats.lock().expect("lock").iter() {
                out.entry(lot.clone()).or_default().push(*at);
            }
            out
        }
    }

    fn max_gap(times: &[Instant]) -> Duration {
        times.windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default()
    }

    #[tokio::test(start_paused = true)]
    async fn every_lot_gets_one_heartbeat_a_period_one_period_apart() {
        let script = Script::default();
        *script.lots.lock().expect("lock") = (0..2_000).map(|i| format!("L{i}")).collect();
        let (stop_tx, stop) = watch::channel(false);
        let started = Instant::now();
        let task = tokio::spawn(run_heartbeats(script.clone(), Duration::from_secs(60), stop));
        tokio::time::sleep(Duration::from_secs(60 * 5 + 2)).await;
        let _ = stop_tx.send(true);
        let _ = task.await;
        let times = script.times();
        assert_eq!(times.len(), 2_000, "every lot, including those that never sent anything");
        for (lot, t) in &times {
            assert!(t[0] - started <= Duration::from_secs(61), "{lot}: first after {:?}", t[0] - started);
            assert!(max_gap(t) <= Duration::from_secs(60), "{lot}: gap {:?}", max_gap(t));
            assert!(t.len() >= 5, "{lot}: {} heartbeats in 5 minutes", t.len());
        }
        let mut per_second: HashMap<u64, usize> = HashMap::new();
        for t in times.values().flatten() {
            *per_second.entry((*t - started).as_secs()).or_default() += 1;
        }
        let busiest = per_second.values().max().copied().unwrap_or(0);
        assert!(busiest <= 60, "2,000 lots a minute spread evenly: at most {busiest} in one second");
    }

    #[tokio::test(start_paused = true)]
    async fn a_rebalance_stops_lost_lots_and_starts_new_ones_without_a_longer_gap() {
        let script = Script::default();
        let kept: Vec<String> = (0..50).map(|i| format!("K{i}")).collect();
        let lost: Vec<String> = (0..50).map(|i| format!("X{i}")).collect();
        let gained: Vec<String> = (0..50).map(|i| format!("N{i}")).collect();
        *script.lots.lock().expect("lock") = kept.iter().chain(&lost).cloned().collect();
        let (stop_tx, stop) = watch::channel(false);
        let task = tokio::spawn(run_heartbeats(script.clone(), Duration::from_secs(60), stop));
        tokio::time::sleep(Duration::from_secs(150)).await;
        let switched = Instant::now();
        *script.lots.lock().expect("lock") = kept.iter().chain(&gained).cloned().collect();
        *script.assignment.lock().expect("lock") = vec![(Arc::from("t"), 1)];
        tokio::time::sleep(Duration::from_secs(150)).await;
        let _ = stop_tx.send(true);
        let _ = task.await;
        let times = script.times();
        for lot in &kept {
            assert!(max_gap(&times[lot]) <= Duration::from_secs(60), "{lot}: {:?}", max_gap(&times[lot]));
        }
        for lot in &lost {
            assert!(times[lot].iter().all(|t| *t <= switched + Duration::from_secs(1)), "{lot} beat after it moved");
        }
        for lot in &gained {
            let first = times[lot].first().copied().expect("gained lot beats");
            assert!(first - switched <= Duration::from_secs(61), "{lot}: first after {:?}", first - switched);
        }
    }
}

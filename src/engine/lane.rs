//! A lane: the records of one (sink, lot) waiting for delivery, and the pure decisions on
//! them: ordering, batching by count, bytes and linger time, and coalescing of latest-value
//! records (space counts) and periodic ones (heartbeats).
//!
//! At most one request per lane is in flight (the lane task awaits each batch), so an exit
//! is never delivered before its entry; lanes of different lots run concurrently.

use super::offsets::Ticket;
use crate::event::EventType;
use crate::vendors::{Coalesce, Endpoint, Mapped};
use bytes::Bytes;
use chrono::{DateTime, FixedOffset};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Where a record came from, and what a dead letter needs to carry it.
#[derive(Debug)]
pub struct Origin {
    /// Its place in Kafka (offset bookkeeping).
    pub ticket: Ticket,
    /// The record's key.
    pub key: Option<Bytes>,
    /// The record's original bytes (the dead letter's value).
    pub raw: Bytes,
}

/// What a `member.coupons.listed` answer needs from its request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyTo {
    /// The request's event id.
    pub request_id: String,
    /// The member.
    pub member_id: String,
    /// The request's lot.
    pub lot: String,
}

/// One record on its way to a vendor.
#[derive(Debug)]
pub struct Item {
    /// The vendor record.
    pub mapped: Mapped,
    /// The Kafka record it came from; `None` for records lotbridge made (heartbeats).
    pub origin: Option<Arc<Origin>>,
    /// Contract type, for metrics.
    pub event_type: EventType,
    /// The event's own time, for end-to-end latency.
    pub event_at: DateTime<FixedOffset>,
    /// When it was read.
    pub read_at: Instant,
    /// Set for requests whose answer is published.
    pub reply_to: Option<ReplyTo>,
    /// Read while the consumer was behind (more records were waiting): its lane may wait
    /// longer for a full batch, since the records behind it are already there to fill it.
    pub backlog: bool,
}

/// What a held record costs in memory beyond its bytes (the item, its origin, the lane's
/// queue entry, the allocator's share), counted against the budget with them. Measured by
/// `cargo bench --bench city`: a one-hour outage held ~800 000 small records at about
/// 2.2 KiB of RSS each, where their bytes and tracker slot came to about 0.7 KiB, so the
/// process grew to 1.7-2.0 GiB on budgets of 510 MiB.
pub(crate) const ITEM_OVERHEAD_BYTES: usize = 1536;

impl Item {
    /// Bytes this item holds in memory (counted against the sink's budget): its record as
    /// read and as mapped, and [`ITEM_OVERHEAD_BYTES`].
    pub fn size(&self) -> usize {
        self.mapped.record.len() + self.origin.as_ref().map_or(0, |o| o.raw.len()) + ITEM_OVERHEAD_BYTES
    }

    fn endpoint(&self) -> &Endpoint {
        &self.mapped.endpoint
    }
}

/// Why an item was finished without a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// A newer record for the same endpoint replaced it before it was sent.
    Coalesced,
    /// It equals what the vendor already has.
    Unchanged,
}

impl Settled {
    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Settled::Coalesced => "coalesced",
            Settled::Unchanged => "unchanged",
        }
    }
}

/// Batch limits of the lane's sink.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most serialized bytes per request.
    pub max_bytes: usize,
    /// How long to wait for a fuller batch.
    pub linger: Duration,
    /// How long to wait for a fuller batch when the head record was read from a backlog.
    pub backlog_linger: Duration,
}

/// What the lane task should do next.
#[derive(Debug)]
pub enum Next {
    /// Send these now (same endpoint, in order).
    Send(Vec<Item>),
    /// Wait for more records until then.
    WaitUntil(Instant),
    /// Nothing queued.
    Idle,
}

/// The queue of one lane.
#[derive(Debug, Default)]
pub struct Queue {
    ordered: VecDeque<Item>,
    latest: Vec<Item>,
    last_delivered: HashMap<&'static str, Bytes>,
    last_sent: HashMap<&'static str, Instant>,
}

impl Queue {
    /// Admits an item; returns the items it finished without a request (a replaced older
    /// value, or itself when unchanged or throttled).
    pub fn push(&mut self, item: Item, now: Instant) -> Vec<(Item, Settled)> {
        let name = item.endpoint().name;
        match item.endpoint().coalesce {
            Coalesce::Ordered => {
                self.ordered.push_back(item);
                Vec::new()
            }
            Coalesce::Latest => {
                if self.last_delivered.get(name) == Some(&item.mapped.record) && !self.has_latest(name) {
                    return vec![(item, Settled::Unchanged)];
                }
                self.replace_latest(item)
            }
            Coalesce::Throttle(_) => {
                // A lot's own record (from Kafka) that comes too early is dropped. One that
                // lotbridge made on its schedule is never dropped for that: it waits until
                // the period has passed (`ready_at`), so the schedule bounds the gap between
                // two records whatever the phase of the lot's own ones (dropping it made
                // gaps of nearly two periods).
                if item.origin.is_some() && self.ready_at(&item).is_some_and(|at| now < at) {
                    return vec![(item, Settled::Coalesced)];
                }
                self.replace_latest(item)
            }
        }
    }

    /// When a `Throttle` record may go: a period (less 5 % slack, so a schedule of exactly
    /// that period is not held back by its own jitter) after the last one delivered;
    /// `None` when it may go now.
    fn ready_at(&self, item: &Item) -> Option<Instant> {
        let Coalesce::Throttle(period) = item.endpoint().coalesce else { return None };
        let last = self.last_sent.get(item.endpoint().name)?;
        Some(*last + period - period / 20)
    }

    fn has_latest(&self, name: &str) -> bool {
        self.latest.iter().any(|i| i.endpoint().name == name)
    }

    fn replace_latest(&mut self, item: Item) -> Vec<(Item, Settled)> {
        let name = item.endpoint().name;
        match self.latest.iter().position(|i| i.endpoint().name == name) {
            Some(pos) => vec![(std::mem::replace(&mut self.latest[pos], item), Settled::Coalesced)],
            None => {
                self.latest.push(item);
                Vec::new()
            }
        }
    }

    /// Remembers what the vendor accepted, for `Latest` and `Throttle` endpoints.
    pub fn delivered(&mut self, endpoint: &Endpoint, record: &Bytes, now: Instant) {
        match endpoint.coalesce {
            Coalesce::Latest => {
                self.last_delivered.insert(endpoint.name, record.clone());
            }
            Coalesce::Throttle(_) => {
                self.last_sent.insert(endpoint.name, now);
            }
            Coalesce::Ordered => {}
        }
    }

    /// Decides the next batch. Latest-value records go first (they are small and fresh);
    /// ordered records are batched from the head while the endpoint stays the same.
    pub fn next(&mut self, limits: Limits, now: Instant) -> Next {
        let mut held: Option<Instant> = None;
        for (i, item) in self.latest.iter().enumerate() {
            match self.ready_at(item) {
                Some(at) if at > now => held = Some(held.map_or(at, |h| h.min(at))),
                _ => return Next::Send(vec![self.latest.remove(i)]),
            }
        }
        let Some(head) = self.ordered.front() else { return held.map_or(Next::Idle, Next::WaitUntil) };
        let endpoint = *head.endpoint();
        let (mut count, mut bytes) = (0usize, 0usize);
        let mut blocked = false;
        for item in &self.ordered {
            if item.endpoint().name != endpoint.name {
                blocked = true;
                break;
            }
            let size = item.mapped.record.len() + 1;
            if count == endpoint.max_records || (count > 0 && bytes + size > limits.max_bytes) {
                blocked = true;
                break;
            }
            count += 1;
            bytes += size;
        }
        // Catching up on a backlog, a partial batch means one request per few records, and
        // the requests would eat the CPU that reading needs: wait longer to fill it.
        let linger = if head.backlog { limits.backlog_linger } else { limits.linger };
        let due = head.read_at + linger;
        if !blocked && count < endpoint.max_records && now < due {
            return Next::WaitUntil(held.map_or(due, |h| h.min(due)));
        }
        Next::Send(self.ordered.drain(..count).collect())
    }

    /// Records queued (for the status view).
    pub fn len(&self) -> usize {
        self.ordered.len() + self.latest.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.ordered.is_empty() && self.latest.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vendors::Coalesce;

    const IO: Endpoint = Endpoint { name: "carInOut", max_records: 3, coalesce: Coalesce::Ordered };
    const OTHER: Endpoint = Endpoint { name: "other", max_records: 3, coalesce: Coalesce::Ordered };
    const SPACE: Endpoint = Endpoint { name: "parkSpace", max_records: 1, coalesce: Coalesce::Latest };
    const HB: Endpoint =
        Endpoint { name: "heartbeat", max_records: 1, coalesce: Coalesce::Throttle(Duration::from_secs(60)) };

    fn item(endpoint: Endpoint, record: &str, read_at: Instant) -> Item {
        Item {
            mapped: Mapped { endpoint, record: Bytes::copy_from_slice(record.as_bytes()), photo: None },
            origin: None,
            event_type: EventType::VehicleEntered,
            event_at: chrono::Utc::now().fixed_offset(),
            read_at,
            reply_to: None,
            backlog: false,
        }
    }

    fn limits() -> Limits {
        Limits { max_bytes: 1000, linger: Duration::from_millis(20), backlog_linger: Duration::from_millis(200) }
    }

    fn records(next: Next) -> Vec<String> {
        match next {
            Next::Send(items) => items.iter().map(|i| String::from_utf8_lossy(&i.mapped.record).into_owned()).collect(),
            other => panic!("expected a batch, got {other:?}"),
        }
    }

    /// The city bench measured ~2.2 KiB of RSS per held small record; its bytes alone (as
    /// read and as mapped) count a fifth of that.
    #[test]
    fn a_held_record_counts_what_holding_it_costs() {
        let t0 = Instant::now();
        let mut held = item(IO, &"r".repeat(300), t0);
        let ticket = crate::engine::offsets::Ticket { tp: (Arc::from("t"), 0), generation: 1, offset: 0 };
        let raw = Bytes::from(vec![b'x'; 159]);
        held.origin = Some(Arc::new(Origin { ticket, key: None, raw }));
        assert!(held.size() >= 1900, "{} bytes counted for a record of 159 bytes mapped to 300", held.size());
    }

    #[test]
    fn batches_by_count_in_order_and_waits_for_linger() {
        let t0 = Instant::now();
        let mut q = Queue::default();
        for r in ["a", "b"] {
            assert!(q.push(item(IO, r, t0), t0).is_empty());
        }
        assert!(matches!(q.next(limits(), t0), Next::WaitUntil(t) if t == t0 + Duration::from_millis(20)));
        assert_eq!(records(q.next(limits(), t0 + Duration::from_millis(20))), ["a", "b"]);
        for r in ["c", "d", "e", "f"] {
            q.push(item(IO, r, t0), t0);
        }
        assert_eq!(records(q.next(limits(), t0)), ["c", "d", "e"], "a full batch goes at once");
        assert!(matches!(q.next(limits(), t0), Next::WaitUntil(_)));
    }

    #[test]
    fn records_read_from_a_backlog_wait_longer_for_a_full_batch() {
        let t0 = Instant::now();
        let mut q = Queue::default();
        for r in ["a", "b"] {
            q.push(Item { backlog: true, ..item(IO, r, t0) }, t0);
        }
        let at = |ms| t0 + Duration::from_millis(ms);
        assert!(matches!(q.next(limits(), at(20)), Next::WaitUntil(t) if t == at(200)), "not sent at the linger");
        q.push(Item { backlog: true, ..item(IO, "c", t0) }, t0);
        assert_eq!(records(q.next(limits(), at(20))), ["a", "b", "c"], "a full batch goes at once");
        q.push(Item { backlog: true, ..item(IO, "d", t0) }, t0);
        assert_eq!(records(q.next(limits(), at(200))), ["d"], "a partial one after the backlog linger");
    }

    #[test]
    fn endpoint_change_and_byte_limit_close_a_batch() {
        let t0 = Instant::now();
        let mut q = Queue::default();
        q.push(item(IO, "a", t0), t0);
        q.push(item(OTHER, "b", t0), t0);
        q.push(item(IO, "c", t0), t0);
        assert_eq!(records(q.next(limits(), t0)), ["a"], "order across endpoints is kept");
        assert_eq!(records(q.next(limits(), t0)), ["b"]);
        let big = "x".repeat(600);
        let mut q = Queue::default();
        q.push(item(IO, &big, t0), t0);
        q.push(item(IO, &big, t0), t0);
        assert_eq!(records(q.next(limits(), t0)).len(), 1, "1000-byte limit");
        let huge = "y".repeat(5000);
        q.push(item(IO, &huge, t0), t0);
        assert_eq!(records(q.next(limits(), t0 + Duration::from_secs(1))).len(), 1);
        assert_eq!(
            records(q.next(limits(), t0 + Duration::from_secs(1))),
            [huge],
            "an oversize record still goes, alone"
        );
    }

    #[test]
    fn latest_values_coalesce_and_unchanged_ones_are_not_sent() {
        let t0 = Instant::now();
        let mut q = Queue::default();
        assert!(q.push(item(SPACE, "1", t0), t0).is_empty());
        let settled = q.push(item(SPACE, "2", t0), t0);
        assert_eq!(settled.len(), 1);
        assert_eq!((&settled[0].0.mapped.record[..], settled[0].1), (&b"1"[..], Settled::Coalesced));
        q.push(item(IO, "in", t0), t0);
        let sent = match q.next(limits(), t0) {
            Next::Send(items) => items,
            other => panic!("{other:?}"),
        };
        assert_eq!(&sent[0].mapped.record[..], b"2", "latest values go before ordered ones");
        q.delivered(&SPACE, &sent[0].mapped.record, t0);
        let again = q.push(item(SPACE, "2", t0), t0);
        assert_eq!(again[0].1, Settled::Unchanged);
        assert!(q.push(item(SPACE, "3", t0), t0).is_empty());
    }

    /// A heartbeat from Kafka (the lot's own), with an origin.
    fn own(endpoint: Endpoint, read_at: Instant) -> Item {
        let tp: super::super::offsets::TopicPartition = (Arc::from("t"), 0);
        let ticket = Ticket { tp, generation: 0, offset: 0 };
        Item { origin: Some(Arc::new(Origin { ticket, key: None, raw: Bytes::new() })), ..item(endpoint, "", read_at) }
    }

    #[test]
    fn heartbeats_at_most_once_per_period() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut q = Queue::default();
        assert!(q.push(item(HB, "", t0), t0).is_empty());
        let hb = records(q.next(limits(), t0));
        assert_eq!(hb.len(), 1);
        q.delivered(&HB, &Bytes::new(), t0);
        assert_eq!(q.push(own(HB, t0), t0 + s(30))[0].1, Settled::Coalesced, "the lot's own, too early: dropped");
        assert!(q.push(own(HB, t0), t0 + s(59)).is_empty(), "scheduler jitter tolerated");
    }

    #[test]
    fn a_scheduled_heartbeat_that_comes_early_waits_instead_of_being_dropped() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut q = Queue::default();
        q.delivered(&HB, &Bytes::new(), t0); // the lot's own heartbeat went out at t0
        assert!(q.push(item(HB, "", t0 + s(4)), t0 + s(4)).is_empty(), "kept, not coalesced");
        assert!(matches!(q.next(limits(), t0 + s(4)), Next::WaitUntil(at) if at == t0 + s(57)));
        q.push(item(IO, "in", t0 + s(4)), t0 + s(4));
        assert_eq!(records(q.next(limits(), t0 + s(5))), ["in"], "a waiting heartbeat does not hold other records");
        assert_eq!(records(q.next(limits(), t0 + s(57))).len(), 1, "sent once the period has passed");
        assert!(q.is_empty());
    }

    /// The lane's side of the heartbeat schedule: a scheduled heartbeat every 60 s (at 60 k)
    /// and the lot's own heartbeats from Kafka at any phase and pace; delivery takes no
    /// time. Between two heartbeats the vendor gets, there is never more than a period, and
    /// never less than the period less its slack. The old rule (drop anything within the
    /// period) made gaps of up to 117 s for a lot whose own heartbeat came shortly after a tick.
    #[test]
    fn the_gap_between_heartbeats_never_exceeds_the_period_whatever_the_lots_own_heartbeats() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        for own_every in [None, Some(60_000), Some(45_000), Some(90_000), Some(600_000)] {
            for phase in [100u64, 1_000, 3_000, 4_000, 30_000, 56_500, 59_000, 59_900] {
                let mut q = Queue::default();
                let mut sent: Vec<u64> = Vec::new();
                for t in (0..=900_000u64).step_by(100) {
                    let now = t0 + ms(t);
                    if t % 60_000 == 0 && t > 0 {
                        q.push(item(HB, "", now), now);
                    }
                    let own_now = match own_every {
                        None => t == phase,
                        Some(every) => t >= phase && (t - phase) % every == 0,
                    };
                    if own_now {
                        q.push(own(HB, now), now);
                    }
                    if let Next::Send(items) = q.next(limits(), now) {
                        q.delivered(&HB, &items[0].mapped.record, now);
                        sent.push(t);
                    }
                }
                let gaps: Vec<u64> = sent.windows(2).map(|w| w[1] - w[0]).collect();
                let case = format!("own every {own_every:?} ms from {phase} ms: sent at {sent:?}");
                assert!(gaps.iter().all(|g| *g <= 60_000), "a gap over 60 s: {case}");
                assert!(gaps.iter().all(|g| *g >= 57_000), "two heartbeats within the period: {case}");
                assert!(sent.first().is_some_and(|f| *f <= 60_000), "{case}");
            }
        }
    }
}

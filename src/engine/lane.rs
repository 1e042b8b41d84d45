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

impl Item {
    /// Bytes this item holds in memory (counted against the sink's budget).
    pub fn size(&self) -> usize {
        self.mapped.record.len() + self.origin.as_ref().map_or(0, |o| o.raw.len())
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
            Coalesce::Throttle(period) => {
                // A little slack so a 60 s schedule is not throttled by its own jitter.
                let slack = period / 20;
                if self.last_sent.get(name).is_some_and(|t| now.saturating_duration_since(*t) + slack < period) {
                    return vec![(item, Settled::Coalesced)];
                }
                self.replace_latest(item)
            }
        }
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
        if !self.latest.is_empty() {
            return Next::Send(vec![self.latest.remove(0)]);
        }
        let Some(head) = self.ordered.front() else { return Next::Idle };
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
            return Next::WaitUntil(due);
        }
        Next::Send(self.ordered.drain(..count).collect())
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

    #[test]
    fn heartbeats_at_most_once_per_period() {
        let t0 = Instant::now();
        let mut q = Queue::default();
        assert!(q.push(item(HB, "", t0), t0).is_empty());
        let hb = records(q.next(limits(), t0));
        assert_eq!(hb.len(), 1);
        q.delivered(&HB, &Bytes::new(), t0);
        assert_eq!(q.push(item(HB, "", t0), t0 + Duration::from_secs(30))[0].1, Settled::Coalesced);
        assert!(q.push(item(HB, "", t0), t0 + Duration::from_secs(59)).is_empty(), "scheduler jitter tolerated");
    }
}

//! Data a mapping changed so that a vendor accepts it (a name cut to the vendor's column
//! width, a plate without its spaces): counted per sink and field, and logged at most once
//! per lot, field and hour, so a change is never silent and never floods the log.
//!
//! Mappings stay pure: they return the [`Adjusted`] fields with the record, and the
//! adapter hands them to its sink's [`Adjustments`].

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How often one lot's change to one field is logged at most.
pub const LOG_EVERY: Duration = Duration::from_secs(3600);
/// Most (lot, field) pairs remembered for the log limit; when full and nothing is an hour
/// old, further changes are counted but not logged until entries age out.
pub const MAX_REMEMBERED: usize = 10_000;

/// What happened to a field (bounded: a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Change {
    /// Cut to the vendor's width.
    Truncated,
    /// Rewritten to the vendor's form (plate spaces removed).
    Normalized,
    /// A required photo field got the placeholder image (no usable photo).
    Placeholder,
    /// A required photo field went out empty (no usable photo).
    Empty,
}

impl Change {
    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Truncated => "truncated",
            Change::Normalized => "normalized",
            Change::Placeholder => "placeholder",
            Change::Empty => "empty",
        }
    }
}

/// One field a mapping changed; `field` is the vendor's field name (a bounded label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Adjusted {
    /// Vendor field name (`nodeName`).
    pub field: &'static str,
    /// What happened to it.
    pub change: Change,
}

impl Adjusted {
    /// `field` was cut to the vendor's width.
    pub const fn truncated(field: &'static str) -> Self {
        Adjusted { field, change: Change::Truncated }
    }

    /// `field` was rewritten to the vendor's form.
    pub const fn normalized(field: &'static str) -> Self {
        Adjusted { field, change: Change::Normalized }
    }

    /// A required photo `field` was filled for lack of a usable photo.
    pub const fn filled(field: &'static str, change: Change) -> Self {
        Adjusted { field, change }
    }
}

/// The changes of one sink: counts for the metrics, and the log limit's memory.
#[derive(Debug)]
pub struct Adjustments {
    sink: String,
    counts: Mutex<BTreeMap<(&'static str, Change), Counts>>,
    logged: Mutex<HashMap<(String, &'static str), Instant>>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    total: u64,
    exported: u64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Adjustments {
    /// Empty counts for sink `sink`.
    pub fn new(sink: &str) -> Self {
        Adjustments { sink: sink.to_string(), counts: Mutex::default(), logged: Mutex::default() }
    }

    /// Counts the changes made to one record of `lot` and logs those not logged for this
    /// lot and field within the last hour.
    pub fn record(&self, lot: &str, adjusted: &[Adjusted]) {
        self.record_at(lot, adjusted, Instant::now());
    }

    /// [`Adjustments::record`] at `now` (tests).
    pub fn record_at(&self, lot: &str, adjusted: &[Adjusted], now: Instant) {
        if adjusted.is_empty() {
            return;
        }
        let mut counts = lock(&self.counts);
        for a in adjusted {
            counts.entry((a.field, a.change)).or_default().total += 1;
        }
        drop(counts);
        for a in adjusted {
            if self.should_log(lot, a.field, now) {
                tracing::warn!(
                    sink = %self.sink, lot, field = a.field, change = a.change.as_str(),
                    "vendor field changed to fit the vendor; logged once per lot, field and hour"
                );
            }
        }
    }

    fn should_log(&self, lot: &str, field: &'static str, now: Instant) -> bool {
        let mut logged = lock(&self.logged);
        let fresh = |at: &Instant| now.saturating_duration_since(*at) < LOG_EVERY;
        if let Some(at) = logged.get(&(lot.to_string(), field)) {
            if fresh(at) {
                return false;
            }
        } else if logged.len() >= MAX_REMEMBERED {
            logged.retain(|_, at| fresh(at));
            if logged.len() >= MAX_REMEMBERED {
                return false;
            }
        }
        logged.insert((lot.to_string(), field), now);
        true
    }

    /// Changes counted so far, per (field, change).
    pub fn totals(&self) -> Vec<(&'static str, Change, u64)> {
        lock(&self.counts).iter().map(|((f, c), n)| (*f, *c, n.total)).collect()
    }

    /// Changes counted since the last call, per (field, change): what a metrics export adds.
    pub fn take_new(&self) -> Vec<(&'static str, Change, u64)> {
        let mut counts = lock(&self.counts);
        let mut out = Vec::new();
        for ((field, change), n) in counts.iter_mut() {
            if n.total > n.exported {
                out.push((*field, *change, n.total - n.exported));
                n.exported = n.total;
            }
        }
        out
    }

    /// (lot, field) pairs remembered for the log limit (bounded by [`MAX_REMEMBERED`]).
    pub fn remembered(&self) -> usize {
        lock(&self.logged).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODE: Adjusted = Adjusted::truncated("nodeName");
    const PLATE: Adjusted = Adjusted::normalized("carNo");

    #[test]
    fn counts_every_change_and_exports_each_once() {
        let a = Adjustments::new("s");
        let now = Instant::now();
        a.record_at("P1", &[NODE, PLATE], now);
        a.record_at("P1", &[NODE], now);
        assert_eq!(a.totals(), [("carNo", Change::Normalized, 1), ("nodeName", Change::Truncated, 2)]);
        assert_eq!(a.take_new(), [("carNo", Change::Normalized, 1), ("nodeName", Change::Truncated, 2)]);
        assert!(a.take_new().is_empty());
        a.record_at("P2", &[NODE], now);
        assert_eq!(a.take_new(), [("nodeName", Change::Truncated, 1)]);
    }

    #[test]
    fn logs_once_per_lot_field_and_hour() {
        let a = Adjustments::new("s");
        let t0 = Instant::now();
        assert!(a.should_log("P1", "nodeName", t0));
        assert!(!a.should_log("P1", "nodeName", t0 + Duration::from_secs(3599)));
        assert!(a.should_log("P1", "carBrand", t0), "another field");
        assert!(a.should_log("P2", "nodeName", t0), "another lot");
        assert!(a.should_log("P1", "nodeName", t0 + LOG_EVERY), "an hour later");
    }

    /// Collects formatted log lines for the test below.
    #[derive(Clone, Default)]
    struct Lines(std::sync::Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            lock(&self.0).extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_log_line_names_sink_lot_field_and_change_once_an_hour() {
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::fmt().with_writer(move || writer.clone()).with_ansi(false).finish();
        let a = Adjustments::new("bzx-north");
        let t0 = Instant::now();
        tracing::subscriber::with_default(subscriber, || {
            for i in 0..150 {
                a.record_at("P1", &[NODE], t0 + Duration::from_secs(i * 30));
            }
        });
        let text = String::from_utf8(lock(&lines.0).clone()).unwrap();
        let logged: Vec<&str> = text.lines().filter(|l| l.contains("WARN")).collect();
        // 150 changes every 30 s (74.5 minutes): logged at 0 and at 60 minutes.
        assert_eq!(logged.len(), 2, "{text}");
        for part in ["sink=bzx-north", "lot=\"P1\"", "field=\"nodeName\"", "change=\"truncated\""] {
            assert!(logged[0].contains(part), "{part} in {}", logged[0]);
        }
        assert_eq!(a.totals(), [("nodeName", Change::Truncated, 150)]);
    }

    #[test]
    fn log_memory_stays_bounded() {
        let a = Adjustments::new("s");
        let t0 = Instant::now();
        for i in 0..MAX_REMEMBERED + 50 {
            a.record_at(&format!("L{i}"), &[NODE], t0);
        }
        assert_eq!(a.remembered(), MAX_REMEMBERED);
        assert!(!a.should_log("new-lot", "nodeName", t0), "full of fresh entries: counted, not logged");
        assert_eq!(a.totals(), [("nodeName", Change::Truncated, (MAX_REMEMBERED + 50) as u64)]);
        // An hour on, old entries make room again.
        assert!(a.should_log("new-lot", "nodeName", t0 + LOG_EVERY));
        assert_eq!(a.remembered(), 1);
    }
}

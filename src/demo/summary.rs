//! What the demo found: per sink, what the vendor should have received (from the city's
//! own bookkeeping), what its simulator recorded (distinct and duplicate), the engine's
//! outcome counters, dead letters with their reasons, latency, and whether every produced
//! record reached a final outcome for every sink.

use super::city::{lot_code, Track};
use super::setup;
use crate::metrics::Metrics;
use crate::sim::SimServer;
use prometheus::core::Metric as _;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

/// One sink's line of the summary.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SinkLine {
    /// Sink name.
    pub sink: String,
    /// Tracked events the vendor must receive (vehicles, coupons, member lookups).
    pub expected: usize,
    /// Of those, distinct ones the simulator recorded.
    pub delivered: usize,
    /// Records the simulator accepted more than once.
    pub duplicates: usize,
    /// Tracked events the simulator never recorded.
    pub missing: usize,
    /// A few of them, to look for in the logs.
    pub missing_examples: Vec<String>,
    /// All final outcomes the engine counted, by outcome (`delivered`, `coalesced`...).
    pub outcomes: BTreeMap<String, u64>,
    /// Retried attempts.
    pub retries: u64,
    /// Dead letters written.
    pub dead_letters: u64,
    /// Median event-to-acknowledgement latency in seconds (from the histogram).
    pub p50: Option<f64>,
    /// 99th percentile of the same.
    pub p99: Option<f64>,
    /// Whether the sink's committed offsets reached the end of every partition.
    pub offsets_done: bool,
}

/// The whole summary.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    /// Records produced (events and injected invalid records).
    pub produced: u64,
    /// Bytes produced.
    pub produced_bytes: u64,
    /// Seconds the city was producing.
    pub seconds: f64,
    /// One line per sink.
    pub sinks: Vec<SinkLine>,
    /// Dead letters read back from the dead-letter topic: (sink, stage, reason) → count.
    pub dead_letter_reasons: BTreeMap<(String, String, String), usize>,
    /// Answers published on the results topic.
    pub results: usize,
    /// Path of the generated configuration.
    pub config_path: String,
}

impl Report {
    /// True when every produced record reached a final outcome for every sink.
    pub fn complete(&self) -> bool {
        !self.sinks.is_empty() && self.sinks.iter().all(|s| s.offsets_done)
    }

    /// True when, in addition, every tracked event is at its vendor.
    pub fn nothing_missing(&self) -> bool {
        self.sinks.iter().all(|s| s.missing == 0)
    }
}

/// What the simulator of `sink` recorded, as tracked identities (with repeats).
pub fn recorded(sink: &str, server: &SimServer, lots: usize) -> Vec<Track> {
    let index: HashMap<String, usize> = (0..lots).map(|i| (lot_code(i), i)).collect();
    let from_vendor = |vendor_lot: &str| -> Option<usize> {
        let digits: String = vendor_lot.chars().filter(char::is_ascii_digit).collect();
        let n: usize = digits.parse().ok()?;
        let i = if sink == "bzx" { n.checked_sub(35_000)? } else { n };
        index.get(&lot_code(i)).copied()
    };
    let text = |v: &serde_json::Value, k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or_default().to_string();
    server
        .control
        .records()
        .into_iter()
        .filter_map(|r| {
            let lot = from_vendor(&r.lot);
            match (sink, r.endpoint.as_str()) {
                ("bzx", "carInOut") => Some(Track::Vehicle {
                    lot: lot?,
                    plate: text(&r.record, "carNo"),
                    exit: text(&r.record, "inOutType") == "out",
                }),
                ("isp", ep) if ep.contains("departure") || ep.contains("entrance") => Some(Track::Vehicle {
                    lot: lot?,
                    plate: text(&r.record, "plate_number"),
                    exit: ep.contains("departure"),
                }),
                ("coupons", _) => Some(Track::Coupon { lot: lot?, plate: text(&r.record, "plateNo") }),
                ("members", _) => {
                    let id = r.record.get("user_id").and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok()));
                    Some(Track::Member { id: id? })
                }
                _ => None,
            }
        })
        .collect()
}

/// Whether the tracked event is for `sink`.
pub fn expected_for(sink: &str, track: &Track) -> bool {
    match (sink, track) {
        ("bzx", Track::Vehicle { lot, .. }) => setup::bzx_lot(*lot),
        ("isp", Track::Vehicle { lot, .. }) => setup::isp_lot(*lot),
        ("coupons", Track::Coupon { lot, .. }) => setup::coupon_lot(*lot),
        ("members", Track::Member { .. }) => true,
        _ => false,
    }
}

/// Compares what a sink should have with what its vendor received (`got`, with repeats).
pub fn sink_line(sink: &str, tracks: &[Track], got: &[Track]) -> SinkLine {
    let expected: HashSet<&Track> = tracks.iter().filter(|t| expected_for(sink, t)).collect();
    let distinct: HashSet<&Track> = got.iter().collect();
    let delivered = expected.iter().filter(|t| distinct.contains(**t)).count();
    SinkLine {
        sink: sink.to_string(),
        expected: expected.len(),
        delivered,
        duplicates: got.len() - distinct.len(),
        missing: expected.len() - delivered,
        missing_examples: expected
            .iter()
            .filter(|t| !distinct.contains(**t))
            .take(3)
            .map(|t| format!("{t:?}"))
            .collect(),
        ..SinkLine::default()
    }
}

/// Fills the engine's counters and latency into `line`.
pub fn add_metrics(line: &mut SinkLine, metrics: &Metrics) {
    for family in metrics.registry.gather() {
        let name = family.name();
        for m in family.get_metric() {
            let labels: HashMap<&str, &str> = m.get_label().iter().map(|l| (l.name(), l.value())).collect();
            if labels.get("sink") != Some(&line.sink.as_str()) {
                continue;
            }
            let value = m.get_counter().get_value() as u64;
            match name {
                "lotbridge_records_outcome_total" => {
                    *line.outcomes.entry(labels.get("outcome").unwrap_or(&"").to_string()).or_default() += value
                }
                "lotbridge_retries_total" => line.retries += value,
                "lotbridge_dead_letter_writes_total" if labels.get("result") == Some(&"ok") => {
                    line.dead_letters += value
                }
                _ => {}
            }
        }
    }
    let hist = metrics.event_to_ack_seconds.with_label_values(&[&line.sink]).metric();
    let buckets: Vec<(f64, u64)> =
        hist.get_histogram().get_bucket().iter().map(|b| (b.upper_bound(), b.cumulative_count())).collect();
    let count = hist.get_histogram().get_sample_count();
    line.p50 = quantile(&buckets, count, 0.50);
    line.p99 = quantile(&buckets, count, 0.99);
}

/// A quantile of a cumulative histogram, interpolated linearly inside its bucket.
pub fn quantile(buckets: &[(f64, u64)], count: u64, q: f64) -> Option<f64> {
    if count == 0 {
        return None;
    }
    let rank = q * count as f64;
    let mut prev = (0.0, 0u64);
    for &(upper, cumulative) in buckets {
        if cumulative as f64 >= rank {
            let inside = (cumulative - prev.1).max(1) as f64;
            return Some(prev.0 + (upper - prev.0) * (rank - prev.1 as f64) / inside);
        }
        prev = (upper, cumulative);
    }
    Some(prev.0) // beyond the last bucket: report its bound
}

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |s| format!("{:.0} ms", s * 1000.0))
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rate = self.produced as f64 / self.seconds.max(0.001);
        writeln!(
            f,
            "\nproduced {} records ({:.1} MB) in {:.0} s, {rate:.0}/s",
            self.produced,
            self.produced_bytes as f64 / 1e6,
            self.seconds
        )?;
        writeln!(
            f,
            "{:<8} {:>8} {:>9} {:>5} {:>7} {:>8} {:>7} {:>5} {:>8} {:>8}  outcomes",
            "sink", "expected", "delivered", "dups", "missing", "retries", "dead", "done", "p50", "p99"
        )?;
        for s in &self.sinks {
            let outcomes: Vec<String> = s.outcomes.iter().map(|(k, v)| format!("{k} {v}")).collect();
            writeln!(
                f,
                "{:<8} {:>8} {:>9} {:>5} {:>7} {:>8} {:>7} {:>5} {:>8} {:>8}  {}",
                s.sink,
                s.expected,
                s.delivered,
                s.duplicates,
                s.missing,
                s.retries,
                s.dead_letters,
                if s.offsets_done { "yes" } else { "NO" },
                ms(s.p50),
                ms(s.p99),
                outcomes.join(", ")
            )?;
        }
        for s in self.sinks.iter().filter(|s| !s.missing_examples.is_empty()) {
            writeln!(f, "{} never received, e.g.: {}", s.sink, s.missing_examples.join("; "))?;
        }
        writeln!(f, "member answers on {}: {} (members: delivered = answered)", setup::RESULTS, self.results)?;
        if !self.dead_letter_reasons.is_empty() {
            writeln!(f, "dead letters on {} (sink, stage: reason):", setup::DLQ)?;
            for ((sink, stage, reason), n) in &self.dead_letter_reasons {
                writeln!(f, "  {n:>4} × {sink}, {stage}: {reason}")?;
            }
        }
        let verdict = if self.complete() {
            "every record reached a final outcome for every sink"
        } else {
            "SOME RECORDS HAVE NO FINAL OUTCOME"
        };
        writeln!(f, "{verdict}\nconfiguration: {}", self.config_path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_inside_buckets() {
        let buckets = [(0.01, 50), (0.1, 90), (1.0, 100)];
        assert_eq!(quantile(&buckets, 100, 0.5), Some(0.01));
        let p99 = quantile(&buckets, 100, 0.99).unwrap();
        assert!((p99 - 0.91).abs() < 1e-9, "{p99}");
        assert_eq!(quantile(&buckets, 0, 0.5), None);
    }

    #[test]
    fn a_missing_or_repeated_vendor_record_is_reported() {
        let tracks =
            vec![Track::Member { id: 1 }, Track::Member { id: 2 }, Track::Coupon { lot: 1, plate: "x".into() }];
        let got = vec![Track::Member { id: 2 }, Track::Member { id: 2 }, Track::Member { id: 3 }];
        let line = sink_line("members", &tracks, &got);
        assert_eq!((line.expected, line.delivered, line.missing, line.duplicates), (2, 1, 1, 1));
        let report = Report { sinks: vec![line], ..Report::default() };
        assert!(!report.complete() && !report.nothing_missing());
    }
}

//! The status view for people: `GET /status` (JSON) and `lotbridge status --addr`.
//!
//! Metrics carry no lot label (20,000 lots would be 20,000 series per metric), so this is
//! where "what is wrong with lot X" is answered: per sink, its state (running, held and
//! why, paused by the vendor or the memory budget), lag, the oldest unfinished record's age,
//! lanes and budget, the 10 lots with the largest backlog and the 10 with the most recent
//! failures; with `?lot=CODE`, that lot's own line per sink. The answer is bounded whatever
//! the number of lots: 10 + 10 lots per sink, reasons cut to 200 characters.

use crate::engine::sink::Sink;
use crate::metrics::Metrics;
use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, SecondsFormat, Utc};
use prometheus::core::Collector;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

/// Lots shown per list.
const TOP: usize = 10;
/// Lots whose last failure is remembered, per sink (the oldest is forgotten first).
const FAILURES_KEPT: usize = 1_000;
/// Longest failure reason kept.
const REASON_CHARS: usize = 200;

/// The last failure of each lot, per sink, bounded: what `/status` shows as recent failures.
#[derive(Debug, Default)]
pub struct LotFailures {
    sinks: Mutex<HashMap<String, HashMap<String, Failure>>>,
}

/// One lot's last failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// When it happened.
    pub at: DateTime<Utc>,
    /// Why (a vendor code, an HTTP status, a dead-letter reason), at most 200 characters.
    pub reason: String,
    /// Failures of this lot since it was first remembered.
    pub count: u64,
}

impl LotFailures {
    /// Remembers a failed attempt or a refused record of `lot` on `sink`.
    pub fn record(&self, sink: &str, lot: &str, reason: &str) {
        let mut sinks = self.sinks.lock().unwrap_or_else(|p| p.into_inner());
        let lots = sinks.entry(sink.to_string()).or_default();
        let reason: String = reason.chars().take(REASON_CHARS).collect();
        if let Some(f) = lots.get_mut(lot) {
            *f = Failure { at: Utc::now(), reason, count: f.count.saturating_add(1) };
            return;
        }
        if lots.len() >= FAILURES_KEPT {
            if let Some(oldest) = lots.iter().min_by_key(|(_, f)| f.at).map(|(l, _)| l.clone()) {
                lots.remove(&oldest);
            }
        }
        lots.insert(lot.to_string(), Failure { at: Utc::now(), reason, count: 1 });
    }

    /// The `n` most recent failures of `sink`, newest first.
    fn recent(&self, sink: &str, n: usize) -> Vec<LotFailure> {
        let sinks = self.sinks.lock().unwrap_or_else(|p| p.into_inner());
        let Some(lots) = sinks.get(sink) else { return Vec::new() };
        let mut all: Vec<LotFailure> =
            lots.iter().map(|(lot, f)| LotFailure { lot: lot.clone(), failure: f.clone() }).collect();
        all.sort_by(|a, b| b.failure.at.cmp(&a.failure.at).then_with(|| a.lot.cmp(&b.lot)));
        all.truncate(n);
        all
    }

    fn of(&self, sink: &str, lot: &str) -> Option<Failure> {
        let sinks = self.sinks.lock().unwrap_or_else(|p| p.into_inner());
        sinks.get(sink).and_then(|lots| lots.get(lot)).cloned()
    }
}

/// The whole answer of `/status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// lotbridge's version.
    pub version: String,
    /// One entry per configured sink.
    pub sinks: Vec<SinkStatus>,
}

/// One sink as an operator wants to see it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SinkStatus {
    /// Sink name.
    pub name: String,
    /// `running`, `held`, `paused_by_vendor`, `paused_by_budget`, `standby` (no
    /// partitions) or `not_in_group`.
    pub state: String,
    /// Why it is not simply running, for people.
    pub why: Option<String>,
    /// Partitions this replica owns.
    pub partitions: i64,
    /// Records between the committed offsets and the ends of its partitions.
    pub lag_records: i64,
    /// Age of the oldest record read but without a final outcome.
    pub oldest_unfinished_seconds: i64,
    /// Lanes (lots with records in memory or recently active).
    pub lanes: i64,
    /// Records held in memory.
    pub held_records: i64,
    /// Bytes held in memory, against `budget_bytes`.
    pub budget_used_bytes: i64,
    /// The sink's memory budget.
    pub budget_bytes: u64,
    /// Lots this replica sends heartbeats for.
    pub lots_heartbeated: i64,
    /// The 10 lots with the most records queued, largest first.
    pub largest_backlogs: Vec<LotBacklog>,
    /// The 10 lots that failed most recently, newest first.
    pub recent_failures: Vec<LotFailure>,
    /// With `?lot=`: that lot on this sink.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lot: Option<LotStatus>,
}

/// A lot's queue.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LotBacklog {
    /// Platform lot code.
    pub lot: String,
    /// Records queued on its lane.
    pub queued: usize,
}

/// A lot's last failure.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LotFailure {
    /// Platform lot code.
    pub lot: String,
    /// The failure.
    #[serde(flatten)]
    pub failure: Failure,
}

/// One lot on one sink.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LotStatus {
    /// Platform lot code.
    pub lot: String,
    /// Whether the lot is bound to this sink.
    pub bound: bool,
    /// Records queued on its lane.
    pub queued: usize,
    /// Its last failure, if remembered.
    pub last_failure: Option<Failure>,
}

/// The value of `sink`'s series of a gauge, if it exists (looking a series up by its labels
/// would create it).
fn gauge(vec: &prometheus::IntGaugeVec, sink: &str) -> Option<i64> {
    let families = vec.collect();
    let family = families.first()?;
    family
        .get_metric()
        .iter()
        .find(|m| m.get_label().iter().any(|l| l.name() == "sink" && l.value() == sink))
        .map(|m| m.get_gauge().get_value() as i64)
}

/// The sum of a gauge's series of `sink` (lag has one per partition).
fn gauge_sum(vec: &prometheus::IntGaugeVec, sink: &str) -> i64 {
    let families = vec.collect();
    let Some(family) = families.first() else { return 0 };
    family
        .get_metric()
        .iter()
        .filter(|m| m.get_label().iter().any(|l| l.name() == "sink" && l.value() == sink))
        .map(|m| m.get_gauge().get_value() as i64)
        .sum()
}

/// What holds a sink back, from the metrics it keeps: first the group, then credentials,
/// then the vendor's and the budget's pauses, then a record stuck for a minute.
fn state(m: &Metrics, name: &str, oldest: i64) -> (&'static str, Option<String>) {
    let get = |vec| gauge(vec, name).unwrap_or(0);
    let (joined, partitions) = (get(&m.group_joined), get(&m.assigned_partitions));
    if joined == 0 && partitions == 0 {
        return ("not_in_group", Some("its consumer has not joined its group (Kafka unreachable?)".into()));
    }
    if partitions == 0 {
        return ("standby", Some("in its group, waiting for partitions".into()));
    }
    if get(&m.credentials_rejected) == 1 {
        return ("held", Some("the vendor rejects the configured credentials".into()));
    }
    if gauge(&m.auth_ok, name) == Some(0) {
        return ("held", Some("no vendor token: the token endpoint fails or does not answer".into()));
    }
    if get(&m.sink_paused) == 1 {
        return ("paused_by_vendor", Some("the vendor asked to back off (429 or busy)".into()));
    }
    if get(&m.paused_partitions) > 0 {
        return ("paused_by_budget", Some("memory budget full: partitions paused".into()));
    }
    if oldest >= 60 {
        return ("held", Some(format!("a record has waited {oldest} s for an outcome: see recent failures")));
    }
    ("running", None)
}

/// Records waiting per lot (queued and in flight), from the sink's lanes.
fn backlogs(sink: &Sink) -> Vec<LotBacklog> {
    sink.lanes.queued().into_iter().map(|(lot, queued)| LotBacklog { lot, queued }).collect()
}

/// The status of one sink; with `lot`, that lot's line too.
pub fn sink_status(sink: &Sink, lot: Option<&str>) -> SinkStatus {
    let (m, name) = (&sink.metrics, sink.name());
    let oldest = gauge(&m.oldest_unacked_seconds, name).unwrap_or(0);
    let (state, why) = match sink.gate.held() {
        Some(reason) => {
            ("held", Some(format!("sink fault ({}): records wait in Kafka, see recent failures", reason.as_str())))
        }
        None => state(m, name, oldest),
    };
    let mut queues = backlogs(sink);
    let lot = lot.map(|code| LotStatus {
        lot: code.to_string(),
        bound: sink.adapter.bound_lots().iter().any(|l| l == code),
        queued: queues.iter().find(|b| b.lot == code).map_or(0, |b| b.queued),
        last_failure: m.lot_failures.of(name, code),
    });
    queues.retain(|b| b.queued > 0);
    queues.sort_unstable_by(|a, b| b.queued.cmp(&a.queued).then_with(|| a.lot.cmp(&b.lot)));
    queues.truncate(TOP);
    SinkStatus {
        name: name.to_string(),
        state: state.to_string(),
        why,
        partitions: gauge(&m.assigned_partitions, name).unwrap_or(0),
        lag_records: gauge_sum(&m.consumer_lag, name),
        oldest_unfinished_seconds: oldest,
        lanes: sink.lane_count() as i64,
        held_records: gauge(&m.held_records, name).unwrap_or(0),
        budget_used_bytes: gauge(&m.held_bytes, name).unwrap_or(0),
        budget_bytes: sink.config.memory_budget_bytes as u64,
        lots_heartbeated: gauge(&m.live_lots, name).unwrap_or(0),
        largest_backlogs: queues,
        recent_failures: m.lot_failures.recent(name, TOP),
        lot,
    }
}

/// The status of every sink.
pub fn report(sinks: &[Arc<Sink>], lot: Option<&str>) -> Report {
    Report {
        version: env!("CARGO_PKG_VERSION").to_string(),
        sinks: sinks.iter().map(|s| sink_status(s, lot)).collect(),
    }
}

#[derive(Deserialize)]
struct StatusQuery {
    lot: Option<String>,
}

/// `GET /status[?lot=CODE]` over `sinks`.
pub fn router(sinks: Vec<Arc<Sink>>) -> Router {
    async fn status(State(sinks): State<Arc<Vec<Arc<Sink>>>>, Query(q): Query<StatusQuery>) -> Json<Report> {
        Json(report(&sinks, q.lot.as_deref().filter(|l| !l.is_empty())))
    }
    Router::new().route("/status", get(status)).with_state(Arc::new(sinks))
}

/// The report as a table for people (`lotbridge status`).
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<12} {:<16} {:>5} {:>8} {:>8} {:>7} {:>9}  WHY",
        "SINK", "STATE", "PARTS", "LAG", "OLDEST", "LANES", "BUDGET"
    );
    for s in &report.sinks {
        let budget = (s.budget_used_bytes.max(0) as u64).saturating_mul(100).checked_div(s.budget_bytes).unwrap_or(0);
        let _ = writeln!(
            out,
            "{:<12} {:<16} {:>5} {:>8} {:>7}s {:>7} {:>8}%  {}",
            s.name,
            s.state,
            s.partitions,
            s.lag_records,
            s.oldest_unfinished_seconds,
            s.lanes,
            budget,
            s.why.as_deref().unwrap_or("-")
        );
    }
    for s in &report.sinks {
        if let Some(lot) = &s.lot {
            let failure = lot.last_failure.as_ref().map_or("no failure remembered".into(), |f| {
                format!("last failure {} ({}x): {}", f.at.to_rfc3339_opts(SecondsFormat::Secs, true), f.count, f.reason)
            });
            let bound = if lot.bound { "bound" } else { "not bound" };
            let _ = writeln!(out, "{} lot {}: {bound}, {} queued, {failure}", s.name, lot.lot, lot.queued);
            continue;
        }
        if !s.largest_backlogs.is_empty() {
            let lots: Vec<String> = s.largest_backlogs.iter().map(|b| format!("{} ({})", b.lot, b.queued)).collect();
            let _ = writeln!(out, "{} largest backlogs: {}", s.name, lots.join(", "));
        }
        for f in &s.recent_failures {
            let at = f.failure.at.to_rfc3339_opts(SecondsFormat::Secs, true);
            let _ = writeln!(out, "{} failure {} {at} ({}x): {}", s.name, f.lot, f.failure.count, f.failure.reason);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_bounded_and_the_newest_come_first() {
        let f = LotFailures::default();
        for i in 0..(FAILURES_KEPT + 500) {
            f.record("bzx", &format!("L{i}"), &"é".repeat(500));
        }
        f.record("bzx", "L3", "again");
        let recent = f.recent("bzx", TOP);
        assert_eq!(recent.len(), TOP);
        let kept = f.sinks.lock().unwrap().get("bzx").map(HashMap::len);
        assert_eq!(kept, Some(FAILURES_KEPT), "bounded whatever the number of lots");
        assert!(recent.iter().all(|r| r.failure.reason.chars().count() <= REASON_CHARS), "cut on characters");
        assert!(f.recent("other", TOP).is_empty());
        assert_eq!(f.of("bzx", "L1499").map(|x| x.count), Some(1));
    }

    #[test]
    fn the_table_shows_state_why_and_lots() {
        let report = Report {
            version: "0".into(),
            sinks: vec![SinkStatus {
                name: "bzx".into(),
                state: "held".into(),
                why: Some("the vendor rejects the configured credentials".into()),
                partitions: 3,
                lag_records: 12,
                oldest_unfinished_seconds: 90,
                lanes: 2,
                held_records: 5,
                budget_used_bytes: 50,
                budget_bytes: 100,
                lots_heartbeated: 2,
                largest_backlogs: vec![LotBacklog { lot: "P1".into(), queued: 4 }],
                recent_failures: vec![],
                lot: None,
            }],
        };
        let text = render(&report);
        assert!(text.contains("bzx") && text.contains("held") && text.contains("50%"), "{text}");
        assert!(text.contains("largest backlogs: P1 (4)"), "{text}");
    }
}

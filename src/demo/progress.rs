//! The live line of the demo: produced records, deliveries per sink, retries, dead
//! letters and the production rate, redrawn a few times a second with indicatif.

use crate::metrics::Metrics;
use indicatif::{ProgressBar, ProgressStyle};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Counters the producer updates and the progress line reads.
#[derive(Debug, Default)]
pub struct Produced {
    /// Records acknowledged by the broker.
    pub records: AtomicU64,
    /// Their bytes.
    pub bytes: AtomicU64,
}

/// The progress display (hidden when the demo runs quietly, as in tests).
pub struct Progress {
    bar: ProgressBar,
    started: Instant,
}

impl Progress {
    /// A spinner on stderr, or nothing when `visible` is false.
    pub fn new(visible: bool) -> Progress {
        let bar = if visible { ProgressBar::new_spinner() } else { ProgressBar::hidden() };
        if let Ok(style) = ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}") {
            bar.set_style(style);
        }
        bar.enable_steady_tick(Duration::from_millis(120));
        Progress { bar, started: Instant::now() }
    }

    /// Redraws the line from the counters.
    pub fn update(&self, stage: &str, produced: &Produced, metrics: &Metrics, sinks: &[&str]) {
        let n = produced.records.load(Ordering::Relaxed);
        let rate = n as f64 / self.started.elapsed().as_secs_f64().max(0.001);
        let per_sink: Vec<String> = sinks.iter().map(|s| format!("{s} {}", delivered(metrics, s))).collect();
        let retries: u64 = sinks.iter().map(|s| sum(metrics, "lotbridge_retries_total", s, None)).sum();
        let dead: u64 =
            sinks.iter().map(|s| sum(metrics, "lotbridge_dead_letter_writes_total", s, Some(("result", "ok")))).sum();
        self.bar.set_message(format!(
            "{stage}: produced {n} ({rate:.0}/s) | delivered {} | retries {retries} | dead letters {dead}",
            per_sink.join(", ")
        ));
    }

    /// Prints a line above the spinner (faults, milestones).
    pub fn note(&self, text: &str) {
        if self.bar.is_hidden() {
            tracing::info!("{text}");
        } else {
            self.bar.println(text);
        }
    }

    /// Removes the spinner.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// Shares counters between the producer and the display.
pub fn counters() -> Arc<Produced> {
    Arc::new(Produced::default())
}

fn delivered(metrics: &Metrics, sink: &str) -> u64 {
    sum(metrics, "lotbridge_records_outcome_total", sink, Some(("outcome", "delivered")))
        + sum(metrics, "lotbridge_records_outcome_total", sink, Some(("outcome", "duplicate")))
}

/// Sum of a counter family's values for `sink`, optionally filtered on one more label.
fn sum(metrics: &Metrics, family: &str, sink: &str, filter: Option<(&str, &str)>) -> u64 {
    let has =
        |m: &prometheus::proto::Metric, k: &str, v: &str| m.get_label().iter().any(|l| l.name() == k && l.value() == v);
    metrics
        .registry
        .gather()
        .iter()
        .filter(|f| f.name() == family)
        .flat_map(|f| f.get_metric().iter())
        .filter(|m| has(m, "sink", sink) && filter.is_none_or(|(k, v)| has(m, k, v)))
        .map(|m| m.get_counter().get_value() as u64)
        .sum()
}

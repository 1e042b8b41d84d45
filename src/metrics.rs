//! Every Prometheus metric lotbridge exports, defined in one place, registered into one
//! [`prometheus::Registry`] and passed in (no global statics).
//!
//! Labels are small bounded sets: sink name, vendor kind, event type, endpoint, outcome,
//! reason class. Never a lot code, a plate or a member id.

use prometheus::{
    exponential_buckets, Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use rdkafka::consumer::{Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::Offset;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How often a sink's consumer lag is measured: each measurement costs broker round trips.
pub const LAG_EVERY: Duration = Duration::from_secs(5);
/// The longest one broker call of a lag measurement may take.
const LAG_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest one measurement may take: partitions left over keep their last value, so a
/// slow broker cannot hold the consumer (and its clean close at shutdown) for long.
const LAG_BUDGET: Duration = Duration::from_secs(3);

/// All metrics of one process.
#[derive(Clone)]
pub struct Metrics {
    /// The registry they are registered in.
    pub registry: Registry,
    /// The process's own memory, CPU and file descriptors under their standard unprefixed
    /// names (`process_resident_memory_bytes`...), as dashboards and alerts expect them.
    process: Registry,
    /// Records read from Kafka, by sink and topic.
    pub consumed: IntCounterVec,
    /// Records that failed to decode or validate, by sink and stage (`decode`, `map`).
    pub invalid: IntCounterVec,
    /// Records not for a sink, by sink and reason.
    pub skipped: IntCounterVec,
    /// Final outcomes, by sink, event type and outcome
    /// (`delivered`, `duplicate`, `dead_lettered`, `coalesced`, `unchanged`).
    pub outcomes: IntCounterVec,
    /// Dead-letter writes, by sink and result (`ok`, `error`).
    pub dead_letter_writes: IntCounterVec,
    /// Vendor requests, by sink, endpoint and outcome class.
    pub requests: IntCounterVec,
    /// Vendor request latency, by sink and endpoint.
    pub request_seconds: HistogramVec,
    /// Records per request, by sink and endpoint.
    pub batch_records: HistogramVec,
    /// Bytes per request body, by sink and endpoint.
    pub batch_bytes: HistogramVec,
    /// Retries, by sink and reason.
    pub retries: IntCounterVec,
    /// Time spent waiting for the rate limiter, by sink.
    pub rate_limit_wait_seconds: HistogramVec,
    /// Requests per second this replica may send, by sink: its share of the sink's
    /// `requests_per_second`, in proportion to the input partitions it owns.
    pub rate_limit_share: GaugeVec,
    /// 1 while the sink is paused by a vendor's 429 or busy answer.
    pub sink_paused: IntGaugeVec,
    /// From the event's `at` to the vendor's acknowledgement, by sink.
    pub event_to_ack_seconds: HistogramVec,
    /// From consumption to the vendor's acknowledgement, by sink.
    pub consume_to_ack_seconds: HistogramVec,
    /// Records held in memory without a final outcome, by sink.
    pub held_records: IntGaugeVec,
    /// Bytes held in memory without a final outcome, by sink.
    pub held_bytes: IntGaugeVec,
    /// Age in seconds of the oldest record without a final outcome, by sink.
    pub oldest_unacked_seconds: IntGaugeVec,
    /// Finished records not yet committed to Kafka (stored for the next commit, or behind
    /// an unfinished older record of their partition): what a crash now would deliver
    /// again, by sink.
    pub finished_uncommitted: IntGaugeVec,
    /// Active lanes, by sink.
    pub lanes: IntGaugeVec,
    /// Partitions paused for backpressure, by sink.
    pub paused_partitions: IntGaugeVec,
    /// Assigned partitions, by sink.
    pub assigned_partitions: IntGaugeVec,
    /// Photos handled by the photo policy, by sink and outcome.
    pub photos: IntCounterVec,
    /// Bytes saved by recompressing photos, by sink.
    pub photo_bytes_saved: IntCounterVec,
    /// Heartbeats sent, by sink.
    pub heartbeats: IntCounterVec,
    /// Lots this replica sends heartbeats for, by sink (`heartbeat_lots`: its owned bound
    /// lots, or the live ones).
    pub live_lots: IntGaugeVec,
    /// Results published (zvcms answers), by sink and result.
    pub results_published: IntCounterVec,
    /// Build information.
    pub build_info: IntGaugeVec,
    /// Calls to a vendor's token endpoint, by sink and result (`ok`, `error`).
    pub token_fetches: IntCounterVec,
    /// Tokens forgotten after the vendor refused them, by sink.
    pub token_invalidations: IntCounterVec,
    /// 1 while a sink's credentials are rejected by its vendor.
    pub credentials_rejected: IntGaugeVec,
    /// Background credential checks (readiness), by sink and result (`ok`, `unavailable`, `rejected`).
    pub auth_checks: IntCounterVec,
    /// 1 while the last background credential check of a sink succeeded.
    pub auth_ok: IntGaugeVec,
    /// Rate-limiter waits that actually slept, by sink.
    pub rate_limit_waits: IntCounterVec,
    /// Records between the committed offset and the high watermark, by sink, topic and partition.
    pub consumer_lag: IntGaugeVec,
    /// 1 once a sink's consumer has joined its group.
    pub group_joined: IntGaugeVec,
    /// 1 while a sink is held for a fault of its own (route, TLS, signature...), by reason.
    pub sink_held: IntGaugeVec,
    /// 1 while `/readyz` answers ready.
    pub ready: IntGauge,
    /// Unix time the process started.
    pub up: IntGauge,
    /// Vendor fields a mapping changed to fit the vendor (cut to width, plate spaces
    /// removed), by sink, vendor field and change (`truncated`, `normalized`).
    pub fields_adjusted: IntCounterVec,
    /// The last failure of each lot (bounded), for `/status`: never a metric label.
    pub lot_failures: Arc<crate::status::LotFailures>,
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> prometheus::Result<IntCounterVec> {
    let c = IntCounterVec::new(Opts::new(name, help), labels)?;
    registry.register(Box::new(c.clone()))?;
    Ok(c)
}

fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> prometheus::Result<IntGaugeVec> {
    let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
    registry.register(Box::new(g.clone()))?;
    Ok(g)
}

fn float_gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> prometheus::Result<GaugeVec> {
    let g = GaugeVec::new(Opts::new(name, help), labels)?;
    registry.register(Box::new(g.clone()))?;
    Ok(g)
}

fn plain_gauge(registry: &Registry, name: &str, help: &str) -> prometheus::Result<IntGauge> {
    let g = IntGauge::new(name, help)?;
    registry.register(Box::new(g.clone()))?;
    Ok(g)
}

fn histogram(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: Vec<f64>,
) -> prometheus::Result<HistogramVec> {
    let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)?;
    registry.register(Box::new(h.clone()))?;
    Ok(h)
}

/// A registry holding the process collector (Linux only: it reads `/proc/self`).
fn process_registry() -> prometheus::Result<Registry> {
    let registry = Registry::new();
    #[cfg(target_os = "linux")]
    registry.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))?;
    Ok(registry)
}

fn seconds_buckets() -> Vec<f64> {
    vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0]
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> prometheus::Result<Metrics> {
        let r = Registry::new_custom(Some("lotbridge".into()), None)?;
        let sizes = exponential_buckets(1.0, 2.0, 8)?;
        let bytes = exponential_buckets(256.0, 4.0, 10)?;
        let m = Metrics {
            consumed: counter(&r, "records_consumed_total", "Records read from Kafka.", &["sink", "topic"])?,
            invalid: counter(&r, "records_invalid_total", "Records that failed to decode or map.", &["sink", "stage"])?,
            skipped: counter(&r, "records_skipped_total", "Records not for this sink.", &["sink", "reason"])?,
            outcomes: counter(
                &r,
                "records_outcome_total",
                "Records with a final outcome, by outcome.",
                &["sink", "event_type", "outcome"],
            )?,
            dead_letter_writes: counter(&r, "dead_letter_writes_total", "Dead-letter writes.", &["sink", "result"])?,
            requests: counter(
                &r,
                "vendor_requests_total",
                "Vendor requests by outcome class.",
                &["sink", "endpoint", "outcome"],
            )?,
            request_seconds: histogram(
                &r,
                "vendor_request_duration_seconds",
                "Vendor request latency.",
                &["sink", "endpoint"],
                seconds_buckets(),
            )?,
            batch_records: histogram(&r, "batch_records", "Records per vendor request.", &["sink", "endpoint"], sizes)?,
            batch_bytes: histogram(&r, "batch_bytes", "Body bytes per vendor request.", &["sink", "endpoint"], bytes)?,
            retries: counter(&r, "retries_total", "Retried attempts by reason.", &["sink", "reason"])?,
            rate_limit_wait_seconds: histogram(
                &r,
                "rate_limit_wait_seconds",
                "Time spent waiting for the rate limiter.",
                &["sink"],
                seconds_buckets(),
            )?,
            sink_paused: gauge(&r, "sink_paused", "1 while the vendor asked the sink to back off.", &["sink"])?,
            event_to_ack_seconds: histogram(
                &r,
                "event_to_ack_seconds",
                "From the event's time to the vendor's acknowledgement.",
                &["sink"],
                seconds_buckets(),
            )?,
            consume_to_ack_seconds: histogram(
                &r,
                "consume_to_ack_seconds",
                "From consumption to the vendor's acknowledgement.",
                &["sink"],
                seconds_buckets(),
            )?,
            held_records: gauge(&r, "held_records", "Records in memory without a final outcome.", &["sink"])?,
            held_bytes: gauge(&r, "held_bytes", "Bytes in memory without a final outcome.", &["sink"])?,
            oldest_unacked_seconds: gauge(
                &r,
                "oldest_unacked_age_seconds",
                "Age of the oldest record without a final outcome.",
                &["sink"],
            )?,
            finished_uncommitted: gauge(
                &r,
                "finished_uncommitted_records",
                "Finished records not yet committed to Kafka (stored for the next commit, or behind an unfinished older record of their partition): a crash now would deliver them again.",
                &["sink"],
            )?,
            lanes: gauge(&r, "lanes_active", "Lanes (sink, lot) alive.", &["sink"])?,
            paused_partitions: gauge(&r, "partitions_paused", "Partitions paused for backpressure.", &["sink"])?,
            assigned_partitions: gauge(&r, "partitions_assigned", "Partitions assigned to this instance.", &["sink"])?,
            photos: counter(&r, "photos_total", "Photos by photo-policy outcome.", &["sink", "outcome"])?,
            photo_bytes_saved: counter(&r, "photo_bytes_saved_total", "Bytes saved by recompression.", &["sink"])?,
            heartbeats: counter(&r, "heartbeats_sent_total", "Heartbeats delivered.", &["sink"])?,
            live_lots: gauge(
                &r,
                "lots_live",
                "Lots this replica sends heartbeats for (owned bound lots, or live ones in live mode).",
                &["sink"],
            )?,
            results_published: counter(&r, "results_published_total", "Answers published.", &["sink", "result"])?,
            build_info: gauge(&r, "build_info", "Build information.", &["version", "git_sha"])?,
            token_fetches: counter(
                &r,
                "token_fetches_total",
                "Calls to the vendor's token endpoint, by result.",
                &["sink", "result"],
            )?,
            token_invalidations: counter(
                &r,
                "token_invalidations_total",
                "Tokens forgotten after the vendor refused them.",
                &["sink"],
            )?,
            credentials_rejected: gauge(
                &r,
                "credentials_rejected",
                "1 while the vendor rejects the sink's credentials.",
                &["sink"],
            )?,
            auth_checks: counter(&r, "auth_checks_total", "Background credential checks.", &["sink", "result"])?,
            auth_ok: gauge(&r, "auth_ok", "1 while the last credential check succeeded.", &["sink"])?,
            rate_limit_share: float_gauge(
                &r,
                "rate_limit_share_per_second",
                "Requests per second this replica may send: its share of the sink's rate limit, in proportion to the input partitions it owns.",
                &["sink"],
            )?,
            rate_limit_waits: counter(&r, "rate_limit_waits_total", "Rate-limiter waits that slept.", &["sink"])?,
            consumer_lag: gauge(
                &r,
                "consumer_lag_records",
                "Records between the committed offset and the high watermark.",
                &["sink", "topic", "partition"],
            )?,
            group_joined: gauge(&r, "consumer_group_joined", "1 once the consumer joined its group.", &["sink"])?,
            sink_held: gauge(
                &r,
                "sink_held",
                "1 while the sink holds for a fault of its own (no dead letters; records wait in Kafka), by reason.",
                &["sink", "reason"],
            )?,
            ready: plain_gauge(&r, "ready", "1 while /readyz answers ready.")?,
            up: plain_gauge(&r, "start_time_seconds", "Unix time the process started.")?,
            fields_adjusted: counter(
                &r,
                "vendor_fields_adjusted_total",
                "Vendor fields changed to fit the vendor: cut to its width or normalised (plate spaces).",
                &["sink", "field", "change"],
            )?,
            lot_failures: Arc::default(),
            registry: r,
            process: process_registry()?,
        };
        m.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), option_env!("LOTBRIDGE_GIT_SHA").unwrap_or("unknown")])
            .set(1);
        m.up.set(chrono::Utc::now().timestamp());
        Ok(m)
    }

    /// Adds what a sink's adapter changed since the last call to `fields_adjusted`
    /// (called periodically, like the token statistics).
    pub fn export_adjustments(&self, sink: &str, adjustments: &crate::vendors::adjust::Adjustments) {
        for (field, change, n) in adjustments.take_new() {
            self.fields_adjusted.with_label_values(&[sink, field, change.as_str()]).inc_by(n);
        }
    }

    /// Creates a sink's series at zero, so dashboards show them from the start and
    /// `increase()` in alerts sees the first event (a series born at 1 shows no increase).
    pub fn init_sink(&self, sink: &str) {
        for gauge in [
            &self.sink_paused,
            &self.paused_partitions,
            &self.credentials_rejected,
            &self.group_joined,
            &self.finished_uncommitted,
        ] {
            gauge.with_label_values(&[sink]).set(0);
        }
        for result in ["ok", "error"] {
            self.dead_letter_writes.with_label_values(&[sink, result]);
            self.results_published.with_label_values(&[sink, result]);
        }
        self.token_fetches.with_label_values(&[sink, "error"]);
        self.token_fetches.with_label_values(&[sink, "ok"]);
        self.token_invalidations.with_label_values(&[sink]);
        self.rate_limit_waits.with_label_values(&[sink]);
        self.heartbeats.with_label_values(&[sink]);
        self.photo_bytes_saved.with_label_values(&[sink]);
        for reason in crate::vendors::HoldReason::ALL {
            self.sink_held.with_label_values(&[sink, reason.as_str()]).set(0);
        }
    }

    /// The registry in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let mut families = self.registry.gather();
        families.extend(self.process.gather());
        let _ = TextEncoder::new().encode(&families, &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    /// The value of a counter, for tests and the demo's summary.
    pub fn count(&self, vec: &IntCounterVec, labels: &[&str]) -> u64 {
        vec.get_metric_with_label_values(labels).map(|c| c.get()).unwrap_or(0)
    }
}

/// Measures one sink's consumer lag (high watermark minus committed offset, per assigned
/// partition) and whether its consumer has joined the group.
///
/// Measuring is blocking (broker round trips): [`run_lag_probe`] runs it on the blocking pool.
pub struct LagProbe {
    metrics: Metrics,
    sink: String,
    reported: HashSet<(String, i32)>,
}

impl LagProbe {
    /// A probe for sink `sink`.
    pub fn new(metrics: Metrics, sink: &str) -> LagProbe {
        LagProbe { metrics, sink: sink.to_string(), reported: HashSet::new() }
    }

    /// Measures once and sets the gauges; partitions no longer assigned lose their series.
    pub fn measure<X: ConsumerContext, C: Consumer<X>>(&mut self, consumer: &C) {
        let joined = !matches!(consumer.rebalance_protocol(), RebalanceProtocol::None);
        self.metrics.group_joined.with_label_values(&[&self.sink]).set(i64::from(joined));
        let committed = match consumer.committed(LAG_TIMEOUT) {
            Ok(tpl) => tpl,
            Err(e) => {
                tracing::debug!(sink = %self.sink, error = %e, "lag not measured: committed offsets unavailable");
                return;
            }
        };
        let deadline = std::time::Instant::now() + LAG_BUDGET;
        let mut seen = HashSet::new();
        for e in committed.elements() {
            if std::time::Instant::now() < deadline {
                self.measure_partition(consumer, e.topic(), e.partition(), e.offset());
            }
            seen.insert((e.topic().to_string(), e.partition()));
        }
        self.forget_except(&seen);
    }

    fn measure_partition<X: ConsumerContext, C: Consumer<X>>(
        &self,
        consumer: &C,
        topic: &str,
        partition: i32,
        committed: Offset,
    ) {
        let Ok((low, high)) = consumer.fetch_watermarks(topic, partition, LAG_TIMEOUT) else { return };
        let from = match committed {
            Offset::Offset(n) => n.max(low),
            _ => low, // nothing committed yet: the whole partition is behind
        };
        let partition = partition.to_string();
        self.metrics.consumer_lag.with_label_values(&[&self.sink, topic, &partition]).set((high - from).max(0));
    }

    fn forget_except(&mut self, seen: &HashSet<(String, i32)>) {
        for (topic, partition) in self.reported.difference(seen) {
            let partition = partition.to_string();
            let _ = self.metrics.consumer_lag.remove_label_values(&[&self.sink, topic, &partition]);
        }
        self.reported = seen.clone();
    }
}

/// Measures a sink's lag every [`LAG_EVERY`] on the blocking pool until `stop` turns true.
pub async fn run_lag_probe<X, C>(mut probe: LagProbe, consumer: Arc<C>, mut stop: watch::Receiver<bool>)
where
    X: ConsumerContext + 'static,
    C: Consumer<X> + Send + Sync + 'static,
{
    let mut tick = tokio::time::interval(LAG_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => {}
        }
        if *stop.borrow() {
            return;
        }
        let consumer = consumer.clone();
        let measured = tokio::task::spawn_blocking(move || {
            probe.measure(consumer.as_ref());
            probe
        });
        match measured.await {
            Ok(p) => probe = p,
            Err(e) => {
                tracing::warn!(error = %e, "lag probe failed; lag is no longer measured");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adjusted_fields_are_exported_per_sink_field_and_change_once() {
        use crate::vendors::adjust::{Adjusted, Adjustments};
        let m = Metrics::new().unwrap();
        let adjustments = Adjustments::new("bzx");
        adjustments.record("P1", &[Adjusted::truncated("nodeName"), Adjusted::normalized("carNo")]);
        adjustments.record("P2", &[Adjusted::truncated("nodeName")]);
        m.export_adjustments("bzx", &adjustments);
        m.export_adjustments("bzx", &adjustments);
        let text = m.render();
        for series in [
            "lotbridge_vendor_fields_adjusted_total{change=\"truncated\",field=\"nodeName\",sink=\"bzx\"} 2",
            "lotbridge_vendor_fields_adjusted_total{change=\"normalized\",field=\"carNo\",sink=\"bzx\"} 1",
        ] {
            assert!(text.contains(series), "missing {series} in\n{text}");
        }
    }

    #[test]
    fn a_new_sink_shows_its_alert_series_at_zero() {
        let m = Metrics::new().unwrap();
        m.init_sink("bzx");
        let text = m.render();
        for series in [
            "lotbridge_dead_letter_writes_total{result=\"ok\",sink=\"bzx\"} 0",
            "lotbridge_dead_letter_writes_total{result=\"error\",sink=\"bzx\"} 0",
            "lotbridge_heartbeats_sent_total{sink=\"bzx\"} 0",
            "lotbridge_credentials_rejected{sink=\"bzx\"} 0",
            "lotbridge_partitions_paused{sink=\"bzx\"} 0",
            "lotbridge_consumer_group_joined{sink=\"bzx\"} 0",
            "lotbridge_finished_uncommitted_records{sink=\"bzx\"} 0",
            "lotbridge_results_published_total{result=\"error\",sink=\"bzx\"} 0",
        ] {
            assert!(text.contains(series), "{series} missing from\n{text}");
        }
        assert!(text.contains("lotbridge_build_info{git_sha="), "build info always present");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_process_memory_and_cpu_are_exported() {
        let text = Metrics::new().unwrap().render();
        let resident = text.lines().find_map(|l| l.strip_prefix("process_resident_memory_bytes "));
        let bytes: f64 = resident.and_then(|v| v.parse().ok()).unwrap_or_default();
        assert!(bytes > 1_000_000.0, "process_resident_memory_bytes missing or zero in\n{text}");
        assert!(text.contains("process_cpu_seconds_total "), "{text}");
    }

    #[test]
    fn counters_end_in_total_and_every_family_has_help() {
        let m = Metrics::new().unwrap();
        m.init_sink("bzx");
        let text = m.render();
        let counters: Vec<&str> =
            text.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter")).collect();
        assert!(counters.len() >= 5, "{counters:?}");
        assert!(counters.iter().all(|c| c.ends_with("_total")), "{counters:?}");
        let types = text.lines().filter(|l| l.starts_with("# TYPE ")).count();
        let helps = text.lines().filter(|l| l.starts_with("# HELP ") && l.split(' ').count() > 3).count();
        assert_eq!(types, helps, "every family has help text");
    }
}

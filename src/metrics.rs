//! Every Prometheus metric lotbridge exports, defined in one place, registered into one
//! [`prometheus::Registry`] and passed in (no global statics).
//!
//! Labels are small bounded sets: sink name, vendor kind, event type, endpoint, outcome,
//! reason class. Never a lot code, a plate or a member id.

use prometheus::{
    exponential_buckets, Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// All metrics of one process.
#[derive(Clone)]
pub struct Metrics {
    /// The registry they are registered in.
    pub registry: Registry,
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
    /// Lots considered live, by sink.
    pub live_lots: IntGaugeVec,
    /// Results published (zvcms answers), by sink and result.
    pub results_published: IntCounterVec,
    /// Build information.
    pub build_info: IntGaugeVec,
    /// Token fetches, by sink and result.
    pub token_fetches: IntCounterVec,
    /// 1 while a sink's credentials are rejected by its vendor.
    pub credentials_rejected: IntGaugeVec,
    /// Process start, for uptime.
    pub up: IntGauge,
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
            lanes: gauge(&r, "lanes_active", "Lanes (sink, lot) alive.", &["sink"])?,
            paused_partitions: gauge(&r, "partitions_paused", "Partitions paused for backpressure.", &["sink"])?,
            assigned_partitions: gauge(&r, "partitions_assigned", "Partitions assigned to this instance.", &["sink"])?,
            photos: counter(&r, "photos_total", "Photos by photo-policy outcome.", &["sink", "outcome"])?,
            photo_bytes_saved: counter(&r, "photo_bytes_saved_total", "Bytes saved by recompression.", &["sink"])?,
            heartbeats: counter(&r, "heartbeats_sent_total", "Heartbeats delivered.", &["sink"])?,
            live_lots: gauge(&r, "lots_live", "Lots that sent something within the live window.", &["sink"])?,
            results_published: counter(&r, "results_published_total", "Answers published.", &["sink", "result"])?,
            build_info: gauge(&r, "build_info", "Build information.", &["version", "git_sha"])?,
            token_fetches: counter(&r, "token_fetches_total", "Token fetches by result.", &["sink", "result"])?,
            credentials_rejected: gauge(
                &r,
                "credentials_rejected",
                "1 while the vendor rejects the sink's credentials.",
                &["sink"],
            )?,
            up: {
                let g = IntGauge::new("up_since_seconds", "Unix time the process started.")?;
                r.register(Box::new(g.clone()))?;
                g
            },
            registry: r,
        };
        m.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), option_env!("LOTBRIDGE_GIT_SHA").unwrap_or("unknown")])
            .set(1);
        m.up.set(chrono::Utc::now().timestamp());
        Ok(m)
    }

    /// The registry in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    /// The value of a counter, for tests and the demo's summary.
    pub fn count(&self, vec: &IntCounterVec, labels: &[&str]) -> u64 {
        vec.get_metric_with_label_values(labels).map(|c| c.get()).unwrap_or(0)
    }
}

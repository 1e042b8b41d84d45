//! The delivery engine: Kafka → per-sink consumer groups → lanes per (sink, lot) → vendors,
//! at least once.
//!
//! Each sink consumes with its own group, rate limiter, concurrency limit and retry state,
//! so a vendor that is down only lags its own sink. Offsets move only past records with a
//! final outcome. Kafka is the distributed engine: more replicas join the same groups.

//! # Layout
//! - [`sink`]: one running sink, wiring its parts together (no rules of its own).
//! - `consumer`: the sink's Kafka consumer, its group callbacks (revoke drain, assign).
//! - `intake`: the read loop: batches read, decoded ahead, routed; housekeeping.
//! - `decode`: records as read, decoded and mapped once per record.
//! - `route`: registration of offsets and queuing of records on their lanes.
//! - `budget`: the memory budget and its two-step backpressure, the whole protocol.
//! - `lanes` / `lane`: the lane registry; one lane's queue and its batching decisions.
//! - `deliver`: the lane task and the attempt loop that carries out `retry` decisions.
//! - `retry`: the pure retry decision (verdict + attempt state → next step).
//! - `gate`: sink-wide pause (429), rate limits and concurrency.
//! - `http`: execution of one prepared request and its classification.
//! - `acks`: final outcomes: counting, watermarks, offset stores.
//! - `offsets`: contiguous per-partition watermarks with assignment generations.
//! - `ahead`: the finished-ahead map committed with a watermark, so the next reader of a
//!   partition does not send again what finished behind an unfinished record.
//! - [`output`]: dead letters and answers written back to Kafka.
//! - [`lots`]: the lot book and the daily full lot push.
//! - [`schedule`]: generated records: per-lot heartbeats spread over the minute, the daily
//!   lot push, and which replica owns a lot (Kafka's murmur2 partitioner).
//! - `task`: panics and dying tasks: a record's panic becomes its dead letter, a dead task
//!   fails the sink (`/healthz`, non-zero exit).

mod acks;
mod ahead;
mod budget;
mod consumer;
mod decode;
pub mod deliver;
mod gate;
mod http;
mod intake;
mod lane;
mod lanes;
pub mod lots;
mod offsets;
pub mod output;
mod retry;
mod route;
pub mod schedule;
pub mod sink;
mod task;

pub use http::execute;
/// For the fuzz targets' response framing (`crate::fuzzing`): the engine's own parser.
pub(crate) use http::parse_retry_after;
pub use sink::Sink;

use crate::config::KafkaConfig;
use crate::load::Loaded;
use crate::metrics::Metrics;
use acks::OffsetStore;
use output::Output;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::KafkaError;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use task::spawn_guarded;
use tokio::sync::watch;

/// Why the engine cannot start.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A Kafka client could not be created or subscribed.
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// A task of a sink died (a panic outside any one record's handling): the engine
    /// drained and stopped; the process should exit non-zero and be restarted.
    #[error("sink {sink} failed: {why}")]
    SinkFailed {
        /// The sink.
        sink: String,
        /// What died, and why.
        why: String,
    },
}

/// A configured engine, ready to run.
pub struct Engine {
    kafka: KafkaConfig,
    sinks: Vec<Arc<Sink>>,
    output: Output,
}

impl Engine {
    /// Builds the sinks of a checked configuration (each with its own HTTP client).
    pub fn new(loaded: Loaded, metrics: Metrics) -> Result<Engine, EngineError> {
        let kafka = loaded.config.kafka.clone();
        let output = Output::new(&kafka)?;
        let sinks = loaded
            .sinks
            .into_iter()
            .map(|s| Arc::new(Sink::new(s.config, s.kind, s.adapter, metrics.clone(), output.clone(), s.http)))
            .collect();
        Ok(Engine { kafka, sinks, output })
    }

    /// The running sinks (for health checks and tests).
    pub fn sinks(&self) -> &[Arc<Sink>] {
        &self.sinks
    }

    /// Consumes and delivers until `shutdown` completes, then stops fetching, drains up to
    /// the drain timeout, commits the stored offsets and returns.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), EngineError> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut consumers = Vec::new();
        let mut tasks = Vec::new();
        for sink in &self.sinks {
            let consumer = consumer::consumer(&self.kafka, sink)?;
            let store: Arc<dyn OffsetStore> = consumer.clone();
            sink.set_offset_store(Some(store));
            let intake = intake::run_intake(sink.clone(), consumer.clone(), self.kafka.clone(), stop_rx.clone());
            tasks.push(spawn_guarded(sink, "reading", intake));
            schedule::start(&self.kafka, sink, &consumer, &stop_rx);
            consumers.push(consumer);
        }
        tracing::info!(sinks = self.sinks.len(), topics = ?self.kafka.topics, "lotbridge running");
        let failure = tokio::select! {
            _ = shutdown => None,
            failed = first_failure(&self.sinks) => Some(failed),
        };
        match &failure {
            None => tracing::info!("shutting down: no more fetching, draining"),
            Some(e) => tracing::error!(error = %e, "stopping after a failure: no more fetching, draining"),
        }
        let _ = stop_tx.send(true);
        for task in tasks {
            let _ = task.await;
        }
        self.drain(Duration::from_millis(self.kafka.drain_timeout_ms)).await;
        for sink in &self.sinks {
            sink.stop();
        }
        for (sink, consumer) in self.sinks.iter().zip(&consumers) {
            sink.acks.commit_changed_maps();
            if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
                tracing::debug!(sink = sink.name(), error = %e, "nothing to commit at shutdown");
            }
            sink.set_offset_store(None);
        }
        self.wait_lanes_gone(Duration::from_secs(5)).await;
        // Closing leaves the group, so the partitions move to other replicas at once rather
        // than after the session timeout. Close blocks while it serves the last rebalance.
        let _ = tokio::task::spawn_blocking(move || drop(consumers)).await;
        self.output.flush(Duration::from_secs(5));
        tracing::info!("stopped");
        failure.map_or(Ok(()), Err)
    }

    async fn wait_lanes_gone(&self, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.sinks.iter().any(|s| s.lane_count() > 0) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn drain(&self, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let open: usize =
                self.sinks.iter().map(|s| s.partitions.unfinished(&s.partitions.assigned())).sum::<usize>();
            if open == 0 {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(unfinished = open, "drain timeout: unfinished records will be read again");
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Completes when a sink fails (never, without sinks).
async fn first_failure(sinks: &[Arc<Sink>]) -> EngineError {
    if sinks.is_empty() {
        return std::future::pending().await;
    }
    let failed = sinks.iter().map(|s| Box::pin(async move { (s.name().to_string(), s.failed().await) }));
    let ((sink, why), _, _) = futures::future::select_all(failed).await;
    EngineError::SinkFailed { sink, why }
}

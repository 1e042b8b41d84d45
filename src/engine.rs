//! The delivery engine: Kafka → per-sink consumer groups → lanes per (sink, lot) → vendors,
//! at least once.
//!
//! Each sink consumes with its own group, rate limiter, concurrency limit and retry state,
//! so a vendor that is down only lags its own sink. Offsets move only past records with a
//! final outcome. Kafka is the distributed engine: more replicas join the same groups.

pub mod deliver;
pub mod intake;
pub mod lane;
pub mod lots;
pub mod offsets;
pub mod output;
pub mod sink;

use crate::config::{KafkaConfig, Loaded};
use crate::metrics::Metrics;
use output::Output;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::KafkaError;
use sink::{OffsetStore, Sink};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Why the engine cannot start.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A Kafka client could not be created or subscribed.
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
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
            let consumer = intake::consumer(&self.kafka, sink)?;
            let store: Arc<dyn OffsetStore> = consumer.clone();
            sink.set_offset_store(Some(store));
            tasks.push(tokio::spawn(intake::run_intake(
                sink.clone(),
                consumer.clone(),
                self.kafka.clone(),
                stop_rx.clone(),
            )));
            if let Some(book) = &sink.lot_book {
                tokio::spawn(run_lot_list(self.kafka.clone(), sink.clone(), book.clone(), stop_rx.clone()));
            }
            let configured = sink.config.heartbeat_secs.map(|s| Duration::from_secs(s.max(1)));
            if let Some(period) = sink.adapter.heartbeat_every().map(|own| configured.unwrap_or(own)) {
                tokio::spawn(intake::run_heartbeats(sink.clone(), period, stop_rx.clone()));
            }
            consumers.push(consumer);
        }
        tracing::info!(sinks = self.sinks.len(), topics = ?self.kafka.topics, "lotbridge running");
        shutdown.await;
        tracing::info!("shutting down: no more fetching, draining");
        let _ = stop_tx.send(true);
        for task in tasks {
            let _ = task.await;
        }
        self.drain(Duration::from_millis(self.kafka.drain_timeout_ms)).await;
        for sink in &self.sinks {
            sink.stop();
        }
        for (sink, consumer) in self.sinks.iter().zip(&consumers) {
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
        Ok(())
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
            let open: usize = self.sinks.iter().map(|s| s.partitions.unfinished(&s.partitions.assigned())).sum();
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

/// Rebuilds a sink's lot book from the lot topics, then pushes the full list daily.
async fn run_lot_list(kafka: KafkaConfig, sink: Arc<Sink>, book: Arc<lots::LotBook>, stop: watch::Receiver<bool>) {
    let Some(at) = lots::parse_time(&sink.config.daily_push_at) else { return };
    let topics = kafka.lot_topics.clone().unwrap_or_else(|| kafka.topics.clone());
    let rebuilt = {
        let book = book.clone();
        tokio::task::spawn_blocking(move || lots::rebuild(&kafka, &topics, &book)).await
    };
    match rebuilt {
        Ok(Ok(n)) => tracing::info!(sink = sink.name(), lot_events = n, "lot list rebuilt"),
        Ok(Err(e)) => tracing::warn!(sink = sink.name(), error = %e, "lot list not rebuilt; real-time updates only"),
        Err(e) => tracing::warn!(sink = sink.name(), error = %e, "lot list rebuild failed"),
    }
    lots::run_daily_push(sink, book, at, stop).await;
}

//! `lotbridge demo`: the whole product in one process, for a first look.
//!
//! An embedded Kafka-protocol broker (librdkafka's mock cluster, for trying and testing
//! only), the four vendor simulators, a synthetic city producing events, and the real
//! engine on a generated configuration written to a file. Faults are injected along the
//! way unless turned off; the run ends with a summary and says whether every produced
//! record reached a final outcome for every sink.

pub mod city;
pub mod faults;
pub mod photos;
pub mod progress;
pub mod setup;
pub mod summary;

use crate::app::{health_router, serve_health, Health};
use crate::engine::Engine;
use crate::metrics::Metrics;
use anyhow::Context;
use city::{City, Record, Track};
use progress::{Produced, Progress};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use setup::{Broker, DLQ, PARTITIONS, RESULTS, SINKS, TOPIC};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use summary::Report;

/// What the user asked for.
#[derive(Debug, Clone)]
pub struct Options {
    /// Lots in the city.
    pub lots: usize,
    /// How long the city produces.
    pub duration: Duration,
    /// Events per second the city produces.
    pub rate: u32,
    /// Inject faults.
    pub faults: bool,
    /// Serve `/metrics`, `/healthz` and `/readyz` here while running.
    pub metrics_addr: Option<String>,
    /// Where to write the generated configuration (default: a temporary folder).
    pub config_out: Option<PathBuf>,
    /// Show the live progress line.
    pub progress: bool,
    /// How long to wait, after production ends, for every record's final outcome.
    pub settle_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            lots: 200,
            duration: Duration::from_secs(30),
            rate: 200,
            faults: true,
            metrics_addr: None,
            config_out: None,
            progress: true,
            settle_timeout: Duration::from_secs(60),
        }
    }
}

/// Runs the demo and returns its summary (see [`Report::complete`]).
pub async fn run(opts: Options) -> anyhow::Result<Report> {
    anyhow::ensure!(opts.lots >= 4, "--lots must be at least 4 (one per vendor pattern)");
    anyhow::ensure!(opts.rate >= 1, "--rate must be at least 1");
    let broker = Broker::start()?;
    let config_path = opts.config_out.clone().unwrap_or_else(setup::default_config_path);
    let (loaded, sims) = setup::simulators_and_config(&broker.brokers, opts.lots, &config_path).await?;
    let ui = Progress::new(opts.progress);
    ui.note(&format!("configuration written to {}", config_path.display()));
    for (name, sim) in &sims {
        ui.note(&format!("simulator {name} on {}", sim.base_url()));
    }
    let metrics = Metrics::new().context("metrics")?;
    let engine = Engine::new(loaded, metrics.clone())?;
    let server = serve_metrics(&opts, &metrics, &engine, &ui).await?;
    let sinks = engine.sinks().to_vec();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let engine_task = tokio::spawn(engine.run(async move {
        let _ = stop_rx.await;
    }));
    wait_until_assigned(&sinks, &ui).await;
    let produced = progress::counters();
    let started = Instant::now();
    let tracks = produce_city(&opts, &broker.brokers, &sims, &produced, &ui, &metrics).await?;
    let seconds = started.elapsed().as_secs_f64();
    let done = settle(&broker.brokers, &opts, &produced, &ui, &metrics).await;
    ui.note(if done { "every record has a final outcome: stopping" } else { "settle timeout: stopping" });
    let _ = stop_tx.send(());
    engine_task.await.context("engine task")?.context("engine")?;
    ui.finish();
    if let Some(server) = server {
        server.abort();
    }
    let mut report = collect(&broker.brokers, &tracks, &sims, &metrics, opts.lots).await?;
    report.produced = produced.records.load(Ordering::Relaxed);
    report.produced_bytes = produced.bytes.load(Ordering::Relaxed);
    report.seconds = seconds;
    report.config_path = config_path.display().to_string();
    // Some librdkafka client of the engine outlives `Engine::run` by a few seconds and
    // logs an error a second once the broker is gone: keep the embedded broker up for
    // the rest of the process (it is one per demo run).
    std::mem::forget(broker);
    Ok(report)
}

/// Waits until every sink's consumer owns partitions, so that the fault schedule (and the
/// latency figures) count from the moment the engine can deliver, not from the group
/// join, which takes seconds on a loaded machine. Gives up after 30 s with a note.
async fn wait_until_assigned(sinks: &[Arc<crate::engine::sink::Sink>], ui: &Progress) {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(30);
    while !sinks.iter().all(|s| !s.partitions.assigned().is_empty()) {
        if Instant::now() >= deadline {
            ui.note("the engine has not joined every consumer group after 30 s: producing anyway");
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ui.note(&format!("engine ready: every sink owns its partitions after {:.1} s", started.elapsed().as_secs_f64()));
}

async fn serve_metrics(
    opts: &Options,
    metrics: &Metrics,
    engine: &Engine,
    ui: &Progress,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    let Some(addr) = &opts.metrics_addr else { return Ok(None) };
    let sinks = engine.sinks().to_vec();
    let health = Arc::new(Health::new(sinks.clone()));
    let ready = Arc::new(move || sinks.iter().all(|s| !s.partitions.assigned().is_empty()));
    let handle = serve_health(addr, health_router(metrics.clone(), health, ready)).await?;
    ui.note(&format!("metrics on http://{addr}/metrics"));
    Ok(Some(handle))
}

fn producer(brokers: &str) -> anyhow::Result<FutureProducer> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .set("message.max.bytes", "12000000")
        .set("queue.buffering.max.kbytes", "262144")
        // Kafka's default partitioner, as lotbridge assumes for heartbeat ownership.
        .set("partitioner", "murmur2_random")
        .create()
        .context("cannot create the city's producer")
}

/// Produces the city's events at the requested rate for the requested time, applying the
/// fault schedule on the way; returns what each sink must receive.
async fn produce_city(
    opts: &Options,
    brokers: &str,
    sims: &HashMap<String, crate::sim::SimServer>,
    produced: &Arc<Produced>,
    ui: &Progress,
    metrics: &Metrics,
) -> anyhow::Result<Vec<Track>> {
    let producer = producer(brokers)?;
    let mut city = City::new(opts.lots, 20_261_123, setup::coupon_lot);
    let mut tracks = Vec::new();
    send(&producer, city.opening(), produced, &mut tracks).await;
    let mut plan = if opts.faults { faults::schedule(opts.duration) } else { Vec::new() };
    let tick = Duration::from_millis(50);
    let per_tick = f64::from(opts.rate) * tick.as_secs_f64();
    let mut interval = tokio::time::interval(tick);
    let (start, mut owed) = (Instant::now(), 0.0);
    while start.elapsed() < opts.duration {
        interval.tick().await;
        owed += per_tick;
        let mut batch = Vec::new();
        while owed >= 1.0 {
            batch.extend(city.step());
            owed -= 1.0;
        }
        let elapsed = start.elapsed().as_secs_f64() / opts.duration.as_secs_f64();
        while plan.first().is_some_and(|(at, _)| *at <= elapsed) {
            let (_, fault) = plan.remove(0);
            if let faults::Fault::Invalid(n) = fault {
                batch.extend(city.invalid(n));
            }
            ui.note(&faults::apply(&fault, sims));
        }
        send(&producer, batch, produced, &mut tracks).await;
        ui.update("producing", produced, metrics, &SINKS);
    }
    Ok(tracks)
}

/// Sends records and waits for the broker's acknowledgements.
async fn send(producer: &FutureProducer, records: Vec<Record>, produced: &Produced, tracks: &mut Vec<Track>) {
    let mut pending = Vec::with_capacity(records.len());
    for r in records {
        let size = r.value.len() as u64;
        let sent = loop {
            match producer.send_result(FutureRecord::to(TOPIC).key(&r.key).payload(&r.value)) {
                Ok(delivery) => break delivery,
                // The local queue is full: let librdkafka drain it.
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        };
        pending.push((sent, size, r.track));
    }
    for (sent, size, track) in pending {
        match sent.await {
            Ok(Ok(_)) => {
                produced.records.fetch_add(1, Ordering::Relaxed);
                produced.bytes.fetch_add(size, Ordering::Relaxed);
                tracks.extend(track);
            }
            Ok(Err((e, _))) => tracing::error!(error = %e, "the embedded broker refused a record"),
            Err(_) => tracing::error!("the city's producer went away"),
        }
    }
}

/// Waits until every sink's committed offsets reach the end of every partition.
async fn settle(brokers: &str, opts: &Options, produced: &Produced, ui: &Progress, metrics: &Metrics) -> bool {
    let deadline = Instant::now() + opts.settle_timeout;
    while Instant::now() < deadline {
        ui.update("finishing", produced, metrics, &SINKS);
        let brokers = brokers.to_string();
        let done = tokio::task::spawn_blocking(move || all_committed(&brokers)).await;
        if matches!(done, Ok(Ok(true))) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    false
}

/// Per sink, whether its group's committed offsets equal the high watermarks.
fn committed_per_sink(brokers: &str) -> anyhow::Result<BTreeMap<String, bool>> {
    let reader: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", brokers).set("group.id", "demo-reader").create()?;
    let mut ends = Vec::new();
    for p in 0..PARTITIONS {
        ends.push(reader.fetch_watermarks(TOPIC, p, Duration::from_secs(5))?.1);
    }
    let mut out = BTreeMap::new();
    for sink in SINKS {
        let group: BaseConsumer =
            ClientConfig::new().set("bootstrap.servers", brokers).set("group.id", format!("demo.{sink}")).create()?;
        let mut tpl = TopicPartitionList::new();
        for p in 0..PARTITIONS {
            tpl.add_partition(TOPIC, p);
        }
        let got = group.committed_offsets(tpl, Duration::from_secs(5))?;
        let offsets: Vec<i64> = got.elements().iter().map(|e| e.offset().to_raw().unwrap_or(-1)).collect();
        let done = offsets.iter().zip(&ends).all(|(c, end)| *end == 0 || c == end);
        out.insert(sink.to_string(), done);
    }
    Ok(out)
}

fn all_committed(brokers: &str) -> anyhow::Result<bool> {
    Ok(committed_per_sink(brokers)?.values().all(|d| *d))
}

/// Builds the summary from the simulators, the metrics and the output topics.
async fn collect(
    brokers: &str,
    tracks: &[Track],
    sims: &HashMap<String, crate::sim::SimServer>,
    metrics: &Metrics,
    lots: usize,
) -> anyhow::Result<Report> {
    let b = brokers.to_string();
    let (done, reasons, answers) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        Ok((committed_per_sink(&b)?, dead_letters(&b)?, answered_members(&b)?))
    })
    .await??;
    let results = answers.len();
    let sinks = SINKS
        .iter()
        .map(|name| {
            // A lookup's outcome is its answer on the results topic: the simulator records
            // only members it knows, and answers "not found" (an empty list) for the rest.
            let got = match *name {
                "members" => answers.clone(),
                _ => sims.get(*name).map(|s| summary::recorded(name, s, lots)).unwrap_or_default(),
            };
            let mut line = summary::sink_line(name, tracks, &got);
            summary::add_metrics(&mut line, metrics);
            line.offsets_done = done.get(*name).copied().unwrap_or(false);
            line
        })
        .collect();
    Ok(Report { sinks, dead_letter_reasons: reasons, results, ..Report::default() })
}

fn topic_len(brokers: &str, topic: &str) -> anyhow::Result<usize> {
    let reader: BaseConsumer = ClientConfig::new().set("bootstrap.servers", brokers).create()?;
    let (low, high) = reader.fetch_watermarks(topic, 0, Duration::from_secs(5))?;
    Ok((high - low).max(0) as usize)
}

/// Reads every record of partition 0 of `topic` from the beginning (small output topics).
fn read_topic(brokers: &str, topic: &str) -> anyhow::Result<Vec<rdkafka::message::OwnedMessage>> {
    let reader: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("demo-reader-{topic}"))
        .set("enable.auto.commit", "false")
        .create()?;
    let total = topic_len(brokers, topic)?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)?;
    reader.assign(&tpl)?;
    let (mut out, deadline) = (Vec::new(), Instant::now() + Duration::from_secs(10));
    while out.len() < total && Instant::now() < deadline {
        if let Some(Ok(m)) = reader.poll(Duration::from_millis(200)) {
            out.push(m.detach());
        }
    }
    Ok(out)
}

/// Member ids of the answers on the results topic, one per answer.
fn answered_members(brokers: &str) -> anyhow::Result<Vec<Track>> {
    let answers = read_topic(brokers, RESULTS)?;
    let id = |m: &rdkafka::message::OwnedMessage| -> Option<u64> {
        let value: serde_json::Value = serde_json::from_slice(m.payload()?).ok()?;
        value.pointer("/data/member_id")?.as_str()?.parse().ok()
    };
    Ok(answers.iter().filter_map(|m| id(m).map(|id| Track::Member { id })).collect())
}

/// Reads the dead-letter topic: (sink, stage, reason) → count.
fn dead_letters(brokers: &str) -> anyhow::Result<BTreeMap<(String, String, String), usize>> {
    use crate::engine::output::headers;
    let mut out = BTreeMap::new();
    for m in read_topic(brokers, DLQ)? {
        let header = |k: &str| {
            m.headers()
                .and_then(|h| h.iter().find(|x| x.key == k).and_then(|x| x.value))
                .map(|v| String::from_utf8_lossy(v).chars().take(90).collect::<String>())
                .unwrap_or_default()
        };
        let key = (header(headers::SINK), header(headers::STAGE), header(headers::ERROR));
        *out.entry(key).or_default() += 1;
    }
    Ok(out)
}

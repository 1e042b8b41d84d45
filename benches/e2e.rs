//! End to end on one embedded broker (librdkafka's mock cluster), in one process:
//!
//! (a) raw rdkafka consumption of N pre-produced events: the physical limit of this
//!     machine's Kafka path; (b) lotbridge delivering the same N events to a vendor that
//!     answers at once (Bingzhouxing `carInOut`, batches of 100). For small events and for
//!     30 KB photos. Then (c) memory: the vendor down for four sinks while events with
//!     30 KB photos are backlogged for each; the RSS of lotbridge (`lotbridge run` in its
//!     own process, so the broker's memory is not counted), sampled throughout, against the
//!     sum of the sinks' memory budgets.
//!
//! `cargo bench --bench e2e` (env `E2E_SMALL`, `E2E_PHOTOS`, `E2E_MEMORY` set N).

use axum::routing::post;
use axum::Router;
use base64::Engine as _;
use futures::StreamExt;
use image::codecs::jpeg::JpegEncoder;
use lotbridge::config::Config;
use lotbridge::demo::summary::quantile;
use lotbridge::engine::Engine;
use lotbridge::metrics::Metrics;
use prometheus::core::Metric as _;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{DefaultProducerContext, FutureProducer, FutureRecord, Producer};
use rdkafka::{ClientConfig, Message};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Partitions per topic: the mock broker keeps ~5 MiB per partition, so N photos must
/// spread over enough of them to be retained whole before anyone reads (16 000 photos are
/// 3.7 MiB per partition). Enough photos matter: 8 000 over 128 lots lasted under 2 s,
/// 62 per lot, and mostly measured the ramp-up and partial batches, not the steady rate.
const PARTITIONS: i32 = 128;
/// Lots (lanes); a multiple of `PARTITIONS` so each lot stays on one partition.
const LOTS: usize = 128;

struct Bench {
    cluster: MockCluster<'static, DefaultProducerContext>,
    brokers: String,
    producer: FutureProducer,
}

fn env_n(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Peak resident set size in bytes (VmHWM), and a reset of it (clear_refs 5).
fn peak_rss() -> u64 {
    status_bytes("self", "VmHWM:")
}
/// Current resident set size in bytes.
fn rss() -> u64 {
    status_bytes("self", "VmRSS:")
}
/// A field of `/proc/<process>/status` in bytes (`process`: a pid, or `self`).
fn status_bytes(process: &str, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{process}/status")).unwrap_or_default();
    let kb = status.lines().find(|l| l.starts_with(key)).and_then(|l| l.split_whitespace().nth(1));
    kb.and_then(|k| k.parse::<u64>().ok()).unwrap_or(0) * 1024
}
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// CPU time this process used so far (user + system, every thread, the mock broker's too):
/// on a machine shared with other builds, CPU per event is steadier than wall-clock rates.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
    let ticks: u64 = [11, 12].iter().filter_map(|&i| fields.get(i)?.parse::<u64>().ok()).sum();
    Duration::from_secs_f64(ticks as f64 / 100.0) // USER_HZ is 100 on Linux
}

/// A JPEG whose base64 is about `chars` long.
fn photo(chars: usize) -> String {
    let mut side = 64u32;
    loop {
        let mut s: u32 = 0x9E37_79B9;
        let img = image::RgbImage::from_fn(side, side * 3 / 4, |x, y| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            image::Rgb([(x % 256) as u8, (y % 256) as u8, (s % 40) as u8])
        });
        let mut out = Vec::new();
        JpegEncoder::new_with_quality(&mut out, 80).encode_image(&img).expect("jpeg");
        let b64 = base64::engine::general_purpose::STANDARD.encode(out);
        if b64.len() >= chars {
            return b64;
        }
        side += 16;
    }
}

fn event(i: usize, photo: Option<&str>) -> (String, Vec<u8>) {
    let lot = format!("L{:03}", i % LOTS);
    // Partition i % PARTITIONS (see `send`) spreads bytes evenly: key hashing would put
    // several lots on one partition and push it over the mock broker's ~5 MiB.
    let mut data =
        serde_json::json!({"plate": format!("晋A{:05}", i % 100_000), "vehicle_type": "small", "gate": "East 1"});
    if let Some(p) = photo {
        data["photo"] = serde_json::json!({"jpeg_base64": p});
    }
    let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let v = serde_json::json!({"v": 1, "id": format!("e{i}"), "type": "vehicle.entered", "lot": lot, "at": at, "data": data});
    (lot, v.to_string().into_bytes())
}

impl Bench {
    fn new() -> Bench {
        let cluster = MockCluster::new(1).expect("mock cluster");
        let brokers = cluster.bootstrap_servers();
        let producer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("linger.ms", "5")
            .set("batch.size", "1000000")
            .set("message.max.bytes", "12000000")
            .set("queue.buffering.max.kbytes", "1048576")
            .create()
            .expect("producer");
        Bench { cluster, brokers, producer }
    }

    async fn produce(&self, topic: &str, n: usize, photo: Option<&str>) -> u64 {
        self.cluster.create_topic(topic, PARTITIONS, 1).expect("topic");
        let mut bytes = 0u64;
        let mut pending = futures::stream::FuturesUnordered::new();
        for i in 0..n {
            let (key, value) = event(i, photo);
            bytes += value.len() as u64;
            loop {
                match self.producer.send_result(
                    FutureRecord::to(topic).partition((i % PARTITIONS as usize) as i32).key(&key).payload(&value),
                ) {
                    Ok(f) => break pending.push(f),
                    Err(_) => {
                        while pending.len() > 1000 {
                            let _ = pending.next().await;
                        }
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
            }
        }
        while let Some(r) = pending.next().await {
            r.expect("delivery").expect("produced");
        }
        self.producer.flush(Duration::from_secs(30)).expect("flush");
        bytes
    }

    /// (a): a plain StreamConsumer reading every record once.
    async fn raw(&self, topic: &str, n: usize) -> Duration {
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("group.id", format!("raw-{topic}"))
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .set("fetch.max.bytes", "52428800")
            .create()
            .expect("consumer");
        consumer.subscribe(&[topic]).expect("subscribe");
        let first = consumer.recv().await.expect("first record").payload().map_or(0, |p| p.len());
        let start = Instant::now();
        let mut seen = 1usize;
        let mut checksum = first;
        while seen < n {
            let m = tokio::time::timeout(Duration::from_secs(20), consumer.recv())
                .await
                .expect("records missing: the mock broker dropped some (over ~5 MiB per partition)")
                .expect("record");
            checksum = checksum.wrapping_add(m.payload().map_or(0, |p| p.len()));
            seen += 1;
        }
        std::hint::black_box(checksum);
        start.elapsed()
    }
}

/// A vendor that reads each request whole (as a real one does: an unread body would make
/// the server drop the connection), then accepts it at once and keeps nothing.
async fn instant_vendor(down: Arc<AtomicBool>) -> String {
    let down2 = down.clone();
    let app = Router::new()
        .fallback(post(move |body: axum::body::Bytes| {
            let down = down2.clone();
            async move {
                drop(body);
                if down.load(Ordering::Relaxed) {
                    (axum::http::StatusCode::SERVICE_UNAVAILABLE, "{}")
                } else {
                    (axum::http::StatusCode::OK, r#"{"code":"0","msg":"ok","data":""}"#)
                }
            }
        }))
        .layer(axum::extract::DefaultBodyLimit::disable());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    format!("http://{addr}")
}

fn config(brokers: &str, topic: &str, url: &str, budget: usize) -> lotbridge::load::Loaded {
    config_sinks(brokers, topic, url, budget, &["bzx"])
}

/// A Bingzhouxing sink per name, all reading `topic` (each in its own consumer group).
fn config_text(brokers: &str, topic: &str, url: &str, budget: usize, names: &[&str]) -> String {
    let bindings: Vec<String> = (0..LOTS)
        .map(|i| format!("{{ lot = \"L{i:03}\", vendor_lot = \"{}\", token = {{ value = \"t{i}\" }} }}", 1000 + i))
        .collect();
    // E2E_KAFKA_PROPS="key=value,key=value": pass-through librdkafka properties, to try
    // consumer settings without touching the engine.
    let props: String = std::env::var("E2E_KAFKA_PROPS")
        .unwrap_or_default()
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| format!("\"{k}\" = \"{v}\"\n"))
        .collect();
    let bindings = bindings.join(", ");
    let sinks: String = names
        .iter()
        .map(|name| {
            format!(
                "[[sinks]]\nname = \"{name}\"\nmemory_budget_bytes = {budget}\nconcurrency = 64\nbindings = [{bindings}]\n\
                 [sinks.rate_limit]\nrequests_per_second = 100000\nburst = 10000\n\
                 [sinks.retry]\ninitial_ms = 50\nmax_interval_ms = 500\n\
                 [sinks.batch]\nmax_records = 100\nlinger_ms = 5\n[sinks.bingzhouxing]\nbase_url = \"{url}\"\n"
            )
        })
        .collect();
    format!(
        "[kafka]\nbrokers = \"{brokers}\"\ntopics = [\"{topic}\"]\ngroup_prefix = \"lb-{topic}\"\n\
         dead_letter_topic = \"{topic}.dlq\"\nresults_topic = \"{topic}.results\"\ncommit_interval_ms = 200\n\
         [kafka.properties]\n{props}\n{sinks}"
    )
}

/// [`config_text`] built into runnable sinks.
fn config_sinks(brokers: &str, topic: &str, url: &str, budget: usize, names: &[&str]) -> lotbridge::load::Loaded {
    let text = config_text(brokers, topic, url, budget, names);
    let config = Config::parse(&text, std::path::Path::new("e2e.toml")).expect("parse");
    lotbridge::load::build(config, std::path::Path::new(".")).expect("build")
}

fn outcomes(metrics: &Metrics) -> u64 {
    metrics.outcomes.with_label_values(&["bzx", "vehicle.entered", "delivered"]).get()
}

/// What (b) measured.
struct Run {
    took: Duration,
    p50: Option<f64>,
    p99: Option<f64>,
    /// Mean records per vendor request.
    batch: f64,
}

/// (b): the engine delivering the topic, timed from the first outcome to the last.
async fn lotbridge(bench: &Bench, topic: &str, n: usize) -> Run {
    let url = instant_vendor(Arc::new(AtomicBool::new(false))).await;
    let metrics = Metrics::new().expect("metrics");
    let engine = Engine::new(config(&bench.brokers, topic, &url, 256 << 20), metrics.clone()).expect("engine");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(engine.run(async move {
        let _ = rx.await;
    }));
    eprintln!("lotbridge starting on {topic}"); // a cue to attach a profiler (see BENCHMARKS.md)
    while outcomes(&metrics) == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let start = Instant::now();
    while (outcomes(&metrics) as usize) < n {
        assert!(start.elapsed() < Duration::from_secs(300), "lotbridge delivered only {}", outcomes(&metrics));
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let took = start.elapsed();
    let h = metrics.consume_to_ack_seconds.with_label_values(&["bzx"]).metric();
    let buckets: Vec<(f64, u64)> =
        h.get_histogram().get_bucket().iter().map(|b| (b.upper_bound(), b.cumulative_count())).collect();
    let count = h.get_histogram().get_sample_count();
    let b = metrics.batch_records.with_label_values(&["bzx", "carInOut"]).metric();
    let batch = b.get_histogram().get_sample_sum() / b.get_histogram().get_sample_count().max(1) as f64;
    let _ = tx.send(());
    let _ = task.await;
    Run { took, p50: quantile(&buckets, count, 0.5), p99: quantile(&buckets, count, 0.99), batch }
}

async fn scenario(bench: &Bench, name: &str, n: usize, photo: Option<&str>) {
    if n == 0 {
        return; // skipped (E2E_<NAME>=0): the engine would wait for a first outcome forever
    }
    let topic = format!("e2e-{name}");
    let bytes = bench.produce(&topic, n, photo).await;
    // The mock broker holds every record in this process: report peaks above the RSS
    // at the start of each measurement (broker data included there).
    reset_peak_rss();
    let before = rss();
    let cpu = cpu_time();
    let raw = bench.raw(&topic, n).await;
    let raw_cpu = cpu_time().saturating_sub(cpu);
    let raw_rss = peak_rss().saturating_sub(before);
    reset_peak_rss();
    let before = rss();
    let cpu = cpu_time();
    let Run { took: lb, p50, p99, batch } = lotbridge(bench, &topic, n).await;
    let lb_cpu = cpu_time().saturating_sub(cpu);
    let lb_rss = peak_rss().saturating_sub(before);
    let per_event = |d: Duration| d.as_secs_f64() * 1e6 / n as f64;
    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    let mbps = |d: Duration| bytes as f64 / 1e6 / d.as_secs_f64();
    let ms = |v: Option<f64>| v.map_or("-".into(), |s| format!("{:.1} ms", s * 1000.0));
    println!(
        "{name:<7} N={n:<7} avg {:>6} B | raw: {:>9.0} ev/s {:>7.1} MB/s peak RSS +{:>4} MiB cpu {:.1} us/ev | \
         lotbridge: {:>9.0} ev/s {:>7.1} MB/s peak RSS +{:>4} MiB p50 {} p99 {} cpu {:.1} us/ev batch {:.0} | ratio {:.2}",
        bytes / n as u64,
        rate(raw),
        mbps(raw),
        raw_rss >> 20,
        per_event(raw_cpu),
        rate(lb),
        mbps(lb),
        lb_rss >> 20,
        ms(p50),
        ms(p99),
        per_event(lb_cpu),
        batch,
        raw.as_secs_f64() / lb.as_secs_f64()
    );
}

/// Sinks of the memory scenario, each its own consumer group on the same topic, so every
/// one of them is backlogged by the same records.
const MEMORY_SINKS: [&str; 4] = ["m0", "m1", "m2", "m3"];
/// Each memory-scenario sink's `memory_budget_bytes`.
const MEMORY_BUDGET: usize = 64 << 20;

/// (c): the vendor answers 503 for every sink while N photo events are backlogged for each.
/// lotbridge runs as its own process (`lotbridge run`, release build) against the bench's
/// broker, so its RSS is its own: sampled every 50 ms from its start until every sink has
/// paused all its partitions and stayed so for 5 s, against the sum of the budgets. The
/// records are produced first. Then the vendor recovers and every sink delivers everything.
async fn memory(bench: &Bench, n: usize, photo: &str) {
    if n == 0 {
        return; // skipped (E2E_MEMORY=0)
    }
    let topic = "e2e-memory";
    let down = Arc::new(AtomicBool::new(true));
    let url = instant_vendor(down.clone()).await;
    bench.cluster.create_topic(topic, PARTITIONS, 1).expect("topic");
    let bytes = produce_into(bench, topic, n, photo).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("memory.toml");
    let text = config_text(&bench.brokers, topic, &url, MEMORY_BUDGET, &MEMORY_SINKS);
    std::fs::write(&path, format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n{text}")).expect("config");
    let log = std::fs::File::create(dir.path().join("lotbridge.log")).expect("log");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_lotbridge"))
        .args(["run", "--config"])
        .arg(&path)
        .env("RUST_LOG", "warn")
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("lotbridge");
    let pid = child.id().to_string();
    let rss = || status_bytes(&pid, "VmRSS:");
    let scrape = || async {
        let url = format!("http://127.0.0.1:{port}/metrics");
        match reqwest::get(&url).await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    };
    let (mut peak, mut samples, mut most_held) = (0u64, 0u32, 0.0f64);
    let mut settled_since: Option<Instant> = None;
    let start = Instant::now();
    let mut scraped = Instant::now() - Duration::from_secs(1);
    while start.elapsed() < Duration::from_secs(180) {
        peak = peak.max(rss());
        samples += 1;
        if scraped.elapsed() >= Duration::from_millis(500) {
            scraped = Instant::now();
            let text = scrape().await;
            most_held = most_held.max(sum_metric(&text, "lotbridge_held_bytes"));
            let paused = sum_metric(&text, "lotbridge_partitions_paused");
            match (paused >= f64::from(PARTITIONS) * MEMORY_SINKS.len() as f64, settled_since) {
                (true, None) => settled_since = Some(Instant::now()),
                (true, Some(t)) if t.elapsed() > Duration::from_secs(5) => break,
                (false, _) => settled_since = None,
                _ => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let settled = settled_since.is_some();
    let budgets = (MEMORY_BUDGET * MEMORY_SINKS.len()) as u64;
    down.store(false, Ordering::Relaxed);
    let recovery = Instant::now();
    let want = (n * MEMORY_SINKS.len()) as f64;
    let mut delivered = 0.0;
    while delivered < want && recovery.elapsed() < Duration::from_secs(300) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        delivered = delivered_in(&scrape().await);
        peak = peak.max(rss());
    }
    let recovered = recovery.elapsed();
    let _ = child.kill();
    let _ = child.wait();
    let mib = |b: f64| b / f64::from(1 << 20);
    println!(
        "memory  N={n} photos ({:.0} MB) with the vendor down for {} sinks (lotbridge in its own process): budgets \
         {:.0} MiB in all, held at most {:.0} MiB, all partitions paused: {settled}; peak RSS {:.0} MiB over {samples} \
         samples = budgets + {:.0} MiB; after recovery {delivered} of {want} delivered in {:.1} s (peak RSS then {:.0} MiB)",
        bytes as f64 / 1e6,
        MEMORY_SINKS.len(),
        mib(budgets as f64),
        mib(most_held),
        mib(peak as f64),
        mib(peak as f64 - budgets as f64),
        recovered.as_secs_f64(),
        mib(peak as f64),
    );
}

/// The sum of a metric's series in a scrape.
fn sum_metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

/// Records delivered, all sinks together, in a scrape.
fn delivered_in(text: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with("lotbridge_records_outcome_total{") && l.contains("outcome=\"delivered\""))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

async fn produce_into(bench: &Bench, topic: &str, n: usize, photo: &str) -> u64 {
    let mut bytes = 0u64;
    let mut pending = futures::stream::FuturesUnordered::new();
    for i in 0..n {
        let (key, value) = event(i, Some(photo));
        bytes += value.len() as u64;
        loop {
            match bench.producer.send_result(
                FutureRecord::to(topic).partition((i % PARTITIONS as usize) as i32).key(&key).payload(&value),
            ) {
                Ok(f) => break pending.push(f),
                Err(_) => {
                    while pending.len() > 1000 {
                        let _ = pending.next().await;
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }
    }
    while let Some(r) = pending.next().await {
        r.expect("delivery").expect("produced");
    }
    bytes
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().expect("rt");
    runtime.block_on(async {
        let bench = Bench::new();
        let photo = photo(30_000);
        println!(
            "cores {}, photo {} base64 chars",
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            photo.len()
        );
        scenario(&bench, "small", env_n("E2E_SMALL", 200_000), None).await;
        scenario(&bench, "photos", env_n("E2E_PHOTOS", 16_000), Some(&photo)).await;
        memory(&bench, env_n("E2E_MEMORY", 8_000), &photo).await;
    });
    std::mem::forget(runtime); // clients of the mock cluster may still be closing
}

//! A short, busy lotbridge for checking the monitoring: an in-process Kafka-protocol broker
//! (librdkafka's mock cluster), the vendor simulators, the real engine with `/metrics`,
//! `/healthz` and `/readyz`, and a producer that keeps every panel of the Grafana dashboard
//! fed: deliveries, invalid and unbound records, vendor 500s and 429s, rate-limit waits,
//! oversized photos, heartbeats, tokens expired by the vendor, and a sink whose credentials
//! the vendor rejects.
//!
//! `cargo run --example metrics_scenario`; environment:
//! - `LOTBRIDGE_METRICS_ADDR` (default `127.0.0.1:0`): where to serve the endpoints;
//! - `LOTBRIDGE_SCENARIO_SECS` (default 60): how long to run.
//!
//! Prints `metrics on http://ADDR/metrics` once serving. Used by scripts/ci-observability.sh.

use base64::Engine as _;
use lotbridge::app::HealthServer;
use lotbridge::config::Config;
use lotbridge::engine::Engine;
use lotbridge::load::Loaded;
use lotbridge::metrics::Metrics;
use lotbridge::sim::{self, Failure, SimServer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{DefaultProducerContext, FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;

const TOPIC: &str = "parking.events";
const LOTS: [&str; 3] = ["P1", "P2", "P3"];

fn config_text(brokers: &str, urls: &HashMap<&str, String>, barrier_secret: &str) -> String {
    let url = |name: &str| urls.get(name).cloned().unwrap_or_else(|| "http://127.0.0.1:0".into());
    format!(
        r#"
[kafka]
brokers = "{brokers}"
topics = ["{TOPIC}"]
group_prefix = "scenario"
dead_letter_topic = "{TOPIC}.dlq"
results_topic = "{TOPIC}.results"
commit_interval_ms = 500
drain_timeout_ms = 3000
[kafka.properties]
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "500"

[[sinks]]
name = "bzx"
heartbeat_secs = 2
bindings = [
  {{ lot = "P1", vendor_lot = "351", token = {{ value = "tok-1" }} }},
  {{ lot = "P2", vendor_lot = "352", token = {{ value = "tok-2" }} }},
]
[sinks.rate_limit]
requests_per_second = 4
burst = 1
[sinks.retry]
initial_ms = 50
max_interval_ms = 500
[sinks.batch]
linger_ms = 50
[sinks.bingzhouxing]
base_url = "{bzx}"

[[sinks]]
name = "isp"
bindings = [{{ lot = "P1", vendor_lot = "ATXL/1" }}, {{ lot = "P3", vendor_lot = "ATXL/3" }}]
[sinks.retry]
initial_ms = 50
max_interval_ms = 500
[sinks.inspur_isp]
base_url = "{isp}"
client_id = "lotbridge"
client_secret = {{ value = "isp-secret" }}

[[sinks]]
name = "coupons"
bindings = [{{ lot = "P1", vendor_lot = "1012004281EYS" }}]
[sinks.retry]
initial_ms = 200
max_interval_ms = 1000
[sinks.barrier_coupon]
base_url = "{barrier}"
client_id = "244221"
client_secret = {{ value = "{barrier_secret}" }}
"#,
        bzx = url("bzx"),
        isp = url("isp"),
        barrier = url("coupons"),
    )
}

fn load(text: &str) -> anyhow::Result<Loaded> {
    let config = Config::parse(text, std::path::Path::new("scenario.toml"))?;
    Ok(lotbridge::load::build(config, std::path::Path::new("."))?)
}

/// Simulators configured with the right credentials; the engine's config then carries a
/// wrong secret for the barrier sink, so token failures show on the dashboard.
async fn simulators(brokers: &str) -> anyhow::Result<(HashMap<String, SimServer>, Loaded)> {
    let probe = load(&config_text(brokers, &HashMap::new(), "barrier-secret"))?;
    let servers: HashMap<String, SimServer> = sim::start_for_config(&probe).await?.into_iter().collect();
    let urls: HashMap<&str, String> = servers.iter().map(|(n, s)| (n.as_str(), s.base_url())).collect();
    let loaded = load(&config_text(brokers, &urls, "wrong-secret"))?;
    Ok((servers, loaded))
}

fn envelope(id: &str, ty: &str, lot: &str, data: Value) -> Vec<u8> {
    json!({"v": 1, "id": id, "type": ty, "lot": lot, "at": chrono::Utc::now().to_rfc3339(), "data": data})
        .to_string()
        .into_bytes()
}

/// A smooth JPEG well over Bingzhouxing's photo limit, so the photo policy recompresses it.
fn big_photo() -> anyhow::Result<String> {
    let img = image::RgbImage::from_fn(1024, 768, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x + y) % 256) as u8])
    });
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 95).encode_image(&img)?;
    Ok(base64::engine::general_purpose::STANDARD.encode(jpeg))
}

/// The `i`-th record of the stream: mostly vehicles, with a photo, a coupon, an unbound
/// lot and an invalid record now and then.
fn record(i: usize, photo: &str) -> (String, Vec<u8>) {
    let lot = LOTS[i % LOTS.len()];
    let plate = format!("晋A{:05}", i % 100_000);
    let id = format!("e{i}");
    let mut vehicle = json!({"plate": plate, "vehicle_type": "small", "gate": "East 1"});
    match i % 20 {
        7 => return ("X".into(), b"{\"v\": 1, truncated".to_vec()),
        11 => return ("P9".into(), envelope(&id, "vehicle.entered", "P9", vehicle)),
        13 => vehicle["photo"] = json!({"jpeg_base64": photo}),
        17 => {
            let coupon = json!({"to": {"plate": plate}, "lots": ["P1"], "minutes": 60, "source": "1001",
                "valid_from": "2026-11-23T08:00:00+08:00", "valid_until": "2026-11-24T08:00:00+08:00"});
            return ("P1".into(), envelope(&id, "coupon.granted", "P1", coupon));
        }
        _ => {}
    }
    (lot.into(), envelope(&id, "vehicle.entered", lot, vehicle))
}

/// Produces five records a second and injects vendor faults every few seconds.
async fn produce(producer: &FutureProducer, sims: &HashMap<String, SimServer>, until: tokio::time::Instant) {
    let photo = big_photo().unwrap_or_default();
    let mut i = 0;
    while tokio::time::Instant::now() < until {
        if i % 25 == 0 {
            if let Some(bzx) = sims.get("bzx") {
                bzx.control.fail_next(2, Failure::Status(500));
                bzx.control.throttle_next(1, 1);
            }
            if let Some(isp) = sims.get("isp") {
                isp.control.expire_tokens(); // the vendor refuses the token: refreshed and retried
            }
        }
        let (key, value) = record(i, &photo);
        let sent = producer.send(FutureRecord::to(TOPIC).key(&key).payload(&value), Duration::from_secs(5)).await;
        if let Err((e, _)) = sent {
            eprintln!("produce failed: {e}");
        }
        i += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::var("LOTBRIDGE_METRICS_ADDR").unwrap_or_else(|_| "127.0.0.1:0".into());
    let secs: u64 = std::env::var("LOTBRIDGE_SCENARIO_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(60);
    let cluster: MockCluster<'static, DefaultProducerContext> = MockCluster::new(1)?;
    let brokers = cluster.bootstrap_servers();
    cluster.create_topic(TOPIC, 2, 1)?;
    let (sims, loaded) = simulators(&brokers).await?;
    let metrics = Metrics::new()?;
    let engine = Engine::new(loaded, metrics.clone())?;
    let server = HealthServer::start(&addr, metrics, engine.sinks().to_vec()).await?;
    println!("metrics on http://{}/metrics", server.addr);
    let producer: FutureProducer =
        ClientConfig::new().set("bootstrap.servers", &brokers).set("message.max.bytes", "5000000").create()?;
    let until = tokio::time::Instant::now() + Duration::from_secs(secs);
    engine.run(produce(&producer, &sims, until)).await?;
    println!("scenario finished");
    Ok(())
}

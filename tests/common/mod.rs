//! Shared helpers of the integration tests: an in-process Kafka-protocol broker
//! (librdkafka's mock cluster), producing contract events, reading topics back, and
//! running the engine until a condition holds.
#![allow(dead_code)]

pub mod corpus;
pub mod tls;

use lotbridge::config::Config;
use lotbridge::engine::Engine;
use lotbridge::load::Loaded;
use lotbridge::metrics::Metrics;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message, OwnedMessage};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{DefaultProducerContext, FutureProducer, FutureRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;
use tokio::sync::oneshot;

/// An in-process Kafka cluster for one test.
pub struct Kafka {
    pub cluster: MockCluster<'static, DefaultProducerContext>,
    pub brokers: String,
    producer: FutureProducer,
}

impl Kafka {
    pub fn new() -> Kafka {
        let cluster = MockCluster::new(1).expect("mock cluster");
        let brokers = cluster.bootstrap_servers();
        let producer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("linger.ms", "2")
            .set("message.max.bytes", "12000000")
            .create()
            .expect("producer");
        Kafka { cluster, brokers, producer }
    }

    pub fn topic(&self, name: &str, partitions: i32) {
        self.cluster.create_topic(name, partitions, 1).expect("create topic");
    }

    /// Produces one record and waits for the acknowledgement.
    pub async fn produce(&self, topic: &str, key: &str, value: &[u8]) {
        let record = FutureRecord::to(topic).key(key).payload(value);
        self.producer.send(record, Duration::from_secs(10)).await.expect("produce");
    }

    /// Produces one record with one header and waits for the acknowledgement.
    pub async fn produce_with_header(&self, topic: &str, key: &str, value: &[u8], header: (&str, &str)) {
        let headers = rdkafka::message::OwnedHeaders::new()
            .insert(rdkafka::message::Header { key: header.0, value: Some(header.1) });
        let record = FutureRecord::to(topic).key(key).payload(value).headers(headers);
        self.producer.send(record, Duration::from_secs(10)).await.expect("produce");
    }

    /// Produces many records without waiting for each acknowledgement.
    pub async fn produce_all(&self, topic: &str, records: &[(String, Vec<u8>)]) {
        let mut pending = Vec::with_capacity(records.len());
        for (key, value) in records {
            loop {
                let record = FutureRecord::to(topic).key(key.as_str()).payload(value.as_slice());
                match self.producer.send_result(record) {
                    Ok(f) => {
                        pending.push(f);
                        break;
                    }
                    Err((_, _)) => tokio::time::sleep(Duration::from_millis(5)).await,
                }
            }
        }
        for f in pending {
            f.await.expect("delivery").expect("produce");
        }
        self.producer.flush(Duration::from_secs(10)).expect("flush");
    }

    /// Every record of `topic` (all partitions), read from the beginning.
    pub fn read_all(&self, topic: &str) -> Vec<OwnedMessage> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("group.id", format!("reader-{}", rand::random::<u64>()))
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(5)).expect("metadata");
        let partitions = md.topics().first().map(|t| t.partitions().len()).unwrap_or(0) as i32;
        let mut tpl = TopicPartitionList::new();
        let mut ends = HashMap::new();
        for p in 0..partitions {
            let (_, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(5)).expect("watermarks");
            ends.insert(p, high);
            tpl.add_partition_offset(topic, p, Offset::Beginning).expect("tpl");
        }
        consumer.assign(&tpl).expect("assign");
        let total: i64 = ends.values().sum();
        let mut out = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while (out.len() as i64) < total && std::time::Instant::now() < deadline {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                out.push(m.detach());
            }
        }
        out
    }

    /// The committed offsets of `group` for `topic`'s partitions.
    pub fn committed(&self, group: &str, topic: &str, partitions: i32) -> Vec<i64> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("group.id", group)
            .create()
            .expect("consumer");
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition(topic, p);
        }
        let got = consumer.committed_offsets(tpl, Duration::from_secs(5)).expect("committed");
        got.elements().iter().map(|e| e.offset().to_raw().unwrap_or(-1)).collect()
    }
}

/// The `[kafka]` table of a test config: topic `topic`, its `.dlq` and `.results`, group
/// prefix `g-<topic>`, fast commits, and a short session timeout (the mock cluster keeps a
/// departed member until it expires).
pub fn kafka_section(kafka: &Kafka, topic: &str) -> String {
    format!(
        "[kafka]\nbrokers = \"{}\"\ntopics = [\"{topic}\"]\ngroup_prefix = \"g-{topic}\"\n\
         dead_letter_topic = \"{topic}.dlq\"\nresults_topic = \"{topic}.results\"\n\
         commit_interval_ms = 200\ndrain_timeout_ms = 3000\n\
         [kafka.properties]\n\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"500\"\n",
        kafka.brokers
    )
}

/// A Bingzhouxing sink section named `name`, bound to `lots` (vendor lots 350, 351, ...,
/// tokens `tok-<lot>`), with fast retries and `extra` sink keys, and a simulator started
/// from that very section; `head` is the configuration before it. Returns the section,
/// pointing at the simulator, and the simulator.
pub async fn bzx_sink(head: &str, name: &str, lots: &[&str], extra: &str) -> (String, lotbridge::sim::SimServer) {
    let bindings: Vec<String> = lots
        .iter()
        .enumerate()
        .map(|(i, lot)| {
            format!("{{ lot = \"{lot}\", vendor_lot = \"{}\", token = {{ value = \"tok-{lot}\" }} }}", 350 + i)
        })
        .collect();
    let sink = format!(
        "\n[[sinks]]\nname = \"{name}\"\nbindings = [{}]\n{extra}\n[sinks.retry]\ninitial_ms = 20\nmax_interval_ms = 200\n\
         [sinks.batch]\nlinger_ms = 5\n[sinks.bingzhouxing]\nbase_url = \"{{url}}\"\n",
        bindings.join(", ")
    );
    let probe = load(&format!("{head}{}", sink.replace("{url}", "http://127.0.0.1:1")));
    let loaded = probe.sinks.last().expect("sink");
    let cfg = loaded.config.bingzhouxing.as_ref().expect("bzx");
    let server = lotbridge::sim::bingzhouxing::Simulator::from_config(cfg, &loaded.bindings, std::path::Path::new("."))
        .expect("sim")
        .start("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("start");
    (sink.replace("{url}", &server.base_url()), server)
}

/// A header of a record as text.
pub fn header(m: &OwnedMessage, key: &str) -> Option<String> {
    let headers = m.headers()?;
    headers.iter().find(|h| h.key == key).and_then(|h| h.value).map(|v| String::from_utf8_lossy(v).into_owned())
}

/// A contract event as JSON bytes.
pub fn event(id: &str, ty: &str, lot: &str, data: Value) -> Vec<u8> {
    json!({"v": 1, "id": id, "type": ty, "lot": lot, "at": chrono::Utc::now().to_rfc3339(), "data": data})
        .to_string()
        .into_bytes()
}

/// A vehicle entry or exit.
pub fn vehicle(id: &str, lot: &str, plate: &str, exit: bool) -> Vec<u8> {
    let mut data = json!({"plate": plate, "vehicle_type": "small", "gate": "East 1"});
    if exit {
        data["parked_minutes"] = json!(30);
        data["fee_payable_cents"] = json!(500);
        data["fee_paid_cents"] = json!(500);
        data["payment_method"] = json!("wechat");
    }
    event(id, if exit { "vehicle.exited" } else { "vehicle.entered" }, lot, data)
}

/// Parses a config from TOML and builds it (relative paths from the current directory).
pub fn load(toml: &str) -> Loaded {
    let config = Config::parse(toml, std::path::Path::new("test.toml")).expect("config parses");
    lotbridge::load::build(config, std::path::Path::new(".")).expect("config builds")
}

/// A running engine on its own runtime, so a test can stop it gracefully or kill it
/// outright (every task of it gone at once, as in a crash).
pub struct Running {
    stop: Option<oneshot::Sender<()>>,
    done: Option<oneshot::Receiver<()>>,
    runtime: Option<tokio::runtime::Runtime>,
    pub metrics: Metrics,
}

impl Running {
    pub fn start(loaded: Loaded) -> Running {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let metrics = Metrics::new().expect("metrics");
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().expect("rt");
        let engine = {
            let _guard = runtime.enter();
            Engine::new(loaded, metrics.clone()).expect("engine")
        };
        let (tx, rx) = oneshot::channel::<()>();
        let (done_tx, done_rx) = oneshot::channel::<()>();
        runtime.spawn(async move {
            let result = engine
                .run(async move {
                    let _ = rx.await;
                })
                .await;
            result.expect("engine run");
            let _ = done_tx.send(());
        });
        Running { stop: Some(tx), done: Some(done_rx), runtime: Some(runtime), metrics }
    }

    /// Graceful stop: drain, commit, return.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(done) = self.done.take() {
            let _ = tokio::time::timeout(Duration::from_secs(60), done).await;
        }
    }

    /// Hard stop: the engine's tasks are dropped without a drain. Not a crash: librdkafka
    /// still closes the consumers, which commits the offsets stored so far. A crash is
    /// [`Process::crash`].
    pub fn kill(mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// `lotbridge run` in a child process, so that a test can crash it for real (SIGKILL:
/// nothing of it runs afterwards, nothing is committed on the way out).
pub struct Process {
    child: std::process::Child,
    dir: tempfile::TempDir,
}

impl Process {
    /// Runs `lotbridge run` on `toml` (its metrics on a free port of 127.0.0.1); its output
    /// goes to `lotbridge.log` in a temporary folder, printed if the test fails to crash it.
    pub fn run(toml: &str) -> Process {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("lotbridge.toml");
        std::fs::write(
            &config,
            format!(
                "{toml}
[metrics]
listen = \"127.0.0.1:0\"\n"
            ),
        )
        .expect("write config");
        let log = std::fs::File::create(dir.path().join("lotbridge.log")).expect("log file");
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_lotbridge"))
            .args(["run", "--config"])
            .arg(&config)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn lotbridge");
        Process { child, dir }
    }

    /// SIGKILL, then waits until the process is gone; panics (with its log) if it had
    /// already exited, since then it did not crash.
    pub fn crash(mut self) {
        let early = self.child.try_wait().expect("try_wait");
        let log = std::fs::read_to_string(self.dir.path().join("lotbridge.log")).unwrap_or_default();
        assert!(early.is_none(), "lotbridge exited by itself ({early:?}) before the crash:\n{log}");
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `check` every 50 ms until it holds or `timeout` passes; returns whether it held.
pub async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

//! What the system tests share: the standalone broker named by the environment, lotbridge
//! run as a child process (killed, restarted, scaled out), the vendor simulators in this
//! process, a city of lots producing traceable vehicle events, and the checks: nothing
//! lost, order kept per lot, duplicates counted, no secret anywhere.

use lotbridge::sim::{self, SimServer};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::json;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `host:port` of the standalone Kafka-protocol broker (Tansu in CI).
pub const BROKER_ENV: &str = "LOTBRIDGE_SYSTEM_BROKER";
/// A script taking `stop` or `start` that stops or starts that broker (keeping its data).
pub const BROKER_CTL_ENV: &str = "LOTBRIDGE_SYSTEM_BROKER_CTL";

/// The broker address, or `None` after saying loudly that the test is skipped.
pub fn broker(test: &str) -> Option<String> {
    match std::env::var(BROKER_ENV) {
        Ok(addr) if !addr.trim().is_empty() => Some(addr),
        _ => {
            eprintln!("SKIPPED {test}: {BROKER_ENV} is unset; scripts/ci-system-tests.sh starts a broker and sets it");
            None
        }
    }
}

/// Stops or starts the broker through the control script of [`BROKER_CTL_ENV`].
pub fn broker_ctl(action: &str) {
    let ctl = std::env::var(BROKER_CTL_ENV).unwrap_or_else(|_| panic!("{BROKER_CTL_ENV} is unset"));
    let status = Command::new("bash").arg(&ctl).arg(action).status().expect("run the broker control script");
    assert!(status.success(), "broker {action} failed: {status}");
}

/// A name no earlier run used (the broker keeps topics and groups between runs).
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{:08x}", rand::random::<u32>())
}

/// A client of the standalone broker: topics, production, reading back.
pub struct Cluster {
    pub brokers: String,
    producer: FutureProducer,
}

impl Cluster {
    pub fn new(brokers: &str) -> Cluster {
        let producer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("linger.ms", "5")
            .set("message.timeout.ms", "300000")
            .set("message.max.bytes", "12000000")
            .create()
            .expect("producer");
        Cluster { brokers: brokers.to_string(), producer }
    }

    /// Creates a topic (the broker does not create them on first use). Against
    /// `examples/mock_broker.rs`, by asking it through `LOTBRIDGE_SYSTEM_MOCK_TOPICS`.
    pub async fn create_topic(&self, name: &str, partitions: i32) {
        if let Some(dir) = std::env::var_os("LOTBRIDGE_SYSTEM_MOCK_TOPICS") {
            let tmp = std::path::Path::new(&dir).join(format!(".{name}"));
            std::fs::write(&tmp, partitions.to_string()).expect("topic request");
            std::fs::rename(&tmp, std::path::Path::new(&dir).join(name)).expect("topic request");
        } else {
            let admin: AdminClient<DefaultClientContext> =
                ClientConfig::new().set("bootstrap.servers", &self.brokers).create().expect("admin client");
            let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
            let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
            let results = admin.create_topics([&topic], &opts).await.expect("create topics");
            for result in results {
                if let Err((topic, code)) = result {
                    assert_eq!(code, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists, "create {topic}: {code}");
                }
            }
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.partitions(name) != partitions {
            assert!(Instant::now() < deadline, "topic {name} never showed {partitions} partitions");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn partitions(&self, topic: &str) -> i32 {
        let consumer: BaseConsumer =
            ClientConfig::new().set("bootstrap.servers", &self.brokers).create().expect("consumer");
        consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .ok()
            .and_then(|md| md.topics().first().map(|t| t.partitions().len() as i32))
            .unwrap_or(0)
    }

    /// Produces records in order at about `per_second` (0: as fast as possible); waits
    /// for every acknowledgement (librdkafka retries through broker restarts).
    pub async fn produce(&self, topic: &str, records: &[(String, Vec<u8>)], per_second: u32) {
        let started = Instant::now();
        let mut pending = Vec::with_capacity(records.len());
        for (i, (key, value)) in records.iter().enumerate() {
            if per_second > 0 {
                let due = started + Duration::from_secs_f64(i as f64 / per_second as f64);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    tokio::time::sleep(wait).await;
                }
            }
            loop {
                match self.producer.send_result(FutureRecord::to(topic).key(key.as_str()).payload(value.as_slice())) {
                    Ok(f) => {
                        pending.push(f);
                        break;
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
                }
            }
        }
        for (i, f) in pending.into_iter().enumerate() {
            if let Err((e, _)) = f.await.expect("delivery future") {
                panic!("record {i} of {topic} was not produced: {e}");
            }
        }
        self.producer.flush(Duration::from_secs(30)).expect("flush");
    }

    /// Every record of `topic`, read from the beginning up to the high watermarks.
    pub fn read_all(&self, topic: &str) -> Vec<OwnedMessage> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("group.id", unique("reader"))
            .set("enable.auto.commit", "false")
            .set("fetch.message.max.bytes", "12000000")
            .create()
            .expect("consumer");
        let partitions = self.partitions(topic);
        let mut tpl = TopicPartitionList::new();
        let mut total = 0;
        for p in 0..partitions {
            let (low, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10)).expect("watermarks");
            total += high - low;
            tpl.add_partition_offset(topic, p, Offset::Beginning).expect("tpl");
        }
        consumer.assign(&tpl).expect("assign");
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while (out.len() as i64) < total && Instant::now() < deadline {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
                out.push(m.detach());
            }
        }
        out
    }
}

/// A header of a record as text.
pub fn header(m: &OwnedMessage, key: &str) -> Option<String> {
    let headers = m.headers()?;
    headers.iter().find(|h| h.key == key).and_then(|h| h.value).map(|v| String::from_utf8_lossy(v).into_owned())
}

/// A synthetic city whose vehicle events can be traced to the vendors: the plate of event
/// `n` of lot `L07` is `L07-000n`, unique and ordered per lot.
pub struct City {
    pub lots: Vec<String>,
}

impl City {
    pub fn new(lots: usize) -> City {
        City { lots: (0..lots).map(|i| format!("L{i:02}")).collect() }
    }

    /// `per_lot` vehicle events for every lot, interleaved across lots, keyed by lot.
    /// Passage `seq` of a lot is an entry when even, an exit when odd.
    pub fn vehicles(&self, per_lot: usize, from: usize) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::with_capacity(per_lot * self.lots.len());
        for seq in from..from + per_lot {
            for lot in &self.lots {
                out.push((lot.clone(), vehicle(lot, seq)));
            }
        }
        out
    }
}

/// The plate of passage `seq` at `lot`.
pub fn plate(lot: &str, seq: usize) -> String {
    format!("{lot}-{seq:06}")
}

/// A contract event for passage `seq` at `lot`.
pub fn vehicle(lot: &str, seq: usize) -> Vec<u8> {
    let exit = seq % 2 == 1;
    let mut data = json!({"plate": plate(lot, seq), "vehicle_type": "small", "gate": "East 1"});
    if exit {
        data["parked_minutes"] = json!(30);
        data["fee_payable_cents"] = json!(500);
        data["fee_paid_cents"] = json!(500);
        data["payment_method"] = json!("wechat");
    }
    let ty = if exit { "vehicle.exited" } else { "vehicle.entered" };
    json!({"v": 1, "id": format!("{lot}.{seq}"), "type": ty, "lot": lot, "at": chrono::Utc::now().to_rfc3339(),
           "data": data})
    .to_string()
    .into_bytes()
}

/// The two sinks every scenario binds all lots to: Bingzhouxing (vehicle reports batched
/// by 100, per-lot tokens) and Inspur ISP (one record per request, OAuth token). Secrets
/// are long random strings so a leak cannot hide behind a coincidence.
pub struct Secrets {
    pub isp_secret: String,
    pub bzx_tokens: Vec<String>,
}

impl Secrets {
    pub fn new(city: &City) -> Secrets {
        let random = || format!("{:032x}", rand::random::<u128>());
        Secrets {
            isp_secret: format!("isp-secret-{}", random()),
            bzx_tokens: city.lots.iter().map(|_| format!("bzx-token-{}", random())).collect(),
        }
    }

    pub fn all(&self) -> Vec<&str> {
        let mut all: Vec<&str> = self.bzx_tokens.iter().map(String::as_str).collect();
        all.push(&self.isp_secret);
        all
    }
}

/// Extra TOML lines for each sink, e.g. request timeouts or retry settings.
#[derive(Default, Clone)]
pub struct SinkTuning {
    pub bzx: String,
    pub isp: String,
    /// The consumers' `session.timeout.ms` (default 30 s: Tansu's group coordinator answers
    /// heartbeats late when the machine is busy, and a short session then churns the group).
    pub session_timeout_ms: Option<u32>,
    /// `group.instance.id` (static membership): a restarted process with the same id takes
    /// its predecessor's place in the group at once instead of waiting for it to expire.
    pub static_member: Option<String>,
}

/// One scenario's files and simulators; lotbridge instances are started from it.
pub struct Scenario {
    pub topic: String,
    pub dir: tempfile::TempDir,
    pub sims: HashMap<String, SimServer>,
    pub secrets: Secrets,
    config: String,
    instances: usize,
}

/// Retries fast enough for a test; a rate limit far above the default 200 requests/s (one
/// ISP request per record would otherwise pace a 100k-event test at 200 events/s).
const RETRY: &str = "[sinks.rate_limit]\nrequests_per_second = 5000\nburst = 500\n\
                     [sinks.retry]\ninitial_ms = 100\nmax_interval_ms = 2000\n";

impl Scenario {
    /// Topics (`<topic>` with `partitions`, `.dlq`, `.results`), the simulators, and the
    /// configuration text every instance shares.
    pub async fn new(cluster: &Cluster, name: &str, city: &City, partitions: i32, tuning: &SinkTuning) -> Scenario {
        let topic = unique(name);
        cluster.create_topic(&topic, partitions).await;
        cluster.create_topic(&format!("{topic}.dlq"), 1).await;
        cluster.create_topic(&format!("{topic}.results"), 1).await;
        let dir = tempfile::tempdir().expect("temp dir");
        let secrets = Secrets::new(city);
        let csv_path = dir.path().join("bzx-lots.csv");
        let mut csv = String::from("lot,vendor_lot,token\n");
        std::fs::create_dir(dir.path().join("tokens")).expect("tokens dir");
        for (i, lot) in city.lots.iter().enumerate() {
            let file = dir.path().join("tokens").join(lot);
            std::fs::write(&file, &secrets.bzx_tokens[i]).expect("write token");
            csv.push_str(&format!("{lot},{},file:{}\n", 3500 + i, file.display()));
        }
        std::fs::write(&csv_path, csv).expect("write csv");
        let session = tuning.session_timeout_ms.unwrap_or(30_000);
        let isp_bindings: Vec<String> =
            city.lots.iter().map(|lot| format!("{{ lot = \"{lot}\", vendor_lot = \"ATXL/{lot}\" }}")).collect();
        let kafka = format!(
            "[kafka]\nbrokers = \"{}\"\ntopics = [\"{topic}\"]\ngroup_prefix = \"g-{topic}\"\n\
             dead_letter_topic = \"{topic}.dlq\"\nresults_topic = \"{topic}.results\"\n\
             commit_interval_ms = 100\ndrain_timeout_ms = 5000\n\
             [kafka.properties]\n\"session.timeout.ms\" = \"{session}\"\n\"heartbeat.interval.ms\" = \"{heartbeat}\"\n{member}\
             [log]\nfilter = \"info,lotbridge=debug\"\n",
            cluster.brokers,
            session = session,
            heartbeat = session / 10,
            member = tuning
                .static_member
                .as_ref()
                .map(|id| format!("\"group.instance.id\" = \"{id}\"\n"))
                .unwrap_or_default(),
        );
        let sinks = format!(
            "[[sinks]]\nname = \"bzx\"\nbindings_csv = \"{}\"\n{}\n{RETRY}[sinks.batch]\nlinger_ms = 20\n\
             [sinks.bingzhouxing]\nbase_url = \"{{bzx}}\"\n\n\
             [[sinks]]\nname = \"isp\"\nbindings = [{}]\n{}\n{RETRY}\
             [sinks.inspur_isp]\nbase_url = \"{{isp}}\"\nclient_id = \"lotbridge\"\nclient_secret = {{ value = \"{}\" }}\n",
            csv_path.display(),
            tuning.bzx,
            isp_bindings.join(", "),
            tuning.isp,
            secrets.isp_secret
        );
        let probe_text =
            format!("{kafka}{}", sinks.replace("{bzx}", "http://127.0.0.1:0").replace("{isp}", "http://127.0.0.1:0"));
        let probe = lotbridge::config::Config::parse(&probe_text, Path::new("probe.toml")).expect("config parses");
        let probe = lotbridge::load::build(probe, dir.path()).expect("config builds");
        let mut config = format!("{kafka}{sinks}");
        let mut by_name = HashMap::new();
        for (name, server) in sim::start_for_config(&probe).await.expect("simulators") {
            config = config.replace(&format!("{{{name}}}"), &server.base_url());
            by_name.insert(name, server);
        }
        Scenario { topic, dir, sims: by_name, secrets, config, instances: 0 }
    }

    /// Starts a lotbridge process with its own metrics port.
    pub async fn start(&mut self) -> Instance {
        self.instances += 1;
        let port = free_port();
        let path = self.dir.path().join(format!("lotbridge-{}.toml", self.instances));
        std::fs::write(&path, format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n{}", self.config)).expect("config");
        let log = self.dir.path().join(format!("lotbridge-{}.log", self.instances));
        let instance = Instance::spawn(&path, &log, port);
        instance.wait_healthy().await;
        instance
    }

    /// Every log line any instance wrote.
    pub fn logs(&self) -> String {
        let mut all = String::new();
        for i in 1..=self.instances {
            all.push_str(
                &std::fs::read_to_string(self.dir.path().join(format!("lotbridge-{i}.log"))).unwrap_or_default(),
            );
        }
        all
    }

    /// The simulator of a sink.
    pub fn sim(&self, sink: &str) -> &SimServer {
        &self.sims[sink]
    }
}

impl Drop for Scenario {
    /// A failed test keeps the instances' logs and configurations for the post-mortem (any
    /// test does with `LOTBRIDGE_KEEP_LOGS=1`).
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var_os("LOTBRIDGE_KEEP_LOGS").is_some() {
            let keep = std::env::temp_dir().join(format!("lotbridge-system-{}", self.topic));
            if std::fs::create_dir_all(&keep).is_ok() {
                for entry in std::fs::read_dir(self.dir.path()).into_iter().flatten().flatten() {
                    let _ = std::fs::copy(entry.path(), keep.join(entry.file_name()));
                }
                eprintln!("logs and configuration of the scenario kept in {}", keep.display());
            }
        }
    }
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// One lotbridge process.
pub struct Instance {
    child: Child,
    pub port: u16,
    /// Every `/metrics` text scraped from it (checked for secrets at the end).
    pub scrapes: Vec<String>,
}

impl Instance {
    fn spawn(config: &Path, log: &Path, port: u16) -> Instance {
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("log file");
        writeln!(file, "--- start {}", chrono::Utc::now().to_rfc3339()).ok();
        let child = Command::new(env!("CARGO_BIN_EXE_lotbridge"))
            .args(["run", "--config"])
            .arg(config)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log"))
            .stderr(file)
            .spawn()
            .expect("spawn lotbridge");
        Instance { child, port, scrapes: Vec::new() }
    }

    async fn wait_healthy(&self) {
        let url = format!("http://127.0.0.1:{}/healthz", self.port);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = reqwest::get(&url).await {
                if r.status().is_success() {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "lotbridge never became healthy on {url}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `/metrics` as text (remembered for the secret check).
    pub async fn scrape(&mut self) -> String {
        let url = format!("http://127.0.0.1:{}/metrics", self.port);
        let text = match reqwest::get(&url).await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        self.scrapes.push(text.clone());
        text
    }

    /// SIGKILL: no drain, no commit, as in a crash or an OOM kill.
    pub fn kill(mut self) -> Vec<String> {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
        std::mem::take(&mut self.scrapes)
    }

    /// SIGTERM, then waits for a clean exit (drain and commit).
    pub fn terminate(mut self) -> Vec<String> {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().expect("kill -TERM");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                assert!(status.success(), "lotbridge exited with {status} after SIGTERM");
                return std::mem::take(&mut self.scrapes);
            }
            assert!(Instant::now() < deadline, "lotbridge did not stop within 60 s of SIGTERM");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Whether the process is still running (it must never exit by itself).
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().expect("wait").is_none()
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One sample of a metric from a Prometheus text exposition, by name and label subset.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter(|l| labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\""))))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .fold(0.0, |a, b| a + b)
}

/// What one sink received of the city's vehicle events.
#[derive(Debug, Default)]
pub struct Received {
    /// Plates in arrival order, every copy (re-deliveries included).
    pub copies: Vec<String>,
}

impl Received {
    /// Bingzhouxing: every record of every accepted `carInOut` request, duplicates
    /// included (the simulator answers 1004 to a batch it has wholly seen, and records a
    /// passage once, so copies are counted from its request log).
    pub fn bingzhouxing(sim: &SimServer) -> Received {
        let mut copies: Vec<String> = sim
            .control
            .records_for("carInOut")
            .iter()
            .filter_map(|r| r.record["carNo"].as_str().map(str::to_string))
            .collect();
        // A placeholder for each accepted record sent again (the simulator keeps one copy;
        // a batch answered `1004` is split and sent again in halves, so counting the records
        // of requests would count one re-sent record several times).
        copies.extend(std::iter::repeat_n(String::from("(re-sent copy)"), sim.control.received_again()));
        Received { copies }
    }

    /// Inspur ISP: every accepted entrance and departure record.
    pub fn isp(sim: &SimServer) -> Received {
        let mut copies = Vec::new();
        for r in sim.control.records() {
            if r.endpoint == "park/entrance" || r.endpoint == "park/departure" {
                if let Some(p) = r.record["plate_number"].as_str() {
                    copies.push(p.to_string());
                }
            }
        }
        Received { copies }
    }

    /// Distinct plates received.
    pub fn distinct(&self) -> HashSet<&str> {
        self.copies.iter().map(String::as_str).filter(|p| !p.starts_with('(')).collect()
    }

    /// Plates of `expected` never received.
    pub fn lost<'a>(&self, expected: &'a [String]) -> Vec<&'a str> {
        let got = self.distinct();
        expected.iter().map(String::as_str).filter(|p| !got.contains(p)).collect()
    }

    /// Copies beyond the first of each plate.
    pub fn duplicates(&self) -> usize {
        self.copies.len() - self.distinct().len()
    }

    /// Lots whose passages first arrived out of order: (lot, plate seen, plate before it).
    pub fn order_violations(&self) -> Vec<(String, String, String)> {
        let mut last: BTreeMap<&str, &str> = BTreeMap::new();
        let mut seen = HashSet::new();
        let mut bad = Vec::new();
        for plate in self.copies.iter().filter(|p| !p.starts_with('(')) {
            if !seen.insert(plate.as_str()) {
                continue;
            }
            let lot = plate.split('-').next().unwrap_or_default();
            if let Some(prev) = last.insert(lot, plate) {
                if prev > plate.as_str() {
                    bad.push((lot.to_string(), plate.clone(), prev.to_string()));
                }
            }
        }
        bad
    }
}

/// Every plate the city produced for `lots` × `per_lot` passages from `from`.
pub fn plates(city: &City, per_lot: usize, from: usize) -> Vec<String> {
    (from..from + per_lot).flat_map(|seq| city.lots.iter().map(move |lot| plate(lot, seq))).collect()
}

/// Polls until both sinks hold every plate of `expected` or `timeout` passes.
pub async fn wait_delivered(scenario: &Scenario, expected: &[String], timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let bzx = Received::bingzhouxing(scenario.sim("bzx"));
        let isp = Received::isp(scenario.sim("isp"));
        if bzx.lost(expected).is_empty() && isp.lost(expected).is_empty() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Asserts that no configured secret appears in any log line, metrics scrape or dead letter.
pub fn assert_no_secrets(scenario: &Scenario, scrapes: &[String], dead_letters: &[OwnedMessage]) {
    let logs = scenario.logs();
    for secret in scenario.secrets.all() {
        assert!(!logs.contains(secret), "a secret appears in the logs");
        assert!(!scrapes.iter().any(|s| s.contains(secret)), "a secret appears in /metrics");
        for m in dead_letters {
            let payload = m.payload().map(String::from_utf8_lossy).unwrap_or_default();
            assert!(!payload.contains(secret), "a secret appears in a dead letter's value");
            if let Some(headers) = m.headers() {
                for h in headers.iter() {
                    let v = h.value.map(String::from_utf8_lossy).unwrap_or_default();
                    assert!(!v.contains(secret), "a secret appears in dead-letter header {}", h.key);
                }
            }
        }
    }
}

/// A one-line report, printed so CI output carries the figures.
pub fn report(test: &str, fields: &[(&str, String)]) {
    let body: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("SYSTEM {test}: {}", body.join(" "));
}

//! City scale: 20 000 bound lots over four sinks on one instance (issue 13, item 7).
//!
//! The engine runs as the real `lotbridge run` binary in a child process, so the CPU and
//! RSS printed are its own; this process holds what stands in for the city around it:
//! librdkafka's mock cluster, the four vendor simulators (`lotbridge::sim`) and the city's
//! producer (`lotbridge::demo::city`). Every sink binds every lot from a CSV file; lot
//! events come from a separate lot topic, as `deploy/k8s/configmap.yaml` sets it up;
//! Bingzhouxing sends heartbeats for every bound lot (`heartbeat_lots = "bound"`). Settings
//! are the defaults but for the rate limits (2 000 requests/s per sink, see [`config_text`]).
//!
//! 1. Startup: `load::load` of the configuration (in this process), then the child from
//!    spawn to `/readyz` 200 and to its "lot list rebuilt" log line (the ISP lot book read
//!    from the lot topic's 20 000 `lot.upserted`).
//! 2. RSS of the child, sampled every second throughout; the maximum per phase.
//! 3. Idle: heartbeats only, CPU of the child per minute and the heartbeats the
//!    simulator accepted in that minute, with per-lot gaps (1 s resolution).
//! 4. Catch-up: every vendor answers 503 while one hour of the city's traffic is produced
//!    at once; then the vendors recover, and the bench reports, per sink, the requests
//!    sent until every record has a final outcome (committed offsets at the end of every
//!    partition), against the events produced, and the time that took.
//!
//! `cargo bench --bench city`. Env: `CITY_LOTS` (20000), `CITY_IDLE_MINUTES` (2, at least
//! 1), `CITY_RATE` (events per second of the hour, 200: the demo's default rate),
//! `CITY_OUTAGE_MINUTES` (60), `CITY_DRAIN_TIMEOUT_SECS` (420).

use lotbridge::demo::city::{lot_code, City};
use lotbridge::sim::{self, Failure, SimServer};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{DefaultProducerContext, FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, TopicPartitionList};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Partitions of the events topic: the mock broker keeps at most ~5 MiB and 100 000
/// records per partition; one hour at 200 events/s is ~2 MiB on each of 128.
const PARTITIONS: i32 = 128;
/// Partitions of the lot topic (20 000 `lot.upserted` of ~250 B).
const LOT_PARTITIONS: i32 = 4;
const TOPIC: &str = "city.events";
const LOT_TOPIC: &str = "city.lots";
const DLQ: &str = "city.dead-letters";
const RESULTS: &str = "city.results";
const GROUP_PREFIX: &str = "city";
const SINKS: [&str; 4] = ["bzx", "isp", "coupons", "members"];
/// Every sink's rate limit (see [`config_text`]).
const RATE: &str = "[sinks.rate_limit]\nrequests_per_second = 2000\nburst = 200\n";
/// A vendor limit to translate request counts into drain time.
const VENDOR_RPS: f64 = 200.0;
const PHASES: [&str; 4] = ["startup", "idle", "outage", "catch-up"];

fn env_n(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// The four binding files: every lot bound to every sink.
fn write_csvs(dir: &Path, lots: usize) {
    let mut files: [(String, String); 4] = [
        ("bzx.csv".into(), "lot,vendor_lot,token\n".into()),
        ("isp.csv".into(), "lot,vendor_lot\n".into()),
        ("coupons.csv".into(), "lot,vendor_lot\n".into()),
        ("members.csv".into(), "lot\n".into()),
    ];
    for i in 0..lots {
        let lot = lot_code(i);
        let _ = writeln!(files[0].1, "{lot},{},env:CITY_BZX_TOKEN", 35_000 + i);
        let _ = writeln!(files[1].1, "{lot},CITY/{i}");
        let _ = writeln!(files[2].1, "{lot},B{i:05}");
        let _ = writeln!(files[3].1, "{lot}");
    }
    for (name, text) in files {
        std::fs::write(dir.join(name), text).expect("write csv");
    }
}

/// The configuration: defaults everywhere (memory budget, retry, batch, concurrency)
/// except the rate limits: 2 000 requests/s per sink, so the catch-up measures lotbridge
/// and the request counts, not a vendor's limit (at the default 200/s, Bingzhouxing could
/// not even carry 20 000 heartbeats a minute: 333/s). The drain at a vendor's real limit
/// is at least requests / limit; the bench prints it for 200/s.
fn config_text(brokers: &str, metrics: &str, urls: &HashMap<String, String>) -> String {
    let url = |name: &str| urls.get(name).cloned().unwrap_or_else(|| "http://127.0.0.1:0".into());
    format!(
        "[kafka]\nbrokers = \"{brokers}\"\ntopics = [\"{TOPIC}\"]\nlot_topics = [\"{LOT_TOPIC}\"]\n\
         group_prefix = \"{GROUP_PREFIX}\"\ndead_letter_topic = \"{DLQ}\"\nresults_topic = \"{RESULTS}\"\n\
         [metrics]\nlisten = \"{metrics}\"\n[log]\njson = true\nfilter = \"info\"\n\
         \n[[sinks]]\nname = \"bzx\"\nbindings_csv = \"bzx.csv\"\nheartbeat_lots = \"bound\"\n{RATE}\
         [sinks.bingzhouxing]\nbase_url = \"{}\"\n\
         \n[[sinks]]\nname = \"isp\"\nbindings_csv = \"isp.csv\"\n{RATE}[sinks.inspur_isp]\nbase_url = \"{}\"\n\
         client_id = \"lotbridge-city\"\nclient_secret = {{ value = \"city-isp-secret\" }}\n\
         \n[[sinks]]\nname = \"coupons\"\nbindings_csv = \"coupons.csv\"\n{RATE}[sinks.barrier_coupon]\n\
         base_url = \"{}\"\nclient_id = \"244221\"\nclient_secret = {{ value = \"city-barrier-secret\" }}\n\
         \n[[sinks]]\nname = \"members\"\nbindings_csv = \"members.csv\"\n{RATE}[sinks.zvcms]\nbase_url = \"{}\"\n\
         open_id = \"6dc05b4ac175cf316d226252b05cf685\"\ngrant_code = {{ value = \"city-grant\" }}\n\
         secret_key = {{ value = \"city-zvcms-secret\" }}\n",
        url("bzx"),
        url("isp"),
        url("coupons"),
        url("members")
    )
}

/// A record to produce: its key (the lot) and value.
type Keyed = (String, Vec<u8>);

fn producer(brokers: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "20")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .set("queue.buffering.max.messages", "1000000")
        // Kafka's default partitioner, as `heartbeat_lots = "bound"` requires.
        .set("partitioner", "murmur2_random")
        .create()
        .expect("producer")
}

/// Produces keyed records and waits for every acknowledgement; returns the bytes sent.
async fn produce(producer: &FutureProducer, topic: &str, records: &[Keyed]) -> u64 {
    use futures::StreamExt;
    let mut pending = futures::stream::FuturesUnordered::new();
    let mut bytes = 0u64;
    for (key, value) in records {
        bytes += value.len() as u64;
        loop {
            match producer.send_result(FutureRecord::to(topic).key(key).payload(value)) {
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

/// Removes `"photo":{...}` from a serialized event: an hour of the city's photos would not
/// fit the mock broker (the photo path is measured by the e2e bench).
fn without_photo(value: Vec<u8>) -> Vec<u8> {
    const KEY: &[u8] = b"\"photo\":{";
    let Some(start) = value.windows(KEY.len()).position(|w| w == KEY) else { return value };
    let Some(len) = value[start..].iter().position(|b| *b == b'}') else { return value };
    let mut end = start + len + 1;
    let mut from = start;
    if value.get(end) == Some(&b',') {
        end += 1;
    } else if start > 0 && value[start - 1] == b',' {
        from -= 1;
    }
    let mut out = value[..from].to_vec();
    out.extend_from_slice(&value[end..]);
    out
}

/// `events` steps of the city (each an event, some with the space count it changes), as
/// fast as they can be made, with the count of each event type.
fn city_traffic(city: &mut City, events: u64) -> (Vec<Keyed>, BTreeMap<String, u64>) {
    let mut out = Vec::with_capacity(events as usize + events as usize / 3);
    let mut types: BTreeMap<String, u64> = BTreeMap::new();
    let mut steps = 0u64;
    while steps < events {
        steps += 1;
        for r in city.step() {
            let value = without_photo(r.value);
            let ty = serde_json::from_slice::<serde_json::Value>(&value)
                .ok()
                .and_then(|v| v["type"].as_str().map(str::to_string))
                .unwrap_or_default();
            *types.entry(ty).or_default() += 1;
            out.push((r.key, value));
        }
    }
    (out, types)
}

/// A thread's or process' name and CPU ticks (user + system) from its `stat` line.
fn cpu_ticks(stat: &str) -> (String, u64) {
    let (head, rest) = stat.rsplit_once(')').unwrap_or(("", ""));
    let comm = head.split_once('(').map_or("", |(_, c)| c).to_string();
    let f: Vec<&str> = rest.split_whitespace().collect();
    let t = [11, 12].iter().filter_map(|&i| f.get(i)?.parse::<u64>().ok()).sum();
    (comm, t)
}

/// The child's CPU time so far (every thread, those gone included).
fn cpu_of(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    Duration::from_secs_f64(cpu_ticks(&stat).1 as f64 / 100.0) // USER_HZ is 100 on Linux
}

/// CPU seconds by thread name (digits dropped: `rdk:broker1` and `rdk:broker2` add up).
fn cpu_by_thread(pid: u32) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return out };
    for task in dir.flatten() {
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        let (comm, ticks) = cpu_ticks(&stat);
        let name: String = comm.chars().filter(|c| !c.is_ascii_digit()).collect();
        *out.entry(name).or_default() += ticks as f64 / 100.0;
    }
    out
}

fn status_kib(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb = status.lines().find(|l| l.starts_with(key)).and_then(|l| l.split_whitespace().nth(1));
    kb.and_then(|k| k.parse().ok()).unwrap_or(0)
}

/// Samples the child's VmRSS every second; the maximum per phase.
struct RssSampler {
    phase: Arc<AtomicUsize>,
    max: Arc<Mutex<[u64; 4]>>,
    last: Arc<Mutex<u64>>,
    stop: Arc<AtomicBool>,
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let s = RssSampler {
            phase: Arc::new(AtomicUsize::new(0)),
            max: Arc::new(Mutex::new([0; 4])),
            last: Arc::new(Mutex::new(0)),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let (phase, max, last, stop) = (s.phase.clone(), s.max.clone(), s.last.clone(), s.stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let rss = status_kib(pid, "VmRSS:") * 1024;
                let p = phase.load(Ordering::Relaxed).min(3);
                let mut m = max.lock().expect("lock");
                m[p] = m[p].max(rss);
                *last.lock().expect("lock") = rss;
                drop(m);
                std::thread::sleep(Duration::from_secs(1));
            }
        });
        s
    }
    fn set_phase(&self, p: usize) {
        self.phase.store(p, Ordering::Relaxed);
    }
    fn max(&self, p: usize) -> u64 {
        self.max.lock().expect("lock")[p]
    }
    fn last(&self) -> u64 {
        *self.last.lock().expect("lock")
    }
}

/// The engine under test: `lotbridge run` with its log lines (JSON) timestamped on arrival.
struct Engine {
    child: std::process::Child,
    pid: u32,
    started: Instant,
    log: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl Engine {
    fn spawn(config: &Path) -> Engine {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_lotbridge"))
            .args(["run", "--config"])
            .arg(config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn lotbridge run");
        let started = Instant::now();
        let pid = child.id();
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("stderr");
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().expect("lock").push((Instant::now(), line));
            }
        });
        Engine { child, pid, started, log }
    }

    /// When a log line containing `text` first arrived, and the line.
    fn logged(&self, text: &str) -> Option<(Instant, String)> {
        self.log.lock().expect("lock").iter().find(|(_, l)| l.contains(text)).cloned()
    }

    /// Log lines at WARN or ERROR, by message, counted.
    fn warnings(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for (_, line) in self.log.lock().expect("lock").iter() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
            let level = v["level"].as_str().unwrap_or("");
            if level == "WARN" || level == "ERROR" {
                let msg = v["fields"]["message"].as_str().unwrap_or("?").chars().take(80).collect::<String>();
                *out.entry(format!("{level} {msg}")).or_default() += 1;
            }
        }
        out
    }

    fn stop(mut self) -> Option<i32> {
        let _ = std::process::Command::new("kill").args(["-TERM", &self.pid.to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }
}

/// A free port on loopback for the child's `/metrics`.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("port")
}

/// Sums of a Prometheus family from the child's `/metrics`, by the value of `label`.
fn family(text: &str, name: &str, label: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{')) {
        let Some((labels, value)) = line.rsplit_once(' ') else { continue };
        let key = format!("{label}=\"");
        let Some(at) = labels.find(&key) else { continue };
        let rest = &labels[at + key.len()..];
        let v = rest.split('"').next().unwrap_or("").to_string();
        *out.entry(v).or_default() += value.parse::<f64>().unwrap_or(0.0);
    }
    out
}

/// Sums of a family by two labels, `a` and `b`, as "a/b".
fn family2(text: &str, name: &str, a: &str, b: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{')) {
        let Some((labels, value)) = line.rsplit_once(' ') else { continue };
        let get = |k: &str| {
            let key = format!("{k}=\"");
            labels.find(&key).map(|at| labels[at + key.len()..].split('"').next().unwrap_or("").to_string())
        };
        if let (Some(x), Some(y)) = (get(a), get(b)) {
            *out.entry(format!("{x}/{y}")).or_default() += value.parse::<f64>().unwrap_or(0.0);
        }
    }
    out
}

async fn scrape(http: &reqwest::Client, addr: &str) -> String {
    match http.get(format!("http://{addr}/metrics")).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Per sink, whether its group's committed offsets reached the end of every partition.
fn committed(brokers: &str) -> BTreeMap<String, bool> {
    let mut out = BTreeMap::new();
    let Ok(reader) = ClientConfig::new().set("bootstrap.servers", brokers).create::<BaseConsumer>() else {
        return out;
    };
    let ends: Vec<i64> = (0..PARTITIONS)
        .map(|p| reader.fetch_watermarks(TOPIC, p, Duration::from_secs(5)).map_or(-1, |w| w.1))
        .collect();
    for sink in SINKS {
        let group = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", format!("{GROUP_PREFIX}.{sink}"))
            .create::<BaseConsumer>();
        let mut tpl = TopicPartitionList::new();
        for p in 0..PARTITIONS {
            tpl.add_partition(TOPIC, p);
        }
        let done = group.ok().and_then(|g| g.committed_offsets(tpl, Duration::from_secs(5)).ok()).is_some_and(|got| {
            got.elements().iter().zip(&ends).all(|(e, end)| *end == 0 || e.offset().to_raw() == Some(*end))
        });
        out.insert(sink.to_string(), done);
    }
    out
}

fn dead_letters(brokers: &str) -> i64 {
    let Ok(reader) = ClientConfig::new().set("bootstrap.servers", brokers).create::<BaseConsumer>() else {
        return -1;
    };
    reader.fetch_watermarks(DLQ, 0, Duration::from_secs(5)).map_or(-1, |(low, high)| high - low)
}

/// Requests a simulator answered, from index `from`, by "endpoint status code".
fn requests_by_kind(sim: &SimServer, from: usize) -> (usize, BTreeMap<String, usize>) {
    let all = sim.control.requests();
    let mut out = BTreeMap::new();
    for r in all.iter().skip(from) {
        let code = r.code.as_deref().unwrap_or("-");
        *out.entry(format!("{} {} {code}", r.endpoint, r.status)).or_default() += 1;
    }
    (all.len(), out)
}

/// Watches the Bingzhouxing simulator's accepted heartbeats: per lot, when each was first
/// seen (polled every second).
struct Beats {
    seen: usize,
    last: HashMap<String, Instant>,
    max_gap: Duration,
    over: usize,
}

impl Beats {
    fn new() -> Beats {
        Beats { seen: 0, last: HashMap::new(), max_gap: Duration::ZERO, over: 0 }
    }
    /// Takes the heartbeats accepted since the last poll; returns how many.
    fn poll(&mut self, sim: &SimServer) -> usize {
        let all = sim.control.records_for("heartbeat");
        let now = Instant::now();
        let fresh = all.len().saturating_sub(self.seen);
        for r in all.iter().skip(self.seen) {
            if let Some(prev) = self.last.insert(r.lot.clone(), now) {
                let gap = now - prev;
                self.max_gap = self.max_gap.max(gap);
                // 60 s, plus the 1 s of polling resolution and 1 s of jitter.
                if gap > Duration::from_secs(62) {
                    self.over += 1;
                }
            }
        }
        self.seen = all.len();
        fresh
    }
}

struct Sims(HashMap<String, SimServer>);

impl Sims {
    fn get(&self, name: &str) -> &SimServer {
        self.0.get(name).expect("simulator")
    }
}

/// What the phases share.
struct Bench {
    brokers: String,
    metrics_addr: String,
    sims: Sims,
    engine: Engine,
    rss: RssSampler,
    http: reqwest::Client,
    producer: FutureProducer,
    city: City,
}

impl Bench {
    fn pid(&self) -> u32 {
        self.engine.pid
    }
}

/// The configuration, the simulators and the lot topic; `load::load` timed.
async fn prepare(lots: usize, brokers: &str, dir: &Path) -> (PathBuf, String, Sims) {
    std::env::set_var("CITY_BZX_TOKEN", "city-bzx-token");
    write_csvs(dir, lots);
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let path = dir.join("lotbridge.city.toml");
    std::fs::write(&path, config_text(brokers, &metrics_addr, &HashMap::new())).expect("write config");
    let probe = lotbridge::load::load(&path).expect("config");
    let sims = Sims(sim::start_for_config(&probe).await.expect("simulators").into_iter().collect());
    drop(probe);
    let urls = sims.0.iter().map(|(n, s)| (n.clone(), s.base_url())).collect();
    std::fs::write(&path, config_text(brokers, &metrics_addr, &urls)).expect("write config");
    let mut loads = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let loaded = lotbridge::load::load(&path).expect("config");
        loads.push(t.elapsed());
        assert_eq!(loaded.sinks.iter().map(|s| s.bindings.len()).sum::<usize>(), 4 * lots);
    }
    let csv_bytes: u64 =
        SINKS.iter().map(|n| std::fs::metadata(dir.join(format!("{n}.csv"))).map_or(0, |m| m.len())).sum();
    println!(
        "startup: load::load of 4 x {lots} CSV bindings ({:.1} MB of CSV): {}",
        csv_bytes as f64 / 1e6,
        loads.iter().map(|d| format!("{:.0} ms", d.as_secs_f64() * 1000.0)).collect::<Vec<_>>().join(", ")
    );
    (path, metrics_addr, sims)
}

/// 1b: the engine from spawn to `/readyz` 200 and to its lot book rebuilt.
async fn start_engine(path: &Path, metrics_addr: &str, http: &reqwest::Client) -> (Engine, RssSampler) {
    let engine = Engine::spawn(path);
    let pid = engine.pid;
    let rss = RssSampler::start(pid);
    let ready_at = loop {
        let ok = http.get(format!("http://{metrics_addr}/readyz")).send().await.is_ok_and(|r| r.status() == 200);
        if ok {
            break engine.started.elapsed();
        }
        assert!(engine.started.elapsed() < Duration::from_secs(300), "not ready after 300 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let rebuilt = loop {
        if let Some(found) = engine.logged("lot list rebuilt") {
            break Some(found);
        }
        if engine.started.elapsed() > Duration::from_secs(300) {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let rebuilt_text = rebuilt.map_or("not logged within 300 s".to_string(), |(at, line)| {
        let n = serde_json::from_str::<serde_json::Value>(&line)
            .ok()
            .and_then(|v| v["fields"]["lot_events"].as_u64())
            .unwrap_or(0);
        format!("{:.2} s ({n} lot events)", (at - engine.started).as_secs_f64())
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    println!(
        "startup: lotbridge run spawned -> /readyz 200 in {:.2} s; -> lot list rebuilt in {rebuilt_text}; \
         RSS {:.0} MiB, CPU {:.2} s so far",
        ready_at.as_secs_f64(),
        mib(status_kib(pid, "VmRSS:") * 1024),
        cpu_of(pid).as_secs_f64()
    );
    (engine, rss)
}

/// 3: heartbeats only, minute by minute from the first heartbeat.
async fn idle(b: &Bench, minutes: u64) {
    b.rss.set_phase(1);
    let (pid, bzx) = (b.pid(), b.sims.get("bzx"));
    let mut beats = Beats::new();
    let waiting = Instant::now();
    while beats.poll(bzx) == 0 {
        assert!(waiting.elapsed() < Duration::from_secs(180), "no heartbeat within 180 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("idle: first heartbeat {:.1} s after the engine was spawned", b.engine.started.elapsed().as_secs_f64());
    let (requests_before, _) = requests_by_kind(bzx, 0);
    for minute in 1..=minutes {
        let (cpu0, threads0, count0, over0) = (cpu_of(pid), cpu_by_thread(pid), beats.seen, beats.over);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(60) {
            tokio::time::sleep(Duration::from_secs(1)).await;
            beats.poll(bzx);
        }
        let cpu = cpu_of(pid).saturating_sub(cpu0);
        let by_thread: Vec<String> = cpu_by_thread(pid)
            .iter()
            .map(|(name, s)| (name, s - threads0.get(name).copied().unwrap_or(0.0)))
            .filter(|(_, d)| *d >= 0.01)
            .map(|(name, d)| format!("{name} {d:.2}"))
            .collect();
        println!(
            "idle minute {minute}: CPU {:.2} s ({:.1} % of one core) [by thread: {}]; heartbeats accepted {} \
             ({} lots seen so far), gaps over 62 s {}, RSS {:.0} MiB",
            cpu.as_secs_f64(),
            cpu.as_secs_f64() / 60.0 * 100.0,
            by_thread.join(", "),
            beats.seen - count0,
            beats.last.len(),
            beats.over - over0,
            mib(b.rss.last())
        );
    }
    let (_, idle_requests) = requests_by_kind(bzx, requests_before);
    println!(
        "idle: bzx requests answered while idle (endpoint status code) {idle_requests:?}; longest heartbeat gap \
         {:.0} s; RSS max {:.0} MiB",
        beats.max_gap.as_secs_f64(),
        mib(b.rss.max(1))
    );
}

/// 4a: every vendor answers 503 while `events` city steps are produced; returns the records
/// produced and the simulators' request counts at the start of the outage.
async fn outage(b: &mut Bench, events: u64, label: &str) -> (usize, HashMap<&'static str, usize>) {
    b.rss.set_phase(2);
    let mut before = HashMap::new();
    for name in SINKS {
        let s = b.sims.get(name);
        before.insert(name, s.control.requests().len());
        s.control.fail_next(1_000_000, Failure::Status(503));
    }
    let made = Instant::now();
    let (traffic, types) = tokio::task::block_in_place(|| city_traffic(&mut b.city, events));
    let made = made.elapsed();
    let produced_at = Instant::now();
    let bytes = produce(&b.producer, TOPIC, &traffic).await;
    println!(
        "outage: every vendor answers 503; produced {} records ({:.0} MB; {events} city steps = {label}, photos \
         stripped) in {:.1} s (made in {:.1} s): {types:?}",
        traffic.len(),
        bytes as f64 / 1e6,
        produced_at.elapsed().as_secs_f64(),
        made.as_secs_f64()
    );
    // Let the engine read what its memory budgets allow, until held records stop changing.
    let settle = Instant::now();
    let mut last = (String::new(), Instant::now());
    while settle.elapsed() < Duration::from_secs(120) {
        let held = format!("{:?}", family(&scrape(&b.http, &b.metrics_addr).await, "lotbridge_held_records", "sink"));
        if held != last.0 {
            last = (held, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(5) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let text = scrape(&b.http, &b.metrics_addr).await;
    let held_mib: BTreeMap<String, f64> =
        family(&text, "lotbridge_held_bytes", "sink").into_iter().map(|(k, v)| (k, mib(v as u64).round())).collect();
    println!(
        "outage: after {:.0} s held records {:?}, held MiB {held_mib:?}, paused partitions {:?}; RSS max {:.0} MiB",
        settle.elapsed().as_secs_f64(),
        family(&text, "lotbridge_held_records", "sink"),
        family(&text, "lotbridge_partitions_paused", "sink"),
        mib(b.rss.max(2))
    );
    (traffic.len(), before)
}

/// 4b: the vendors recover; per sink, requests until every record has a final outcome.
async fn catch_up(b: &Bench, produced: usize, before: &HashMap<&str, usize>, outage_secs: f64, timeout: Duration) {
    b.rss.set_phase(3);
    let outcomes_before =
        family2(&scrape(&b.http, &b.metrics_addr).await, "lotbridge_records_outcome_total", "sink", "outcome");
    let mut during = HashMap::new();
    for name in SINKS {
        let s = b.sims.get(name);
        s.control.clear_faults();
        during.insert(name, s.control.requests().len());
    }
    let recovered = Instant::now();
    let mut drained: BTreeMap<String, Duration> = BTreeMap::new();
    while drained.len() < SINKS.len() && recovered.elapsed() < timeout {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let brokers = b.brokers.clone();
        let done = tokio::task::spawn_blocking(move || committed(&brokers)).await.unwrap_or_default();
        for (sink, _) in done.into_iter().filter(|(_, ok)| *ok) {
            drained.entry(sink).or_insert_with(|| recovered.elapsed());
        }
    }
    let outcomes =
        family2(&scrape(&b.http, &b.metrics_addr).await, "lotbridge_records_outcome_total", "sink", "outcome");
    println!("catch-up: {produced} records produced during the outage; per sink, once the vendors answer again:");
    for name in SINKS {
        let s = b.sims.get(name);
        let failed = during[name] - before[name];
        let failed_rate = failed as f64 / outage_secs.max(1.0);
        let (_, after) = requests_by_kind(s, during[name]);
        let sent: usize = after.values().sum();
        let took = drained.get(name).map_or(format!("NOT drained in {} s", timeout.as_secs()), |d| {
            format!("drained in {:.1} s", d.as_secs_f64())
        });
        let since: BTreeMap<String, f64> = outcomes
            .iter()
            .filter(|(k, _)| k.starts_with(&format!("{name}/")))
            .map(|(k, v)| (k.clone(), v - outcomes_before.get(k).copied().unwrap_or(0.0)))
            .filter(|(_, v)| *v > 0.0)
            .collect();
        println!(
            "  {name:<8} {took}; requests {sent} ({:.2} of the sink's records settled per request, {:.1} records \
             produced per request; at least {:.0} s at {VENDOR_RPS} requests/s) by endpoint/status/code {after:?}; \
             503s answered during the outage {failed} ({failed_rate:.0}/s); outcomes since recovery {since:?}",
            since.values().sum::<f64>() / sent.max(1) as f64,
            produced as f64 / sent.max(1) as f64,
            sent as f64 / VENDOR_RPS,
        );
    }
    let brokers = b.brokers.clone();
    let dlq = tokio::task::spawn_blocking(move || dead_letters(&brokers)).await.unwrap_or(-1);
    println!(
        "catch-up: dead letters {dlq}; RSS max {:.0} MiB; VmHWM {:.0} MiB; engine CPU {:.1} s in all",
        mib(b.rss.max(3)),
        mib(status_kib(b.pid(), "VmHWM:") * 1024),
        cpu_of(b.pid()).as_secs_f64()
    );
}

async fn run() {
    let lots = env_n("CITY_LOTS", 20_000) as usize;
    let idle_minutes = env_n("CITY_IDLE_MINUTES", 2).max(1);
    let rate = env_n("CITY_RATE", 200);
    let outage_minutes = env_n("CITY_OUTAGE_MINUTES", 60);
    let drain_timeout = Duration::from_secs(env_n("CITY_DRAIN_TIMEOUT_SECS", 420));
    println!(
        "city: {lots} lots bound to each of 4 sinks; {} cores; events topic {PARTITIONS} partitions, lot topic {LOT_PARTITIONS}",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let cluster = MockCluster::<DefaultProducerContext>::new(1).expect("mock cluster");
    for (topic, n) in [(TOPIC, PARTITIONS), (LOT_TOPIC, LOT_PARTITIONS), (DLQ, 1), (RESULTS, 1)] {
        cluster.create_topic(topic, n, 1).expect("topic");
    }
    let brokers = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, metrics_addr, sims) = prepare(lots, &brokers, dir.path()).await;
    let producer = producer(&brokers);
    let mut city = City::new(lots, 20_261_203, lotbridge::demo::setup::coupon_lot);
    let opening: Vec<Keyed> = city.opening().into_iter().map(|r| (r.key, r.value)).collect();
    let lot_bytes = produce(&producer, LOT_TOPIC, &opening).await;
    println!("startup: the lot topic holds {} lot.upserted ({:.1} MB)", opening.len(), lot_bytes as f64 / 1e6);
    let http = reqwest::Client::new();
    let (engine, rss) = start_engine(&path, &metrics_addr, &http).await;
    let mut bench = Bench { brokers, metrics_addr, sims, engine, rss, http, producer, city };
    idle(&bench, idle_minutes).await;
    let label = format!("{outage_minutes} min at {rate}/s");
    let outage_started = Instant::now();
    let (produced, before) = outage(&mut bench, rate * 60 * outage_minutes, &label).await;
    let outage_secs = outage_started.elapsed().as_secs_f64();
    catch_up(&bench, produced, &before, outage_secs, drain_timeout).await;
    println!(
        "RSS max by phase: {}",
        PHASES
            .iter()
            .enumerate()
            .map(|(i, p)| format!("{p} {:.0} MiB", mib(bench.rss.max(i))))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let warnings = bench.engine.warnings();
    bench.rss.stop.store(true, Ordering::Relaxed);
    let code = tokio::task::block_in_place(|| bench.engine.stop());
    println!("engine exit code {code:?}; warnings and errors it logged, by message: {warnings:?}");
    drop(bench.sims);
    std::mem::forget(cluster);
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt");
    runtime.block_on(run());
    std::mem::forget(runtime); // clients of the mock cluster may still be closing
}

//! The at-least-once promise under faults outside the happy path: panics in third-party or
//! adapter code, sink-level refusals (a wrong route, a refused signature), and ambiguous
//! duplicate answers. Each test runs the real engine on librdkafka's mock cluster against
//! the strict simulators on 127.0.0.1.

mod common;

use async_trait::async_trait;
use bytes::Bytes;
use common::{eventually, header, vehicle, Kafka, Running};
use lotbridge::event::Event;
use lotbridge::sim::{Failure, SimServer};
use lotbridge::vendors::{
    Adapter, Endpoint, HttpRequest, HttpResponse, MapError, Mapping, PrepareError, VendorKind, Verdict,
};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

/// An adapter that behaves as `inner` except that it panics while mapping an event whose
/// id contains `panic-map`, and while preparing a request whose body contains `PANIC`: a
/// stand-in for a bug in adapter or third-party code (JPEG decoding) that one record's
/// bytes trigger. And while `stuck` is set, requests for lot `STUCK` go to a closed port:
/// refused connections, retried without end, as for a lot whose vendor endpoint is down.
struct PanicOn {
    inner: Arc<dyn Adapter>,
    stuck: Option<Arc<std::sync::atomic::AtomicBool>>,
}

#[async_trait]
impl Adapter for PanicOn {
    fn kind(&self) -> VendorKind {
        self.inner.kind()
    }
    fn map(&self, event: &Event) -> Result<Mapping, MapError> {
        if event.id.contains("panic-map") {
            panic!("injected panic while mapping {}", event.id);
        }
        self.inner.map(event)
    }
    fn assemble(&self, endpoint: &Endpoint, records: &[&[u8]]) -> Bytes {
        self.inner.assemble(endpoint, records)
    }
    async fn prepare(&self, lot: &str, endpoint: &Endpoint, data: &Bytes) -> Result<HttpRequest, PrepareError> {
        if data.windows(5).any(|w| w == b"PANIC") {
            panic!("injected panic while preparing a request (non-ASCII tail: 停车场编码)");
        }
        let mut request = self.inner.prepare(lot, endpoint, data).await?;
        if lot == "STUCK" && self.stuck.as_ref().is_some_and(|s| s.load(std::sync::atomic::Ordering::Relaxed)) {
            request.url = "http://127.0.0.1:1/closed".into();
        }
        Ok(request)
    }
    fn classify(&self, endpoint: &Endpoint, response: &HttpResponse) -> Verdict {
        self.inner.classify(endpoint, response)
    }
    fn bound_lots(&self) -> Vec<String> {
        self.inner.bound_lots()
    }
    fn heartbeat_every(&self) -> Option<Duration> {
        self.inner.heartbeat_every()
    }
}

/// One Bingzhouxing sink named `bzx` bound to `lots`, against a fresh simulator.
async fn bzx(kafka: &Kafka, topic: &str, lots: &[&str], extra: &str) -> (String, SimServer) {
    let head = common::kafka_section(kafka, topic);
    let (sink, server) = common::bzx_sink(&head, "bzx", lots, extra).await;
    (format!("{head}{sink}"), server)
}

fn plates(server: &SimServer) -> Vec<String> {
    server
        .control
        .records_for("carInOut")
        .iter()
        .map(|r| r.record["carNo"].as_str().unwrap_or("").to_string())
        .collect()
}

fn with_panicking_adapter(toml: &str) -> lotbridge::load::Loaded {
    let mut loaded = common::load(toml);
    for sink in &mut loaded.sinks {
        sink.adapter = Arc::new(PanicOn { inner: sink.adapter.clone(), stuck: None });
    }
    loaded
}

/// Records around a panicking one: `n` entries of lot P1 with plates 晋A00000.., the one at
/// `bad` marked by its id (mapping panics) or by its plate (preparing panics).
fn records_with_a_panic(n: usize, bad: usize, how: &str) -> Vec<(String, Vec<u8>)> {
    (0..n)
        .map(|i| {
            let (id, plate) = match (i == bad, how) {
                (true, "map") => (format!("panic-map-{i}"), format!("晋A{i:05}")),
                (true, _) => (format!("e{i}"), "晋PANIC".to_string()),
                _ => (format!("e{i}"), format!("晋A{i:05}")),
            };
            ("P1".to_string(), vehicle(&id, "P1", &plate, false))
        })
        .collect()
}

async fn assert_panic_dead_lettered_and_rest_delivered(topic: &str, n: usize, how: &str, photo_batch: bool) {
    let kafka = Kafka::new();
    kafka.topic(topic, 1);
    let (toml, sim) = bzx(&kafka, topic, &["P1"], "").await;
    let mut records = records_with_a_panic(n, n / 2, how);
    if photo_batch {
        // Large batches are decoded and mapped on the blocking pool.
        records.iter_mut().for_each(|(_, v)| v.extend(std::iter::repeat_n(b' ', 400)));
    }
    kafka.produce_all(topic, &records).await;
    let engine = Running::start(with_panicking_adapter(&toml));
    let want: HashSet<String> = (0..n).filter(|i| *i != n / 2).map(|i| format!("晋A{i:05}")).collect();
    let delivered =
        eventually(WAIT, || async { plates(&sim).iter().collect::<HashSet<_>>().len() >= want.len() }).await;
    let dead = || kafka.read_all(&format!("{topic}.dlq"));
    let dead_lettered = eventually(WAIT, || async { !dead().is_empty() }).await;
    let group = format!("g-{topic}.bzx");
    let committed = eventually(WAIT, || async { kafka.committed(&group, topic, 1) == [n as i64] }).await;
    engine.stop().await;
    assert!(delivered, "every record but the panicking one delivered: {} of {}", plates(&sim).len(), want.len());
    assert_eq!(plates(&sim).into_iter().collect::<HashSet<_>>(), want);
    assert!(dead_lettered, "the panicking record is dead-lettered");
    let dead = dead();
    assert_eq!(dead.len(), 1, "only the panicking record");
    let reason = header(&dead[0], "lotbridge.error").unwrap_or_default();
    assert!(reason.starts_with("internal error"), "reason: {reason}");
    assert!(reason.contains("panic"), "reason: {reason}");
    assert!(committed, "offsets committed to the end: {:?}", kafka.committed(&group, topic, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_panic_while_mapping_inline_dead_letters_that_record_only() {
    assert_panic_dead_lettered_and_rest_delivered("panic-inline", 20, "map", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_panic_while_mapping_on_the_blocking_pool_dead_letters_that_record_only() {
    assert_panic_dead_lettered_and_rest_delivered("panic-pool", 400, "map", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_panic_while_sending_a_batch_dead_letters_that_record_only() {
    assert_panic_dead_lettered_and_rest_delivered("panic-send", 40, "send", false).await;
}

/// A sink whose route is wrong (HTTP 404 from a gateway) holds: nothing is dead-lettered,
/// `lotbridge_sink_held` says so, and delivery resumes by itself once the route is fixed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wrong_route_holds_the_sink_without_dead_letters_and_recovers() {
    let kafka = Kafka::new();
    kafka.topic("held404", 2);
    let (toml, sim) = bzx(&kafka, "held404", &["P1", "P2"], "").await;
    sim.control.fail_next(1_000_000, Failure::Status(404));
    let records: Vec<(String, Vec<u8>)> = (0..60)
        .map(|i| {
            let lot = if i % 2 == 0 { "P1" } else { "P2" };
            (lot.to_string(), vehicle(&format!("e{i}"), lot, &format!("晋A{i:05}"), false))
        })
        .collect();
    kafka.produce_all("held404", &records).await;
    let engine = Running::start(common::load(&toml));
    let metrics = engine.metrics.clone();
    let held = || metrics.render().contains("lotbridge_sink_held{reason=\"route\",sink=\"bzx\"} 1");
    assert!(eventually(WAIT, || async { held() }).await, "held gauge set:\n{}", metrics.render());
    let refused = sim.control.requests().len();
    // Held: one probe at a time with backoff, not every lane hammering the wrong route.
    assert!(eventually(WAIT, || async { sim.control.requests().len() >= refused + 3 }).await);
    sim.control.clear_faults();
    assert!(
        eventually(WAIT, || async { plates(&sim).len() >= 60 }).await,
        "delivered after the fix: {}",
        plates(&sim).len()
    );
    assert!(eventually(WAIT, || async { !held() }).await, "held gauge cleared");
    engine.stop().await;
    assert!(kafka.read_all("held404.dlq").is_empty(), "a wrong route dead-letters nothing");
}

/// Bingzhouxing `1002` that persists after re-signing (a rotated token, a skewed clock) is
/// the sink's fault: held, not dead-lettered, and delivered once the vendor accepts again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_signature_refused_after_resigning_holds_the_sink_and_recovers() {
    let kafka = Kafka::new();
    kafka.topic("held1002", 1);
    let (toml, sim) = bzx(&kafka, "held1002", &["P1"], "").await;
    sim.control.fail_next(1_000_000, Failure::Code("1002".into()));
    let records: Vec<(String, Vec<u8>)> =
        (0..20).map(|i| ("P1".to_string(), vehicle(&format!("e{i}"), "P1", &format!("晋A{i:05}"), false))).collect();
    kafka.produce_all("held1002", &records).await;
    let engine = Running::start(common::load(&toml));
    let metrics = engine.metrics.clone();
    let held = || metrics.render().contains("lotbridge_sink_held{reason=\"signature\",sink=\"bzx\"} 1");
    assert!(eventually(WAIT, || async { held() }).await, "held for the signature:\n{}", metrics.render());
    let refused = sim.control.requests().len();
    assert!(eventually(WAIT, || async { sim.control.requests().len() >= refused + 2 }).await, "still probing");
    sim.control.clear_faults();
    assert!(eventually(WAIT, || async { plates(&sim).len() >= 20 }).await, "delivered: {}", plates(&sim).len());
    assert!(eventually(WAIT, || async { !held() }).await);
    engine.stop().await;
    assert!(kafka.read_all("held1002.dlq").is_empty(), "a refused signature dead-letters nothing");
}

/// A vehicle entry with a fixed time, so producing it again is the same passage to the
/// platform.
fn passage(id: &str, plate: &str, at: &str) -> Vec<u8> {
    let data = serde_json::json!({"plate": plate, "vehicle_type": "small", "gate": "East 1"});
    serde_json::json!({"v": 1, "id": id, "type": "vehicle.entered", "lot": "P1", "at": at, "data": data})
        .to_string()
        .into_bytes()
}

/// After a crash, a replay mixes records the platform has with new ones in one batch; a
/// strict platform answers `1004` for the whole batch and records none of it. The batch is
/// split until each `1004` covers one record, so the new records are delivered, not lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_mixed_batch_answered_1004_is_split_and_its_new_records_delivered() {
    let kafka = Kafka::new();
    kafka.topic("mixed1004", 1);
    let (toml, sim) = bzx(&kafka, "mixed1004", &["P1"], "").await;
    let old: Vec<(String, Vec<u8>)> = (0..10)
        .map(|i| {
            (
                "P1".to_string(),
                passage(&format!("o{i}"), &format!("晋A{i:05}"), &format!("2026-12-01T08:00:{i:02}+08:00")),
            )
        })
        .collect();
    kafka.produce_all("mixed1004", &old).await;
    let engine = Running::start(common::load(&toml));
    assert!(eventually(WAIT, || async { plates(&sim).len() >= 10 }).await);
    engine.stop().await;
    // The replay: the old passages again, interleaved with new ones, read as one backlog.
    let mut replay = Vec::new();
    for (i, again) in old.iter().enumerate() {
        replay.push(again.clone());
        let at = format!("2026-12-01T09:00:{i:02}+08:00");
        replay.push(("P1".to_string(), passage(&format!("n{i}"), &format!("晋B{i:05}"), &at)));
    }
    kafka.produce_all("mixed1004", &replay).await;
    let engine = Running::start(common::load(&toml));
    let new = || plates(&sim).into_iter().filter(|p| p.starts_with("晋B")).count();
    let all_new = eventually(WAIT, || async { new() >= 10 }).await;
    let group = "g-mixed1004.bzx";
    let committed = eventually(WAIT, || async { kafka.committed(group, "mixed1004", 1) == [30] }).await;
    engine.stop().await;
    let duplicates = sim.control.requests().iter().filter(|r| r.code.as_deref() == Some("1004")).count();
    assert!(all_new, "the new records of mixed batches are delivered: {} of 10 (1004 answers: {duplicates})", new());
    assert!(duplicates >= 1, "the platform did answer 1004 to a mixed batch");
    assert!(committed, "offsets to the end: {:?}", kafka.committed(group, "mixed1004", 1));
    assert!(kafka.read_all("mixed1004.dlq").is_empty());
}

/// The value of a gauge with the `sink="bzx"` label in a metrics rendering.
fn gauge(metrics: &lotbridge::metrics::Metrics, name: &str) -> i64 {
    let prefix = format!("lotbridge_{name}{{sink=\"bzx\"}} ");
    metrics.render().lines().find_map(|l| l.strip_prefix(&prefix).and_then(|v| v.parse().ok())).unwrap_or(-1)
}

fn spread(from: usize, to: usize) -> Vec<(String, Vec<u8>)> {
    (from..to)
        .map(|i| {
            let lot = format!("P{}", i % 8);
            (lot.clone(), vehicle(&format!("e{i}"), &lot, &format!("晋A{i:05}"), false))
        })
        .collect()
}

/// A second instance joins while the vendor is down and every partition of the first is
/// paused for the memory budget; the vendor recovers; the second leaves again. Partitions
/// come back to the first in the state its budget wants (librdkafka would keep their old
/// pause flag): none is left paused, nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partitions_moving_while_paused_for_the_budget_are_never_left_paused() {
    let kafka = Kafka::new();
    kafka.topic("rebal", 4);
    let lots = ["P0", "P1", "P2", "P3", "P4", "P5", "P6", "P7"];
    let (toml, sim) = bzx(&kafka, "rebal", &lots, "memory_budget_bytes = 1048576").await;
    sim.control.fail_next(1_000_000, Failure::Status(503));
    kafka.produce_all("rebal", &spread(0, 8000)).await;
    let a = Running::start(common::load(&toml));
    let am = a.metrics.clone();
    assert!(eventually(WAIT, || async { gauge(&am, "partitions_paused") == 4 }).await, "A paused all 4 partitions");
    let b = Running::start(common::load(&toml));
    let bm = b.metrics.clone();
    let split =
        eventually(WAIT, || async { gauge(&am, "partitions_assigned") == 2 && gauge(&bm, "partitions_assigned") == 2 })
            .await;
    assert!(split, "partitions split: A {} B {}", gauge(&am, "partitions_assigned"), gauge(&bm, "partitions_assigned"));
    // Gained while over its budget, B's partitions are paused, not read without limit.
    assert!(eventually(WAIT, || async { gauge(&bm, "partitions_paused") == 2 }).await, "B paused its partitions");
    sim.control.clear_faults();
    let delivered = || plates(&sim).into_iter().collect::<HashSet<_>>();
    assert!(eventually(WAIT, || async { delivered().len() >= 8000 }).await, "phase 1: {}", delivered().len());
    b.stop().await;
    assert!(eventually(WAIT, || async { gauge(&am, "partitions_assigned") == 4 }).await, "A owns all 4 again");
    kafka.produce_all("rebal", &spread(8000, 8800)).await;
    let all = eventually(WAIT, || async { delivered().len() >= 8800 }).await;
    let paused = gauge(&am, "partitions_paused");
    a.stop().await;
    assert!(all, "records on every partition delivered after the partitions came back: {} of 8800", delivered().len());
    assert_eq!(paused, 0, "no partition left paused");
    assert!(kafka.read_all("rebal.dlq").is_empty());
}

/// A 429 with `Retry-After: 2` pauses the whole sink: with one request in flight at a
/// time, no request reaches the vendor until two seconds after each 429.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_429_pauses_the_sink_for_its_retry_after() {
    let kafka = Kafka::new();
    kafka.topic("throttle", 1);
    let (toml, sim) = bzx(&kafka, "throttle", &["P1", "P2"], "concurrency = 1").await;
    sim.control.throttle_next(2, 2);
    let records = spread_over(&["P1", "P2"], 40);
    kafka.produce_all("throttle", &records).await;
    let engine = Running::start(common::load(&toml));
    assert!(eventually(WAIT, || async { plates(&sim).len() >= 40 }).await, "delivered: {}", plates(&sim).len());
    engine.stop().await;
    let log = sim.control.requests();
    let throttled: Vec<usize> = (0..log.len()).filter(|&i| log[i].status == 429).collect();
    assert_eq!(throttled.len(), 2);
    for i in throttled {
        let next = log.get(i + 1).expect("a request after the 429");
        let waited = next.at_ms - log[i].at_ms;
        assert!(waited >= 1900, "the request after a 429 came {waited} ms later, before Retry-After (2 s)");
    }
}

/// Bingzhouxing `1002` twice, then accepted: each retry carries a new `ts` and `auth`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_retry_after_1002_is_stamped_and_signed_anew() {
    let kafka = Kafka::new();
    kafka.topic("resign", 1);
    let (toml, sim) = bzx(&kafka, "resign", &["P1"], "").await;
    sim.control.fail_next(2, Failure::Code("1002".into()));
    kafka.produce("resign", "P1", &vehicle("e1", "P1", "晋A00001", false)).await;
    let engine = Running::start(common::load(&toml));
    assert!(eventually(WAIT, || async { plates(&sim).len() == 1 }).await);
    engine.stop().await;
    let envelopes = sim.control.envelopes();
    assert!(envelopes.len() >= 3, "{envelopes:?}");
    let distinct: HashSet<&String> = envelopes.iter().collect();
    assert_eq!(distinct.len(), envelopes.len(), "no two attempts share a ts and auth: {envelopes:?}");
    let stamps: HashSet<&str> = envelopes.iter().filter_map(|e| e.split(',').next()).collect();
    assert_eq!(stamps.len(), envelopes.len(), "every attempt has its own ts: {envelopes:?}");
}

fn spread_over(lots: &[&str], n: usize) -> Vec<(String, Vec<u8>)> {
    (0..n)
        .map(|i| {
            let lot = lots[i % lots.len()];
            (lot.to_string(), vehicle(&format!("e{i}"), lot, &format!("晋A{i:05}"), false))
        })
        .collect()
}

/// Records of other lots finished behind a stuck one cannot be committed (Kafka keeps one
/// offset per partition); the map committed with the offset names them, so the next reader
/// of the partition (here the same configuration restarted) sends only the stuck record.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn records_finished_behind_a_stuck_one_are_not_sent_again_after_a_restart() {
    let kafka = Kafka::new();
    kafka.topic("ahead", 1);
    let lots = ["STUCK", "P1", "P2", "P3", "P4"];
    let (toml, sim) = bzx(&kafka, "ahead", &lots, "").await;
    let mut records = vec![("STUCK".to_string(), vehicle("s0", "STUCK", "晋S00000", false))];
    records.extend(spread_over(&lots[1..], 200));
    kafka.produce_all("ahead", &records).await;
    let stuck = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let start = |stuck: &Arc<std::sync::atomic::AtomicBool>| {
        let mut loaded = common::load(&toml);
        for sink in &mut loaded.sinks {
            sink.adapter = Arc::new(PanicOn { inner: sink.adapter.clone(), stuck: Some(stuck.clone()) });
        }
        Running::start(loaded)
    };
    let first = start(&stuck);
    assert!(eventually(WAIT, || async { plates(&sim).len() >= 200 }).await, "the other lots delivered");
    first.stop().await;
    assert_eq!(kafka.committed("g-ahead.bzx", "ahead", 1), [0], "the stuck record holds the offset");
    let sent_before = sim.control.requests().len();
    stuck.store(false, std::sync::atomic::Ordering::Relaxed);
    let second = start(&stuck);
    let m = second.metrics.clone();
    assert!(eventually(WAIT, || async { plates(&sim).contains(&"晋S00000".to_string()) }).await, "the stuck one");
    let all_finished = eventually(WAIT, || async { kafka.committed("g-ahead.bzx", "ahead", 1) == [201] }).await;
    let skipped = m.skipped.with_label_values(&["bzx", "finished_before"]).get();
    second.stop().await;
    assert!(all_finished, "committed {:?}", kafka.committed("g-ahead.bzx", "ahead", 1));
    let again: usize =
        sim.control.requests()[sent_before..].iter().filter(|r| r.endpoint == "carInOut").map(|r| r.records).sum();
    assert_eq!(again, 1, "after the restart only the stuck record was sent ({skipped} skipped as finished before)");
    assert_eq!(skipped, 200);
    assert!(kafka.read_all("ahead.dlq").is_empty());
}

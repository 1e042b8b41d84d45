//! The delivery engine end to end: events produced to librdkafka's mock cluster, the real
//! engine, and the vendor simulators on 127.0.0.1.

mod common;

use common::{eventually, header, vehicle, Kafka, Running};
use lotbridge::sim::{Failure, SimServer};
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

/// A configuration with one Bingzhouxing sink per `(name, lots)`, each against its own
/// simulator; returns the config text and the simulators by sink name.
async fn bzx_setup(
    kafka: &Kafka,
    topic: &str,
    sinks: &[(&str, &[&str])],
    extra: &str,
) -> (String, HashMap<String, SimServer>) {
    let mut toml = common::kafka_section(kafka, topic);
    let mut sims = HashMap::new();
    for (name, lots) in sinks {
        let (sink, server) = common::bzx_sink(&toml, name, lots, extra).await;
        toml.push_str(&sink);
        sims.insert(name.to_string(), server);
    }
    (toml, sims)
}

/// Plates of the carInOut records a simulator accepted, in arrival order.
fn plates(server: &SimServer) -> Vec<String> {
    server
        .control
        .records_for("carInOut")
        .iter()
        .map(|r| r.record["carNo"].as_str().unwrap_or("").to_string())
        .collect()
}

fn plate(i: usize) -> String {
    format!("晋A{i:05}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_in_out_events_arrive_in_order_in_batches_of_at_most_100() {
    let kafka = Kafka::new();
    kafka.topic("t1", 3);
    let (toml, sims) = bzx_setup(&kafka, "t1", &[("bzx", &["P1"])], "").await;
    let records: Vec<(String, Vec<u8>)> =
        (0..1000).map(|i| ("P1".to_string(), vehicle(&format!("e{i}"), "P1", &plate(i), i % 2 == 1))).collect();
    kafka.produce_all("t1", &records).await;
    let engine = Running::start(common::load(&toml));
    let sim = &sims["bzx"];
    assert!(eventually(WAIT, || async { plates(sim).len() >= 1000 }).await, "delivered {}", plates(sim).len());
    engine.stop().await;
    let got = plates(sim);
    let want: Vec<String> = (0..1000).map(plate).collect();
    assert_eq!(got, want, "every record once, in produced order");
    let requests: Vec<_> = sim.control.requests().into_iter().filter(|r| r.endpoint == "carInOut").collect();
    assert!(requests.iter().all(|r| r.records <= 100), "batches over 100");
    assert!(requests.len() < 100, "records were batched: {} requests", requests.len());
    let committed: i64 = kafka.committed("g-t1.bzx", "t1", 3).iter().map(|o| o.max(&0)).sum();
    assert_eq!(committed, 1000, "offsets committed past every delivered record");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn order_per_lot_survives_vendor_failures_and_other_lots_flow() {
    let kafka = Kafka::new();
    kafka.topic("t2", 2);
    let (toml, sims) = bzx_setup(&kafka, "t2", &[("bzx", &["A", "B", "C"])], "").await;
    let sim = &sims["bzx"];
    sim.control.fail_next(6, Failure::Status(500));
    sim.control.fail_next(3, Failure::Code("2000".into()));
    let records: Vec<(String, Vec<u8>)> = (0..600)
        .map(|i| {
            let lot = ["A", "B", "C"][i % 3];
            (lot.to_string(), vehicle(&format!("e{i}"), lot, &plate(i), (i / 3) % 2 == 1))
        })
        .collect();
    let engine = Running::start(common::load(&toml));
    kafka.produce_all("t2", &records).await;
    assert!(eventually(WAIT, || async { plates(sim).len() >= 600 }).await, "delivered {}", plates(sim).len());
    engine.stop().await;
    let got = plates(sim);
    let unique: HashSet<&String> = got.iter().collect();
    assert_eq!(unique.len(), 600, "nothing lost");
    for lot in 0..3 {
        let mine: Vec<usize> = got
            .iter()
            .map(|p| p.trim_start_matches(|c: char| !c.is_ascii_digit()).parse::<usize>().unwrap())
            .filter(|i| i % 3 == lot)
            .collect();
        let mut sorted = mine.clone();
        sorted.sort();
        sorted.dedup();
        let firsts: Vec<usize> = dedup_keep_first(&mine);
        assert_eq!(firsts, sorted, "lot {lot} out of order");
    }
    assert!(engine_retries(&sims["bzx"]) >= 9, "the failures were answered");
}

fn dedup_keep_first(v: &[usize]) -> Vec<usize> {
    let mut seen = HashSet::new();
    v.iter().copied().filter(|x| seen.insert(*x)).collect()
}

fn engine_retries(sim: &SimServer) -> usize {
    sim.control
        .requests()
        .iter()
        .filter(|r| r.status != 200 || r.code.as_deref().is_some_and(|c| c != "0" && c != "200"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invalid_events_and_permanent_errors_are_dead_lettered_and_consumption_goes_on() {
    let kafka = Kafka::new();
    kafka.topic("t3", 1);
    kafka.topic("t3.dlq", 1);
    let (toml, sims) = bzx_setup(&kafka, "t3", &[("bzx", &["P1", "P2"])], "").await;
    let sim = &sims["bzx"];
    kafka.produce("t3", "P1", b"{not json").await;
    kafka.produce("t3", "P1", &common::event("bad", "spaces.changed", "P1", json!({"total": 5, "free": 9}))).await;
    kafka.produce("t3", "P1", &vehicle("ok1", "P1", &plate(1), false)).await;
    kafka.produce("t3", "P9", &vehicle("unbound", "P9", &plate(9), false)).await;
    kafka.produce("t3", "P1", &vehicle("ok2", "P1", &plate(2), true)).await;
    let engine = Running::start(common::load(&toml));
    assert!(eventually(WAIT, || async { plates(sim).len() >= 2 }).await);
    assert!(eventually(WAIT, || async { kafka.read_all("t3.dlq").len() >= 2 }).await, "two dead letters");
    // A permanent vendor error: the platform does not know the lot (code 1000).
    sim.control.fail_next(1, Failure::Code("1000".into()));
    kafka.produce("t3", "P2", &vehicle("refused", "P2", &plate(3), false)).await;
    assert!(eventually(WAIT, || async { kafka.read_all("t3.dlq").len() >= 3 }).await, "three dead letters");
    kafka.produce("t3", "P2", &vehicle("after", "P2", &plate(4), false)).await;
    assert!(eventually(WAIT, || async { plates(sim).contains(&plate(4)) }).await, "consumption went on");
    engine.stop().await;
    let dlq = kafka.read_all("t3.dlq");
    let by_offset = |o: &str| dlq.iter().find(|m| header(m, "lotbridge.original.offset").as_deref() == Some(o));
    let stages: Vec<Option<String>> =
        ["0", "1", "5"].iter().map(|o| by_offset(o).and_then(|m| header(m, "lotbridge.stage"))).collect();
    assert_eq!(stages, [Some("decode".into()), Some("decode".into()), Some("deliver".into())]);
    let free = dlq.iter().find(|m| header(m, "lotbridge.original.offset").as_deref() == Some("1")).expect("offset 1");
    assert!(header(free, "lotbridge.error").unwrap().contains("data.free"), "the reason names the field");
    assert_eq!(header(free, "lotbridge.sink").as_deref(), Some("bzx"));
    assert_eq!(header(free, "lotbridge.original.topic").as_deref(), Some("t3"));
    use rdkafka::Message;
    assert_eq!(free.key(), Some(&b"P1"[..]));
    assert_eq!(by_offset("0").unwrap().payload(), Some(&b"{not json"[..]), "the original bytes");
    let refused = by_offset("5").unwrap();
    assert!(header(refused, "lotbridge.error").unwrap().contains("1000"));
    assert_eq!(kafka.committed("g-t3.bzx", "t3", 1), vec![7], "every record has an outcome");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crash_and_restart_lose_nothing() {
    let kafka = Kafka::new();
    kafka.topic("t4", 4);
    let lots: Vec<String> = (0..20).map(|i| format!("L{i}")).collect();
    let lot_refs: Vec<&str> = lots.iter().map(String::as_str).collect();
    let (toml, sims) = bzx_setup(&kafka, "t4", &[("bzx", &lot_refs)], "").await;
    let sim = &sims["bzx"];
    let records: Vec<(String, Vec<u8>)> = (0..2000)
        .map(|i| {
            let lot = &lots[i % 20];
            (lot.clone(), vehicle(&format!("e{i}"), lot, &plate(i), false))
        })
        .collect();
    kafka.produce_all("t4", &records).await;
    // Small batches, each answered after 200 ms: the first instance is far from done
    // when it crashes.
    sim.control.set_latency(Duration::from_millis(200));
    sim.control.fail_next(10, Failure::Status(503));
    let small = toml.replace("linger_ms = 5\n", "linger_ms = 5\nmax_records = 10\n");
    // No periodic commit before the crash: whatever the group holds afterwards was
    // committed by the way the first instance died.
    let toml = small.replace("commit_interval_ms = 200", "commit_interval_ms = 600000");
    let first = common::Process::run(&toml);
    assert!(eventually(WAIT, || async { plates(sim).len() >= 500 }).await);
    first.crash();
    let at_crash = plates(sim).len();
    assert!(at_crash < 2000, "the crash came before the first instance was done: {at_crash} delivered");
    let committed = kafka.committed("g-t4.bzx", "t4", 4);
    assert!(committed.iter().all(|o| *o < 0), "a crash commits nothing, yet the group holds {committed:?}");
    let before = sim.control.requests().len();
    sim.control.set_latency(Duration::ZERO);
    let second = Running::start(common::load(&small));
    let done = eventually(WAIT, || async { kafka.committed("g-t4.bzx", "t4", 4).iter().sum::<i64>() == 2000 }).await;
    second.stop().await;
    assert!(done, "the second instance finished every record: {:?}", kafka.committed("g-t4.bzx", "t4", 4));
    let got: HashSet<String> = plates(sim).into_iter().collect();
    assert_eq!(got.len(), 2000, "every event reached the vendor at least once");
    // Nothing was committed, so the second instance sent again what the first had: the
    // strict simulator answered those 1004 (already recorded) and kept one copy.
    let replayed = sim.control.requests()[before..].iter().filter(|r| r.code.as_deref() == Some("1004")).count();
    assert!(replayed > 0, "the records delivered before the crash were sent again after it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_sink_down_does_not_hold_back_another() {
    let kafka = Kafka::new();
    kafka.topic("t5", 2);
    let (toml, sims) = bzx_setup(&kafka, "t5", &[("down", &["P1", "P2"]), ("up", &["P1", "P2"])], "").await;
    sims["down"].control.refuse_for(Duration::from_secs(3600));
    let engine = Running::start(common::load(&toml));
    let records: Vec<(String, Vec<u8>)> = (0..300)
        .map(|i| {
            let lot = if i % 2 == 0 { "P1" } else { "P2" };
            (lot.to_string(), vehicle(&format!("e{i}"), lot, &plate(i), false))
        })
        .collect();
    kafka.produce_all("t5", &records).await;
    assert!(eventually(WAIT, || async { plates(&sims["up"]).len() >= 300 }).await, "the healthy sink delivered all");
    assert!(plates(&sims["down"]).is_empty());
    // The down sink joins its own consumer group and may not have tried yet when the
    // healthy one is done: wait for its attempts, not for its timing.
    let retries = || engine.metrics.count(&engine.metrics.retries, &["down", "transport"]);
    assert!(eventually(WAIT, || async { retries() > 0 }).await, "the down sink kept retrying");
    assert!(plates(&sims["down"]).is_empty());
    engine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn space_counts_coalesce_while_the_vendor_is_down() {
    let kafka = Kafka::new();
    kafka.topic("t6", 1);
    let (toml, sims) = bzx_setup(&kafka, "t6", &[("bzx", &["P1"])], "").await;
    let sim = &sims["bzx"];
    sim.control.refuse_for(Duration::from_secs(4));
    let engine = Running::start(common::load(&toml));
    let records: Vec<(String, Vec<u8>)> = (0..1000)
        .map(|i| {
            (
                "P1".to_string(),
                common::event(&format!("s{i}"), "spaces.changed", "P1", json!({"total": 2000, "free": i})),
            )
        })
        .collect();
    kafka.produce_all("t6", &records).await;
    let last = || sim.control.records_for("parkSpace").last().map(|r| r.record["surplusSpace"].clone());
    assert!(eventually(WAIT, || async { last() == Some(json!(999)) }).await, "the latest value arrived");
    engine.stop().await;
    let sent = sim.control.records_for("parkSpace").len();
    assert!(sent <= 10, "1,000 updates became {sent} requests");
    assert_eq!(kafka.committed("g-t6.bzx", "t6", 1), vec![1000]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_share_the_partitions_and_one_finishes_when_the_other_stops() {
    let kafka = Kafka::new();
    kafka.topic("t7", 4);
    let lots: Vec<String> = (0..8).map(|i| format!("L{i}")).collect();
    let lot_refs: Vec<&str> = lots.iter().map(String::as_str).collect();
    let (toml, sims) = bzx_setup(&kafka, "t7", &[("bzx", &lot_refs)], "").await;
    let sim = &sims["bzx"];
    let a = Running::start(common::load(&toml));
    let b = Running::start(common::load(&toml));
    let assigned = |r: &Running| r.metrics.assigned_partitions.with_label_values(&["bzx"]).get() > 0;
    assert!(eventually(WAIT, || async { assigned(&a) && assigned(&b) }).await, "the group split the partitions");
    let records: Vec<(String, Vec<u8>)> = (0..1600)
        .map(|i| {
            let lot = &lots[i % 8];
            (lot.clone(), vehicle(&format!("e{i}"), lot, &plate(i), false))
        })
        .collect();
    sim.control.set_latency(Duration::from_millis(10));
    kafka.produce_all("t7", &records[..800]).await;
    assert!(eventually(WAIT, || async { plates(sim).len() >= 200 }).await);
    // Each reads its partitions' share; one may finish 200 deliveries before the other's first fetch returns.
    let consumed = |r: &Running| r.metrics.count(&r.metrics.consumed, &["bzx", "t7"]) > 0;
    let both = eventually(WAIT, || async { consumed(&a) && consumed(&b) }).await;
    a.stop().await;
    kafka.produce_all("t7", &records[800..]).await;
    sim.control.set_latency(Duration::ZERO);
    assert!(eventually(WAIT, || async { plates(sim).iter().collect::<HashSet<_>>().len() >= 1600 }).await);
    b.stop().await;
    assert!(both, "both instances consumed a share");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn heartbeats_go_to_live_lots_at_most_once_a_minute() {
    let kafka = Kafka::new();
    kafka.topic("t8", 1);
    let extra = "heartbeat_secs = 1\nheartbeat_lots = \"live\"";
    let (toml, sims) = bzx_setup(&kafka, "t8", &[("bzx", &["LIVE", "SILENT"])], extra).await;
    let sim = &sims["bzx"];
    let engine = Running::start(common::load(&toml));
    kafka.produce("t8", "LIVE", &vehicle("e1", "LIVE", &plate(1), false)).await;
    let beats = || sim.control.records_for("heartbeat");
    assert!(eventually(WAIT, || async { !beats().is_empty() }).await, "the live lot gets heartbeats");
    tokio::time::sleep(Duration::from_secs(4)).await;
    engine.stop().await;
    let lots: Vec<String> = beats().iter().map(|r| r.lot.clone()).collect();
    assert_eq!(lots, ["350"], "one per minute, and none for a lot that sent nothing: {lots:?}");
    assert_eq!(engine_heartbeats(sim), 1);
}

fn engine_heartbeats(sim: &SimServer) -> usize {
    sim.control.requests().iter().filter(|r| r.endpoint == "heartbeat").count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_stays_within_the_budget_while_the_vendor_is_down() {
    let kafka = Kafka::new();
    kafka.topic("t9", 1);
    let (toml, sims) = bzx_setup(&kafka, "t9", &[("bzx", &["P1"])], "memory_budget_bytes = 1048576").await;
    let sim = &sims["bzx"];
    sim.control.refuse_for(Duration::from_secs(8));
    let photo = format!("/9j/{}", "B".repeat(30_000));
    // 100 × 30 KB: within what the mock broker retains per partition (about 5 MiB).
    let records: Vec<(String, Vec<u8>)> = (0..100)
        .map(|i| {
            let data =
                json!({"plate": plate(i), "vehicle_type": "small", "gate": "E", "photo": {"jpeg_base64": photo}});
            ("P1".to_string(), common::event(&format!("e{i}"), "vehicle.entered", "P1", data))
        })
        .collect();
    let engine = Running::start(common::load(&toml));
    let m = engine.metrics.clone();
    // Held bytes sampled every 2 ms from before the first record until every record is
    // delivered, not once.
    let held = m.held_bytes.with_label_values(&["bzx"]);
    let (most, samples) = (Arc::new(AtomicI64::new(0)), Arc::new(AtomicI64::new(0)));
    let sampler = tokio::spawn({
        let (most, samples) = (most.clone(), samples.clone());
        async move {
            loop {
                most.fetch_max(held.get(), Ordering::Relaxed);
                samples.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    });
    kafka.produce_all("t9", &records).await;
    let paused = || m.paused_partitions.with_label_values(&["bzx"]).get();
    assert!(eventually(WAIT, || async { paused() > 0 }).await, "partitions paused when the budget filled");
    let ok = eventually(WAIT, || async { plates(sim).len() >= 100 }).await;
    assert!(
        ok,
        "all delivered once the vendor is back: {} (last {:?}) held {} paused {}",
        plates(sim).len(),
        plates(sim).last(),
        m.held_bytes.with_label_values(&["bzx"]).get(),
        paused()
    );
    assert!(eventually(WAIT, || async { paused() == 0 }).await, "resumed");
    sampler.abort();
    engine.stop().await;
    assert_eq!(plates(sim), (0..100).map(plate).collect::<Vec<_>>(), "each once, in order, after pause and resume");
    // Over the budget, reading stops after the batch that crossed it; at most
    // `DECODE_AHEAD` (4) batches of at most 64 KiB plus the record that filled each
    // (`intake.rs`) were read before that, and each record read is held twice: as read
    // (for a dead letter) and as mapped (its photo is sent unchanged).
    let largest = records.iter().map(|(_, r)| r.len()).max().unwrap_or(0);
    let bound = 1024 * 1024 + 4 * 2 * (64 * 1024 + largest);
    let (most, samples) = (most.load(Ordering::Relaxed), samples.load(Ordering::Relaxed));
    assert!(samples > 100, "{samples} samples");
    assert!(most as usize <= bound, "held up to {most} bytes for a 1 MiB budget (bound {bound}; {samples} samples)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replayed_dead_letter_goes_only_to_its_sink() {
    let kafka = Kafka::new();
    kafka.topic("t10", 1);
    let (toml, sims) = bzx_setup(&kafka, "t10", &[("a", &["P1"]), ("b", &["P1"])], "").await;
    let engine = Running::start(common::load(&toml));
    let replay = (lotbridge::dlq::headers::REPLAY_SINK, "b");
    kafka.produce_with_header("t10", "P1", &vehicle("r1", "P1", &plate(1), false), replay).await;
    kafka.produce("t10", "P1", &vehicle("n1", "P1", &plate(2), false)).await;
    assert!(eventually(WAIT, || async { plates(&sims["b"]).len() >= 2 && !plates(&sims["a"]).is_empty() }).await);
    engine.stop().await;
    assert_eq!(plates(&sims["a"]), [plate(2)], "sink a skips a record replayed for b");
    assert_eq!(plates(&sims["b"]), [plate(1), plate(2)]);
    assert_eq!(kafka.committed("g-t10.a", "t10", 1), vec![2], "the skip is a final outcome");
}

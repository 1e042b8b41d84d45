//! System tests: lotbridge as a separate process against a standalone Kafka-protocol broker
//! (Tansu in CI), with the vendors simulated in this process. They show that nothing is
//! lost when lotbridge is killed, the broker restarts, vendors fail in every way the specs
//! allow, bad records arrive or instances join and leave; that no secret leaks; and that a
//! SASL_SSL cluster (Tansu with SCRAM behind stunnel, `secure.rs`) is reached, with a wrong
//! CA or password failing loudly.
//!
//! They need a broker: `scripts/ci-system-tests.sh` starts one and runs them with
//! `--ignored`. Under a plain `cargo test` they are listed as ignored; run with
//! `--ignored` but without `LOTBRIDGE_SYSTEM_BROKER`, each says SKIPPED and returns.

mod faults;
mod harness;
mod secure;
mod soak;

#[path = "../common/corpus.rs"]
#[allow(dead_code)]
mod corpus;

use harness::{
    assert_no_secrets, broker, header, metric, plates, report, wait_delivered, City, Cluster, Received, Scenario,
    SinkTuning,
};
use rand::Rng;
use std::time::{Duration, Instant};

/// Asserts both sinks hold every plate, in order per lot; returns (duplicates bzx, isp).
fn check_complete(scenario: &Scenario, expected: &[String]) -> (usize, usize) {
    let bzx = Received::bingzhouxing(scenario.sim("bzx"));
    let isp = Received::isp(scenario.sim("isp"));
    for (name, got) in [("bzx", &bzx), ("isp", &isp)] {
        let lost = got.lost(expected);
        assert!(lost.is_empty(), "{name} lost {} events, e.g. {:?}", lost.len(), &lost[..lost.len().min(5)]);
        let disorder = got.order_violations();
        assert!(disorder.is_empty(), "{name} got lots out of order: {:?}", &disorder[..disorder.len().min(5)]);
    }
    (bzx.duplicates(), isp.duplicates())
}

fn percent(part: usize, whole: usize) -> String {
    format!("{:.2}%", 100.0 * part as f64 / whole.max(1) as f64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs a standalone broker: run scripts/ci-system-tests.sh"]
async fn five_sigkills_during_100k_events_lose_nothing() {
    let Some(brokers) = broker("five_sigkills_during_100k_events_lose_nothing") else { return };
    let cluster = Cluster::new(&brokers);
    // 100 000 events across 50 lots by default; LOTBRIDGE_CRASH_LOTS and
    // LOTBRIDGE_CRASH_PER_LOT make a quicker run.
    let env = |name: &str, default: usize| std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    let city = City::new(env("LOTBRIDGE_CRASH_LOTS", 50));
    let per_lot = env("LOTBRIDGE_CRASH_PER_LOT", 2_000);
    // Static membership, as a StatefulSet pod would use: the restarted process takes the
    // killed one's place at once (Tansu never expires a dead member; Kafka would after the
    // session timeout, stalling its partitions that long).
    let tuning = SinkTuning { static_member: Some("lotbridge-0".into()), ..Default::default() };
    let mut scenario = Scenario::new(&cluster, "crash", &city, 8, &tuning).await;
    let records = city.vehicles(per_lot, 0);
    let expected = plates(&city, per_lot, 0);
    let started = Instant::now();
    let producing = {
        let (cluster, topic) = (Cluster::new(&brokers), scenario.topic.clone());
        tokio::spawn(async move { cluster.produce(&topic, &records, 1_500).await })
    };
    let mut scrapes = Vec::new();
    let mut instance = scenario.start().await;
    let mut kill_moments = Vec::new();
    let mut exposure = Vec::new();
    for _ in 0..5 {
        // Each kill lands while the instance is consuming: once it owns partitions, at a
        // random moment within the next 1 to 8 s.
        let owning = Instant::now() + Duration::from_secs(180);
        loop {
            let text = instance.scrape().await;
            if metric(&text, "lotbridge_partitions_assigned", &[("sink", "bzx")]) > 0.0
                && metric(&text, "lotbridge_partitions_assigned", &[("sink", "isp")]) > 0.0
            {
                break;
            }
            assert!(Instant::now() < owning, "the restarted instance got partitions within 180 s");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let after = Duration::from_millis(rand::thread_rng().gen_range(1_000..8_000));
        tokio::time::sleep(after).await;
        let text = instance.scrape().await;
        // What the instance says a crash now would deliver again, per sink.
        let exposed = |sink| metric(&text, "lotbridge_finished_uncommitted_records", &[("sink", sink)]);
        exposure.push(format!("{}/{}", exposed("bzx"), exposed("isp")));
        scrapes.push(text);
        kill_moments.push(format!("{:.1}s", started.elapsed().as_secs_f64()));
        scrapes.extend(instance.kill());
        instance = scenario.start().await;
    }
    producing.await.expect("producer");
    let produced_in = started.elapsed();
    assert!(wait_delivered(&scenario, &expected, Duration::from_secs(600)).await, "every event reached both sinks");
    scrapes.push(instance.scrape().await);
    scrapes.extend(instance.terminate());
    let (dup_bzx, dup_isp) = check_complete(&scenario, &expected);
    let dead = cluster.read_all(&format!("{}.dlq", scenario.topic));
    assert!(
        dead.is_empty(),
        "no dead letters for valid events: {:?}",
        dead.iter().map(|m| header(m, "lotbridge.error")).collect::<Vec<_>>()
    );
    assert_no_secrets(&scenario, &scrapes, &dead);
    report(
        "crash",
        &[
            ("events", expected.len().to_string()),
            ("lots", city.lots.len().to_string()),
            ("sigkills", kill_moments.join(",")),
            ("finished_uncommitted_at_kills_bzx/isp", exposure.join(",")),
            ("produced_in", format!("{:.1}s", produced_in.as_secs_f64())),
            ("all_delivered_in", format!("{:.1}s", started.elapsed().as_secs_f64())),
            ("lost", "0".into()),
            ("duplicates_bzx", format!("{dup_bzx} ({})", percent(dup_bzx, expected.len()))),
            ("duplicates_isp", format!("{dup_isp} ({})", percent(dup_isp, expected.len()))),
        ],
    );
    // Duplicates are what was delivered but not yet committed when a kill landed (the
    // instance's `lotbridge_finished_uncommitted_records` just before each kill, reported
    // above, predicts them): reported, not asserted tightly, since they depend on how far
    // the broker's commits lag. Measured here 0.6-11 % (Bingzhouxing) and 0.05-5 % (ISP).
    // This bound catches a regression such as re-reading from the start after a restart
    // (that would re-deliver well over 100 % across five kills).
    assert!(dup_bzx * 4 <= expected.len() && dup_isp * 4 <= expected.len(), "duplicates stay under 25 %");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs a standalone broker: run scripts/ci-system-tests.sh"]
async fn a_broker_restart_mid_run_loses_nothing() {
    let Some(brokers) = broker("a_broker_restart_mid_run_loses_nothing") else { return };
    let cluster = Cluster::new(&brokers);
    let city = City::new(20);
    let per_lot = 500;
    let mut scenario = Scenario::new(&cluster, "restart", &city, 4, &SinkTuning::default()).await;
    // The first half is in Kafka and being delivered when the broker goes away; the second
    // half is produced once it is back (the test's own producer would otherwise have to
    // re-send, and could reorder, what the stopping broker refused).
    let half = per_lot / 2;
    let expected = plates(&city, per_lot, 0);
    let started = Instant::now();
    cluster.produce(&scenario.topic, &city.vehicles(half, 0), 0).await;
    let mut instance = scenario.start().await;
    let under_way = Instant::now() + Duration::from_secs(60);
    while Received::isp(scenario.sim("isp")).distinct().len() < 500 && Instant::now() < under_way {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let before = Received::isp(scenario.sim("isp")).distinct().len();
    harness::broker_ctl("stop");
    let down_at = started.elapsed();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(instance.alive(), "lotbridge survives the broker going away");
    harness::broker_ctl("start");
    cluster.produce(&scenario.topic, &city.vehicles(per_lot - half, half), 0).await;
    assert!(wait_delivered(&scenario, &expected, Duration::from_secs(300)).await, "every event reached both sinks");
    let scrape = instance.scrape().await;
    assert!(instance.alive(), "lotbridge never exited");
    let scrapes = instance.terminate();
    let (dup_bzx, dup_isp) = check_complete(&scenario, &expected);
    let dead = cluster.read_all(&format!("{}.dlq", scenario.topic));
    assert!(dead.is_empty(), "no dead letters");
    assert_no_secrets(&scenario, &scrapes, &dead);
    assert_eq!(metric(&scrape, "lotbridge_consumer_group_joined", &[("sink", "bzx")]), 1.0, "rejoined its group");
    report(
        "broker_restart",
        &[
            ("events", expected.len().to_string()),
            ("broker_down_at", format!("{:.1}s", down_at.as_secs_f64())),
            ("broker_down_for", "5s".into()),
            ("delivered_to_isp_before", before.to_string()),
            ("all_delivered_in", format!("{:.1}s", started.elapsed().as_secs_f64())),
            ("lost", "0".into()),
            ("duplicates_bzx", dup_bzx.to_string()),
            ("duplicates_isp", dup_isp.to_string()),
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs a standalone broker: run scripts/ci-system-tests.sh"]
async fn hostile_records_go_to_the_dead_letter_topic_and_consumption_goes_on() {
    let Some(brokers) = broker("hostile_records_go_to_the_dead_letter_topic_and_consumption_goes_on") else { return };
    let cluster = Cluster::new(&brokers);
    let city = City::new(5);
    let mut scenario = Scenario::new(&cluster, "hostile", &city, 2, &SinkTuning::default()).await;
    // Tansu 0.6 never serves a record of more than about 5 MB to a consumer (measured:
    // 4 MB arrives, 6 MB never does), so the largest generated records stay out here; the
    // decoder tests and the mock-cluster test cover them (see RELIABILITY.md).
    let (hostile, too_big): (Vec<_>, Vec<_>) = corpus::load().into_iter().partition(|h| h.bytes.len() <= 4 << 20);
    assert!(hostile.len() >= 50, "the corpus holds at least 50 records, got {}", hostile.len());
    // Valid passages before, between and after the hostile ones, all on partition keys
    // shared with them, so a stall anywhere would hold valid events back.
    let mut records = city.vehicles(4, 0);
    let mut seq = 4;
    for (i, h) in hostile.iter().enumerate() {
        let lot = &city.lots[i % city.lots.len()];
        records.push((lot.clone(), h.bytes.clone()));
        if i % 10 == 9 {
            records.extend(city.vehicles(1, seq));
            seq += 1;
        }
    }
    records.extend(city.vehicles(4, seq));
    let expected = plates(&city, seq + 4, 0);
    let mut instance = scenario.start().await;
    cluster.produce(&scenario.topic, &records, 0).await;
    assert!(wait_delivered(&scenario, &expected, Duration::from_secs(180)).await, "valid events all delivered");
    let dlq_topic = format!("{}.dlq", scenario.topic);
    let wanted = hostile.len() * 2; // one dead letter per sink
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut dead = cluster.read_all(&dlq_topic);
    while dead.len() < wanted && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(1)).await;
        dead = cluster.read_all(&dlq_topic);
    }
    assert!(instance.alive(), "no crash");
    let scrape = instance.scrape().await;
    let scrapes = instance.terminate();
    assert_eq!(dead.len(), wanted, "every hostile record dead-lettered once per sink");
    for m in &dead {
        let reason = header(m, "lotbridge.error").unwrap_or_default();
        assert!(!reason.is_empty(), "a dead letter without a reason");
        assert_eq!(header(m, "lotbridge.stage").as_deref(), Some("decode"), "rejected when decoded: {reason}");
    }
    check_complete(&scenario, &expected);
    assert_no_secrets(&scenario, &scrapes, &dead);
    let invalid = metric(&scrape, "lotbridge_records_invalid_total", &[("stage", "decode")]);
    report(
        "hostile",
        &[
            ("hostile_records", hostile.len().to_string()),
            ("left_out_over_4MiB", too_big.len().to_string()),
            ("dead_letters", dead.len().to_string()),
            ("valid_events_delivered", expected.len().to_string()),
            ("invalid_metric", invalid.to_string()),
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs a standalone broker: run scripts/ci-system-tests.sh"]
async fn a_second_instance_joining_and_leaving_under_load_loses_nothing() {
    let Some(brokers) = broker("a_second_instance_joining_and_leaving_under_load_loses_nothing") else { return };
    let cluster = Cluster::new(&brokers);
    let city = City::new(16);
    let per_lot = 400;
    let tuning = SinkTuning { bzx: "heartbeat_secs = 1".into(), ..Default::default() };
    let mut scenario = Scenario::new(&cluster, "rebalance", &city, 8, &tuning).await;
    let records = city.vehicles(per_lot, 0);
    let expected = plates(&city, per_lot, 0);
    let producing = {
        let (cluster, topic) = (Cluster::new(&brokers), scenario.topic.clone());
        tokio::spawn(async move { cluster.produce(&topic, &records, 250).await })
    };
    let mut first = scenario.start().await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut second = scenario.start().await;
    // Both own partitions: each heartbeats only the lots of its own partitions.
    let lots = city.lots.len() as f64;
    let owned = |t: &str| metric(t, "lotbridge_partitions_assigned", &[("sink", "bzx")]);
    let live = |t: &str| metric(t, "lotbridge_lots_live", &[("sink", "bzx")]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let (shared, split) = loop {
        let (a, b) = (first.scrape().await, second.scrape().await);
        let split = format!("partitions {}+{}, live lots {}+{}", owned(&a), owned(&b), live(&a), live(&b));
        let both = owned(&a) > 0.0 && owned(&b) > 0.0 && live(&a) > 0.0 && live(&b) > 0.0;
        let ok = both && owned(&a) + owned(&b) == 8.0 && live(&a) + live(&b) == lots;
        if ok || Instant::now() > deadline {
            break (ok, split);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(shared, "the two instances split partitions and heartbeats: {split}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut scrapes = second.terminate();
    // The first takes every partition and every lot's heartbeat back.
    let deadline = Instant::now() + Duration::from_secs(60);
    let took_back = loop {
        let a = first.scrape().await;
        if owned(&a) == 8.0 && live(&a) == lots {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(took_back, "the remaining instance owns everything again");
    producing.await.expect("producer");
    assert!(wait_delivered(&scenario, &expected, Duration::from_secs(300)).await, "every event reached both sinks");
    scrapes.extend(first.terminate());
    let (dup_bzx, dup_isp) = check_complete(&scenario, &expected);
    let dead = cluster.read_all(&format!("{}.dlq", scenario.topic));
    assert!(dead.is_empty(), "no dead letters");
    assert_no_secrets(&scenario, &scrapes, &dead);
    let heartbeats = scenario.sim("bzx").control.records_for("heartbeat").len();
    report(
        "rebalance",
        &[
            ("events", expected.len().to_string()),
            ("while_both_ran", split.replace(' ', "_")),
            ("heartbeats_received", heartbeats.to_string()),
            ("lost", "0".into()),
            ("duplicates_bzx", dup_bzx.to_string()),
            ("duplicates_isp", dup_isp.to_string()),
        ],
    );
}

//! One vendor budget across replicas: `requests_per_second` and `burst` are the vendor's
//! limit for the whole city, and the replicas of a sink's consumer group share it by the
//! input partitions each owns. Two and three instances run against one simulator; over
//! every one-second window the requests of all of them together stay within the rate plus
//! the burst, while a lone instance uses the whole rate.

mod common;

use common::{eventually, vehicle, Kafka, Running};
use lotbridge::sim::SimServer;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);
const PARTITIONS: i32 = 6;
const RATE: usize = 20;
const BURST: usize = 4;
/// Requests the limiters let go may reach the simulator's clock a little closer together
/// than they left (scheduling on a loaded 2-core machine): this many on top of the budget.
const CLOCK_SLACK: usize = 2;
/// Records per run: one request each (`max_records = 1`), about 8 s at the whole rate.
const RECORDS: usize = 160;

/// A Bingzhouxing sink whose every request carries one record, limited to [`RATE`] per
/// second with a burst of [`BURST`], on a topic of [`PARTITIONS`] partitions.
async fn setup(topic: &str) -> (Kafka, String, SimServer, Vec<String>) {
    let kafka = Kafka::new();
    kafka.topic(topic, PARTITIONS);
    let lots: Vec<String> = (0..30).map(|i| format!("L{i:02}")).collect();
    let lot_refs: Vec<&str> = lots.iter().map(String::as_str).collect();
    let head = common::kafka_section(&kafka, topic);
    let limits = format!("[sinks.rate_limit]\nrequests_per_second = {RATE}\nburst = {BURST}\n");
    let (sink, sim) = common::bzx_sink(&head, "bzx", &lot_refs, "").await;
    let sink = sink.replace("[sinks.batch]\nlinger_ms = 5\n", "[sinks.batch]\nlinger_ms = 5\nmax_records = 1\n");
    let sink = sink.replace("[sinks.retry]", &format!("{limits}[sinks.retry]"));
    (kafka, format!("{head}{sink}"), sim, lots)
}

fn records(lots: &[String], n: usize) -> Vec<(String, Vec<u8>)> {
    (0..n)
        .map(|i| {
            let lot = &lots[i % lots.len()];
            (lot.clone(), vehicle(&format!("e{i}"), lot, &format!("晋A{i:05}"), false))
        })
        .collect()
}

fn metric(metrics: &lotbridge::metrics::Metrics, name: &str) -> Option<f64> {
    let prefix = format!("lotbridge_{name}{{sink=\"bzx\"}} ");
    metrics.render().lines().find_map(|l| l.strip_prefix(&prefix).and_then(|v| v.parse().ok()))
}

fn delivered(sim: &SimServer) -> usize {
    sim.control.records_for("carInOut").len()
}

/// The most requests the simulator received within any one second from `since` (Unix ms).
fn busiest_second(sim: &SimServer, since: i64) -> usize {
    let mut at: Vec<i64> = sim.control.requests().iter().map(|r| r.at_ms).filter(|t| *t >= since).collect();
    at.sort_unstable();
    (0..at.len()).map(|i| at[i..].iter().take_while(|t| **t < at[i] + 1000).count()).max().unwrap_or(0)
}

fn now_ms() -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}

/// `n` instances of one sink split its partitions, then a backlog arrives: all requests
/// together keep to the configured budget in every second, and every record is delivered.
async fn replicas_share_one_budget(n: usize, topic: &str) {
    let (kafka, toml, sim, lots) = setup(topic).await;
    let instances: Vec<Running> = (0..n).map(|_| Running::start(common::load(&toml))).collect();
    let owned = |r: &Running| metric(&r.metrics, "partitions_assigned").unwrap_or(0.0);
    let split = eventually(WAIT, || async {
        instances.iter().all(|r| owned(r) > 0.0) && instances.iter().map(owned).sum::<f64>() == f64::from(PARTITIONS)
    })
    .await;
    let owned_now: Vec<f64> = instances.iter().map(owned).collect();
    assert!(split, "{n} instances split the {PARTITIONS} partitions: {owned_now:?}");
    // Each instance's share follows its partitions once it knows the total.
    let share = |r: &Running| metric(&r.metrics, "rate_limit_share_per_second").unwrap_or(-1.0);
    let expected = |r: &Running| RATE as f64 * owned(r) / f64::from(PARTITIONS);
    let shared = eventually(Duration::from_secs(10), || async {
        instances.iter().all(|r| (share(r) - expected(r)).abs() < 1e-9)
    })
    .await;
    let since = now_ms();
    kafka.produce_all(topic, &records(&lots, RECORDS)).await;
    let all = eventually(WAIT, || async { delivered(&sim) >= RECORDS }).await;
    let busiest = busiest_second(&sim, since);
    let shares: Vec<f64> = instances.iter().map(share).collect();
    eprintln!("{n} instances, shares {shares:?}/s: busiest second {busiest} requests");
    for r in instances {
        r.stop().await;
    }
    assert!(all, "delivered {} of {RECORDS}", delivered(&sim));
    assert!(
        busiest <= RATE + BURST + CLOCK_SLACK,
        "{n} instances sent {busiest} requests within one second; the vendor's budget is {RATE}/s with a burst of {BURST}"
    );
    assert!(shared, "rate shares {shares:?} for partitions {owned_now:?} of {PARTITIONS} at {RATE}/s");
    assert!(kafka.read_all(&format!("{topic}.dlq")).is_empty(), "no dead letters");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_keep_to_one_vendor_budget() {
    replicas_share_one_budget(2, "share2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_keep_to_one_vendor_budget() {
    replicas_share_one_budget(3, "share3").await;
}

/// A lone instance owns every partition and has the whole rate: its busiest second holds
/// more requests than any share of two replicas could.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lone_replica_uses_the_whole_rate() {
    let (kafka, toml, sim, lots) = setup("share1").await;
    let lone = Running::start(common::load(&toml));
    let whole = eventually(WAIT, || async {
        metric(&lone.metrics, "rate_limit_share_per_second") == Some(RATE as f64)
            && metric(&lone.metrics, "partitions_assigned") == Some(f64::from(PARTITIONS))
    })
    .await;
    let since = now_ms();
    kafka.produce_all("share1", &records(&lots, RECORDS)).await;
    let all = eventually(WAIT, || async { delivered(&sim) >= RECORDS }).await;
    let share = metric(&lone.metrics, "rate_limit_share_per_second");
    lone.stop().await;
    assert!(whole, "a lone replica's share is the whole rate: {share:?}");
    assert!(all, "delivered {} of {RECORDS}", delivered(&sim));
    let busiest = busiest_second(&sim, since);
    eprintln!("lone instance: busiest second {busiest} requests");
    assert!(busiest > RATE / 2, "the busiest second held {busiest} requests, no more than half the rate of {RATE}/s");
    assert!(busiest <= RATE + BURST + CLOCK_SLACK, "{busiest} requests in one second, over {RATE}/s + {BURST}");
}

//! The soak run (not in CI): `scripts/soak.sh [MINUTES] [RATE]` runs this for an hour by
//! default at a steady rate with a vendor fault every few minutes, printing RSS, consumer
//! lag and outcome counts every minute, and checks at the end that nothing was lost.

use crate::harness::{broker, metric, plates, report, wait_delivered, City, Cluster, Received, Scenario, SinkTuning};
use lotbridge::sim::Failure;
use std::time::{Duration, Instant};

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Resident set size of a process in MiB, from /proc.
fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "the soak run: scripts/soak.sh"]
async fn soak() {
    let Some(brokers) = broker("soak") else { return };
    let minutes = env_number("LOTBRIDGE_SOAK_MINUTES", 60);
    let rate = env_number("LOTBRIDGE_SOAK_RATE", 200) as usize;
    let cluster = Cluster::new(&brokers);
    let city = City::new(50);
    let mut scenario = Scenario::new(&cluster, "soak", &city, 8, &SinkTuning::default()).await;
    let mut instance = scenario.start().await;
    let started = Instant::now();
    let end = started + Duration::from_secs(minutes * 60);
    // One passage per lot per tick: `rate / lots` ticks a second.
    let ticks_per_second = (rate / city.lots.len()).max(1) as u32;
    let producing = {
        let (cluster, topic, city) = (Cluster::new(&brokers), scenario.topic.clone(), City::new(city.lots.len()));
        tokio::spawn(async move {
            let mut seq = 0;
            while Instant::now() < end {
                let second: Vec<_> = city.vehicles(ticks_per_second as usize, seq);
                seq += ticks_per_second as usize;
                let t = Instant::now();
                cluster.produce(&topic, &second, 0).await;
                tokio::time::sleep(Duration::from_secs(1).saturating_sub(t.elapsed())).await;
            }
            seq
        })
    };
    let faults =
        ["5xx storm (bzx)", "token expiry (isp)", "429 (bzx)", "connection refused 30 s (bzx)", "slow 5 s (isp)"];
    let mut minute = 0u64;
    let mut peak_rss = 0.0f64;
    println!("SOAK minute rss_mib lag held dead delivered retries fault");
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_secs(60).min(end.saturating_duration_since(Instant::now()))).await;
        minute += 1;
        let fault = if minute % 5 == 0 { faults[((minute / 5 - 1) % faults.len() as u64) as usize] } else { "-" };
        match fault {
            "5xx storm (bzx)" => scenario.sim("bzx").control.fail_next(50, Failure::Status(503)),
            "token expiry (isp)" => scenario.sim("isp").control.expire_tokens(),
            "429 (bzx)" => scenario.sim("bzx").control.throttle_next(10, 2),
            "connection refused 30 s (bzx)" => scenario.sim("bzx").control.refuse_for(Duration::from_secs(30)),
            "slow 5 s (isp)" => {
                let control = scenario.sim("isp").control.clone();
                control.set_latency(Duration::from_secs(5));
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_secs(20)).await;
                    control.set_latency(Duration::ZERO);
                });
            }
            _ => {}
        }
        let text = instance.scrape().await;
        let rss = rss_mib(instance.pid());
        peak_rss = peak_rss.max(rss);
        println!(
            "SOAK {minute:>3} {rss:>8.1} {:>6} {:>5} {:>4} {:>9} {:>7} {fault}",
            metric(&text, "lotbridge_consumer_lag_records", &[]),
            metric(&text, "lotbridge_held_records", &[]),
            metric(&text, "lotbridge_records_outcome_total", &[("outcome", "dead_lettered")]),
            metric(&text, "lotbridge_records_outcome_total", &[("outcome", "delivered")]),
            metric(&text, "lotbridge_retries_total", &[]),
        );
    }
    let per_lot = producing.await.expect("producer");
    let expected = plates(&city, per_lot, 0);
    assert!(wait_delivered(&scenario, &expected, Duration::from_secs(600)).await, "every event reached both sinks");
    instance.terminate();
    let (bzx, isp) = (Received::bingzhouxing(scenario.sim("bzx")), Received::isp(scenario.sim("isp")));
    report(
        "soak",
        &[
            ("minutes", minutes.to_string()),
            ("events", expected.len().to_string()),
            ("peak_rss_mib", format!("{peak_rss:.1}")),
            ("lost", "0".into()),
            ("duplicates_bzx", bzx.duplicates().to_string()),
            ("duplicates_isp", isp.duplicates().to_string()),
        ],
    );
}

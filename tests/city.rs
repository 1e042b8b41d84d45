//! Records lotbridge makes on its own schedule, as a city needs them: heartbeats for every
//! bound lot (not only those that sent something), and the Inspur ISP daily lot list with a
//! separate lot topic, as `deploy/k8s/configmap.yaml` sets it up, split over two replicas.

mod common;

use common::{eventually, Kafka, Running};
use lotbridge::sim::{self, SimServer};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);
const TUNING: &str = "[sinks.retry]\ninitial_ms = 20\nmax_interval_ms = 200\n[sinks.batch]\nlinger_ms = 5\n";

/// Starts the simulator of a one-sink configuration (`{url}` in `sink`) and returns the
/// configuration text pointed at it.
async fn with_simulator(kafka_section: &str, sink: &str) -> (String, SimServer) {
    let probe = common::load(&format!("{kafka_section}{}", sink.replace("{url}", "http://127.0.0.1:0")));
    let (_, server) = sim::start_for_config(&probe).await.expect("simulator").into_iter().next().expect("one sink");
    (format!("{kafka_section}{}", sink.replace("{url}", &server.base_url())), server)
}

fn heartbeat_lots(sim: &SimServer) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for r in sim.control.records_for("heartbeat") {
        *out.entry(r.lot).or_default() += 1;
    }
    out
}

/// `bound` (the default): every bound lot whose partition this replica owns gets its
/// heartbeat, including lots that never sent anything (quiet at night, or nothing since a
/// restart), at most once per the vendor's minute.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_bound_lot_gets_heartbeats_even_one_that_never_sent_anything() {
    let kafka = Kafka::new();
    kafka.topic("c1", 3);
    let bindings: Vec<String> = (0..6)
        .map(|i| format!("{{ lot = \"Q{i}\", vendor_lot = \"{}\", token = {{ value = \"tok-{i}\" }} }}", 350 + i))
        .collect();
    let sink = format!(
        "\n[[sinks]]\nname = \"bzx\"\nheartbeat_secs = 1\nbindings = [{}]\n{TUNING}[sinks.bingzhouxing]\nbase_url = \"{{url}}\"\n",
        bindings.join(", ")
    );
    let (toml, sim) = with_simulator(&common::kafka_section(&kafka, "c1"), &sink).await;
    let engine = Running::start(common::load(&toml));
    let all: Vec<String> = (0..6).map(|i| (350 + i).to_string()).collect();
    let every_lot = eventually(WAIT, || async { heartbeat_lots(&sim).len() == all.len() });
    assert!(every_lot.await, "heartbeats for every bound lot, none of which sent anything: {:?}", heartbeat_lots(&sim));
    assert_eq!(engine.metrics.live_lots.with_label_values(&["bzx"]).get(), 6, "lots due heartbeats");
    tokio::time::sleep(Duration::from_secs(3)).await;
    engine.stop().await;
    let beats = heartbeat_lots(&sim);
    assert_eq!(beats.keys().cloned().collect::<Vec<_>>(), all);
    assert!(beats.values().all(|n| *n == 1), "at most one per lot per minute: {beats:?}");
}

/// Two replicas split the bound lots' heartbeats by partition: each lot is the charge of
/// exactly one of them (the owner of its murmur2 partition), and none is left out.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_split_the_bound_lots_heartbeats_by_partition() {
    let kafka = Kafka::new();
    kafka.topic("c4", 4);
    let bindings: Vec<String> = (0..16)
        .map(|i| format!("{{ lot = \"H{i}\", vendor_lot = \"{}\", token = {{ value = \"tok-{i}\" }} }}", 350 + i))
        .collect();
    let sink = format!(
        "\n[[sinks]]\nname = \"bzx\"\nheartbeat_secs = 1\nbindings = [{}]\n{TUNING}[sinks.bingzhouxing]\nbase_url = \"{{url}}\"\n",
        bindings.join(", ")
    );
    let (toml, _sim) = with_simulator(&common::kafka_section(&kafka, "c4"), &sink).await;
    let first = Running::start(common::load(&toml));
    let second = Running::start(common::load(&toml));
    let settled = eventually(WAIT, || async {
        let (a, b, pa, pb) = split(&first, &second);
        pa > 0 && pb > 0 && pa + pb == 4 && a > 0 && b > 0 && a + b == 16
    });
    assert!(settled.await, "lots due heartbeats and partitions per replica: {:?}", split(&first, &second));
    second.stop().await;
    let lots = |r: &Running| r.metrics.live_lots.with_label_values(&["bzx"]).get();
    let took_back = eventually(WAIT, || async { lots(&first) == 16 });
    assert!(took_back.await, "the remaining replica heartbeats every lot: {}", lots(&first));
    first.stop().await;
}

/// Lots due heartbeats and partitions owned, of two replicas' `bzx` sinks.
fn split(a: &Running, b: &Running) -> (i64, i64, i64, i64) {
    let m = |r: &Running| {
        (
            r.metrics.live_lots.with_label_values(&["bzx"]).get(),
            r.metrics.assigned_partitions.with_label_values(&["bzx"]).get(),
        )
    };
    let ((la, pa), (lb, pb)) = (m(a), m(b));
    (la, lb, pa, pb)
}

/// The shape of `deploy/k8s/configmap.yaml`: events on `parking.events`, lot events on a
/// separate compacted `parking.lots`, an ISP sink with bound lots, and two replicas. At the
/// daily push time every lot's latest state is pushed, each by exactly one replica, though
/// no lot event ever came through the events topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_daily_lot_list_with_a_separate_lot_topic_is_pushed_once_per_lot_over_two_replicas() {
    let kafka = Kafka::new();
    kafka.topic("parking.events", 4);
    kafka.topic("parking.lots", 1);
    let lots: Vec<String> = (1..=8).map(|i| format!("P{i:04}")).collect();
    let bindings: Vec<String> =
        lots.iter().map(|l| format!("{{ lot = \"{l}\", vendor_lot = \"ATXL/{l}\" }}")).collect();
    let mut records = Vec::new();
    for (i, lot) in lots.iter().enumerate() {
        let data = json!({"name": format!("old {lot}"), "coordinate_system": "GCJ02"});
        records.push((lot.clone(), common::event(&format!("u{i}"), "lot.upserted", lot, data)));
        let data = json!({"name": format!("{lot} 停车场"), "coordinate_system": "GCJ02"});
        records.push((lot.clone(), common::event(&format!("v{i}"), "lot.upserted", lot, data)));
    }
    kafka.produce_all("parking.lots", &records).await;
    // Far enough ahead for both replicas to join and share the partitions first.
    let at = (chrono::Utc::now() + chrono::Duration::seconds(30)).with_timezone(&lotbridge::engine::lots::china());
    let kafka_section = common::kafka_section(&kafka, "parking.events")
        .replace("topics = [\"parking.events\"]\n", "topics = [\"parking.events\"]\nlot_topics = [\"parking.lots\"]\n");
    let sink = format!(
        "\n[[sinks]]\nname = \"isp\"\ndaily_push_at = \"{}\"\nbindings = [{}]\n{TUNING}[sinks.inspur_isp]\n\
         base_url = \"{{url}}\"\nclient_id = \"lotbridge\"\nclient_secret = {{ value = \"isp-secret\" }}\n",
        at.format("%H:%M:%S"),
        bindings.join(", ")
    );
    let (toml, isp) = with_simulator(&kafka_section, &sink).await;
    let first = Running::start(common::load(&toml));
    let second = Running::start(common::load(&toml));
    let assigned = |r: &Running| r.metrics.assigned_partitions.with_label_values(&["isp"]).get();
    let shared = eventually(WAIT, || async {
        assigned(&first) > 0 && assigned(&second) > 0 && assigned(&first) + assigned(&second) == 4
    });
    assert!(shared.await, "both replicas own partitions");
    assert!(chrono::Utc::now() < at, "the group settled only after the push time: the test proves nothing, rerun");
    let pushed = || isp.control.records_for("park/spot");
    assert!(eventually(WAIT, || async { pushed().len() >= lots.len() }).await, "the full list: {}", pushed().len());
    tokio::time::sleep(Duration::from_secs(2)).await;
    first.stop().await;
    second.stop().await;
    let mut per_lot: HashMap<String, Vec<String>> = HashMap::new();
    for r in pushed() {
        per_lot.entry(r.lot.clone()).or_default().push(r.record["park_name"].as_str().unwrap_or("").to_string());
    }
    assert_eq!(per_lot.len(), lots.len(), "every bound lot: {per_lot:?}");
    for lot in &lots {
        let names = &per_lot[&format!("ATXL/{lot}")];
        assert_eq!(names, &[format!("{lot} 停车场")], "{lot}: once, with its latest state");
    }
}

/// `/status` with 20,000 bound lots, each with records waiting while the vendor fails: the
/// answer names the 10 largest backlogs and the 10 most recent failures and stays small;
/// `?lot=` answers for one lot; `lotbridge status` prints it for people.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn status_stays_small_with_twenty_thousand_lots() {
    const LOTS: usize = 20_000;
    let kafka = Kafka::new();
    kafka.topic("c3", 4);
    let bindings: Vec<String> = (0..LOTS)
        .map(|i| format!("{{ lot = \"S{i:05}\", vendor_lot = \"{}\", token = {{ value = \"t\" }} }}", 10_000 + i))
        .collect();
    let sink = format!(
        "\n[[sinks]]\nname = \"bzx\"\nheartbeat_lots = \"live\"\nbindings = [{}]\n[sinks.rate_limit]\nrequests_per_second = 50\n\
         [sinks.retry]\ninitial_ms = 1000\nmax_interval_ms = 5000\n[sinks.bingzhouxing]\nbase_url = \"{{url}}\"\n",
        bindings.join(", ")
    );
    let (toml, sim) = with_simulator(&common::kafka_section(&kafka, "c3"), &sink).await;
    sim.control.fail_next(100_000, lotbridge::sim::Failure::Status(503));
    let metrics = lotbridge::metrics::Metrics::new().expect("metrics");
    let engine = lotbridge::engine::Engine::new(common::load(&toml), metrics.clone()).expect("engine");
    let server = lotbridge::app::HealthServer::start("127.0.0.1:0", metrics.clone(), engine.sinks().to_vec())
        .await
        .expect("serve");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(async move {
        let _ = engine.run(async move { drop(stop_rx.await) }).await;
    });
    // Every lot gets two records; S00007 gets five more: the largest backlog.
    let mut records: Vec<(String, Vec<u8>)> = (0..LOTS * 2)
        .map(|i| {
            let lot = format!("S{:05}", i % LOTS);
            (lot.clone(), common::vehicle(&format!("e{i}"), &lot, &format!("晋A{:05}", i % 100_000), false))
        })
        .collect();
    records
        .extend((0..5).map(|i| ("S00007".to_string(), common::vehicle(&format!("x{i}"), "S00007", "晋B00007", false))));
    kafka.produce_all("c3", &records).await;
    let lanes = || metrics.lanes.with_label_values(&["bzx"]).get();
    assert!(eventually(WAIT, || async { lanes() as usize >= LOTS }).await, "a lane per lot: {}", lanes());
    let url = format!("http://{}/status", server.addr);
    let failures = || async {
        let body = reqwest::get(&url).await.expect("status").text().await.expect("body");
        let report: serde_json::Value = serde_json::from_str(&body).expect("json");
        report["sinks"][0]["recent_failures"].as_array().map_or(0, Vec::len) == 10
    };
    assert!(eventually(WAIT, failures).await, "failures remembered");
    // Read, not held: held records include the live lots' scheduled heartbeats, so a count
    // of held records can reach the records produced before the last of them are read.
    let read = || metrics.consumed.with_label_values(&["bzx", "c3"]).get() as usize;
    assert!(eventually(WAIT, || async { read() >= records.len() }).await, "every record read: {}", read());
    let held = || metrics.held_records.with_label_values(&["bzx"]).get() as usize;
    assert!(eventually(WAIT, || async { held() >= records.len() }).await, "every record held: {}", held());
    let body = reqwest::get(&url).await.expect("status").text().await.expect("body");
    assert!(body.len() < 8 * 1024, "bounded: {} bytes for {LOTS} lots", body.len());
    let report: lotbridge::status::Report = serde_json::from_str(&body).expect("report");
    let bzx = &report.sinks[0];
    assert_eq!(bzx.largest_backlogs.len(), 10);
    assert_eq!(bzx.largest_backlogs[0].lot, "S00007", "{:?}", bzx.largest_backlogs);
    assert!(bzx.lanes as usize >= LOTS && bzx.held_records as usize >= LOTS, "{bzx:?}");
    assert!(bzx.recent_failures.iter().all(|f| f.failure.reason.contains("503")), "{:?}", bzx.recent_failures);

    let one = reqwest::get(format!("{url}?lot=S00042")).await.expect("status").text().await.expect("body");
    let one: lotbridge::status::Report = serde_json::from_str(&one).expect("json");
    let lot = one.sinks[0].lot.clone().expect("the lot's line");
    assert!(lot.bound && lot.queued >= 1, "{lot:?}");
    let addr = server.addr.to_string();
    let out = tokio::task::block_in_place(|| {
        std::process::Command::new(env!("CARGO_BIN_EXE_lotbridge"))
            .args(["status", "--addr", &addr, "--lot", "S00042"])
            .output()
            .expect("run lotbridge status")
    });
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("bzx lot S00042: bound,"), "{text}");
    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(WAIT, running).await;
}

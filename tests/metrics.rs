//! Metrics and health endpoints against the real engine on the mock cluster and the vendor
//! simulators: the engine's scenarios move the right series, `/metrics` carries them over
//! HTTP without lot codes or plates, and `/readyz` follows group membership and drain, not vendors.

mod common;

use common::{eventually, vehicle, Kafka};
use lotbridge::app::HealthServer;
use lotbridge::engine::Engine;
use lotbridge::metrics::Metrics;
use lotbridge::sim::{self, Failure, SimServer};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::oneshot;

const WAIT: Duration = Duration::from_secs(60);

const TUNING: &str = "[sinks.retry]\ninitial_ms = 20\nmax_interval_ms = 200\n[sinks.batch]\nlinger_ms = 5\n";

fn bzx_sink(lot: &str) -> String {
    format!(
        "\n[[sinks]]\nname = \"bzx\"\nbindings = [{{ lot = \"{lot}\", vendor_lot = \"350\", token = {{ value = \"tok\" }} }}]\n\
         {TUNING}[sinks.bingzhouxing]\nbase_url = \"{{url}}\"\n"
    )
}

fn isp_sink(secret: &str) -> String {
    format!(
        "\n[[sinks]]\nname = \"isp\"\nbindings = [{{ lot = \"P1\", vendor_lot = \"ATXL/1\" }}]\n{TUNING}\
         [sinks.inspur_isp]\nbase_url = \"{{url}}\"\nclient_id = \"lotbridge\"\nclient_secret = {{ value = \"{secret}\" }}\n"
    )
}

/// Starts the simulator of `sink` (configured with `sim_sink`'s credentials) and returns
/// the full configuration text using `sink`, pointed at it.
async fn setup(kafka: &Kafka, topic: &str, sim_sink: &str, sink: &str) -> (String, SimServer) {
    let probe = common::load(&format!(
        "{}{}",
        common::kafka_section(kafka, topic),
        sim_sink.replace("{url}", "http://127.0.0.1:0")
    ));
    let (_, server) = sim::start_for_config(&probe).await.expect("simulator").into_iter().next().expect("one sink");
    (format!("{}{}", common::kafka_section(kafka, topic), sink.replace("{url}", &server.base_url())), server)
}

/// The engine with its health server, on the test's runtime.
struct Harness {
    metrics: Metrics,
    server: HealthServer,
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<()>,
}

impl Harness {
    async fn start(toml: &str) -> Harness {
        let metrics = Metrics::new().expect("metrics");
        let engine = Engine::new(common::load(toml), metrics.clone()).expect("engine");
        let server = HealthServer::start("127.0.0.1:0", metrics.clone(), engine.sinks().to_vec()).await.expect("serve");
        let (tx, rx) = oneshot::channel::<()>();
        let done = tokio::spawn(async move {
            engine
                .run(async move {
                    let _ = rx.await;
                })
                .await
                .expect("engine run");
        });
        Harness { metrics, server, stop: Some(tx), done }
    }

    /// The sum of every series of `name` whose labels include `labels`.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        series(&self.metrics.render()).iter().filter(|s| s.matches(name, labels)).map(|s| s.value).sum()
    }

    async fn get(&self, path: &str) -> (u16, String) {
        let response = reqwest::get(format!("http://{}{path}", self.server.addr)).await.expect("http");
        (response.status().as_u16(), response.text().await.expect("body"))
    }

    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = tokio::time::timeout(WAIT, self.done).await;
    }
}

/// One sample of the text format.
struct Series {
    name: String,
    labels: HashMap<String, String>,
    value: f64,
}

impl Series {
    fn matches(&self, name: &str, labels: &[(&str, &str)]) -> bool {
        self.name == name && labels.iter().all(|(k, v)| self.labels.get(*k).is_some_and(|x| x == v))
    }
}

fn series(text: &str) -> Vec<Series> {
    text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Series> {
    let (head, value) = line.rsplit_once(' ')?;
    let (name, labels) = match head.split_once('{') {
        Some((name, rest)) => (name, rest.trim_end_matches('}')),
        None => (head, ""),
    };
    let labels = labels
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
        .collect();
    Some(Series { name: name.to_string(), labels, value: value.parse().ok()? })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_500_then_200_is_one_retry_and_one_delivery() {
    let kafka = Kafka::new();
    kafka.topic("m1", 1);
    let (toml, sim) = setup(&kafka, "m1", &bzx_sink("P1"), &bzx_sink("P1")).await;
    sim.control.fail_next(1, Failure::Status(500));
    let h = Harness::start(&toml).await;
    kafka.produce("m1", "P1", &vehicle("e1", "P1", "晋A00001", false)).await;
    let delivered = [("sink", "bzx"), ("outcome", "delivered")];
    assert!(eventually(WAIT, || async { h.value("lotbridge_records_outcome_total", &delivered) >= 1.0 }).await);
    assert_eq!(h.value("lotbridge_records_outcome_total", &delivered), 1.0);
    assert_eq!(h.value("lotbridge_retries_total", &[("sink", "bzx")]), 1.0, "exactly one retry");
    assert_eq!(h.value("lotbridge_retries_total", &[("sink", "bzx"), ("reason", "server_error")]), 1.0);
    let requests = "lotbridge_vendor_requests_total";
    assert_eq!(h.value(requests, &[("sink", "bzx"), ("outcome", "server_error")]), 1.0);
    assert_eq!(h.value(requests, &[("sink", "bzx"), ("outcome", "ok")]), 1.0);
    assert_eq!(h.value("lotbridge_records_consumed_total", &[("sink", "bzx"), ("topic", "m1")]), 1.0);
    assert_eq!(h.value("lotbridge_event_to_ack_seconds_count", &[("sink", "bzx")]), 1.0);
    assert_eq!(h.value("lotbridge_dead_letter_writes_total", &[]), 0.0, "nothing dead-lettered");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invalid_and_unbound_records_are_counted_apart_from_deliveries() {
    let kafka = Kafka::new();
    kafka.topic("m2", 1);
    let (toml, sim) = setup(&kafka, "m2", &bzx_sink("P1"), &bzx_sink("P1")).await;
    let h = Harness::start(&toml).await;
    kafka.produce("m2", "P1", b"{not json").await;
    kafka.produce("m2", "Z9", &vehicle("e2", "Z9", "晋A00002", false)).await;
    kafka.produce("m2", "P1", &vehicle("e3", "P1", "晋A00003", false)).await;
    let delivered = [("sink", "bzx"), ("outcome", "delivered")];
    assert!(eventually(WAIT, || async { h.value("lotbridge_records_outcome_total", &delivered) >= 1.0 }).await);
    let dead = [("sink", "bzx"), ("outcome", "dead_lettered")];
    assert!(eventually(WAIT, || async { h.value("lotbridge_records_outcome_total", &dead) >= 1.0 }).await);
    assert_eq!(h.value("lotbridge_records_invalid_total", &[("sink", "bzx"), ("stage", "decode")]), 1.0);
    assert_eq!(h.value("lotbridge_dead_letter_writes_total", &[("sink", "bzx"), ("result", "ok")]), 1.0);
    assert_eq!(h.value("lotbridge_records_skipped_total", &[("sink", "bzx"), ("reason", "lot_not_bound")]), 1.0);
    assert_eq!(h.value("lotbridge_records_consumed_total", &[("sink", "bzx")]), 3.0);
    assert_eq!(h.value("lotbridge_vendor_requests_total", &[("sink", "bzx")]), 1.0, "only the bound record is sent");
    assert_eq!(sim.control.records_for("carInOut").len(), 1);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_endpoint_serves_the_series_and_never_a_lot_code_or_plate() {
    let kafka = Kafka::new();
    kafka.topic("m3", 1);
    let (toml, _sim) = setup(&kafka, "m3", &bzx_sink("LOTX9"), &bzx_sink("LOTX9")).await;
    let h = Harness::start(&toml).await;
    assert_eq!(h.get("/healthz").await.0, 200);
    kafka.produce("m3", "LOTX9", &vehicle("e4", "LOTX9", "晋A54321", false)).await;
    let delivered = [("sink", "bzx"), ("outcome", "delivered")];
    assert!(eventually(WAIT, || async { h.value("lotbridge_records_outcome_total", &delivered) >= 1.0 }).await);
    let lag = [("sink", "bzx"), ("topic", "m3"), ("partition", "0")];
    let caught_up = eventually(WAIT, || async {
        let (_, body) = h.get("/metrics").await;
        series(&body).iter().any(|s| s.matches("lotbridge_consumer_lag_records", &lag) && s.value == 0.0)
    });
    assert!(caught_up.await, "lag of the partition measured and back to 0 once committed");
    let (status, body) = h.get("/metrics").await;
    assert_eq!(status, 200);
    for name in [
        "lotbridge_records_consumed_total",
        "lotbridge_vendor_requests_total",
        "lotbridge_vendor_request_duration_seconds_bucket",
        "lotbridge_consume_to_ack_seconds_bucket",
        "lotbridge_oldest_unacked_age_seconds",
        "lotbridge_partitions_assigned",
        "lotbridge_consumer_group_joined",
        "lotbridge_build_info",
    ] {
        assert!(body.contains(name), "{name} missing from /metrics");
    }
    assert!(!body.contains("LOTX9") && !body.contains("54321"), "a lot code or plate leaked into /metrics");
    assert!(
        eventually(WAIT, || async { h.get("/readyz").await.0 == 200 }).await,
        "ready once assigned and authenticated"
    );
    assert_eq!(h.value("lotbridge_ready", &[]), 1.0);
    h.server.health.serving.store(false, Ordering::Relaxed);
    assert_eq!(h.get("/readyz").await.0, 503, "not ready while draining");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rejected_credentials_show_in_metrics_but_leave_the_replica_ready() {
    let kafka = Kafka::new();
    kafka.topic("m4", 1);
    let (toml, _sim) = setup(&kafka, "m4", &isp_sink("right-secret"), &isp_sink("wrong-secret")).await;
    let h = Harness::start(&toml).await;
    let rejected = [("sink", "isp"), ("result", "rejected")];
    assert!(eventually(WAIT, || async { h.value("lotbridge_auth_checks_total", &rejected) >= 1.0 }).await);
    assert_eq!(h.value("lotbridge_auth_ok", &[("sink", "isp")]), 0.0);
    assert_eq!(h.value("lotbridge_credentials_rejected", &[("sink", "isp")]), 1.0);
    let joined = [("sink", "isp")];
    assert!(eventually(WAIT, || async { h.value("lotbridge_consumer_group_joined", &joined) == 1.0 }).await);
    let (status, body) = h.get("/readyz").await;
    assert_eq!(status, 200, "credentials are the vendor's business, alerted on, not readiness: {body}");
    h.stop().await;
}

/// A vendor's token endpoint is down: the replica is ready all the same (a rollout, e.g. of
/// the configuration fix, must not stall on a vendor), and the outage shows in the metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readiness_is_unaffected_by_a_vendor_token_endpoint_being_down() {
    let kafka = Kafka::new();
    kafka.topic("m7", 1);
    let toml =
        format!("{}{}", common::kafka_section(&kafka, "m7"), isp_sink("secret").replace("{url}", "http://127.0.0.1:1"));
    let h = Harness::start(&toml).await;
    let unavailable = [("sink", "isp"), ("result", "unavailable")];
    assert!(eventually(WAIT, || async { h.value("lotbridge_auth_checks_total", &unavailable) >= 1.0 }).await);
    assert_eq!(h.value("lotbridge_auth_ok", &[("sink", "isp")]), 0.0, "the outage shows in the metrics");
    assert!(eventually(WAIT, || async { h.get("/readyz").await.0 == 200 }).await, "ready despite the vendor");
    let (_, body) = h.get("/readyz").await;
    assert!(body.starts_with("ready\n") && body.contains("sink isp: 1 partitions assigned"), "{body}");
    h.server.health.serving.store(false, Ordering::Relaxed);
    let (status, body) = h.get("/readyz").await;
    assert_eq!(status, 503);
    assert!(body.contains("draining"), "the body gives the reason: {body}");
    h.stop().await;
}

/// Before its consumer joins the group, `/readyz` names the sink that holds it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn not_ready_names_the_sink_outside_its_group() {
    // No broker listens here: the consumer can never join.
    let kafka = Kafka::new();
    let toml =
        format!("{}{}", common::kafka_section(&kafka, "m8"), bzx_sink("P1").replace("{url}", "http://127.0.0.1:1"))
            .replace(&kafka.brokers, "127.0.0.1:1");
    let h = Harness::start(&toml).await;
    let (status, body) = h.get("/readyz").await;
    assert_eq!(status, 503);
    assert!(body.contains("not ready: sink bzx is not in its consumer group yet"), "{body}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_vendor_that_keeps_failing_shows_as_lag_and_an_old_unacked_record() {
    let kafka = Kafka::new();
    kafka.topic("m5", 1);
    let (toml, sim) = setup(&kafka, "m5", &bzx_sink("P1"), &bzx_sink("P1")).await;
    sim.control.fail_next(100_000, Failure::Status(503));
    let h = Harness::start(&toml).await;
    for i in 0..5 {
        kafka.produce("m5", "P1", &vehicle(&format!("s{i}"), "P1", &format!("晋A1000{i}"), false)).await;
    }
    let lag = [("sink", "bzx"), ("topic", "m5")];
    assert!(eventually(WAIT, || async { h.value("lotbridge_consumer_lag_records", &lag) == 5.0 }).await, "lag 5");
    let stuck = [("sink", "bzx")];
    assert!(eventually(WAIT, || async { h.value("lotbridge_oldest_unacked_age_seconds", &stuck) >= 2.0 }).await);
    assert!(h.value("lotbridge_retries_total", &stuck) >= 2.0, "the vendor is retried");
    assert_eq!(h.value("lotbridge_records_outcome_total", &stuck), 0.0, "nothing finished");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_without_partitions_is_a_ready_standby() {
    let kafka = Kafka::new();
    kafka.topic("m6", 1);
    let (toml, _sim) = setup(&kafka, "m6", &bzx_sink("P1"), &bzx_sink("P1")).await;
    let first = Harness::start(&toml).await;
    let assigned = [("sink", "bzx")];
    assert!(eventually(WAIT, || async { first.value("lotbridge_partitions_assigned", &assigned) == 1.0 }).await);
    let second = Harness::start(&toml).await;
    let both_joined = eventually(WAIT, || async {
        second.value("lotbridge_consumer_group_joined", &assigned) == 1.0
            && first.value("lotbridge_consumer_group_joined", &assigned) == 1.0
    });
    assert!(both_joined.await, "both replicas joined the group");
    let one_owner = eventually(WAIT, || async {
        let owners = first.value("lotbridge_partitions_assigned", &assigned)
            + second.value("lotbridge_partitions_assigned", &assigned);
        owners == 1.0
    });
    assert!(one_owner.await, "one partition, one owner: the other replica is a standby");
    assert!(eventually(WAIT, || async { second.get("/readyz").await.0 == 200 }).await, "the standby is ready");
    assert!(eventually(WAIT, || async { first.get("/readyz").await.0 == 200 }).await, "the owner is ready");
    second.stop().await;
    first.stop().await;
}

/// `finished_uncommitted_records` follows the group's commits (the consumer's commit
/// callback): once delivered records are committed, a crash would send nothing again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn delivered_records_leave_the_duplicate_exposure_once_committed() {
    let kafka = Kafka::new();
    kafka.topic("m7", 1);
    let (toml, _sim) = setup(&kafka, "m7", &bzx_sink("P1"), &bzx_sink("P1")).await;
    let h = Harness::start(&toml).await;
    for i in 0..3 {
        kafka.produce("m7", "P1", &vehicle(&format!("u{i}"), "P1", &format!("晋A2000{i}"), false)).await;
    }
    let delivered = [("sink", "bzx"), ("outcome", "delivered")];
    assert!(eventually(WAIT, || async { h.value("lotbridge_records_outcome_total", &delivered) == 3.0 }).await);
    // The gauge is refreshed every 200 ms: let it see the deliveries first.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let exposure = [("sink", "bzx")];
    assert!(
        eventually(WAIT, || async { h.value("lotbridge_finished_uncommitted_records", &exposure) == 0.0 }).await,
        "committed: nothing would be sent twice, got {}",
        h.value("lotbridge_finished_uncommitted_records", &exposure)
    );
    h.stop().await;
}

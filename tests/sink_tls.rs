//! Vendor HTTPS per sink (`[sinks.network]`): a city's private CA, mutual TLS, and what a
//! wrong CA does. A Bingzhouxing simulator sits behind a TLS terminator on 127.0.0.1 whose
//! certificates are made by the test.
//!
//! A certificate fault is a sink fault: the sink holds (records stay in Kafka, nothing is
//! dead-lettered) and the error says "certificate".

mod common;

use common::tls::{Issued, Pki, TlsFront};
use common::{eventually, vehicle, Kafka, Running};
use lotbridge::secret::Secret;
use lotbridge::sim::{bingzhouxing, SimServer};
use std::path::Path;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

struct Vendor {
    sim: SimServer,
    front: TlsFront,
}

/// A Bingzhouxing simulator for lot 350 behind TLS with `server`'s certificate.
async fn vendor(server: &Issued, client_ca: Option<&Pki>) -> Vendor {
    let sim = bingzhouxing::Simulator::new([("350".to_string(), Secret::new("tok-350"))])
        .start("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("simulator");
    let front = TlsFront::start(server, client_ca, sim.addr).await;
    Vendor { sim, front }
}

fn config(kafka: &Kafka, topic: &str, base_url: &str, network: &str) -> String {
    format!(
        "{}[[sinks]]\nname = \"bzx\"\nbindings = [{{ lot = \"P1\", vendor_lot = \"350\", token = {{ value = \"tok-350\" }} }}]\n\
         [sinks.retry]\ninitial_ms = 20\nmax_interval_ms = 200\n[sinks.batch]\nlinger_ms = 5\n\
         [sinks.network]\n{network}\n[sinks.bingzhouxing]\nbase_url = \"{base_url}\"\n",
        common::kafka_section(kafka, topic)
    )
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// Requests whose TLS failure held the sink (the hold class of a transport failure).
fn held_failures(run: &Running) -> u64 {
    let text = run.metrics.render();
    text.lines()
        .filter(|l| l.starts_with("lotbridge_vendor_requests_total{") && l.contains("outcome=\"held\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[tokio::test(flavor = "multi_thread")]
async fn a_private_ca_delivers() {
    let dir = tempfile::tempdir().expect("dir");
    let city = Pki::new("city CA");
    let v = vendor(&city.issue(&["127.0.0.1"]), None).await;
    let ca = city.write_ca(dir.path(), "city-ca.pem");
    let kafka = Kafka::new();
    kafka.topic("tls-ok", 1);
    let network = format!("ca_file = \"{}\"\npublic_roots = false", path(&ca));
    let run = Running::start(common::load(&config(&kafka, "tls-ok", &v.front.base_url(), &network)));
    kafka.produce("tls-ok", "P1", &vehicle("e1", "P1", "晋A12345", false)).await;
    assert!(eventually(WAIT, || async { v.sim.control.records().len() == 1 }).await, "not delivered over TLS");
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_ca_holds_the_sink_and_says_certificate() {
    let dir = tempfile::tempdir().expect("dir");
    let city = Pki::new("city CA");
    let other = Pki::new("some other CA");
    let v = vendor(&city.issue(&["127.0.0.1"]), None).await;
    let ca = other.write_ca(dir.path(), "wrong-ca.pem");
    let kafka = Kafka::new();
    kafka.topic("tls-wrong", 1);
    let network = format!("ca_file = \"{}\"\npublic_roots = false", path(&ca));
    let loaded = common::load(&config(&kafka, "tls-wrong", &v.front.base_url(), &network));

    // The error a sink sees names the certificate.
    let request = lotbridge::vendors::HttpRequest {
        method: http::Method::POST,
        url: format!("{}/park/heartbeat", v.front.base_url()),
        headers: http::HeaderMap::new(),
        body: bytes::Bytes::from_static(b"{}"),
    };
    let sent = lotbridge::engine::deliver::execute(&loaded.sinks[0].http, request, Duration::from_secs(10)).await;
    let Err(err) = sent else { panic!("a wrong CA must fail the handshake") };
    let chain = format!("{:?}", anyhow::Error::new(err));
    assert!(chain.to_lowercase().contains("certificate"), "{chain}");

    // The sink holds for TLS (one probe at a time, with backoff) and dead-letters nothing.
    let run = Running::start(loaded);
    kafka.produce("tls-wrong", "P1", &vehicle("e1", "P1", "晋A12345", false)).await;
    let retried = eventually(WAIT, || async { held_failures(&run) >= 3 }).await;
    assert!(retried, "no retried TLS failure: {}", run.metrics.render());
    let held = run.metrics.render().contains("lotbridge_sink_held{reason=\"tls\",sink=\"bzx\"} 1");
    assert!(held, "held for TLS: {}", run.metrics.render());
    assert!(v.sim.control.records().is_empty());
    assert_eq!(run.metrics.count(&run.metrics.dead_letter_writes, &["bzx", "ok"]), 0, "dead-lettered");
    run.kill();
    assert!(kafka.read_all("tls-wrong.dlq").is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn mutual_tls_presents_the_client_certificate() {
    let dir = tempfile::tempdir().expect("dir");
    let city = Pki::new("city CA");
    let clients = Pki::new("vendor's client CA");
    let v = vendor(&city.issue(&["127.0.0.1"]), Some(&clients)).await;
    let ca = city.write_ca(dir.path(), "city-ca.pem");
    let (cert, key) = clients.issue(&["lotbridge"]).write(dir.path(), "lotbridge");
    let with_cert = format!(
        "ca_file = \"{}\"\nclient_cert_file = \"{}\"\nclient_key = {{ file = \"{}\" }}",
        path(&ca),
        path(&cert),
        path(&key)
    );
    let without_cert = format!("ca_file = \"{}\"", path(&ca));
    let kafka = Kafka::new();
    let heartbeat = |http: reqwest::Client| {
        let url = format!("{}/_sim/records", v.front.base_url());
        async move { http.get(url).send().await.map(|r| r.status().as_u16()) }
    };
    let anonymous = common::load(&config(&kafka, "mtls", &v.front.base_url(), &without_cert));
    assert!(heartbeat(anonymous.sinks[0].http.clone()).await.is_err(), "the vendor demands a client certificate");
    let known = common::load(&config(&kafka, "mtls", &v.front.base_url(), &with_cert));
    assert_eq!(heartbeat(known.sinks[0].http.clone()).await.expect("mutual TLS"), 200);
}

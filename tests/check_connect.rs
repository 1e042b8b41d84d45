//! `lotbridge check-config --connect`, the go-live check, against the mock cluster and the
//! simulators: everything right passes, and each fault an integrator meets on the day is
//! caught by its own ✗ line: a missing topic, unreachable brokers, refused credentials, an
//! unavailable token endpoint, an unreachable host, a wrong CA, a vendor clock off.

mod common;

use common::tls::{Pki, TlsFront};
use common::Kafka;
use lotbridge::probe::{self, Check};
use lotbridge::secret::Secret;
use lotbridge::sim::{bingzhouxing, isp, Failure, SimServer};
use std::process::Command;

struct Vendors {
    bzx: SimServer,
    isp: SimServer,
}

async fn vendors() -> Vendors {
    let addr = "127.0.0.1:0".parse().expect("addr");
    let bzx = bingzhouxing::Simulator::new([("350".to_string(), Secret::new("tok"))]).start(addr).await.expect("bzx");
    let isp = isp::Simulator::new("lotbridge", "isp-secret").start(addr).await.expect("isp");
    Vendors { bzx, isp }
}

fn kafka_with_topics(topic: &str) -> Kafka {
    let kafka = Kafka::new();
    for t in [topic.to_string(), format!("{topic}.dlq"), format!("{topic}.results")] {
        kafka.topic(&t, 3);
    }
    kafka
}

fn config(kafka_section: &str, bzx_url: &str, bzx_network: &str, isp_url: &str, isp_secret: &str) -> String {
    format!(
        "{kafka_section}\n[[sinks]]\nname = \"bzx\"\n[sinks.network]\n{bzx_network}\n[sinks.bingzhouxing]\nbase_url = \"{bzx_url}\"\n\
         [[sinks]]\nname = \"isp\"\n[sinks.inspur_isp]\nbase_url = \"{isp_url}\"\nclient_id = \"lotbridge\"\n\
         client_secret = {{ value = \"{isp_secret}\" }}\n"
    )
}

async fn run(toml: &str) -> Vec<Check> {
    let checks = probe::checks(&common::load(toml)).await;
    checks.iter().for_each(|c| println!("{c}"));
    checks
}

fn failed(checks: &[Check]) -> Vec<String> {
    checks.iter().filter(|c| !c.ok).map(Check::to_string).collect()
}

/// The one failed check, which must be named `name` and say `why`.
fn only_failure(checks: &[Check], name: &str, why: &str) {
    let failed = failed(checks);
    assert_eq!(failed.len(), 1, "{failed:#?}");
    assert!(failed[0].starts_with(&format!("✗ {name}")) && failed[0].contains(why), "{failed:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn everything_right_passes_and_each_line_says_what_it_saw() {
    let v = vendors().await;
    let kafka = kafka_with_topics("go-live");
    let toml =
        config(&common::kafka_section(&kafka, "go-live"), &v.bzx.base_url(), "", &v.isp.base_url(), "isp-secret");
    let checks = run(&toml).await;
    assert!(failed(&checks).is_empty(), "{checks:#?}");
    let text: Vec<String> = checks.iter().map(Check::to_string).collect();
    for line in [
        "✓ kafka brokers",
        "✓ kafka topic go-live (input): 3 partitions",
        "✓ kafka topic go-live.dlq (dead letters)",
        "✓ kafka group g-go-live.bzx: offsets readable",
        "✓ sink bzx dns: 127.0.0.1",
        "✓ sink bzx connect",
        "✓ sink bzx clock",
        "✓ sink isp token: obtained",
    ] {
        assert!(text.iter().any(|l| l.starts_with(line) || l.contains(line)), "{line} missing in {text:#?}");
    }
    assert!(!text.iter().any(|l| l.starts_with("✓ sink bzx token")), "Bingzhouxing has no token endpoint");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_topic_fails() {
    let v = vendors().await;
    let kafka = kafka_with_topics("go-live-topic");
    let section = common::kafka_section(&kafka, "go-live-topic")
        .replace("topics = [\"go-live-topic\"]", "topics = [\"go-live-topic\", \"nowhere\"]");
    let checks = run(&config(&section, &v.bzx.base_url(), "", &v.isp.base_url(), "isp-secret")).await;
    only_failure(&checks, "kafka topic nowhere (input)", "does not exist");
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_brokers_fail() {
    let v = vendors().await;
    let kafka = Kafka::new();
    let section = common::kafka_section(&kafka, "go-live-down").replace(&kafka.brokers, "127.0.0.1:1");
    let checks = run(&config(&section, &v.bzx.base_url(), "", &v.isp.base_url(), "isp-secret")).await;
    only_failure(&checks, "kafka brokers 127.0.0.1:1", "Connection refused");
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_credentials_fail() {
    let v = vendors().await;
    let kafka = kafka_with_topics("go-live-creds");
    let section = common::kafka_section(&kafka, "go-live-creds");
    let checks = run(&config(&section, &v.bzx.base_url(), "", &v.isp.base_url(), "wrong-secret")).await;
    only_failure(&checks, "sink isp token", "credentials refused");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_token_endpoint_fails() {
    let v = vendors().await;
    v.isp.control.fail_next(10, Failure::Status(503));
    let kafka = kafka_with_topics("go-live-token");
    let section = common::kafka_section(&kafka, "go-live-token");
    let checks = run(&config(&section, &v.bzx.base_url(), "", &v.isp.base_url(), "isp-secret")).await;
    only_failure(&checks, "sink isp token", "token unavailable");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_host_fails() {
    let v = vendors().await;
    let kafka = kafka_with_topics("go-live-host");
    let section = common::kafka_section(&kafka, "go-live-host");
    let checks = run(&config(&section, "http://127.0.0.1:1", "", &v.isp.base_url(), "isp-secret")).await;
    only_failure(&checks, "sink bzx connect", "cannot connect");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_ca_fails_naming_the_certificate() {
    let v = vendors().await;
    let dir = tempfile::tempdir().expect("dir");
    let city = Pki::new("city CA");
    let front = TlsFront::start(&city.issue(&["127.0.0.1"]), None, v.bzx.addr).await;
    let wrong = Pki::new("other CA").write_ca(dir.path(), "wrong.pem");
    let right = city.write_ca(dir.path(), "right.pem");
    let kafka = kafka_with_topics("go-live-ca");
    let section = common::kafka_section(&kafka, "go-live-ca");
    let network = |ca: &std::path::Path| format!("ca_file = \"{}\"\npublic_roots = false", ca.display());
    let checks = run(&config(&section, &front.base_url(), &network(&wrong), &v.isp.base_url(), "isp-secret")).await;
    only_failure(&checks, "sink bzx tls", "certificate");
    let checks = run(&config(&section, &front.base_url(), &network(&right), &v.isp.base_url(), "isp-secret")).await;
    assert!(failed(&checks).is_empty(), "{checks:#?}");
    assert!(checks.iter().any(|c| c.to_string().starts_with("✓ sink bzx tls: TLS handshake done")), "{checks:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_vendor_clock_off_fails() {
    let v = vendors().await;
    v.bzx.control.set_date_offset(-30);
    let kafka = kafka_with_topics("go-live-clock");
    let section = common::kafka_section(&kafka, "go-live-clock");
    let checks = run(&config(&section, &v.bzx.base_url(), "", &v.isp.base_url(), "isp-secret")).await;
    only_failure(&checks, "sink bzx clock", "behind this host");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_command_exits_69_on_a_failed_check_and_0_when_all_pass() {
    let v = vendors().await;
    let kafka = kafka_with_topics("go-live-cli");
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("lotbridge.toml");
    let section = common::kafka_section(&kafka, "go-live-cli");
    let exe = env!("CARGO_BIN_EXE_lotbridge");
    for (secret, code) in [("isp-secret", 0), ("wrong-secret", 69)] {
        std::fs::write(&path, config(&section, &v.bzx.base_url(), "", &v.isp.base_url(), secret)).expect("write");
        let out = tokio::process::Command::from(Command::new(exe))
            .args(["check-config", "--connect", "--config"])
            .arg(&path)
            .env_clear()
            .output()
            .await
            .expect("run");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(code), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout.contains("✓ kafka brokers") && !stdout.contains(secret), "{stdout}");
    }
}

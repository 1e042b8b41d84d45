//! `lotbridge dlq inspect` and `replay` on the mock cluster: records dead-lettered by a
//! misconfiguration (a lot bound to a Bingzhouxing lotCode the platform does not know,
//! code 1000) are replayed after the fix and delivered, and nothing else moves. (A wrong
//! token no longer dead-letters anything: the sink holds until it is fixed.)

mod common;

use common::{eventually, header, vehicle, Kafka, Running};
use lotbridge::dlq::{self, DlqError, ReplayOptions, ReplaySummary, Selection};
use lotbridge::secret::Secret;
use lotbridge::sim::{bingzhouxing::Simulator, SimServer};
use rdkafka::message::{Message, OwnedMessage};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

/// Two Bingzhouxing sinks: `bzx-a` binds A1 (vendor lot 350) and A2 (351), `bzx-b` binds B1
/// (vendor lot 900). A1 is bound to vendor lot 350 when `a1` is `right`, else to 349, a
/// lotCode platform A does not know.
fn config(kafka: &Kafka, a: &SimServer, b: &SimServer, a1: &str) -> String {
    let a1_lot = if a1 == "right" { "350" } else { "349" };
    let sink = |name: &str, bindings: &str, url: String| {
        format!(
            "[[sinks]]\nname = \"{name}\"\nbindings = [{bindings}]\n[sinks.retry]\ninitial_ms = 20\nmax_interval_ms = 200\n\
             stale_signature_retries = 1\n[sinks.batch]\nlinger_ms = 5\n[sinks.bingzhouxing]\nbase_url = \"{url}\"\n"
        )
    };
    let a_bindings = format!(
        "{{ lot = \"A1\", vendor_lot = \"{a1_lot}\", token = {{ value = \"right\" }} }}, \
         {{ lot = \"A2\", vendor_lot = \"351\", token = {{ value = \"tok-351\" }} }}"
    );
    let b_bindings = "{ lot = \"B1\", vendor_lot = \"900\", token = { value = \"tok-900\" } }";
    format!(
        "[kafka]\nbrokers = \"{}\"\ntopics = [\"in\"]\ngroup_prefix = \"g\"\ndead_letter_topic = \"in.dlq\"\n\
         results_topic = \"in.results\"\ncommit_interval_ms = 200\ndrain_timeout_ms = 3000\n\
         [kafka.properties]\n\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"500\"\n\n{}\n{}",
        kafka.brokers,
        sink("bzx-a", &a_bindings, a.base_url()),
        sink("bzx-b", b_bindings, b.base_url()),
    )
}

/// Platform A knows A1 with the token `right`; platform B does not know lot 900 (code 1000).
async fn simulators() -> (SimServer, SimServer) {
    let addr = "127.0.0.1:0".parse().expect("addr");
    let a = Simulator::new([("350".to_string(), Secret::new("right")), ("351".to_string(), Secret::new("tok-351"))]);
    let b = Simulator::new([("901".to_string(), Secret::new("tok-901"))]);
    (a.start(addr).await.expect("sim a"), b.start(addr).await.expect("sim b"))
}

fn plates(server: &SimServer) -> Vec<String> {
    let records = server.control.records_for("carInOut");
    records.iter().map(|r| r.record["carNo"].as_str().unwrap_or("").to_string()).collect()
}

fn kafka_config(toml: &str) -> lotbridge::config::KafkaConfig {
    lotbridge::config::Config::parse(toml, std::path::Path::new("test.toml")).expect("config").kafka
}

fn replay_options(sink: Option<&str>, stage: Option<&str>, dry_run: bool) -> ReplayOptions {
    let selection = Selection { sink: sink.map(Into::into), stage: stage.map(Into::into), ..Selection::default() };
    ReplayOptions { from: "in.dlq".into(), selection, to: None, dry_run }
}

async fn replay(kc: &lotbridge::config::KafkaConfig, options: &ReplayOptions) -> Result<ReplaySummary, DlqError> {
    dlq::replay(kc, options, &indicatif::ProgressBar::hidden()).await
}

/// (key, value) of each record, for comparing what was replayed with what was produced.
fn contents(records: &[OwnedMessage]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out: Vec<_> = records
        .iter()
        .map(|m| (m.key().unwrap_or_default().to_vec(), m.payload().unwrap_or_default().to_vec()))
        .collect();
    out.sort();
    out
}

/// Produces three A1 entries (refused: unknown lotCode), one A2 entry (delivered), two B1
/// entries (refused by platform B: unknown lot) and one record that is not JSON (dead-lettered
/// by both sinks), runs the engine until every dead letter is written, and stops it.
async fn misconfigured_run(kafka: &Kafka, toml: &str, a: &SimServer) -> Vec<OwnedMessage> {
    let mut produced = Vec::new();
    for (i, lot) in ["A1", "A1", "B1", "A1", "A2", "B1"].iter().enumerate() {
        produced.push((lot.to_string(), vehicle(&format!("e{i}"), lot, &format!("晋A0000{i}"), false)));
    }
    produced.push(("A1".to_string(), b"{not json".to_vec()));
    kafka.produce_all("in", &produced).await;
    let engine = Running::start(common::load(toml));
    assert!(eventually(WAIT, || async { kafka.read_all("in.dlq").len() >= 7 }).await, "seven dead letters");
    assert!(eventually(WAIT, || async { plates(a).contains(&"晋A00004".to_string()) }).await, "A2 delivered");
    engine.stop().await;
    kafka.read_all("in")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dead_letters_of_an_unknown_lot_code_are_replayed_after_the_fix_and_nothing_else_moves() {
    let kafka = Kafka::new();
    kafka.topic("in", 2);
    kafka.topic("in.dlq", 1);
    let (a, b) = simulators().await;
    let wrong = config(&kafka, &a, &b, "wrong");
    let input = misconfigured_run(&kafka, &wrong, &a).await;
    let dead = kafka.read_all("in.dlq");
    assert_eq!(dead.len(), 7, "3 + 2 unknown lot + 2 decode (one per sink)");
    let kc = kafka_config(&wrong);

    // inspect groups them by sink, stage and reason.
    let groups = dlq::inspect(&kc, "in.dlq", &Selection::default()).await.expect("inspect");
    let summary: Vec<(&str, &str, u64)> = groups.iter().map(|g| (g.sink.as_str(), g.stage.as_str(), g.count)).collect();
    assert_eq!(
        summary,
        [("bzx-a", "decode", 1), ("bzx-a", "deliver", 3), ("bzx-b", "decode", 1), ("bzx-b", "deliver", 2)]
    );
    assert!(groups[1].reason.contains("code 1000"), "{}", groups[1].reason);
    assert!(groups[3].reason.contains("code 1000"), "{}", groups[3].reason);
    assert!(groups.iter().all(|g| g.first.is_some() && g.first <= g.last));

    // --lot: one lot's dead letters only, whatever the sink; the decode dead letter (not
    // JSON) is found by its key.
    let of_lot = |lot: &str| Selection { lot: Some(lot.into()), ..Selection::default() };
    let a1 = dlq::inspect(&kc, "in.dlq", &of_lot("A1")).await.expect("inspect --lot");
    let a1: Vec<(&str, &str, u64)> = a1.iter().map(|g| (g.sink.as_str(), g.stage.as_str(), g.count)).collect();
    assert_eq!(a1, [("bzx-a", "decode", 1), ("bzx-a", "deliver", 3), ("bzx-b", "decode", 1)]);
    let b1 = dlq::inspect(&kc, "in.dlq", &of_lot("B1")).await.expect("inspect --lot");
    assert_eq!(b1.iter().map(|g| g.count).sum::<u64>(), 2, "B1's two refusals");
    assert!(dlq::inspect(&kc, "in.dlq", &of_lot("A2")).await.expect("inspect --lot").is_empty(), "A2 was delivered");
    let mut one_lot = replay_options(None, Some("deliver"), true);
    one_lot.selection.lot = Some("B1".into());
    let dry = replay(&kc, &one_lot).await.expect("dry run --lot");
    assert_eq!((dry.scanned, dry.selected), (7, 2), "only B1's delivery failures");

    // A dry run counts and writes nothing; a window after every dead letter selects nothing.
    let dry = replay(&kc, &replay_options(Some("bzx-a"), Some("deliver"), true)).await.expect("dry run");
    assert_eq!((dry.scanned, dry.selected, dry.replayed), (7, 3, 3));
    let mut later = replay_options(None, None, true);
    later.selection.since = Some(chrono::Utc::now() + chrono::Duration::seconds(1));
    assert_eq!(replay(&kc, &later).await.expect("window").selected, 0);
    assert_eq!(kafka.read_all("in").len(), input.len(), "the dry run wrote nothing");

    // The fix: the right lotCode. Replay bzx-a's delivery failures, then run the fixed config.
    let fixed = config(&kafka, &a, &b, "right");
    let options = replay_options(Some("bzx-a"), Some("deliver"), false);
    let done = replay(&kc, &options).await.expect("replay");
    assert_eq!((done.replayed, done.by_topic.get("in").copied()), (3, Some(3)));
    let after = kafka.read_all("in");
    assert_eq!(after.len(), input.len() + 3, "the input topic got only the replayed records");
    let replayed: Vec<OwnedMessage> =
        after.into_iter().filter(|m| header(m, "lotbridge.replay.sink").is_some()).collect();
    let originals: Vec<OwnedMessage> =
        dead.iter().filter(|m| header(m, "lotbridge.stage").as_deref() == Some("deliver")).cloned().collect();
    let a_originals: Vec<OwnedMessage> =
        originals.into_iter().filter(|m| header(m, "lotbridge.sink").as_deref() == Some("bzx-a")).collect();
    assert_eq!(contents(&replayed), contents(&a_originals), "original keys and bytes");
    assert!(replayed.iter().all(|m| header(m, "lotbridge.replay.sink").as_deref() == Some("bzx-a")));
    for m in &replayed {
        let original = header(m, "lotbridge.replay.of").expect("replay.of");
        assert!(original.starts_with("in.dlq/0/"), "{original}");
    }

    let engine = Running::start(common::load(&fixed));
    let want = ["晋A00000", "晋A00001", "晋A00003"].map(String::from);
    assert!(eventually(WAIT, || async { want.iter().all(|p| plates(&a).contains(p)) }).await, "replayed and delivered");
    engine.stop().await;
    assert_eq!(plates(&a).iter().filter(|p| want.contains(p)).count(), 3, "each once");
    assert!(plates(&b).is_empty(), "platform B was never sent the replayed A1 records");
    assert_eq!(contents(&kafka.read_all("in.dlq")), contents(&dead), "the other dead letters stay, no new ones");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replay_to_another_topic_and_refusals() {
    let kafka = Kafka::new();
    kafka.topic("in", 1);
    kafka.topic("in.dlq", 1);
    kafka.topic("quarantine", 3);
    let (a, b) = simulators().await;
    let toml = config(&kafka, &a, &b, "wrong");
    let kc = kafka_config(&toml);
    kafka.produce("in", "B1", &vehicle("b", "B1", "晋B00001", false)).await;
    let engine = Running::start(common::load(&toml));
    assert!(eventually(WAIT, || async { !kafka.read_all("in.dlq").is_empty() }).await);
    engine.stop().await;

    let mut to = replay_options(None, None, false);
    to.to = Some("quarantine".into());
    let done = replay(&kc, &to).await.expect("replay");
    assert_eq!(done.by_topic.get("quarantine").copied(), Some(1));
    assert_eq!(kafka.read_all("quarantine").len(), 1);
    assert_eq!(kafka.read_all("in").len(), 1, "the input topic is untouched");

    to.to = Some("in.dlq".into());
    assert!(replay(&kc, &to).await.is_err(), "never into the topic read");
    let missing = ReplayOptions { from: "no-such-topic".into(), ..replay_options(None, None, true) };
    let err = replay(&kc, &missing).await.unwrap_err();
    assert!(err.to_string().contains("no-such-topic"), "{err}");
}

/// Writes a dead letter as the engine does: original key and bytes, reason in headers.
async fn write_dead_letter(kafka: &Kafka, topic: &str, sink: &str, error: &str) {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer =
        rdkafka::ClientConfig::new().set("bootstrap.servers", &kafka.brokers).create().expect("producer");
    let headers = [("lotbridge.sink", sink), ("lotbridge.stage", "deliver"), ("lotbridge.error", error)]
        .into_iter()
        .chain([("lotbridge.original.topic", "in"), ("lotbridge.original.partition", "0")])
        .fold(OwnedHeaders::new(), |h, (key, v)| h.insert(Header { key, value: Some(v) }));
    let value = vehicle("x", "A1", "晋A99999", false);
    let record = FutureRecord::to(topic).key("A1").payload(&value).headers(headers);
    producer.send(record, Duration::from_secs(10)).await.expect("dead letter");
}

fn lotbridge(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_lotbridge")).args(args).output().expect("run lotbridge")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_tools_need_only_the_kafka_table() {
    let kafka = Kafka::new();
    kafka.topic("in", 1);
    kafka.topic("cli.dlq", 1);
    write_dead_letter(&kafka, "cli.dlq", "bzx", "code 1000: unknown lot").await;
    write_dead_letter(&kafka, "cli.dlq", "bzx", "code 1000: unknown lot").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("lotbridge.toml");
    // A vendor secret that is not set: the tools must not try to resolve it.
    let toml = format!(
        "[kafka]\nbrokers = \"{}\"\ntopics = [\"in\"]\ndead_letter_topic = \"cli.dlq\"\n\n[[sinks]]\nname = \"bzx\"\n\
         [sinks.zvcms]\nbase_url = \"http://127.0.0.1:1\"\nopen_id = \"x\"\n\
         grant_code = {{ env = \"LOTBRIDGE_TEST_NEVER_SET\" }}\nsecret_key = {{ env = \"LOTBRIDGE_TEST_NEVER_SET\" }}\n",
        kafka.brokers
    );
    std::fs::write(&path, toml).expect("write config");
    let config = path.to_str().expect("utf-8 path");

    let out = tokio::task::block_in_place(|| lotbridge(&["dlq", "inspect", "--config", config]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("code 1000: unknown lot") && text.ends_with("2 dead letters in 1 groups\n"), "{text}");

    let dry = ["dlq", "replay", "--config", config, "--from", "cli.dlq", "--sink", "bzx", "--dry-run"];
    let out = tokio::task::block_in_place(|| lotbridge(&dry));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.starts_with("dry run, nothing written: scanned 2, selected 2, replayed 2"), "{text}");
    let other_lot = ["dlq", "replay", "--config", config, "--from", "cli.dlq", "--lot", "B7", "--dry-run"];
    let out = tokio::task::block_in_place(|| lotbridge(&other_lot));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("dry run, nothing written: scanned 2, selected 0"), "{text}");
    let out = tokio::task::block_in_place(|| lotbridge(&["dlq", "inspect", "--config", config, "--lot", "A1"]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.ends_with("2 dead letters in 1 groups\n"), "{text}");
    assert_eq!(kafka.read_all("in").len(), 0, "a dry run writes nothing");

    let bad = ["dlq", "replay", "--config", config, "--from", "cli.dlq", "--since", "yesterday"];
    let out = tokio::task::block_in_place(|| lotbridge(&bad));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("2026-11-23T08:00:00+08:00"), "the error shows the format");
}

//! The four vendors end to end: events produced to the mock cluster reach each vendor's
//! simulator correctly mapped and signed (the simulators check credentials and signatures),
//! tokens expiring mid-stream are refreshed once, zvcms answers land on the results topic,
//! and a batch with one bad record delivers the others.

mod common;

use common::{eventually, header, vehicle, Kafka, Running};
use lotbridge::sim::{self, SimServer};
use rdkafka::Message;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

const RETRY: &str = "[sinks.retry]\ninitial_ms = 20\nmax_interval_ms = 200\n[sinks.batch]\nlinger_ms = 5\n";

fn sinks() -> String {
    format!(
        r#"
[[sinks]]
name = "bzx"
bindings = [{{ lot = "P1", vendor_lot = "350", token = {{ value = "tok-350" }} }}]
{RETRY}
[sinks.bingzhouxing]
base_url = "{{bzx}}"

[[sinks]]
name = "isp"
bindings = [{{ lot = "P1", vendor_lot = "ATXL/1" }}, {{ lot = "P2", vendor_lot = "ATXL/2" }}]
{RETRY}
[sinks.inspur_isp]
base_url = "{{isp}}"
client_id = "lotbridge"
client_secret = {{ value = "isp-secret" }}

[[sinks]]
name = "coupons"
bindings = [{{ lot = "P1", vendor_lot = "1012004281EYS" }}]
{RETRY}
[sinks.barrier_coupon]
base_url = "{{barrier}}"
client_id = "244221"
client_secret = {{ value = "barrier-secret" }}

[[sinks]]
name = "members"
{RETRY}
[sinks.zvcms]
base_url = "{{zvcms}}"
open_id = "6dc05b4ac175cf316d226252b05cf685"
grant_code = {{ value = "782c281f62" }}
secret_key = {{ value = "zvcms-secret" }}
all_lots = true
"#
    )
}

/// Starts every sink's simulator on a free port and returns the final config text.
async fn setup(kafka: &Kafka, topic: &str, sinks_toml: &str) -> (String, HashMap<String, SimServer>) {
    let placeholder = ["{bzx}", "{isp}", "{barrier}", "{zvcms}"]
        .iter()
        .fold(sinks_toml.to_string(), |t, p| t.replace(p, "http://127.0.0.1:0"));
    let probe = common::load(&format!("{}{placeholder}", common::kafka_section(kafka, topic)));
    let servers = sim::start_for_config(&probe).await.expect("simulators");
    let mut text = sinks_toml.to_string();
    let mut by_name = HashMap::new();
    for (name, server) in servers {
        let key = match name.as_str() {
            "bzx" => "{bzx}",
            "isp" => "{isp}",
            "coupons" => "{barrier}",
            _ => "{zvcms}",
        };
        text = text.replace(key, &server.base_url());
        by_name.insert(name, server);
    }
    (format!("{}{text}", common::kafka_section(kafka, topic)), by_name)
}

fn ev(id: &str, ty: &str, lot: &str, data: Value) -> (String, Vec<u8>) {
    (lot.to_string(), common::event(id, ty, lot, data))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_vendor_receives_mapped_signed_requests_and_answers_come_back() {
    let kafka = Kafka::new();
    kafka.topic("v1", 2);
    kafka.topic("v1.results", 1);
    let (toml, sims) = setup(&kafka, "v1", &sinks()).await;
    let engine = Running::start(common::load(&toml));
    let coupon = json!({"to": {"plate": "晋A12345"}, "lots": ["P1", "P9"], "minutes": 60,
        "valid_from": "2026-11-23T08:00:00+08:00", "valid_until": "2026-11-24T08:00:00+08:00", "source": "1001"});
    let records = vec![
        ev(
            "u1",
            "lot.upserted",
            "P1",
            json!({"name": "奥体西路1号", "coordinate_system": "GCJ02", "longitude": 117.1, "latitude": 36.6}),
        ),
        ev("s1", "spaces.changed", "P1", json!({"total": 99, "free": 9})),
        ("P1".into(), vehicle("in1", "P1", "晋A12345", false)),
        ("P1".into(), vehicle("out1", "P1", "晋A12345", true)),
        ev("c1", "coupon.granted", "P1", coupon),
        ev("m1", "member.coupons.requested", "P2", json!({"member_id": "1003", "status": "usable"})),
    ];
    kafka.produce_all("v1", &records).await;
    let has = |name: &str, label: &str, n: usize| sims[name].control.records_for(label).len() >= n;
    assert!(
        eventually(WAIT, || async {
            has("bzx", "carInOut", 2)
                && has("bzx", "parkSpace", 1)
                && has("isp", "park/spot", 1)
                && has("isp", "park/spot-num", 1)
                && has("isp", "park/entrance", 1)
                && has("isp", "park/departure", 1)
                && has("coupons", "sendCoupon", 1)
                && has("members", "coupon.user-coupon-list", 1)
        })
        .await,
        "every vendor got its records"
    );
    assert!(eventually(WAIT, || async { !kafka.read_all("v1.results").is_empty() }).await, "an answer");
    engine.stop().await;

    let inout = sims["bzx"].control.records_for("carInOut");
    assert_eq!((inout[0].lot.as_str(), inout[0].record["inOutType"].as_str()), ("350", Some("in")));
    assert_eq!(inout[1].record["inOutType"], "out");
    assert_eq!(inout[0].record["carNo"], "晋A12345");
    let space = &sims["bzx"].control.records_for("parkSpace")[0].record;
    assert_eq!((space["totalSpace"].as_i64(), space["surplusSpace"].as_i64()), (Some(99), Some(9)));
    let counts = &sims["isp"].control.records_for("park/spot-num")[0].record;
    assert_eq!(counts["used_spots_num"], 90);
    let departure = &sims["isp"].control.records_for("park/departure")[0].record;
    assert_eq!(departure["paid_fee"], json!(5.0));
    let coupon = &sims["coupons"].control.records_for("sendCoupon")[0];
    assert_eq!(coupon.lot, "1012004281EYS", "only the bound lot's vendor code");
    assert_eq!(coupon.record["deductContent"], "60");
    assert!(sims["isp"].control.records_for("park/spot").iter().all(|r| r.lot == "ATXL/1"));

    let answers = kafka.read_all("v1.results");
    let answer: Value = serde_json::from_slice(answers[0].payload().unwrap()).unwrap();
    assert_eq!(answer["type"], "member.coupons.listed");
    assert_eq!(answer["data"]["in_reply_to"], "m1");
    assert_eq!(answers[0].key(), Some(&b"1003"[..]), "keyed by member id");
    assert!(!answer["data"]["coupons"].as_array().unwrap().is_empty());
    let dlq = kafka.read_all("v1.dlq");
    assert!(
        dlq.is_empty(),
        "nothing dead-lettered: {:?}",
        dlq.iter().map(|m| header(m, "lotbridge.error")).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_token_expiring_mid_stream_is_refreshed_once_and_nothing_is_lost() {
    let kafka = Kafka::new();
    kafka.topic("v2", 1);
    let (toml, sims) = setup(&kafka, "v2", &sinks()).await;
    let isp = &sims["isp"];
    let engine = Running::start(common::load(&toml));
    let first: Vec<(String, Vec<u8>)> =
        (0..100).map(|i| ("P1".to_string(), vehicle(&format!("a{i}"), "P1", &format!("晋A{i:05}"), false))).collect();
    kafka.produce_all("v2", &first).await;
    assert!(eventually(WAIT, || async { isp.control.records_for("park/entrance").len() >= 100 }).await);
    isp.control.expire_tokens();
    let second: Vec<(String, Vec<u8>)> =
        (100..200).map(|i| ("P1".to_string(), vehicle(&format!("a{i}"), "P1", &format!("晋A{i:05}"), false))).collect();
    kafka.produce_all("v2", &second).await;
    assert!(eventually(WAIT, || async { isp.control.records_for("park/entrance").len() >= 200 }).await, "nothing lost");
    let m = engine.metrics.clone();
    let fetched = || m.count(&m.token_fetches, &["isp", "ok"]);
    assert!(eventually(WAIT, || async { fetched() == 2 }).await, "token fetches exported: {}", fetched());
    assert_eq!(m.count(&m.token_invalidations, &["isp"]), 1, "the refused token was forgotten once");
    engine.stop().await;
    let token_calls = isp.control.requests().iter().filter(|r| r.endpoint == sim::isp::TOKEN).count();
    assert_eq!(token_calls, 2, "one fetch at start, one refresh after the expiry");
    let refusals = isp.control.requests().iter().filter(|r| r.code.as_deref() == Some("401")).count();
    assert!(refusals >= 1, "the expired token was refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_with_one_bad_record_delivers_the_others() {
    let kafka = Kafka::new();
    kafka.topic("v3", 1);
    // Photos sent as they are: one over the platform's 50 000-character limit is refused
    // (1502) and takes its whole batch down with it, until the engine bisects.
    let sinks_toml = sinks().replacen("name = \"bzx\"\n", "name = \"bzx\"\nphoto = \"as_is\"\n", 1);
    let (toml, sims) = setup(&kafka, "v3", &sinks_toml).await;
    let bzx = &sims["bzx"];
    let big_photo = json!({"jpeg_base64": format!("/9j/{}", "A".repeat(60_000))});
    let records: Vec<(String, Vec<u8>)> = (0..9)
        .map(|i| {
            let mut data = json!({"plate": format!("晋A{i:05}"), "vehicle_type": "small", "gate": "East"});
            if i == 5 {
                data["photo"] = big_photo.clone();
            }
            ev(&format!("b{i}"), "vehicle.entered", "P1", data)
        })
        .collect();
    let engine = Running::start(common::load(&toml));
    kafka.produce_all("v3", &records).await;
    assert!(eventually(WAIT, || async { !kafka.read_all("v3.dlq").is_empty() }).await, "the bad one is dead-lettered");
    assert!(eventually(WAIT, || async { bzx.control.records_for("carInOut").len() >= 8 }).await, "the others arrive");
    engine.stop().await;
    let plates: Vec<String> =
        bzx.control.records_for("carInOut").iter().map(|r| r.record["carNo"].as_str().unwrap().to_string()).collect();
    assert!(!plates.contains(&"晋A00005".to_string()));
    let dlq = kafka.read_all("v3.dlq");
    assert_eq!(dlq.len(), 1);
    assert_eq!(header(&dlq[0], "lotbridge.original.offset").as_deref(), Some("5"));
    assert!(header(&dlq[0], "lotbridge.error").unwrap().contains("1502"));
    assert_eq!(kafka.committed("g-v3.bzx", "v3", 1), vec![9]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_daily_lot_list_is_rebuilt_from_kafka_and_pushed_at_its_time() {
    let kafka = Kafka::new();
    kafka.topic("v4", 2);
    let (toml, sims) = setup(&kafka, "v4", &sinks()).await;
    let isp = &sims["isp"];
    let lots = vec![
        ev("u1", "lot.upserted", "P1", json!({"name": "一号", "coordinate_system": "GCJ02"})),
        ev("u2", "lot.upserted", "P2", json!({"name": "二号", "coordinate_system": "GCJ02"})),
        ev("u3", "lot.upserted", "P1", json!({"name": "一号新", "coordinate_system": "GCJ02"})),
    ];
    kafka.produce_all("v4", &lots).await;
    let first = Running::start(common::load(&toml));
    assert!(eventually(WAIT, || async { isp.control.records_for("park/spot").len() >= 3 }).await);
    first.stop().await;
    // A new instance has nothing left to consume: only the rebuilt book knows the lots.
    let soon = (chrono::Utc::now() + chrono::Duration::seconds(12)).with_timezone(&lotbridge::engine::lots::china());
    let at = soon.format("%H:%M:%S").to_string();
    let toml = toml.replacen("name = \"isp\"\n", &format!("name = \"isp\"\ndaily_push_at = \"{at}\"\n"), 1);
    let second = Running::start(common::load(&toml));
    assert!(eventually(WAIT, || async { isp.control.records_for("park/spot").len() >= 5 }).await, "full list pushed");
    second.stop().await;
    let pushed: Vec<Value> = isp.control.records_for("park/spot")[3..].iter().map(|r| r.record.clone()).collect();
    let names: std::collections::BTreeSet<&str> = pushed.iter().filter_map(|r| r["park_name"].as_str()).collect();
    assert_eq!(names, ["一号新", "二号"].into_iter().collect(), "the latest state of every lot, once");
}

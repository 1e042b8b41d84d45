//! The Inspur ISP adapter against its simulator: real decoded events are mapped, assembled,
//! prepared (token from `/oauth/token`), sent over HTTP and classified; the simulator's
//! records show what the platform received.

use base64::Engine as _;
use bytes::Bytes;
use lotbridge::config::{Binding, Bindings};
use lotbridge::photo::{DropReason, PhotoOutcome, PhotoPolicy};
use lotbridge::sim::isp::Simulator;
use lotbridge::sim::{Failure, Recorded, SimServer};
use lotbridge::vendors::adjust::Change;
use lotbridge::vendors::isp::{build, Config, IspAdapter};
use lotbridge::vendors::missing_photo::placeholder_base64;
use lotbridge::vendors::SinkContext;
use lotbridge::vendors::{
    Adapter, Endpoint, HttpRequest, Mapped, Mapping, PrepareError, RetryReason, SkipReason, Verdict,
};
use serde_json::{json, Value};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const CLIENT_ID: &str = "dongyinglamp";
const CLIENT_SECRET: &str = "5f1uONTWY90mZwyvlxGZTg==";
const PREFIX: &str = "data:image/jpg;base64,";

struct Rig {
    server: SimServer,
    adapter: IspAdapter,
    http: reqwest::Client,
}

fn bindings() -> Arc<Bindings> {
    Arc::new(Bindings::from_list(vec![
        Binding { lot: "P1".into(), vendor_lot: "ATXL/1".into(), token: None },
        Binding { lot: "P2".into(), vendor_lot: "ATXL/2".into(), token: None },
    ]))
}

fn config(base_url: &str, secret: &str, extra: &str) -> Config {
    let text = format!(
        "base_url = \"{base_url}\"\nclient_id = \"{CLIENT_ID}\"\nclient_secret = {{ value = \"{secret}\" }}\n{extra}"
    );
    toml::from_str(&text).unwrap()
}

fn adapter(cfg: &Config, photo: PhotoPolicy, http: &reqwest::Client) -> IspAdapter {
    adapter_for(cfg, photo, http, bindings())
}

fn adapter_for(cfg: &Config, photo: PhotoPolicy, http: &reqwest::Client, bindings: Arc<Bindings>) -> IspAdapter {
    let ctx = SinkContext {
        name: "isp-test",
        bindings,
        photo,
        max_records: 100,
        base_dir: Path::new("."),
        http: http.clone(),
    };
    build(cfg, &ctx).unwrap()
}

async fn start(sim: Simulator) -> SimServer {
    sim.start("127.0.0.1:0".parse().unwrap()).await.unwrap()
}

fn strict_sim() -> Simulator {
    Simulator::new(CLIENT_ID, CLIENT_SECRET).with_lots(["ATXL/1".to_string(), "ATXL/2".to_string()])
}

async fn rig_with(secret: &str, extra: &str, photo: PhotoPolicy) -> Rig {
    rig_on(strict_sim(), secret, extra, photo).await
}

async fn rig_on(sim: Simulator, secret: &str, extra: &str, photo: PhotoPolicy) -> Rig {
    let server = start(sim).await;
    let http = reqwest::Client::new();
    let adapter = adapter(&config(&server.base_url(), secret, extra), photo, &http);
    Rig { server, adapter, http }
}

async fn rig() -> Rig {
    rig_with(CLIENT_SECRET, "", PhotoPolicy::Recompress).await
}

fn event(id: &str, ty: &str, lot: &str, data: Value) -> lotbridge::event::Event {
    let json = json!({"v": 1, "id": id, "type": ty, "lot": lot, "at": "2020-04-28T16:08:51+08:00", "data": data});
    lotbridge::event::decode(json.to_string().as_bytes()).unwrap()
}

fn small_jpeg() -> String {
    base64::engine::general_purpose::STANDARD.encode([0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10, b'J', b'F', b'I', b'F', 0])
}

fn vehicle(plate: Value, brand: Option<&str>, photo: &str) -> Value {
    json!({"plate": plate, "vehicle_type": "small", "brand": brand, "gate": "东门", "photo": {"jpeg_base64": photo}})
}

fn exit(method: &str) -> Value {
    let mut data = vehicle(json!("鲁A12345"), Some("大众"), &small_jpeg());
    let fees = json!({"parked_minutes": 59, "fee_payable_cents": 3450, "fee_paid_cents": 3405,
                      "paid_at": "2020-04-28T16:08:49+08:00", "payment_method": method});
    data.as_object_mut().unwrap().extend(fees.as_object().unwrap().clone());
    data
}

impl Rig {
    fn map(&self, event: &lotbridge::event::Event) -> Mapped {
        match self.adapter.map(event).unwrap() {
            Mapping::Record(m) => m,
            other => panic!("expected a record, got {other:?}"),
        }
    }

    /// One attempt: assemble, prepare, send, classify.
    async fn deliver(&self, lot: &str, endpoint: Endpoint, records: &[&Bytes]) -> Verdict {
        let refs: Vec<&[u8]> = records.iter().map(|r| &r[..]).collect();
        let body = self.adapter.assemble(&endpoint, &refs);
        self.send_body(lot, endpoint, body).await
    }

    async fn send_body(&self, lot: &str, endpoint: Endpoint, body: Bytes) -> Verdict {
        let request = self.adapter.prepare(lot, &endpoint, &body).await.unwrap();
        let timeout = std::time::Duration::from_secs(30);
        let response = lotbridge::engine::deliver::execute(&self.http, request, timeout).await.unwrap();
        self.adapter.classify(&endpoint, &response)
    }

    fn records(&self, endpoint: &str) -> Vec<Recorded> {
        self.server.control.records_for(endpoint)
    }

    fn token_calls(&self) -> usize {
        self.server.control.requests().iter().filter(|r| r.endpoint == "oauth/token").count()
    }
}

#[tokio::test]
async fn entries_and_departures_arrive_as_arrays() {
    let rig = rig().await;
    let first = rig.map(&event("e1", "vehicle.entered", "P1", vehicle(json!("鲁A12345"), Some("大众"), &small_jpeg())));
    let no_plate = json!({"plate": null, "vehicle_type": "new_energy", "gate": "东门"});
    let second = rig.map(&event("e2", "vehicle.entered", "P1", no_plate));
    let endpoint = first.endpoint;
    assert_eq!(rig.deliver("P1", endpoint, &[&first.record, &second.record]).await, Verdict::Delivered);

    let entries: Vec<Value> = rig.records("park/entrance").into_iter().map(|r| r.record).collect();
    let expected_first = json!({"park_code": "ATXL/1", "plate_number": "鲁A12345", "enter_time": 1588061331,
        "car_type": "2", "car_logo": "大众", "enter_pic": format!("{PREFIX}{}", small_jpeg())});
    let expected_second = json!({"park_code": "ATXL/1", "plate_number": "无牌车", "enter_time": 1588061331,
        "car_type": "6", "car_logo": "未知", "enter_pic": format!("{PREFIX}{}", placeholder_base64())});
    assert_eq!(entries, [expected_first, expected_second]);
    let log = rig.server.control.requests();
    assert!(log.iter().any(|r| r.endpoint == "park/entrance" && r.records == 2 && r.code.as_deref() == Some("200")));

    let departure = rig.map(&event("e3", "vehicle.exited", "P1", exit("wechat")));
    assert_eq!(rig.deliver("P1", departure.endpoint, &[&departure.record]).await, Verdict::Delivered);
    let got = &rig.records("park/departure")[0].record;
    assert_eq!((got["payable_fee"].clone(), got["paid_fee"].clone()), (json!(34.5), json!(34.05)));
    assert_eq!((got["depart_time"].as_i64(), got["pay_time"].as_i64()), (Some(1588061331), Some(1588061329)));
    assert_eq!((got["use_time"].as_u64(), got["pay_type"].as_str()), (Some(59), Some("3")));
}

#[tokio::test]
async fn labels_switch_sends_the_spec_labels() {
    let rig = rig_on(strict_sim().with_labels(true), CLIENT_SECRET, "labels = true", PhotoPolicy::Recompress).await;
    let m = rig.map(&event("e1", "vehicle.exited", "P2", exit("alipay")));
    assert_eq!(rig.deliver("P2", m.endpoint, &[&m.record]).await, Verdict::Delivered);
    let got = &rig.records("park/departure")[0];
    assert_eq!(got.lot, "ATXL/2");
    assert_eq!((got.record["car_type"].as_str(), got.record["pay_type"].as_str()), (Some("小型车"), Some("支付宝")));
}

#[tokio::test]
async fn lots_space_counts_and_deletions() {
    let rig = rig().await;
    let info =
        json!({"name": "奥体西路 1 号停车场", "longitude": 117.12, "latitude": 36.65, "coordinate_system": "GCJ02"});
    let upsert = rig.map(&event("e1", "lot.upserted", "P1", info));
    assert_eq!(rig.deliver("P1", upsert.endpoint, &[&upsert.record]).await, Verdict::Delivered);
    let lot = &rig.records("park/spot")[0].record;
    assert_eq!((lot["park_code"].as_str(), lot["coordinate_system"].as_str()), (Some("ATXL/1"), Some("GCJ02")));

    let spaces = rig.map(&event("e2", "spaces.changed", "P1", json!({"total": 1000, "free": 350})));
    assert_eq!(rig.deliver("P1", spaces.endpoint, &[&spaces.record]).await, Verdict::Delivered);
    let counts = &rig.records("park/spot-num")[0].record;
    assert_eq!(
        counts,
        &json!({"park_code": "ATXL/1", "total_spots_num": 1000, "remain_spots_num": 350, "used_spots_num": 650})
    );

    let d1 = rig.map(&event("e3", "lot.deleted", "P1", json!({})));
    let d2 = rig.map(&event("e4", "lot.deleted", "P2", json!({})));
    assert_eq!(rig.deliver("P1", d1.endpoint, &[&d1.record, &d2.record]).await, Verdict::Delivered);
    let deleted: Vec<String> = rig.records("park/spot:delete").into_iter().map(|r| r.lot).collect();
    assert_eq!(deleted, ["ATXL/1", "ATXL/2"], "one DELETE with the codes comma-joined");
    let log = rig.server.control.requests();
    assert!(log.iter().any(|r| r.endpoint == "park/spot:delete" && r.records == 2 && r.code.as_deref() == Some("0")));
}

#[tokio::test]
async fn expired_token_is_refreshed_once() {
    let rig = rig().await;
    let m = rig.map(&event("e1", "spaces.changed", "P1", json!({"total": 10, "free": 4})));
    assert_eq!(rig.deliver("P1", m.endpoint, &[&m.record]).await, Verdict::Delivered);
    assert_eq!(rig.deliver("P1", m.endpoint, &[&m.record]).await, Verdict::Delivered);
    assert_eq!(rig.token_calls(), 1, "the token is cached");

    rig.server.control.expire_tokens();
    assert_eq!(rig.deliver("P1", m.endpoint, &[&m.record]).await, Verdict::RefreshAuth, "code 401");
    let data = rig.adapter.assemble(&m.endpoint, &[&m.record]);
    let refused = rig.adapter.prepare("P1", &m.endpoint, &data).await.unwrap().headers;
    rig.adapter.invalidate_auth(&refused).await;
    rig.adapter.invalidate_auth(&refused).await; // a late 401 for the same token
    assert_eq!(rig.deliver("P1", m.endpoint, &[&m.record]).await, Verdict::Delivered);
    assert_eq!(rig.token_calls(), 2);
    assert_eq!(rig.records("park/spot-num").len(), 3, "the refused request recorded nothing");
}

#[tokio::test]
async fn wrong_credentials_are_rejected_without_hammering() {
    let rig = rig_with("not-the-secret", "", PhotoPolicy::Recompress).await;
    let err = rig.adapter.check_auth().await.unwrap_err();
    assert_eq!(err, PrepareError::AuthRejected("HTTP 401: invalid_client: Bad client credentials".into()));
    let ep = rig.adapter.endpoints().entrance;
    for _ in 0..5 {
        let err = rig.adapter.prepare("P1", &ep, &Bytes::from_static(b"[]")).await.unwrap_err();
        assert!(matches!(err, PrepareError::AuthRejected(_)), "{err:?}");
    }
    assert_eq!(rig.token_calls(), 1, "the cache cools down instead of asking again");
    assert!(!format!("{err:?}").contains(CLIENT_SECRET) && !format!("{err:?}").contains("not-the-secret"));
}

#[tokio::test]
async fn data_calls_without_a_valid_token_get_code_401() {
    let rig = rig().await;
    let m = rig.map(&event("e1", "vehicle.entered", "P1", vehicle(json!("鲁A1"), None, &small_jpeg())));
    let body = rig.adapter.assemble(&m.endpoint, &[&m.record]);
    let url = format!("{}/park/entrance", rig.server.base_url());
    for auth in [None, Some("Bearer forged-token"), Some("forged-token")] {
        let mut headers = http::HeaderMap::new();
        headers.insert("content-type", http::HeaderValue::from_static("application/json"));
        if let Some(value) = auth {
            headers.insert("authorization", http::HeaderValue::from_static(value));
        }
        let request = HttpRequest { method: http::Method::POST, url: url.clone(), headers, body: body.clone() };
        let timeout = std::time::Duration::from_secs(30);
        let response = lotbridge::engine::deliver::execute(&rig.http, request, timeout).await.unwrap();
        let reply: Value = serde_json::from_slice(&response.body).unwrap();
        assert_eq!(reply["code"], json!(401), "{auth:?}");
        assert_eq!(rig.adapter.classify(&m.endpoint, &response), Verdict::RefreshAuth);
    }
    assert!(rig.records("park/entrance").is_empty());
}

#[tokio::test]
async fn batch_of_101_is_refused_and_100_accepted() {
    let rig = rig().await;
    let m = rig.map(&event("e1", "vehicle.entered", "P1", vehicle(json!("鲁A1"), None, &small_jpeg())));
    let too_many: Vec<&Bytes> = std::iter::repeat_n(&m.record, 101).collect();
    match rig.deliver("P1", m.endpoint, &too_many).await {
        Verdict::Reject { reason, per_record } => {
            assert_eq!(reason, "code 1: a request carries 1 to 100 records, not 101");
            assert!(per_record, "a batch is bisected");
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert!(rig.records("park/entrance").is_empty());
    assert_eq!(rig.deliver("P1", m.endpoint, &too_many[..100]).await, Verdict::Delivered);
    assert_eq!(rig.records("park/entrance").len(), 100);
}

#[tokio::test]
async fn simulator_checks_fields_over_http() {
    let rig = rig().await;
    let m = rig.map(&event("e1", "vehicle.entered", "P1", vehicle(json!("鲁A1"), None, &small_jpeg())));
    let mut record: Value = serde_json::from_slice(&m.record).unwrap();
    record["enter_time"] = json!(1588061331000_i64);
    let verdict = rig.send_body("P1", m.endpoint, Bytes::from(json!([record]).to_string())).await;
    let Verdict::Reject { reason, .. } = verdict else { panic!("{verdict:?}") };
    assert_eq!(reason, "code 1: [0].enter_time: 1588061331000 is not a Unix time in seconds");

    let bad_datum = json!([{"park_code": "ATXL/1", "coordinate_system": "CGCS2000"}]);
    let spot = rig.adapter.endpoints().spot;
    let verdict = rig.send_body("P1", spot, Bytes::from(bad_datum.to_string())).await;
    assert!(matches!(&verdict, Verdict::Reject { reason, .. } if reason.contains("coordinate_system")), "{verdict:?}");
    assert!(rig.server.control.records().is_empty());
}

#[tokio::test]
async fn injected_failures_are_classified() {
    let rig = rig().await;
    rig.adapter.check_auth().await.unwrap(); // the token call must not consume the faults
    let m = rig.map(&event("e1", "spaces.changed", "P1", json!({"total": 10, "free": 4})));
    let control = &rig.server.control;

    control.fail_next(1, Failure::Code("500".into()));
    let v = rig.deliver("P1", m.endpoint, &[&m.record]).await;
    assert!(
        matches!(&v, Verdict::Retry { reason: RetryReason::VendorError, detail, .. } if detail.starts_with("code 500"))
    );
    control.fail_next(1, Failure::Status(503));
    let v = rig.deliver("P1", m.endpoint, &[&m.record]).await;
    assert!(matches!(v, Verdict::Retry { reason: RetryReason::ServerError, .. }), "{v:?}");
    control.throttle_next(1, 7);
    assert_eq!(
        rig.deliver("P1", m.endpoint, &[&m.record]).await,
        Verdict::Busy { after: Some(Duration::from_secs(7)) }
    );
    control.fail_next(1, Failure::Code("1".into()));
    let v = rig.deliver("P1", m.endpoint, &[&m.record]).await;
    assert!(matches!(v, Verdict::Reject { per_record: false, .. }), "one record per request: {v:?}");
    control.fail_next(1, Failure::Status(401));
    assert_eq!(rig.deliver("P1", m.endpoint, &[&m.record]).await, Verdict::RefreshAuth);

    assert_eq!(rig.deliver("P1", m.endpoint, &[&m.record]).await, Verdict::Delivered);
    assert_eq!(rig.records("park/spot-num").len(), 1);
}

/// A JPEG whose base64 text is well over 512 KB: noise compresses badly.
fn noisy_jpeg_base64() -> String {
    let mut seed = 0x2545_F491_4F6C_DD1D_u64;
    let img = image::RgbImage::from_fn(900, 900, |_, _| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        image::Rgb([seed as u8, (seed >> 8) as u8, (seed >> 16) as u8])
    });
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 95).encode_image(&img).unwrap();
    base64::engine::general_purpose::STANDARD.encode(jpeg)
}

#[tokio::test]
async fn oversize_photos_follow_the_photo_policy() {
    let big = noisy_jpeg_base64();
    assert!(big.len() > 524_288, "{}", big.len());
    let data = vehicle(json!("鲁A1"), None, &big);

    let rig = rig().await; // recompress (the default)
    let m = rig.map(&event("e1", "vehicle.entered", "P1", data.clone()));
    assert!(matches!(m.photo, Some(PhotoOutcome::Recompressed { .. })), "{:?}", m.photo);
    assert_eq!(rig.deliver("P1", m.endpoint, &[&m.record]).await, Verdict::Delivered);
    let pic = rig.records("park/entrance")[0].record["enter_pic"].as_str().unwrap().to_string();
    assert!(pic.starts_with(PREFIX) && pic.len() <= 524_288, "{}", pic.len());

    let rig = rig_with(CLIENT_SECRET, "", PhotoPolicy::Drop).await;
    let m = rig.map(&event("e1", "vehicle.entered", "P1", data.clone()));
    assert_eq!(m.photo, Some(PhotoOutcome::Dropped(DropReason::TooLarge)));
    assert_eq!(rig.deliver("P1", m.endpoint, &[&m.record]).await, Verdict::Delivered);
    let placeholder = format!("{PREFIX}{}", placeholder_base64());
    assert_eq!(rig.records("park/entrance")[0].record["enter_pic"], json!(placeholder), "the dropped photo's stand-in");

    let rig = rig_with(CLIENT_SECRET, "", PhotoPolicy::AsIs).await;
    let m = rig.map(&event("e1", "vehicle.entered", "P1", data));
    let verdict = rig.deliver("P1", m.endpoint, &[&m.record]).await;
    assert!(matches!(&verdict, Verdict::Reject { reason, .. } if reason.contains("[0].enter_pic:")), "{verdict:?}");
    assert!(rig.records("park/entrance").is_empty());
}

#[tokio::test]
async fn simulator_from_config_expects_the_configured_token_fields() {
    let extra = r#"
        client_id_field = "clientId"
        client_secret_field = "clientSecret"
        token_extra_fields = { grant_type = "client_credentials" }
        auth_header = "access_token"
        auth_prefix = ""
    "#;
    let template = config("http://unused", CLIENT_SECRET, extra);
    let sim = Simulator::from_config(&template, &bindings(), Path::new(".")).unwrap();
    let server = start(sim).await;
    let http = reqwest::Client::new();
    let rig = Rig {
        adapter: adapter(&config(&server.base_url(), CLIENT_SECRET, extra), PhotoPolicy::Drop, &http),
        server,
        http,
    };
    let m = rig.map(&event("e1", "spaces.changed", "P2", json!({"total": 5, "free": 5})));
    assert_eq!(rig.deliver("P2", m.endpoint, &[&m.record]).await, Verdict::Delivered);
    assert_eq!(rig.records("park/spot-num")[0].lot, "ATXL/2");

    let default_fields = adapter(&config(&rig.server.base_url(), CLIENT_SECRET, ""), PhotoPolicy::Drop, &rig.http);
    assert!(matches!(default_fields.check_auth().await, Err(PrepareError::AuthRejected(_))));
}

#[tokio::test]
async fn every_valid_contract_example_is_accepted() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/examples/valid");
    let mut events = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        events.push((path.display().to_string(), lotbridge::event::decode(&std::fs::read(&path).unwrap()).unwrap()));
    }
    let mut lots: Vec<String> = events.iter().map(|(_, e)| e.lot.clone()).collect();
    lots.sort();
    lots.dedup();
    let vendor_lot = |lot: &str| format!("ISP-{lot}");
    let list = lots.iter().map(|l| Binding { lot: l.clone(), vendor_lot: vendor_lot(l), token: None }).collect();
    let sim = Simulator::new(CLIENT_ID, CLIENT_SECRET).with_lots(lots.iter().map(|l| vendor_lot(l)));
    let server = start(sim).await;
    let http = reqwest::Client::new();
    let cfg = config(&server.base_url(), CLIENT_SECRET, "");
    let adapter = adapter_for(&cfg, PhotoPolicy::Recompress, &http, Arc::new(Bindings::from_list(list)));
    let rig = Rig { server, adapter, http };
    let mut delivered = 0;
    for (path, event) in &events {
        match rig.adapter.map(event) {
            Ok(Mapping::Record(m)) => {
                assert_eq!(rig.deliver(&event.lot, m.endpoint, &[&m.record]).await, Verdict::Delivered, "{path}");
                delivered += 1;
            }
            Ok(Mapping::Skip(reason)) => assert_eq!(reason, SkipReason::TypeNotHandled, "{path}"),
            Err(e) => panic!("{path}: {e}"),
        }
    }
    assert_eq!(rig.server.control.records().len(), delivered);
    assert!(delivered >= 10, "{delivered}");
}

fn rejected_because(verdict: &Verdict, text: &str) -> bool {
    matches!(verdict, Verdict::Reject { reason, .. } if reason.contains(text))
}

/// The platform is configured for codes or labels, not both: a sink whose `labels` setting
/// differs from the platform's is refused, in both directions and for both fields.
#[tokio::test]
async fn car_and_pay_types_must_match_the_platforms_labels_setting() {
    for (sim_labels, sink) in [(true, ""), (false, "labels = true")] {
        let rig = rig_on(strict_sim().with_labels(sim_labels), CLIENT_SECRET, sink, PhotoPolicy::Drop).await;
        let m = rig.map(&event("e1", "vehicle.exited", "P2", exit("alipay")));
        let verdict = rig.deliver("P2", m.endpoint, &[&m.record]).await;
        assert!(rejected_because(&verdict, "[0].car_type:"), "platform labels={sim_labels}: {verdict:?}");
        let mut record: Value = serde_json::from_slice(&m.record).unwrap();
        record["car_type"] = json!(if sim_labels { "小型车" } else { "2" });
        let verdict = rig.send_body("P2", m.endpoint, Bytes::from(json!([record]).to_string())).await;
        assert!(rejected_because(&verdict, "[0].pay_type:"), "platform labels={sim_labels}: {verdict:?}");
        assert!(rig.records("park/departure").is_empty());
    }
    // A payment outside the spec's 1-7 goes out as the configured extra code or label.
    let extra = "labels = true\npay_type_other_label = \"其它支付\"";
    let sim =
        Simulator::from_config(&config("http://unused", CLIENT_SECRET, extra), &bindings(), Path::new(".")).unwrap();
    let rig = rig_on(sim, CLIENT_SECRET, extra, PhotoPolicy::Drop).await;
    let m = rig.map(&event("e1", "vehicle.exited", "P2", exit("other")));
    assert_eq!(rig.deliver("P2", m.endpoint, &[&m.record]).await, Verdict::Delivered);
    assert_eq!(rig.records("park/departure")[0].record["pay_type"], "其它支付");
}

/// Required photo fields: a strict platform refuses them empty; `missing_photo` decides
/// what a vehicle without a usable photo sends.
#[tokio::test]
async fn a_vehicle_without_photo_follows_missing_photo() {
    let no_photo = json!({"plate": "鲁A1", "vehicle_type": "small", "gate": "东门"});
    let rig = rig_with(CLIENT_SECRET, "missing_photo = \"empty\"", PhotoPolicy::Drop).await;
    let m = rig.map(&event("e1", "vehicle.entered", "P1", no_photo.clone()));
    let verdict = rig.deliver("P1", m.endpoint, &[&m.record]).await;
    assert!(rejected_because(&verdict, "[0].enter_pic: required"), "{verdict:?}");

    let lenient = strict_sim().with_strict_photos(false);
    let rig = rig_on(lenient, CLIENT_SECRET, "missing_photo = \"empty\"", PhotoPolicy::Drop).await;
    let m = rig.map(&event("e1", "vehicle.entered", "P1", no_photo.clone()));
    assert_eq!(rig.deliver("P1", m.endpoint, &[&m.record]).await, Verdict::Delivered);
    assert_eq!(rig.records("park/entrance")[0].record["enter_pic"], "");

    let rig = rig_with(CLIENT_SECRET, "", PhotoPolicy::Drop).await; // placeholder, the default
    let mut data = exit("cash");
    data.as_object_mut().unwrap().remove("photo");
    let m = rig.map(&event("e1", "vehicle.exited", "P1", data));
    assert_eq!(rig.deliver("P1", m.endpoint, &[&m.record]).await, Verdict::Delivered);
    assert_eq!(rig.records("park/departure")[0].record["depart_pic"], format!("{PREFIX}{}", placeholder_base64()));
    let adjusted = rig.adapter.adjustments().unwrap().totals();
    assert_eq!(adjusted, [("depart_pic", Change::Placeholder, 1)]);

    let rig = rig_with(CLIENT_SECRET, "missing_photo = \"reject\"", PhotoPolicy::Drop).await;
    let err = rig.adapter.map(&event("e1", "vehicle.entered", "P1", no_photo)).unwrap_err();
    assert_eq!(err.field, "data.photo");
}

/// Plates lose their spaces by default (counted as normalized), or go as received with
/// `plate_spaces = "keep"`.
#[tokio::test]
async fn plates_are_sent_without_spaces_unless_kept() {
    let rig = rig().await;
    for (i, plate) in ["浙 A11111", "浙\u{3000}B22222"].iter().enumerate() {
        let m = rig.map(&event(&format!("e{i}"), "vehicle.entered", "P1", vehicle(json!(plate), None, &small_jpeg())));
        assert_eq!(rig.deliver("P1", m.endpoint, &[&m.record]).await, Verdict::Delivered);
    }
    let plates: Vec<Value> =
        rig.records("park/entrance").into_iter().map(|r| r.record["plate_number"].clone()).collect();
    assert_eq!(plates, [json!("浙A11111"), json!("浙B22222")]);
    assert_eq!(rig.adapter.adjustments().unwrap().totals(), [("plate_number", Change::Normalized, 2)]);

    let rig = rig_with(CLIENT_SECRET, "plate_spaces = \"keep\"", PhotoPolicy::Drop).await;
    let m = rig.map(&event("e1", "vehicle.entered", "P1", vehicle(json!("浙 A11111"), None, &small_jpeg())));
    assert_eq!(rig.deliver("P1", m.endpoint, &[&m.record]).await, Verdict::Delivered);
    assert_eq!(rig.records("park/entrance")[0].record["plate_number"], "浙 A11111");
    assert!(rig.adapter.adjustments().unwrap().totals().is_empty());
}

/// Paths and the token field come from the configuration, and the simulator serves and
/// checks what the configuration says: an adapter on the defaults fails against it.
#[tokio::test]
async fn token_path_data_paths_and_token_field_are_configurable() {
    let extra = r#"
        token_path = "/uaa/oauth/token"
        spot_path = "/v2/park/spot"
        spot_num_path = "/v2/park/spot-num"
        entrance_path = "/v2/park/entrance"
        departure_path = "/v2/park/departure"
        token_field = "token"
    "#;
    let sim =
        Simulator::from_config(&config("http://unused", CLIENT_SECRET, extra), &bindings(), Path::new(".")).unwrap();
    let rig = rig_on(sim, CLIENT_SECRET, extra, PhotoPolicy::Drop).await;
    let m = rig.map(&event("e1", "spaces.changed", "P2", json!({"total": 5, "free": 2})));
    assert_eq!(rig.deliver("P2", m.endpoint, &[&m.record]).await, Verdict::Delivered);
    let entered = rig.map(&event("e2", "vehicle.entered", "P2", vehicle(json!("鲁A1"), None, &small_jpeg())));
    assert_eq!(rig.deliver("P2", entered.endpoint, &[&entered.record]).await, Verdict::Delivered);
    assert_eq!((rig.records("park/spot-num").len(), rig.records("park/entrance").len()), (1, 1));

    // The other token of the answer does not open data calls.
    let paths_only = extra.replace("token_field = \"token\"", "");
    let wrong_token =
        adapter(&config(&rig.server.base_url(), CLIENT_SECRET, &paths_only), PhotoPolicy::Drop, &rig.http);
    let request = wrong_token.prepare("P2", &m.endpoint, &m.record).await.unwrap();
    let response = lotbridge::engine::deliver::execute(&rig.http, request, Duration::from_secs(30)).await.unwrap();
    assert_eq!(wrong_token.classify(&m.endpoint, &response), Verdict::RefreshAuth);

    // The spec's default paths are not served by this platform.
    let defaults = adapter(&config(&rig.server.base_url(), CLIENT_SECRET, ""), PhotoPolicy::Drop, &rig.http);
    assert!(defaults.check_auth().await.is_err(), "no token at /oauth/token");
}

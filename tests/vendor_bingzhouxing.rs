//! The Bingzhouxing adapter against its simulator: real contract events mapped, assembled,
//! signed per attempt, sent over HTTP to 127.0.0.1 and classified; the simulator shows what
//! the platform received and refuses what the spec forbids.

use bytes::Bytes;
use lotbridge::config::{Binding, Bindings};
use lotbridge::photo::PhotoPolicy;
use lotbridge::secret::Secret;
use lotbridge::sim::bingzhouxing::Simulator;
use lotbridge::sim::{Failure, SimServer};
use lotbridge::vendors::adjust::Change;
use lotbridge::vendors::bingzhouxing::{self, BingzhouxingAdapter, Config, CAR_IN_OUT};
use lotbridge::vendors::missing_photo::placeholder_base64;
use lotbridge::vendors::SinkContext;
use lotbridge::vendors::{Adapter, Endpoint, HttpResponse, Mapped, Mapping, RetryReason, Verdict};
use md5::{Digest, Md5};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const LOCAL: &str = "127.0.0.1:0";
/// A JPEG's first bytes (FF D8 FF E0) in base64: enough for the photo policy's checks.
const TINY_JPEG: &str = "/9j/4A==";

fn binding(lot: &str, code: &str, token: &str) -> Binding {
    Binding { lot: lot.into(), vendor_lot: code.into(), token: Some(Secret::new(token)) }
}

fn platform_lots() -> Vec<(String, Secret)> {
    vec![("350".into(), Secret::new("tok-350")), ("351".into(), Secret::new("tok-351"))]
}

async fn start(sim: Simulator) -> SimServer {
    let addr: SocketAddr = LOCAL.parse().unwrap();
    sim.start(addr).await.unwrap()
}

fn config(base_url: &str, extra: &str) -> Config {
    toml::from_str(&format!("base_url = {base_url:?}\n{extra}")).unwrap()
}

fn adapter_with(server: &SimServer, extra: &str, lots: Vec<Binding>, photo: PhotoPolicy) -> BingzhouxingAdapter {
    let ctx = SinkContext {
        name: "bzx",
        bindings: Arc::new(Bindings::from_list(lots)),
        photo,
        max_records: 100,
        base_dir: Path::new("."),
        http: reqwest::Client::new(),
    };
    bingzhouxing::build(&config(&server.base_url(), extra), &ctx).unwrap()
}

fn adapter(server: &SimServer) -> BingzhouxingAdapter {
    let lots = vec![binding("P001", "350", "tok-350"), binding("P002", "351", "tok-351")];
    adapter_with(server, "", lots, PhotoPolicy::Recompress)
}

fn event(id: &str, ty: &str, lot: &str, at: &str, data: Value) -> lotbridge::event::Event {
    let json = json!({"v": 1, "id": id, "type": ty, "lot": lot, "at": at, "data": data});
    lotbridge::event::decode(json.to_string().as_bytes()).unwrap()
}

fn mapped(adapter: &BingzhouxingAdapter, event: &lotbridge::event::Event) -> Mapped {
    match adapter.map(event).unwrap() {
        Mapping::Record(m) => m,
        Mapping::Skip(reason) => panic!("skipped: {reason:?}"),
    }
}

/// One attempt, as the engine makes it: prepare (stamp, sign), send, classify.
async fn attempt(adapter: &BingzhouxingAdapter, lot: &str, endpoint: &Endpoint, data: &Bytes) -> Verdict {
    let req = adapter.prepare(lot, endpoint, data).await.unwrap();
    let response = send(req.method, &req.url, req.headers, req.body).await;
    adapter.classify(endpoint, &response)
}

/// One attempt over HTTP, with the engine's own sender (Retry-After parsed alike).
async fn send(method: http::Method, url: &str, headers: http::HeaderMap, body: Bytes) -> HttpResponse {
    let request = lotbridge::vendors::HttpRequest { method, url: url.to_string(), headers, body };
    lotbridge::engine::deliver::execute(&reqwest::Client::new(), request, std::time::Duration::from_secs(30))
        .await
        .unwrap()
}

/// Maps events of one lot and endpoint, assembles them, and makes one attempt.
async fn deliver(adapter: &BingzhouxingAdapter, events: &[lotbridge::event::Event]) -> Verdict {
    let records: Vec<Mapped> = events.iter().map(|e| mapped(adapter, e)).collect();
    let endpoint = records[0].endpoint;
    let slices: Vec<&[u8]> = records.iter().map(|m| &m.record[..]).collect();
    attempt(adapter, &events[0].lot, &endpoint, &adapter.assemble(&endpoint, &slices)).await
}

fn entered(id: &str, plate: &str) -> lotbridge::event::Event {
    let data = json!({"plate": plate, "vehicle_type": "small", "gate": "东门"});
    event(id, "vehicle.entered", "P001", "2026-03-01T00:30:00Z", data)
}

fn last_code(server: &SimServer) -> Option<String> {
    server.control.requests().last().and_then(|r| r.code.clone())
}

fn md5_hex(text: &str) -> String {
    Md5::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A hand-made `carInOut` request, signed by this test with the lot's token.
async fn raw_car_request(server: &SimServer, ts: i64, records: Value) -> HttpResponse {
    let ts = ts.to_string();
    let auth = md5_hex(&format!("carInOut350{ts}tok-350"));
    let body = json!({"cmd": "carInOut", "lotCode": "350", "ts": ts, "auth": auth, "data": records});
    let mut headers = http::HeaderMap::new();
    headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json;charset=UTF-8"));
    let url = format!("{}/dataSync/carInOut", server.base_url());
    send(http::Method::POST, &url, headers, Bytes::from(body.to_string())).await
}

fn car_record() -> Value {
    json!({"carNo": "京Q8K271", "inOutType": "in", "inOutTime": "2026-03-01 08:30:00", "imgName": "a.jpg",
           "imgData": TINY_JPEG, "nodeName": "东门", "carStyle": "0"})
}

#[tokio::test]
async fn vehicle_batch_arrives_as_the_platform_expects() {
    let server = start(Simulator::new(platform_lots())).await;
    let a = adapter(&server);
    let photo = json!({"name": "cam1/0001.jpg", "jpeg_base64": TINY_JPEG});
    let events = [
        event(
            "e1",
            "vehicle.entered",
            "P001",
            "2026-03-01T00:30:00Z",
            json!({"plate": "京Q 8K271", "plate_color": "blue", "vehicle_type": "small", "gate": "东门", "photo": photo}),
        ),
        event(
            "e2",
            "vehicle.exited",
            "P001",
            "2026-03-01T09:45:10+08:00",
            json!({"plate": null, "vehicle_type": "truck", "gate": "西门", "brand": "解放",
                   "parked_minutes": 75, "fee_payable_cents": 500, "fee_paid_cents": 500}),
        ),
    ];
    assert_eq!(deliver(&a, &events).await, Verdict::Delivered);
    let got = server.control.records_for("carInOut");
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|r| r.lot == "350"), "recorded under the lot's lotCode");
    assert_eq!(
        got[0].record,
        json!({"carNo": "京Q8K271", "inOutType": "in", "inOutTime": "2026-03-01 08:30:00", "imgName": "0001.jpg",
               "imgData": TINY_JPEG, "nodeName": "东门", "carColor": "蓝", "carStyle": "0"})
    );
    let exit = &got[1].record;
    assert_eq!(
        (&exit["carNo"], &exit["inOutType"], &exit["inOutTime"]),
        (&json!(""), &json!("out"), &json!("2026-03-01 09:45:10"))
    );
    assert_eq!((&exit["carStyle"], &exit["carBrand"]), (&json!("2"), &json!("解放")));
    assert_eq!(exit["imgData"], placeholder_base64(), "no photo: the placeholder, imgData is required");
    assert!(exit["imgName"].as_str().unwrap().starts_with("out_20260301094510_"), "{exit}");
}

#[tokio::test]
async fn heartbeats_and_space_counts_are_recorded_per_lot() {
    let server = start(Simulator::new(platform_lots())).await;
    let a = adapter(&server);
    let hb = event("h1", "lot.heartbeat", "P002", "2026-03-01T00:00:00Z", json!({}));
    assert_eq!(deliver(&a, &[hb]).await, Verdict::Delivered);
    let spaces = event("s1", "spaces.changed", "P001", "2026-03-01T00:00:00Z", json!({"total": 99, "free": 9}));
    assert_eq!(deliver(&a, &[spaces]).await, Verdict::Delivered);
    let beats = server.control.records_for("heartbeat");
    assert_eq!((beats.len(), beats[0].lot.as_str()), (1, "351"));
    let counts = server.control.records_for("parkSpace");
    assert_eq!((counts[0].lot.as_str(), &counts[0].record), ("350", &json!({"totalSpace": 99, "surplusSpace": 9})));
}

#[tokio::test]
async fn a_wrong_token_is_refused_with_1002_and_nothing_is_recorded() {
    let server = start(Simulator::new(platform_lots())).await;
    let a = adapter_with(&server, "", vec![binding("P001", "350", "not-the-token")], PhotoPolicy::Recompress);
    let verdict = deliver(&a, &[entered("e1", "京Q8K271")]).await;
    assert!(matches!(verdict, Verdict::Retry { reason: RetryReason::StaleSignature, .. }), "{verdict:?}");
    assert_eq!(last_code(&server).as_deref(), Some("1002"));
    assert!(server.control.records().is_empty());
}

#[tokio::test]
async fn a_stale_timestamp_is_refused_with_1002() {
    let server = start(Simulator::new(platform_lots())).await;
    let fresh = raw_car_request(&server, now_ms(), json!([car_record()])).await;
    assert_eq!(serde_json::from_slice::<Value>(&fresh.body).unwrap()["code"], "0", "the hand-made request is valid");
    let stale = raw_car_request(&server, now_ms() - 11_000, json!([car_record()])).await;
    let a = adapter(&server);
    let verdict = a.classify(&CAR_IN_OUT, &stale);
    assert!(matches!(verdict, Verdict::Retry { reason: RetryReason::StaleSignature, .. }), "{verdict:?}");
    assert_eq!(server.control.records_for("carInOut").len(), 1, "only the fresh request was accepted");
}

#[tokio::test]
async fn a_batch_of_101_is_refused_with_1502() {
    let server = start(Simulator::new(platform_lots())).await;
    let a = adapter(&server);
    let events: Vec<_> = (0..101).map(|i| entered(&format!("e{i}"), &format!("京A{i:05}"))).collect();
    let records: Vec<Mapped> = events.iter().map(|e| mapped(&a, e)).collect();
    let slices: Vec<&[u8]> = records.iter().map(|m| &m.record[..]).collect();
    let data = a.assemble(&CAR_IN_OUT, &slices);
    let verdict = attempt(&a, "P001", &CAR_IN_OUT, &data).await;
    assert!(matches!(&verdict, Verdict::Reject { per_record: true, reason } if reason.contains("1502")), "{verdict:?}");
    let log = server.control.requests();
    assert_eq!((log[0].records, log[0].code.as_deref()), (101, Some("1502")));
    assert!(server.control.records().is_empty());
    assert_eq!(deliver(&a, &events[..100]).await, Verdict::Delivered, "100 is the limit");
}

#[tokio::test]
async fn an_oversized_photo_is_refused_and_dropping_it_delivers() {
    let server = start(Simulator::new(platform_lots())).await;
    let big = format!("/9j/{}", "A".repeat(50_000));
    let data = json!({"plate": "京A1", "vehicle_type": "small", "gate": "g", "photo": {"jpeg_base64": big}});
    let e = event("e1", "vehicle.entered", "P001", "2026-03-01T00:00:00Z", data);
    let lots = || vec![binding("P001", "350", "tok-350")];
    let as_is = adapter_with(&server, "", lots(), PhotoPolicy::AsIs);
    let verdict = deliver(&as_is, std::slice::from_ref(&e)).await;
    assert!(matches!(&verdict, Verdict::Reject { reason, .. } if reason.contains("imgData")), "{verdict:?}");
    let dropping = adapter_with(&server, "", lots(), PhotoPolicy::Drop);
    assert_eq!(deliver(&dropping, &[e]).await, Verdict::Delivered);
    assert_eq!(server.control.records_for("carInOut")[0].record["imgData"], placeholder_base64());
}

#[tokio::test]
async fn an_unknown_lot_code_is_dead_lettered() {
    let server = start(Simulator::new(platform_lots())).await;
    let a = adapter_with(&server, "", vec![binding("P001", "999", "tok-999")], PhotoPolicy::Recompress);
    let verdict = deliver(&a, &[entered("e1", "京A1")]).await;
    assert!(
        matches!(&verdict, Verdict::Reject { per_record: false, reason } if reason.contains("1000")),
        "{verdict:?}"
    );
}

#[tokio::test]
async fn a_missing_field_is_refused_with_1501() {
    let server = start(Simulator::new(platform_lots())).await;
    let mut record = car_record();
    record.as_object_mut().unwrap().remove("nodeName");
    let reply = raw_car_request(&server, now_ms(), json!([record])).await;
    let body: Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(body["code"], "1501");
    assert!(body["msg"].as_str().unwrap().contains("data[0].nodeName"), "{body}");
    let verdict = adapter(&server).classify(&CAR_IN_OUT, &reply);
    assert!(matches!(verdict, Verdict::Reject { per_record: true, .. }), "{verdict:?}");
}

#[tokio::test]
async fn injected_codes_and_statuses_are_classified() {
    let server = start(Simulator::new(platform_lots())).await;
    let a = adapter(&server);
    let one = [entered("e1", "京A1")];
    let retry = |v: &Verdict| match v {
        Verdict::Retry { reason, .. } => Some(*reason),
        _ => None,
    };
    for code in ["1003", "1107", "2000"] {
        server.control.fail_next(1, Failure::Code(code.into()));
        assert_eq!(retry(&deliver(&a, &one).await), Some(RetryReason::VendorError), "{code}");
    }
    server.control.fail_next(1, Failure::Status(503));
    assert_eq!(retry(&deliver(&a, &one).await), Some(RetryReason::ServerError));
    server.control.fail_next(1, Failure::Code("2001".into()));
    assert!(matches!(deliver(&a, &one).await, Verdict::Reject { per_record: false, .. }));
    server.control.throttle_next(1, 7);
    assert_eq!(deliver(&a, &one).await, Verdict::Busy { after: Some(Duration::from_secs(7)) });
    server.control.fail_next(1, Failure::Code("1004".into()));
    assert_eq!(deliver(&a, &one).await, Verdict::Duplicate);
    assert!(server.control.records().is_empty(), "no injected failure records anything");
}

#[tokio::test]
async fn a_stale_signature_answer_is_resigned_and_then_accepted() {
    let server = start(Simulator::new(platform_lots())).await;
    let a = adapter(&server);
    let m = mapped(&a, &entered("e1", "京A1"));
    let data = a.assemble(&CAR_IN_OUT, &[&m.record[..]]);
    server.control.fail_next(1, Failure::Code("1002".into()));
    let first = attempt(&a, "P001", &CAR_IN_OUT, &data).await;
    assert!(matches!(first, Verdict::Retry { reason: RetryReason::StaleSignature, .. }), "{first:?}");
    assert_eq!(attempt(&a, "P001", &CAR_IN_OUT, &data).await, Verdict::Delivered);
    assert_eq!(server.control.records_for("carInOut").len(), 1);
}

#[tokio::test]
async fn a_redelivered_batch_is_a_duplicate() {
    let server = start(Simulator::new(platform_lots())).await;
    let a = adapter(&server);
    let batch = [entered("e1", "京A1"), entered("e2", "京A2")];
    assert_eq!(deliver(&a, &batch).await, Verdict::Delivered);
    assert_eq!(deliver(&a, &batch).await, Verdict::Duplicate, "the reply to the first was 'lost'");
    assert_eq!(server.control.records_for("carInOut").len(), 2);
}

#[tokio::test]
async fn seconds_and_string_data_work_when_both_sides_agree() {
    let options = "ts_unit = \"s\"\ndata_encoding = \"string\"";
    let bindings = Bindings::from_list(vec![binding("P001", "350", "tok-350")]);
    let sim = Simulator::from_config(&config("http://127.0.0.1:1", options), &bindings, Path::new(".")).unwrap();
    let server = start(sim).await;
    let a = adapter_with(&server, options, vec![binding("P001", "350", "tok-350")], PhotoPolicy::Recompress);
    let req = a.prepare("P001", &CAR_IN_OUT, &Bytes::from_static(b"[]")).await.unwrap();
    let sent: Value = serde_json::from_slice(&req.body).unwrap();
    assert_eq!((sent["data"].as_str(), sent["ts"].as_str().map(str::len)), (Some("[]"), Some(10)));
    assert_eq!(deliver(&a, &[entered("e1", "京A1")]).await, Verdict::Delivered);
    let millis = adapter_with(
        &server,
        "data_encoding = \"string\"",
        vec![binding("P001", "350", "tok-350")],
        PhotoPolicy::Recompress,
    );
    let verdict = deliver(&millis, &[entered("e2", "京A2")]).await;
    assert!(matches!(verdict, Verdict::Retry { reason: RetryReason::StaleSignature, .. }), "{verdict:?}");
}

#[tokio::test]
async fn the_simulator_serves_the_configured_paths() {
    let extra = "car_in_out_path = \"/v2/inout\"";
    let bindings = Bindings::from_list(vec![binding("P001", "350", "tok-350")]);
    let sim = Simulator::from_config(&config("http://127.0.0.1:1/api", extra), &bindings, Path::new(".")).unwrap();
    let server = start(sim).await;
    let lots = vec![binding("P001", "350", "tok-350")];
    let a = adapter_with(&server, extra, lots.clone(), PhotoPolicy::Recompress);
    let prefixed = {
        let ctx = SinkContext {
            name: "bzx",
            bindings: Arc::new(Bindings::from_list(lots)),
            photo: PhotoPolicy::Recompress,
            max_records: 100,
            base_dir: Path::new("."),
            http: reqwest::Client::new(),
        };
        bingzhouxing::build(&config(&format!("{}/api", server.base_url()), extra), &ctx).unwrap()
    };
    assert!(matches!(deliver(&a, &[entered("e1", "京A1")]).await, Verdict::Hold { .. }), "no /api prefix: 404 holds");
    assert_eq!(deliver(&prefixed, &[entered("e1", "京A1")]).await, Verdict::Delivered);
    assert_eq!(server.control.records_for("carInOut").len(), 1);
}

#[tokio::test]
async fn the_simulator_needs_every_lots_token() {
    let bindings = Bindings::from_list(vec![Binding { lot: "P001".into(), vendor_lot: "350".into(), token: None }]);
    let err = Simulator::from_config(&config("http://127.0.0.1:1", ""), &bindings, Path::new(".")).unwrap_err();
    assert!(err.to_string().contains("\"P001\"") && err.to_string().contains("no token"), "{err}");
}

fn rejected_with(verdict: &Verdict, code: &str) -> bool {
    matches!(verdict, Verdict::Reject { reason, .. } if reason.contains(code))
}

/// The protocol family answers success as `0` or `200`: both are delivered.
#[tokio::test]
async fn success_answered_as_200_is_delivered() {
    let server = start(Simulator::new(platform_lots()).with_success_codes(&["200", "0"])).await;
    let a = adapter(&server);
    assert_eq!(deliver(&a, &[entered("e1", "京A00001")]).await, Verdict::Delivered);
    assert_eq!(last_code(&server).as_deref(), Some("200"));
    assert_eq!(deliver(&a, &[entered("e2", "京A00002")]).await, Verdict::Delivered);
    assert_eq!(last_code(&server).as_deref(), Some("0"));
    assert_eq!(server.control.records_for("carInOut").len(), 2);
}

/// The spec writes plates without spaces: the platform refuses `carNo` with one, and the
/// adapter sends `浙 A11111` and `浙\u{3000}B22222` without them (counted as normalized).
#[tokio::test]
async fn plates_with_spaces_are_refused_and_the_adapter_strips_them() {
    let server = start(Simulator::new(platform_lots())).await;
    let mut spaced = car_record();
    spaced["carNo"] = json!("浙 A11111");
    let refused = raw_car_request(&server, now_ms(), json!([spaced])).await;
    assert_eq!(serde_json::from_slice::<Value>(&refused.body).unwrap()["code"], "1502");
    let a = adapter(&server);
    assert_eq!(deliver(&a, &[entered("e1", "浙 A11111"), entered("e2", "浙\u{3000}B22222")]).await, Verdict::Delivered);
    let plates: Vec<Value> = server.control.records_for("carInOut").iter().map(|r| r.record["carNo"].clone()).collect();
    assert_eq!(plates, [json!("浙A11111"), json!("浙B22222")]);
    let totals = a.adjustments().unwrap().totals();
    assert!(totals.contains(&("carNo", Change::Normalized, 2)), "{totals:?}");
}

/// `imgData` is required: a strict platform refuses it empty; `missing_photo` decides what
/// a passage without a usable photo sends, and a lenient platform takes `""`.
#[tokio::test]
async fn a_passage_without_photo_follows_missing_photo() {
    let server = start(Simulator::new(platform_lots())).await;
    let lots = || vec![binding("P001", "350", "tok-350")];
    let empty = adapter_with(&server, "missing_photo = \"empty\"", lots(), PhotoPolicy::Drop);
    let verdict = deliver(&empty, &[entered("e1", "京A1")]).await;
    assert!(rejected_with(&verdict, "1501"), "{verdict:?}");
    assert_eq!(empty.adjustments().unwrap().totals(), [("imgData", Change::Empty, 1)]);
    let placeholder = adapter_with(&server, "", lots(), PhotoPolicy::Drop);
    assert_eq!(deliver(&placeholder, &[entered("e1", "京A1")]).await, Verdict::Delivered);
    let reject = adapter_with(&server, "missing_photo = \"reject\"", lots(), PhotoPolicy::Drop);
    assert_eq!(reject.map(&entered("e1", "京A1")).unwrap_err().field, "data.photo");

    let lenient = start(Simulator::new(platform_lots()).with_strict_photos(false)).await;
    let empty = adapter_with(&lenient, "missing_photo = \"empty\"", lots(), PhotoPolicy::Drop);
    assert_eq!(deliver(&empty, &[entered("e1", "京A1")]).await, Verdict::Delivered);
    assert_eq!(lenient.control.records_for("carInOut")[0].record["imgData"], "");
}

/// The simulator takes the spec's photo limit, not the sink's: a sink that raises
/// `photo_limit` above 50 000 sees the refusal a real platform gives.
#[tokio::test]
async fn the_photo_limit_is_the_specs_whatever_the_sink_says() {
    let raised = config("http://unused", "photo_limit = 60000");
    let lots = vec![binding("P001", "350", "tok-350")];
    let sim = Simulator::from_config(&raised, &Bindings::from_list(lots.clone()), Path::new(".")).unwrap();
    let server = start(sim).await;
    let a = adapter_with(&server, "photo_limit = 60000", lots, PhotoPolicy::Recompress);
    let big = format!("/9j/{}", "A".repeat(55_000));
    let data = json!({"plate": "京A1", "vehicle_type": "small", "gate": "g", "photo": {"jpeg_base64": big}});
    let verdict = deliver(&a, &[event("e1", "vehicle.entered", "P001", "2026-03-01T00:00:00Z", data)]).await;
    assert!(rejected_with(&verdict, "over 50000"), "{verdict:?}");
}

/// One heartbeat a minute per lot: a second one a moment later is refused, another lot's
/// is not.
#[tokio::test]
async fn heartbeats_faster_than_the_spec_cadence_are_refused() {
    let server = start(Simulator::new(platform_lots())).await;
    let a = adapter(&server);
    let beat = |lot: &str| event("h", "lot.heartbeat", lot, "2026-03-01T00:00:00Z", json!({}));
    assert_eq!(deliver(&a, &[beat("P001")]).await, Verdict::Delivered);
    let verdict = deliver(&a, &[beat("P001")]).await;
    assert!(rejected_with(&verdict, "1502"), "{verdict:?}");
    assert_eq!(deliver(&a, &[beat("P002")]).await, Verdict::Delivered, "cadence is per lot");
    assert_eq!(server.control.records_for("heartbeat").len(), 2);
}

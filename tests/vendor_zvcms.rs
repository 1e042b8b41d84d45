//! The zvcms adapter against its simulator: decoded `member.coupons.requested` events mapped,
//! assembled, prepared (stamped, given a nonce, signed), sent over HTTP on 127.0.0.1 and
//! classified as the engine does it; the answers are the coupon lists the engine publishes.

use bytes::Bytes;
use lotbridge::config::{Binding, Bindings};
use lotbridge::event::ListedCoupon;
use lotbridge::photo::PhotoPolicy;
use lotbridge::secret::Secret;
use lotbridge::sim::zvcms::Simulator;
use lotbridge::sim::{Failure, SimServer};
use lotbridge::vendors::zvcms::sign::KeyStyle;
use lotbridge::vendors::zvcms::{Account, Config, ZvcmsAdapter, USER_COUPON_LIST};
use lotbridge::vendors::SinkContext;
use lotbridge::vendors::{Adapter, HttpRequest, HttpResponse, Mapping, RetryReason, Verdict};
use serde_json::{json, Value};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const OPEN_ID: &str = "6dc05b4ac175cf316d226252b05cf685";
const GRANT_CODE: &str = "782c281f62";
const SECRET_KEY: &str = "zv-secret-right";

fn bindings() -> Bindings {
    Bindings::from_list(vec![Binding { lot: "P1".into(), vendor_lot: "P1".into(), token: None }])
}

fn config(base_url: &str, secret: &str, extra: &str) -> Config {
    let text = format!(
        "base_url = \"{base_url}\"\nopen_id = \"{OPEN_ID}\"\ngrant_code = {{ value = \"{GRANT_CODE}\" }}\n\
         secret_key = {{ value = \"{secret}\" }}\n{extra}"
    );
    toml::from_str(&text).unwrap()
}

/// A simulator built from the same `[sinks.zvcms]` table an adapter would use.
async fn start(extra: &str) -> SimServer {
    let sim = Simulator::from_config(&config("http://unused", SECRET_KEY, extra), &bindings(), Path::new(".")).unwrap();
    sim.start("127.0.0.1:0".parse().unwrap()).await.unwrap()
}

/// The adapter as `config.rs` builds it, pointed at `server`.
fn adapter(server: &SimServer, secret: &str, extra: &str) -> Arc<ZvcmsAdapter> {
    let ctx = SinkContext {
        name: "members",
        bindings: Arc::new(bindings()),
        photo: PhotoPolicy::default(),
        max_records: 100,
        base_dir: Path::new("."),
        http: reqwest::Client::new(),
    };
    Arc::new(lotbridge::vendors::zvcms::build(&config(&server.base_url(), secret, extra), &ctx).unwrap())
}

fn request_event(lot: &str, data: Value) -> lotbridge::event::Event {
    let raw = json!({"v": 1, "id": "q-1", "type": "member.coupons.requested", "lot": lot,
        "at": "2026-11-23T08:00:00+08:00", "data": data});
    lotbridge::event::decode(raw.to_string().as_bytes()).unwrap()
}

/// The `Params` record of one query, as the engine gets it from `map`.
fn record(adapter: &ZvcmsAdapter, lot: &str, data: Value) -> Bytes {
    match adapter.map(&request_event(lot, data)).unwrap() {
        Mapping::Record(mapped) => adapter.assemble(&mapped.endpoint, &[&mapped.record]),
        skip => panic!("not mapped: {skip:?}"),
    }
}

/// One attempt over HTTP, with the engine's own sender (Retry-After parsed alike).
async fn send(request: HttpRequest) -> HttpResponse {
    lotbridge::engine::deliver::execute(&reqwest::Client::new(), request, std::time::Duration::from_secs(30))
        .await
        .unwrap()
}

/// One attempt as the engine makes it: prepare (fresh stamp), send, classify.
async fn attempt(adapter: &ZvcmsAdapter, lot: &str, data: &Bytes) -> Verdict {
    let request = adapter.prepare(lot, &USER_COUPON_LIST, data).await.unwrap();
    adapter.classify(&USER_COUPON_LIST, &send(request).await)
}

async fn query(adapter: &ZvcmsAdapter, data: Value) -> Verdict {
    attempt(adapter, "P1", &record(adapter, "P1", data)).await
}

fn answered(verdict: Verdict) -> Vec<ListedCoupon> {
    match verdict {
        Verdict::Answered(list) => list,
        other => panic!("not answered: {other:?}"),
    }
}

fn rejected(verdict: Verdict) -> (String, bool) {
    match verdict {
        Verdict::Reject { reason, per_record } => (reason, per_record),
        other => panic!("not rejected: {other:?}"),
    }
}

fn retried(verdict: Verdict) -> RetryReason {
    match verdict {
        Verdict::Retry { reason, .. } => reason,
        other => panic!("not retried: {other:?}"),
    }
}

#[tokio::test]
async fn lists_a_members_coupons_and_records_the_query() {
    let server = start("").await;
    let a = adapter(&server, SECRET_KEY, "");
    let coupons = answered(query(&a, json!({"member_id": "1003", "store_sn": "S-1"})).await);
    let usable = ListedCoupon {
        id: "100301".into(),
        coupon_id: "100".into(),
        definition_id: "100".into(),
        title: "停车满100元减10元".into(),
        description: "停车费满100元可用".into(),
        kind: "amount".into(),
        min_amount_cents: 10_000,
        valid_from: Some("2024-01-01T00:00:00+08:00".into()),
        valid_until: Some("2099-12-31T23:59:59+08:00".into()),
        status: "usable".into(),
        verify_code: Some("ZV00100301".into()),
        locked: false,
    };
    assert_eq!(coupons[0], usable);
    assert_eq!((coupons[1].kind.as_str(), coupons[1].status.as_str()), ("discount", "used"));
    assert_eq!(coupons[2].status, "expired");
    assert_eq!(coupons[2].valid_until.as_deref(), Some("2019-03-21T23:59:59+08:00"));
    assert_eq!(coupons.len(), 3);

    let recorded = server.control.records_for(USER_COUPON_LIST.name);
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].lot, "S-1");
    let expected = json!({"user_id": "1003", "from_pay_page": "", "shopping": "0", "checked": "",
        "expire": "", "amount": "", "multi_store_sn": "S-1"});
    assert_eq!(recorded[0].record, expected);
}

#[tokio::test]
async fn filters_reach_the_platform_in_its_units() {
    let server = start("").await;
    let a = adapter(&server, SECRET_KEY, "");
    let data = json!({"member_id": "1004", "status": "usable", "min_amount_cents": 15_050});
    let coupons = answered(query(&a, data).await);
    assert_eq!(coupons.len(), 2);
    assert!(coupons.iter().all(|c| c.status == "usable"), "{coupons:?}");
    assert!(coupons[1].locked);
    let recorded = &server.control.records_for(USER_COUPON_LIST.name)[0].record;
    assert_eq!((recorded["expire"].as_str(), recorded["amount"].as_str()), (Some("canuse"), Some("150")));

    let under = answered(query(&a, json!({"member_id": "1004", "min_amount_cents": 9_999})).await);
    assert!(under.iter().all(|c| c.min_amount_cents == 0), "{under:?}");
}

#[tokio::test]
async fn numbers_and_fen_when_configured_on_both_sides() {
    let options = "int_params = \"number\"\namount_unit = \"fen\"\nsend_absent_params = false";
    let server = start(options).await;
    let a = adapter(&server, SECRET_KEY, options);
    let coupons = answered(query(&a, json!({"member_id": "1003", "min_amount_cents": 9_999})).await);
    assert_eq!(coupons.len(), 1);
    let recorded = &server.control.records_for(USER_COUPON_LIST.name)[0].record;
    assert_eq!(recorded, &json!({"user_id": 1003, "shopping": 0, "amount": 9_999}));
}

#[tokio::test]
async fn members_without_coupons_get_an_empty_answer() {
    let server = start("").await;
    let a = adapter(&server, SECRET_KEY, "");
    assert_eq!(query(&a, json!({"member_id": "1000"})).await, Verdict::Answered(Vec::new()));
    // The spec's business refusal ("查询的信息不存在") is an empty answer by default...
    assert_eq!(query(&a, json!({"member_id": "1009"})).await, Verdict::Answered(Vec::new()));
    // ...and a dead letter when the operator prefers.
    let strict = adapter(&server, SECRET_KEY, "business_error = \"reject\"");
    let (reason, per_record) = rejected(query(&strict, json!({"member_id": "1009"})).await);
    assert!(per_record && reason.contains("20001") && reason.contains("查询的信息不存在"), "{reason}");
}

#[tokio::test]
async fn a_wrong_secret_is_a_configuration_error() {
    let server = start("").await;
    let a = adapter(&server, "zv-secret-wrong", "");
    let (reason, per_record) = rejected(query(&a, json!({"member_id": "1003"})).await);
    assert!(!per_record && reason.contains("40001") && reason.contains("secret_key"), "{reason}");
    assert!(!reason.contains("zv-secret"), "the reason must not carry the secret: {reason}");
    assert!(server.control.records().is_empty());
    assert_eq!(server.control.requests()[0].code.as_deref(), Some("40001"));
}

#[tokio::test]
async fn a_wrong_grant_code_is_a_configuration_error() {
    let server = Simulator::new(Account {
        open_id: OPEN_ID.into(),
        grant_code: Secret::new("another-grant"),
        secret_key: Secret::new(SECRET_KEY),
        style: KeyStyle::Camel,
        sign_action: false,
    })
    .start("127.0.0.1:0".parse().unwrap())
    .await
    .unwrap();
    let (reason, _) = rejected(query(&adapter(&server, SECRET_KEY, ""), json!({"member_id": "1003"})).await);
    assert!(reason.contains("40002"), "{reason}");
}

#[tokio::test]
async fn signing_variants_must_match_the_platform() {
    let variant = "sign_key_style = \"pascal\"\nsign_action = true";
    let server = start(variant).await;
    let default = adapter(&server, SECRET_KEY, "");
    assert!(rejected(query(&default, json!({"member_id": "1001"})).await).0.contains("40001"));
    let matching = adapter(&server, SECRET_KEY, variant);
    assert_eq!(answered(query(&matching, json!({"member_id": "1001"})).await).len(), 1);
}

#[tokio::test]
async fn a_replayed_request_is_refused_and_a_re_signed_attempt_succeeds() {
    let server = start("").await;
    let a = adapter(&server, SECRET_KEY, "");
    let data = record(&a, "P1", json!({"member_id": "1002"}));
    let request = a.prepare("P1", &USER_COUPON_LIST, &data).await.unwrap();
    assert_eq!(answered(a.classify(&USER_COUPON_LIST, &send(request.clone()).await)).len(), 2);
    let replay = a.classify(&USER_COUPON_LIST, &send(request).await);
    assert_eq!(retried(replay), RetryReason::StaleSignature);
    assert_eq!(answered(attempt(&a, "P1", &data).await).len(), 2);
    assert_eq!(server.control.records().len(), 2);
}

#[tokio::test]
async fn a_stale_timestamp_is_refused_and_retried() {
    let server = start("").await;
    let a = adapter(&server, SECRET_KEY, "");
    let data = record(&a, "P1", json!({"member_id": "1002"}));
    let now = chrono::Utc::now().timestamp() as u64;
    for (ts, nonce) in [(now - 400, 500_001), (now + 400, 500_002)] {
        let request = signed(&a, a.body(ts, nonce, &data)).await;
        assert_eq!(retried(a.classify(&USER_COUPON_LIST, &send(request).await)), RetryReason::StaleSignature);
    }
    let within = signed(&a, a.body(now - 60, 500_003, &data)).await;
    assert_eq!(answered(a.classify(&USER_COUPON_LIST, &send(within).await)).len(), 2);
}

/// A prepared request with its body replaced (hand-stamped or tampered).
async fn signed(a: &ZvcmsAdapter, body: Bytes) -> HttpRequest {
    let mut request = a.prepare("P1", &USER_COUPON_LIST, &Bytes::from_static(b"{}")).await.unwrap();
    request.body = body;
    request
}

#[tokio::test]
async fn malformed_requests_are_refused() {
    let server = start("").await;
    let a = adapter(&server, SECRET_KEY, "");
    let now = chrono::Utc::now().timestamp() as u64;
    let not_a_member = a.body(now, 600_001, br#"{"user_id":"abc","shopping":"0"}"#);
    let one = record(&a, "P1", json!({"member_id": "1001"}));
    let batch_of_two = a.body(now, 600_002, &a.assemble(&USER_COUPON_LIST, &[&one, &one]));
    let mut wrong_action: Value = serde_json::from_slice(&a.body(now, 600_003, &one)).unwrap();
    wrong_action["Action"] = json!("coupon.delete-all");
    let mut no_nonce: Value = serde_json::from_slice(&a.body(now, 600_004, &one)).unwrap();
    no_nonce.as_object_mut().unwrap().remove("Nonce");
    let bodies = [not_a_member, batch_of_two, Bytes::from(wrong_action.to_string()), Bytes::from(no_nonce.to_string())];
    for body in bodies {
        let (reason, _) = rejected(a.classify(&USER_COUPON_LIST, &send(signed(&a, body).await).await));
        assert!(reason.contains("40005"), "{reason}");
    }
    let tampered = String::from_utf8(a.body(now, 600_005, &one).to_vec()).unwrap().replace("600005", "600006");
    let (reason, _) = rejected(a.classify(&USER_COUPON_LIST, &send(signed(&a, tampered.into()).await).await));
    assert!(reason.contains("40001"), "{reason}");
    assert!(server.control.records().is_empty());
}

#[tokio::test]
async fn injected_faults_are_classified_and_then_recovered() {
    let server = start("").await;
    let a = adapter(&server, SECRET_KEY, "");
    server.control.fail_next(1, Failure::Status(503));
    assert_eq!(retried(query(&a, json!({"member_id": "1001"})).await), RetryReason::ServerError);
    server.control.fail_next(1, Failure::Code("50000".into()));
    assert_eq!(retried(query(&a, json!({"member_id": "1001"})).await), RetryReason::VendorError);
    server.control.throttle_next(1, 7);
    let busy = query(&a, json!({"member_id": "1001"})).await;
    assert_eq!(busy, Verdict::Busy { after: Some(Duration::from_secs(7)) });
    assert_eq!(answered(query(&a, json!({"member_id": "1001"})).await).len(), 1);
    assert_eq!(server.control.records().len(), 1);
}

#[tokio::test]
async fn city_wide_sinks_serve_unbound_lots() {
    let server = start("").await;
    let bound_only = adapter(&server, SECRET_KEY, "");
    let event = request_event("P-elsewhere", json!({"member_id": "1001"}));
    assert_eq!(bound_only.map(&event).unwrap(), Mapping::Skip(lotbridge::vendors::SkipReason::LotNotBound));
    let city_wide = adapter(&server, SECRET_KEY, "all_lots = true");
    let data = record(&city_wide, "P-elsewhere", json!({"member_id": "1001"}));
    assert_eq!(answered(attempt(&city_wide, "P-elsewhere", &data).await).len(), 1);
    assert_eq!(city_wide.bound_lots(), ["P1"]);
}

/// The simulator checks the token with its own implementation of the published scheme: a
/// token the adapter forgot to URL-escape, or signed over unsorted keys, is refused.
#[tokio::test]
async fn the_simulator_refuses_tokens_off_the_published_scheme() {
    use base64::Engine as _;
    use hmac::Mac as _;
    let server = start("").await;
    let a = adapter(&server, SECRET_KEY, "");
    let now = chrono::Utc::now().timestamp() as u64;
    let one = record(&a, "P1", json!({"member_id": "1001"}));
    let mut body: Value = serde_json::from_slice(&a.body(now, 700_001, &one)).unwrap();
    let escaped = body["Token"].as_str().unwrap().to_string();
    body["Token"] = json!(percent_encoding::percent_decode_str(&escaped).decode_utf8().unwrap());
    assert_ne!(body["Token"], json!(escaped), "the vector token has a '=' to escape");
    let (reason, _) = rejected(a.classify(&USER_COUPON_LIST, &send(signed(&a, body.to_string().into()).await).await));
    assert!(reason.contains("40001"), "unescaped token: {reason}");

    // Keys in envelope order instead of sorted: a plausible misreading.
    let nonce = "700002";
    let text = format!("openId={}&grantCode={GRANT_CODE}&timestamp={now}&nonce={nonce}", OPEN_ID);
    let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(SECRET_KEY.as_bytes()).unwrap();
    mac.update(text.as_bytes());
    let b64 = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let token = percent_encoding::utf8_percent_encode(&b64, percent_encoding::NON_ALPHANUMERIC).to_string();
    let mut unsorted: Value = serde_json::from_slice(&a.body(now, 700_002, &one)).unwrap();
    unsorted["Token"] = json!(token);
    let (reason, _) =
        rejected(a.classify(&USER_COUPON_LIST, &send(signed(&a, unsorted.to_string().into()).await).await));
    assert!(reason.contains("40001"), "unsorted keys: {reason}");
    assert!(server.control.records().is_empty());
}

//! The barrier-gate coupon adapter against its simulator: decoded `coupon.granted` events
//! mapped, assembled, prepared, sent over HTTP on 127.0.0.1 and classified, as the engine
//! does it; token caching, refresh and the `invalid_client` cool-down seen from the
//! simulator's request log.

use bytes::Bytes;
use lotbridge::config::{Binding, Bindings};
use lotbridge::photo::PhotoPolicy;
use lotbridge::secret::Secret;
use lotbridge::sim::barrier::{ExpiresIn, Simulator, TOKEN_ENDPOINT};
use lotbridge::sim::{Failure, SimServer};
use lotbridge::vendors::barrier::{BarrierAdapter, SEND_COUPON};
use lotbridge::vendors::SinkContext;
use lotbridge::vendors::{Adapter, HttpRequest, HttpResponse, Mapping, PrepareError, RetryReason, Verdict};
use serde_json::{json, Value};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const CLIENT_ID: &str = "244221";
const SECRET: &str = "54vMfi-right";

fn bindings() -> Bindings {
    let pairs = [("P1", "1012004281EYS2KZLS9HD"), ("P2", "1012005061GJYK3I9PGCH")];
    Bindings::from_list(
        pairs.iter().map(|(l, v)| Binding { lot: l.to_string(), vendor_lot: v.to_string(), token: None }).collect(),
    )
}

/// A gateway as the spec describes it: APIs under `/artemis`, the token at the root.
fn simulator() -> Simulator {
    Simulator::new(CLIENT_ID, Secret::new(SECRET))
        .with_paths("/oauth/token", "/artemis/api/v1/sendCoupon")
        .with_parks(bindings().iter().map(|b| b.vendor_lot.clone()))
}

async fn start(sim: Simulator) -> SimServer {
    sim.start("127.0.0.1:0".parse().unwrap()).await.unwrap()
}

/// The adapter as `config.rs` builds it, from TOML, pointed at `server`.
fn adapter(server: &SimServer, secret: &str, extra_toml: &str) -> Arc<BarrierAdapter> {
    let text = format!(
        "base_url = \"{}/artemis\"\nclient_id = \"{CLIENT_ID}\"\nclient_secret = {{ value = \"{secret}\" }}\n{extra_toml}",
        server.base_url()
    );
    let cfg: lotbridge::vendors::barrier::Config = toml::from_str(&text).unwrap();
    let ctx = SinkContext {
        name: "coupons",
        bindings: Arc::new(bindings()),
        photo: PhotoPolicy::default(),
        max_records: 100,
        base_dir: Path::new("."),
        http: reqwest::Client::new(),
    };
    Arc::new(lotbridge::vendors::barrier::build(&cfg, &ctx).unwrap())
}

fn coupon_event(to: Value, lots: &[&str]) -> lotbridge::event::Event {
    let raw = json!({"v": 1, "id": "c-1", "type": "coupon.granted", "lot": "P1", "at": "2023-07-11T16:31:44+08:00",
        "data": {"to": to, "lots": lots, "minutes": 60, "valid_from": "2023-07-11T16:31:44.393+08:00",
                 "valid_until": "2023-07-11T17:31:44.394+08:00", "source": "1001"}});
    lotbridge::event::decode(raw.to_string().as_bytes()).unwrap()
}

/// map + assemble, as the engine does for one coupon.
fn body_of(adapter: &BarrierAdapter, event: &lotbridge::event::Event) -> Bytes {
    let Mapping::Record(mapped) = adapter.map(event).unwrap() else { panic!("coupon must map") };
    adapter.assemble(&mapped.endpoint, &[&mapped.record])
}

/// One attempt over HTTP, with the engine's own sender (Retry-After parsed alike).
async fn send(request: HttpRequest) -> HttpResponse {
    lotbridge::engine::deliver::execute(&reqwest::Client::new(), request, std::time::Duration::from_secs(30))
        .await
        .unwrap()
}

/// prepare + send + classify: one attempt.
async fn attempt(adapter: &BarrierAdapter, body: &Bytes) -> Verdict {
    let request = adapter.prepare("P1", &SEND_COUPON, body).await.unwrap();
    adapter.classify(&SEND_COUPON, &send(request).await)
}

fn token_requests(server: &SimServer) -> usize {
    server.control.requests().iter().filter(|r| r.endpoint == TOKEN_ENDPOINT).count()
}

fn token_of(request: &HttpRequest) -> String {
    request.headers.get("access_token").unwrap().to_str().unwrap().to_string()
}

#[tokio::test]
async fn a_plate_coupon_is_delivered_as_the_spec_example() {
    let server = start(simulator()).await;
    let adapter = adapter(&server, SECRET, "");
    let body = body_of(&adapter, &coupon_event(json!({"plate": "浙A11111"}), &["P2", "P9", "P1"]));
    assert_eq!(attempt(&adapter, &body).await, Verdict::Delivered);
    let records = server.control.records_for(SEND_COUPON.name);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].lot, "1012005061GJYK3I9PGCH,1012004281EYS2KZLS9HD");
    let expected = json!({"parkCodes": "1012005061GJYK3I9PGCH,1012004281EYS2KZLS9HD", "generateObj": "1",
        "plateNo": "浙A11111", "couponType": "4", "deductContent": "60", "startTime": "1689064304393",
        "endTime": "1689067904394", "couponSource": "1001"});
    assert_eq!(records[0].record, expected);
}

#[tokio::test]
async fn a_phone_coupon_is_delivered_with_typed_fields() {
    let server = start(simulator()).await;
    let adapter = adapter(&server, SECRET, "field_encoding = \"typed\"");
    let body = body_of(&adapter, &coupon_event(json!({"phone": "13800000000"}), &["P1"]));
    assert_eq!(attempt(&adapter, &body).await, Verdict::Delivered);
    let record = &server.control.records_for(SEND_COUPON.name)[0].record;
    assert_eq!(record["generateObj"], json!(2));
    assert_eq!(record["telephone"], json!("13800000000"));
    assert_eq!(record["startTime"], json!(1_689_064_304_393_i64));
    assert_eq!(record["endTime"], json!("1689067904394"));
    assert!(record.get("plateNo").is_none());
}

#[tokio::test]
async fn fifty_concurrent_prepares_share_one_token() {
    let server = start(simulator()).await;
    let adapter = adapter(&server, SECRET, "");
    let body = Bytes::from_static(b"{}");
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let (adapter, body) = (adapter.clone(), body.clone());
            tokio::spawn(async move { token_of(&adapter.prepare("P1", &SEND_COUPON, &body).await.unwrap()) })
        })
        .collect();
    let mut tokens = Vec::new();
    for task in tasks {
        tokens.push(task.await.unwrap());
    }
    tokens.dedup();
    assert_eq!(tokens.len(), 1, "every request carries the same token");
    assert_eq!(token_requests(&server), 1);
}

#[tokio::test]
async fn an_expired_token_is_refreshed_once_and_the_coupon_delivered() {
    let server = start(simulator()).await;
    let adapter = adapter(&server, SECRET, "");
    let body = body_of(&adapter, &coupon_event(json!({"plate": "浙A11111"}), &["P1"]));
    assert_eq!(attempt(&adapter, &body).await, Verdict::Delivered);
    server.control.expire_tokens();
    let stale = adapter.prepare("P1", &SEND_COUPON, &body).await.unwrap();
    let old_token = token_of(&stale);
    let refused_headers = stale.headers.clone();
    assert_eq!(adapter.classify(&SEND_COUPON, &send(stale).await), Verdict::RefreshAuth);
    adapter.invalidate_auth(&refused_headers).await;
    adapter.invalidate_auth(&refused_headers).await; // a late second 401 for the same token

    let fresh = adapter.prepare("P1", &SEND_COUPON, &body).await.unwrap();
    assert_ne!(token_of(&fresh), old_token);
    assert_eq!(adapter.classify(&SEND_COUPON, &send(fresh).await), Verdict::Delivered);
    assert_eq!(token_requests(&server), 2, "the late 401 did not throw away the new token");
    assert_eq!(server.control.records_for(SEND_COUPON.name).len(), 2);
}

#[tokio::test]
async fn invalid_client_is_reported_and_not_hammered() {
    let server = start(simulator()).await;
    let adapter = adapter(&server, "54vMfi-wrong", "");
    for _ in 0..20 {
        let err = adapter.prepare("P1", &SEND_COUPON, &Bytes::from_static(b"{}")).await.unwrap_err();
        let PrepareError::AuthRejected(reason) = err else { panic!("expected a rejection, got {err:?}") };
        assert!(reason.contains("invalid_client") && !reason.contains("54vMfi"), "{reason}");
    }
    assert!(matches!(adapter.check_auth().await, Err(PrepareError::AuthRejected(_))));
    assert!(adapter.credentials_rejected());
    assert_eq!(token_requests(&server), 1, "one token request within the cool-down");
    assert_eq!(server.control.requests()[0].status, 401);
    assert!(server.control.records().is_empty());
}

#[tokio::test]
async fn a_token_endpoint_outage_is_retried_not_treated_as_bad_credentials() {
    let server = start(simulator()).await;
    let adapter = adapter(&server, SECRET, "");
    server.control.fail_next(1, Failure::Status(503));
    let err = adapter.prepare("P1", &SEND_COUPON, &Bytes::from_static(b"{}")).await.unwrap_err();
    assert!(matches!(err, PrepareError::AuthUnavailable(_)), "{err:?}");
    assert!(adapter.check_auth().await.is_ok(), "the next call asks again and gets a token");
    assert_eq!(token_requests(&server), 2);
}

/// A token of 2 s is refreshed after its usable second: proof the lifetime was read
/// (the 12 h fallback would keep the first token).
async fn lifetime_is_honoured(form: ExpiresIn) {
    let server = start(simulator().with_token_lifetime(Duration::from_secs(2)).with_expires_in(form)).await;
    let adapter = adapter(&server, SECRET, "");
    let body = body_of(&adapter, &coupon_event(json!({"plate": "浙A11111"}), &["P1"]));
    assert_eq!(attempt(&adapter, &body).await, Verdict::Delivered);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(attempt(&adapter, &body).await, Verdict::Delivered);
    assert_eq!(token_requests(&server), 2, "{form:?}");
}

#[tokio::test]
async fn expires_in_as_a_string_is_honoured() {
    lifetime_is_honoured(ExpiresIn::Text).await;
}

#[tokio::test]
async fn expires_in_as_a_number_is_honoured() {
    lifetime_is_honoured(ExpiresIn::Number).await;
}

#[tokio::test]
async fn extra_token_fields_are_sent() {
    let fields = [("grant_type".to_string(), "client_credentials".to_string())].into_iter().collect();
    let server = start(simulator().with_token_form(fields)).await;
    let without = adapter(&server, SECRET, "");
    assert!(matches!(without.check_auth().await, Err(PrepareError::AuthRejected(_))));
    let with = adapter(&server, SECRET, "token_form = { grant_type = \"client_credentials\" }");
    assert!(with.check_auth().await.is_ok());
}

#[tokio::test]
async fn the_simulator_refuses_bad_coupons_and_the_adapter_dead_letters_them() {
    let server = start(simulator()).await;
    let adapter = adapter(&server, SECRET, "");
    let good = json!({"parkCodes": "1012004281EYS2KZLS9HD", "generateObj": "1", "plateNo": "浙A11111",
        "couponType": "4", "deductContent": "60", "startTime": "1689064304393", "endTime": "1689067904394",
        "couponSource": "1001"});
    let cases = [
        ("plateNo", "generateObj", json!("1"), Some("plateNo")),
        ("couponType", "couponType", json!("1"), None),
        ("startTime", "startTime", json!("1689067904394"), None),
        ("parkCodes", "parkCodes", json!(""), None),
        ("parkCodes", "parkCodes", json!("UNKNOWNPARK"), None),
    ];
    for (field, key, value, remove) in cases {
        let mut body = good.clone();
        body[key] = value;
        if let Some(k) = remove {
            body.as_object_mut().unwrap().remove(k);
        }
        let verdict = attempt(&adapter, &Bytes::from(body.to_string())).await;
        let Verdict::Reject { reason, .. } = &verdict else { panic!("{field}: {verdict:?}") };
        assert!(reason.starts_with("code 400") && reason.contains(field), "{field}: {reason}");
    }
    assert!(server.control.records().is_empty());
}

#[tokio::test]
async fn a_request_without_token_gets_401() {
    let server = start(simulator()).await;
    let response = reqwest::Client::new()
        .post(format!("{}/artemis/api/v1/sendCoupon", server.base_url()))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    let body: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert_eq!(body["code"], "401");
}

#[tokio::test]
async fn injected_failures_are_classified() {
    let server = start(simulator()).await;
    let adapter = adapter(&server, SECRET, "");
    adapter.check_auth().await.unwrap(); // so the faults below hit sendCoupon, not the token
    let body = body_of(&adapter, &coupon_event(json!({"plate": "浙A11111"}), &["P1"]));
    server.control.fail_next(1, Failure::Status(503));
    assert!(matches!(attempt(&adapter, &body).await, Verdict::Retry { reason: RetryReason::ServerError, .. }));
    server.control.fail_next(1, Failure::Code("500".into()));
    assert!(matches!(attempt(&adapter, &body).await, Verdict::Retry { reason: RetryReason::VendorError, .. }));
    server.control.fail_next(1, Failure::Code("401".into()));
    assert_eq!(attempt(&adapter, &body).await, Verdict::RefreshAuth);
    server.control.fail_next(1, Failure::Code("1001".into()));
    assert!(
        matches!(attempt(&adapter, &body).await, Verdict::Reject { reason, .. } if reason.starts_with("code 1001"))
    );
    server.control.throttle_next(1, 7);
    assert_eq!(attempt(&adapter, &body).await, Verdict::Busy { after: Some(Duration::from_secs(7)) });
    assert!(server.control.records().is_empty());
    assert_eq!(attempt(&adapter, &body).await, Verdict::Delivered);
    assert_eq!(server.control.records().len(), 1);
}

/// The spec gives the token at `{ip}:{port}/oauth/token`: with the recommended base URL
/// ending in `/artemis`, the adapter still asks the root, and a gateway that serves it
/// under the prefix needs `token_under_base_path`. A mismatch either way fails.
#[tokio::test]
async fn token_url_is_the_spec_root_unless_the_gateway_prefixes_it() {
    let root = start(simulator()).await;
    let a = adapter(&root, SECRET, "");
    a.check_auth().await.unwrap();
    let body = body_of(&a, &coupon_event(json!({"plate": "浙A11111"}), &["P1"]));
    assert_eq!(attempt(&a, &body).await, Verdict::Delivered);
    let prefixed_adapter = adapter(&root, SECRET, "token_under_base_path = true");
    assert!(prefixed_adapter.check_auth().await.is_err(), "nothing at /artemis/oauth/token on this gateway");

    let prefixed = start(simulator().with_paths("/artemis/oauth/token", "/artemis/api/v1/sendCoupon")).await;
    assert!(adapter(&prefixed, SECRET, "").check_auth().await.is_err(), "nothing at /oauth/token on this gateway");
    let a = adapter(&prefixed, SECRET, "token_under_base_path = true");
    assert_eq!(attempt(&a, &body).await, Verdict::Delivered);
}

/// The simulator built from a sink's table serves the token where the table's keys say
/// a gateway does, so an adapter reading them differently fails against it.
#[tokio::test]
async fn simulator_from_config_serves_the_token_where_the_keys_say() {
    for extra in ["", "token_under_base_path = true"] {
        let template = format!(
            "base_url = \"http://127.0.0.1:1/artemis\"\nclient_id = \"{CLIENT_ID}\"\nclient_secret = {{ value = \"{SECRET}\" }}\n{extra}"
        );
        let cfg: lotbridge::vendors::barrier::Config = toml::from_str(&template).unwrap();
        let server = start(Simulator::from_config(&cfg, &bindings(), Path::new(".")).unwrap()).await;
        adapter(&server, SECRET, extra).check_auth().await.unwrap();
        let other = if extra.is_empty() { "token_under_base_path = true" } else { "" };
        assert!(adapter(&server, SECRET, other).check_auth().await.is_err(), "{extra:?} vs {other:?}");
    }
}

/// Plates lose their spaces by default (the spec's example `浙 A11111` is a converted text
/// with stray spaces elsewhere too); `plate_spaces = "keep"` sends them as received.
#[tokio::test]
async fn plates_are_sent_without_spaces_unless_kept() {
    let server = start(simulator()).await;
    let a = adapter(&server, SECRET, "");
    let body = body_of(&a, &coupon_event(json!({"plate": "浙 A11111"}), &["P1"]));
    assert_eq!(attempt(&a, &body).await, Verdict::Delivered);
    let kept = adapter(&server, SECRET, "plate_spaces = \"keep\"");
    let body = body_of(&kept, &coupon_event(json!({"plate": "浙 A11111"}), &["P1"]));
    assert_eq!(attempt(&kept, &body).await, Verdict::Delivered);
    let plates: Vec<Value> = server.control.records().into_iter().map(|r| r.record["plateNo"].clone()).collect();
    assert_eq!(plates, [json!("浙A11111"), json!("浙 A11111")]);
    let totals = a.adjustments().unwrap().totals();
    assert_eq!(totals, [("plateNo", lotbridge::vendors::adjust::Change::Normalized, 1)]);
}

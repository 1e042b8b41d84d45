//! The zvcms adapter: member-coupon lookups (`coupon.user-coupon-list`) whose answers go
//! back to Kafka as `member.coupons.listed`.
//!
//! Every request is `POST {base_url}/api/v2` with the envelope `OpenId`, `GrantCode`,
//! `Timestamp` (Unix seconds), `Nonce`, `Token` (HMAC-SHA1, see [`sign`]), `Action` and
//! `Params`. Mapping writes only `Params` (pure); the envelope is stamped, given a fresh
//! nonce and signed per attempt in `prepare`.
//!
//! - [`config`]: the `[sinks.zvcms]` keys and their checks.
//! - [`mapping`]: the query event to `Params`.
//! - [`sign`]: the `Token` and the nonces.
//! - [`codes`]: the reply to a verdict and the normalized coupon list.

pub mod codes;
pub mod config;
pub mod mapping;
pub mod sign;

pub use config::Config;

use super::SinkContext;
use crate::config::{Bindings, ConfigError};
use crate::event::{Event, EventData};
use crate::secret::Secret;
use crate::vendors::{
    Adapter, Coalesce, Endpoint, HttpRequest, HttpResponse, MapError, Mapped, Mapping, PrepareError, SkipReason,
    VendorKind, Verdict,
};
use bytes::Bytes;
use codes::CodeTable;
use mapping::ParamStyle;
use serde::Serialize;
use sign::{KeyStyle, NonceSource, Signed};
use std::sync::Arc;

/// The one action lotbridge calls.
pub const ACTION: &str = "coupon.user-coupon-list";

/// `coupon.user-coupon-list`: one query per request, in lane order.
pub const USER_COUPON_LIST: Endpoint = Endpoint { name: ACTION, max_records: 1, coalesce: Coalesce::Ordered };

/// The account and signing variant requests are signed with.
#[derive(Debug, Clone)]
pub struct Account {
    /// `OpenId`.
    pub open_id: String,
    /// `GrantCode`.
    pub grant_code: Secret,
    /// The HMAC key.
    pub secret_key: Secret,
    /// Key spelling in the signed text.
    pub style: KeyStyle,
    /// Whether `Action` is signed.
    pub sign_action: bool,
}

impl Account {
    /// Resolves the account of a `[sinks.zvcms]` table (`resolve` reads one secret key).
    pub fn from_config(
        cfg: &Config,
        sink: &str,
        mut resolve: impl FnMut(&crate::secret::SecretRef, &str) -> Result<Secret, ConfigError>,
    ) -> Result<Account, ConfigError> {
        cfg.validate(sink)?;
        let grant_code = resolve(&cfg.grant_code, "zvcms.grant_code")?;
        config::check_sign_value(sink, "grant_code", grant_code.expose())?;
        let secret_key = resolve(&cfg.secret_key, "zvcms.secret_key")?;
        Ok(Account {
            open_id: cfg.open_id.clone(),
            grant_code,
            secret_key,
            style: cfg.sign_key_style,
            sign_action: cfg.sign_action,
        })
    }

    /// The `Token` for one stamp.
    pub fn token(&self, timestamp: &str, nonce: &str) -> String {
        let values = Signed {
            open_id: &self.open_id,
            grant_code: self.grant_code.expose(),
            timestamp,
            nonce,
            action: self.sign_action.then_some(ACTION),
        };
        sign::token(self.secret_key.expose().as_bytes(), self.style, &values)
    }
}

/// The envelope as sent, in the spec's order, without `Params` (appended verbatim).
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Envelope<'a> {
    open_id: &'a str,
    grant_code: &'a str,
    timestamp: &'a str,
    nonce: &'a str,
    token: &'a str,
    action: &'a str,
}

/// The adapter of one zvcms sink.
pub struct ZvcmsAdapter {
    url: String,
    account: Account,
    nonces: NonceSource,
    params: ParamStyle,
    codes: CodeTable,
    all_lots: bool,
    bindings: Arc<Bindings>,
}

/// Builds the adapter of one sink.
pub fn build(cfg: &Config, ctx: &SinkContext<'_>) -> Result<ZvcmsAdapter, ConfigError> {
    let account = Account::from_config(cfg, ctx.name, |r, key| ctx.resolve_secret(r, key))?;
    Ok(ZvcmsAdapter {
        url: cfg.url(),
        account,
        nonces: NonceSource::new(),
        params: ParamStyle { send_absent: cfg.send_absent_params, ints: cfg.int_params, amount_unit: cfg.amount_unit },
        codes: CodeTable {
            business: cfg.business_error,
            reject: trimmed(&cfg.reject_codes),
            stale: trimmed(&cfg.stale_codes),
        },
        all_lots: cfg.all_lots,
        bindings: ctx.bindings.clone(),
    })
}

fn trimmed(codes: &[String]) -> Vec<String> {
    codes.iter().map(|c| c.trim().to_string()).collect()
}

impl ZvcmsAdapter {
    /// The request body for one stamp: the signed envelope with `params` appended as they are.
    pub fn body(&self, timestamp: u64, nonce: u64, params: &[u8]) -> Bytes {
        let (timestamp, nonce) = (timestamp.to_string(), nonce.to_string());
        let token = self.account.token(&timestamp, &nonce);
        let envelope = Envelope {
            open_id: &self.account.open_id,
            grant_code: self.account.grant_code.expose(),
            timestamp: &timestamp,
            nonce: &nonce,
            token: &token,
            action: ACTION,
        };
        let Ok(mut out) = serde_json::to_vec(&envelope) else {
            // Unreachable (strings always serialize); an empty body would be refused visibly.
            return Bytes::new();
        };
        out.pop(); // the closing brace: `Params` goes last, as in the spec's example
        out.extend_from_slice(b",\"Params\":");
        out.extend_from_slice(params);
        out.push(b'}');
        Bytes::from(out)
    }

    fn serves(&self, lot: &str) -> bool {
        self.all_lots || self.bindings.get(lot).is_some()
    }
}

#[async_trait::async_trait]
impl Adapter for ZvcmsAdapter {
    fn kind(&self) -> VendorKind {
        VendorKind::Zvcms
    }

    fn map(&self, event: &Event) -> Result<Mapping, MapError> {
        let EventData::MemberCouponsRequested(query) = &event.data else {
            return Ok(Mapping::Skip(SkipReason::TypeNotHandled));
        };
        if !self.serves(&event.lot) {
            return Ok(Mapping::Skip(SkipReason::LotNotBound));
        }
        let record = self.params.encode(query)?;
        Ok(Mapping::Record(Mapped { endpoint: USER_COUPON_LIST, record, photo: None }))
    }

    /// One query per request (`max_records` 1): the record is the whole `Params`.
    fn assemble(&self, _endpoint: &Endpoint, records: &[&[u8]]) -> Bytes {
        match records {
            [one] => Bytes::copy_from_slice(one),
            // Never asked for by the engine; an array makes the vendor refuse it visibly.
            _ => crate::vendors::json_array(records),
        }
    }

    async fn prepare(&self, lot: &str, _endpoint: &Endpoint, data: &Bytes) -> Result<HttpRequest, PrepareError> {
        if !self.serves(lot) {
            return Err(PrepareError::Unbound);
        }
        let timestamp = u64::try_from(chrono::Utc::now().timestamp()).unwrap_or(0);
        let body = self.body(timestamp, self.nonces.next_at(timestamp), data);
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
        Ok(HttpRequest { method: http::Method::POST, url: self.url.clone(), headers, body })
    }

    fn classify(&self, _endpoint: &Endpoint, response: &HttpResponse) -> Verdict {
        self.codes.classify(response)
    }

    fn bound_lots(&self) -> Vec<String> {
        self.bindings.lots()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Binding;
    use crate::secret::SecretRef;
    use serde_json::{json, Value};

    const SPEC_REQUEST: &str = r#"{ "OpenId": "6dc05b4ac175cf316d226252b05cf685", "GrantCode": "782c281f62", "Timestamp": "1547186244", "Nonce": "658965", "Token": "0%2B%2B3c6hthjwAml4ABAXOYF4Q6UY%3D", "Action": "coupon.user-coupon-list", "Params": { "user_id": "", "from_pay_page": "", "shopping": "", "checked": "[{\"bar_code\":\"P5C503FB51B4843301\",\"offline_price\":120,\"buy_num\":2},{\"bar_code\":\"P5C503FB51C2F96986\",\"offline_price\":20,\"buy_num\":2}]", "expire": "", "amount": "", "multi_store_sn": "" } }"#;

    fn config(extra: &str) -> Config {
        let text = format!(
            "base_url = \"http://127.0.0.1:9/\"\nopen_id = \"fake-open-id-for-test-only-0001\"\n\
             grant_code = {{ value = \"fake-grant-code-0001\" }}\n\
             secret_key = {{ value = \"fake-open-key-for-test-only-0001\" }}\n{extra}"
        );
        toml::from_str(&text).unwrap()
    }

    fn adapter(extra: &str) -> ZvcmsAdapter {
        let binding = Binding { lot: "P001".into(), vendor_lot: "S-1".into(), token: None };
        let ctx = SinkContext {
            name: "member",
            bindings: Arc::new(Bindings::from_list(vec![binding])),
            photo: Default::default(),
            max_records: 100,
            base_dir: std::path::Path::new("."),
            http: reqwest::Client::new(),
        };
        build(&config(extra), &ctx).unwrap()
    }

    fn event(ty: &str, lot: &str, data: Value) -> Event {
        let json =
            json!({"v": 1, "id": "q-1", "type": ty, "lot": lot, "at": "2026-11-23T08:00:00+08:00", "data": data});
        crate::event::decode(json.to_string().as_bytes()).unwrap()
    }

    fn query(lot: &str) -> Event {
        event("member.coupons.requested", lot, json!({"member_id": "1003", "status": "used"}))
    }

    #[test]
    fn maps_queries_of_bound_lots_only() {
        let a = adapter("");
        let Mapping::Record(mapped) = a.map(&query("P001")).unwrap() else { panic!("not mapped") };
        assert_eq!(mapped.endpoint, USER_COUPON_LIST);
        let params: Value = serde_json::from_slice(&mapped.record).unwrap();
        assert_eq!((params["user_id"].as_str(), params["expire"].as_str()), (Some("1003"), Some("used")));
        assert_eq!(a.map(&query("P999")).unwrap(), Mapping::Skip(SkipReason::LotNotBound));
        let heartbeat = event("lot.heartbeat", "P001", json!({}));
        assert_eq!(a.map(&heartbeat).unwrap(), Mapping::Skip(SkipReason::TypeNotHandled));
        let bad = event("member.coupons.requested", "P001", json!({"member_id": "m-7"}));
        assert_eq!(a.map(&bad).unwrap_err().field, "data.member_id");
    }

    #[test]
    fn all_lots_serves_every_lot_but_lists_the_bound_ones() {
        let a = adapter("all_lots = true");
        assert!(matches!(a.map(&query("P999")).unwrap(), Mapping::Record(_)));
        assert_eq!(a.bound_lots(), ["P001"]);
    }

    #[test]
    fn body_has_the_spec_examples_envelope_and_the_vector_token() {
        let a = adapter("");
        let params = br#"{"user_id":"1001"}"#;
        let body: Value = serde_json::from_slice(&a.body(1_712_563_200, 24_680, params)).unwrap();
        let spec: Value = serde_json::from_str(SPEC_REQUEST).unwrap();
        let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys(&body), keys(&spec));
        assert_eq!(body["Token"], "ySypL4SRFMmfSrCqOiFE01LK3ks%3D");
        assert_eq!((body["Timestamp"].as_str(), body["Nonce"].as_str()), (Some("1712563200"), Some("24680")));
        assert_eq!(body["Action"], ACTION);
        assert_eq!(body["Params"], json!({"user_id": "1001"}));
    }

    #[test]
    fn signing_options_change_the_token() {
        let plain = adapter("").body(1_712_563_200, 24_680, b"{}");
        let pascal = adapter("sign_key_style = \"pascal\"").body(1_712_563_200, 24_680, b"{}");
        let action = adapter("sign_action = true").body(1_712_563_200, 24_680, b"{}");
        let token = |b: &Bytes| serde_json::from_slice::<Value>(b).unwrap()["Token"].clone();
        assert_ne!(token(&pascal), token(&plain));
        assert_ne!(token(&action), token(&plain));
    }

    #[tokio::test]
    async fn every_attempt_gets_a_fresh_nonce_and_its_own_token() {
        let a = adapter("");
        let data = Bytes::from_static(br#"{"user_id":"1"}"#);
        let first = a.prepare("P001", &USER_COUPON_LIST, &data).await.unwrap();
        let second = a.prepare("P001", &USER_COUPON_LIST, &data).await.unwrap();
        assert_eq!((first.method, first.url.as_str()), (http::Method::POST, "http://127.0.0.1:9/api/v2"));
        assert_eq!(first.headers[http::header::CONTENT_TYPE], "application/json");
        let (x, y): (Value, Value) =
            (serde_json::from_slice(&first.body).unwrap(), serde_json::from_slice(&second.body).unwrap());
        assert_ne!(x["Nonce"], y["Nonce"]);
        assert_ne!(x["Token"], y["Token"]);
        for b in [&x, &y] {
            let expected = a.account.token(b["Timestamp"].as_str().unwrap(), b["Nonce"].as_str().unwrap());
            assert_eq!(b["Token"], expected);
        }
        assert_eq!(a.prepare("P999", &USER_COUPON_LIST, &data).await.unwrap_err(), PrepareError::Unbound);
    }

    #[test]
    fn assemble_passes_the_single_record_through() {
        let a = adapter("");
        assert_eq!(&a.assemble(&USER_COUPON_LIST, &[br#"{"user_id":"1"}"#])[..], br#"{"user_id":"1"}"#);
    }

    #[test]
    fn secrets_stay_hidden() {
        let a = adapter("");
        let shown = format!("{:?} {:?}", a.account, config(""));
        assert!(!shown.contains("fake-open-key") && !shown.contains("fake-grant-code"), "{shown}");
    }

    #[test]
    fn build_errors_name_the_key_not_the_value() {
        let mut cfg = config("");
        cfg.secret_key = SecretRef::Env("LOTBRIDGE_TEST_ZVCMS_UNSET_KEY".into());
        let ctx = SinkContext {
            name: "member",
            bindings: Arc::new(Bindings::default()),
            photo: Default::default(),
            max_records: 1,
            base_dir: std::path::Path::new("."),
            http: reqwest::Client::new(),
        };
        let err = build(&cfg, &ctx).err().unwrap().to_string();
        assert!(err.contains("zvcms.secret_key") && err.contains("LOTBRIDGE_TEST_ZVCMS_UNSET_KEY"), "{err}");
        let mut cfg = config("");
        cfg.grant_code = SecretRef::Value(Secret::new("has space"));
        let err = build(&cfg, &ctx).err().unwrap().to_string();
        assert_eq!(err, "sink \"member\": zvcms.grant_code: must not contain whitespace, '&' or '='");
    }
}

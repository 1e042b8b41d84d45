//! The barrier-gate coupon platform (`specs/barrier-coupon-api.txt`): `coupon.granted`
//! events become `sendCoupon` calls carrying an `access_token` header.
//!
//! - [`config`]: `[sinks.barrier_coupon]` keys, defaults and checks.
//! - [`mapping`]: the pure event → request body mapping.
//! - [`token`]: the `/oauth/token` call behind the shared single-flight [`TokenCache`].
//! - [`codes`]: the classification of the platform's answers.
//!
//! A coupon may name several lots; the sink takes it when any of them is bound, and sends
//! one request whose `parkCodes` lists the bound ones. The request therefore depends on
//! no single lot's binding, and [`Adapter::prepare`] ignores its lane.

pub mod codes;
pub mod config;
pub mod mapping;
pub mod token;

pub use config::{Config, FieldEncoding};

use super::SinkContext;
use crate::auth::{TokenCache, TokenError};
use crate::config::{Bindings, ConfigError};
use crate::event::{Event, EventData};
use crate::vendors::{
    Adapter, Coalesce, Endpoint, HttpRequest, HttpResponse, MapError, Mapped, Mapping, PrepareError, SkipReason,
    VendorKind, Verdict,
};
use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use std::sync::Arc;
use std::time::Duration;

/// `sendCoupon`: one coupon per request, in lane order.
pub const SEND_COUPON: Endpoint = Endpoint { name: "sendCoupon", max_records: 1, coalesce: Coalesce::Ordered };

/// The header carrying the token (the spec: no `Bearer` prefix).
pub const TOKEN_HEADER: &str = "access_token";

/// The adapter of one `[sinks.barrier_coupon]` sink.
pub struct BarrierAdapter {
    bindings: Arc<Bindings>,
    encoding: FieldEncoding,
    send_url: String,
    codes: config::CodeTable,
    tokens: TokenCache,
    plates: crate::vendors::plate::PlateSpaces,
    adjustments: crate::vendors::adjust::Adjustments,
}

impl std::fmt::Debug for BarrierAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BarrierAdapter").field("send_url", &self.send_url).field("encoding", &self.encoding).finish()
    }
}

/// Builds the adapter of one sink: checks the configuration and resolves the client secret.
pub fn build(cfg: &Config, ctx: &SinkContext<'_>) -> Result<BarrierAdapter, ConfigError> {
    cfg.validate(ctx.name, &ctx.bindings)?;
    let urls = cfg.urls(ctx.name)?;
    let fetcher = token::Fetcher {
        sink: ctx.name.to_string(),
        http: ctx.http.clone(),
        url: urls.token,
        client_id: cfg.client_id.clone(),
        client_secret: ctx.resolve_secret(&cfg.client_secret, "client_secret")?,
        extra: cfg.token_form.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        timeout: Duration::from_millis(cfg.token_timeout_ms),
        fallback_lifetime: Duration::from_secs(cfg.token_lifetime_fallback_secs),
    };
    Ok(BarrierAdapter {
        bindings: ctx.bindings.clone(),
        encoding: cfg.field_encoding,
        send_url: urls.send,
        codes: cfg.code_table(),
        tokens: TokenCache::new(Box::new(fetcher), cfg.token_policy()),
        plates: cfg.plate_spaces,
        adjustments: crate::vendors::adjust::Adjustments::new(ctx.name),
    })
}

impl BarrierAdapter {
    /// Whether the platform currently rejects the credentials (an operator must act).
    pub fn credentials_rejected(&self) -> bool {
        self.tokens.credentials_rejected()
    }

    fn headers(token: &str) -> Result<HeaderMap, PrepareError> {
        let mut value = HeaderValue::from_str(token)
            .map_err(|_| PrepareError::AuthUnavailable("access_token cannot be sent as a header value".into()))?;
        value.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json;charset=UTF-8"));
        headers.insert(HeaderName::from_static(TOKEN_HEADER), value);
        Ok(headers)
    }
}

fn prepare_error(e: TokenError) -> PrepareError {
    match e {
        TokenError::Rejected(reason) => PrepareError::AuthRejected(reason),
        TokenError::Unavailable(reason) => PrepareError::AuthUnavailable(reason),
    }
}

#[async_trait::async_trait]
impl Adapter for BarrierAdapter {
    fn kind(&self) -> VendorKind {
        VendorKind::BarrierCoupon
    }

    fn map(&self, event: &Event) -> Result<Mapping, MapError> {
        let EventData::CouponGranted(grant) = &event.data else {
            return Ok(Mapping::Skip(SkipReason::TypeNotHandled));
        };
        let Some(park_codes) = mapping::park_codes(&grant.lots, &self.bindings) else {
            return Ok(Mapping::Skip(SkipReason::LotNotBound));
        };
        let (record, adjusted) = mapping::send_coupon(grant, park_codes, self.encoding, self.plates)?;
        if let Some(adjusted) = adjusted {
            self.adjustments.record(&event.lot, &[adjusted]);
        }
        Ok(Mapping::Record(Mapped { endpoint: SEND_COUPON, record, photo: None }))
    }

    fn adjustments(&self) -> Option<&crate::vendors::adjust::Adjustments> {
        Some(&self.adjustments)
    }

    /// One record is the whole body. The engine never batches more (`max_records` is 1); if
    /// it did, the records go as an array the platform refuses visibly rather than being lost.
    fn assemble(&self, _endpoint: &Endpoint, records: &[&[u8]]) -> Bytes {
        match records {
            [one] => Bytes::copy_from_slice(one),
            many => crate::vendors::json_array(many),
        }
    }

    async fn prepare(&self, _lot: &str, _endpoint: &Endpoint, data: &Bytes) -> Result<HttpRequest, PrepareError> {
        let token = self.tokens.get().await.map_err(prepare_error)?;
        Ok(HttpRequest {
            method: http::Method::POST,
            url: self.send_url.clone(),
            headers: Self::headers(token.expose())?,
            body: data.clone(),
        })
    }

    fn classify(&self, _endpoint: &Endpoint, response: &HttpResponse) -> Verdict {
        codes::classify(&self.codes, response)
    }

    async fn invalidate_auth(&self, refused: &http::HeaderMap) {
        match refused.get(TOKEN_HEADER).and_then(|v| v.to_str().ok()) {
            Some(token) => self.tokens.invalidate(&crate::secret::Secret::new(token)).await,
            None => self.tokens.invalidate_now(),
        }
    }

    async fn check_auth(&self) -> Result<(), PrepareError> {
        self.tokens.get().await.map(|_| ()).map_err(prepare_error)
    }

    fn token_stats(&self) -> Option<&crate::auth::TokenStats> {
        Some(&self.tokens.stats)
    }

    fn bound_lots(&self) -> Vec<String> {
        self.bindings.lots()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Binding;
    use crate::photo::PhotoPolicy;
    use serde_json::json;
    use std::path::Path;

    fn adapter() -> BarrierAdapter {
        let cfg: Config = toml::from_str(
            "base_url = \"http://127.0.0.1:9/artemis\"\nclient_id = \"244221\"\nclient_secret = { value = \"54vMfi\" }",
        )
        .unwrap();
        let bindings = vec![
            Binding { lot: "P1".into(), vendor_lot: "1012004281EYS".into(), token: None },
            Binding { lot: "P2".into(), vendor_lot: "1012005061GJ".into(), token: None },
        ];
        let ctx = SinkContext {
            name: "coupons",
            bindings: Arc::new(Bindings::from_list(bindings)),
            photo: PhotoPolicy::default(),
            max_records: 100,
            base_dir: Path::new("."),
            http: reqwest::Client::new(),
        };
        build(&cfg, &ctx).unwrap()
    }

    fn event(ty: &str, lots: &[&str]) -> Event {
        let data = match ty {
            "coupon.granted" => json!({"to": {"plate": "浙A11111"}, "lots": lots, "minutes": 60,
                "valid_from": "2023-07-11T16:31:44.393+08:00", "valid_until": "2023-07-11T17:31:44.394+08:00",
                "source": "1001"}),
            _ => json!({}),
        };
        let raw =
            json!({"v": 1, "id": "e-1", "type": ty, "lot": "P1", "at": "2023-07-11T16:31:44+08:00", "data": data});
        crate::event::decode(raw.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn coupon_goes_to_the_bound_lots() {
        let Mapping::Record(mapped) = adapter().map(&event("coupon.granted", &["P9", "P2", "P1"])).unwrap() else {
            panic!("must map")
        };
        assert_eq!(mapped.endpoint, SEND_COUPON);
        let body: serde_json::Value = serde_json::from_slice(&mapped.record).unwrap();
        assert_eq!(body["parkCodes"], "1012005061GJ,1012004281EYS");
        assert_eq!(body["startTime"], "1689064304393");
        assert_eq!(body["couponSource"], "1001");
    }

    #[test]
    fn skips_other_types_and_foreign_lots() {
        let a = adapter();
        assert_eq!(a.map(&event("coupon.granted", &["P9"])).unwrap(), Mapping::Skip(SkipReason::LotNotBound));
        assert_eq!(a.map(&event("lot.heartbeat", &[])).unwrap(), Mapping::Skip(SkipReason::TypeNotHandled));
        assert_eq!(a.bound_lots(), vec!["P1", "P2"]);
    }

    #[test]
    fn one_record_is_the_whole_body() {
        assert_eq!(&adapter().assemble(&SEND_COUPON, &[b"{\"a\":1}"])[..], b"{\"a\":1}");
    }

    #[test]
    fn a_missing_secret_names_sink_and_key() {
        let cfg: Config = toml::from_str(
            "base_url = \"http://h\"\nclient_id = \"a\"\nclient_secret = { env = \"LOTBRIDGE_BARRIER_UNSET_SECRET\" }",
        )
        .unwrap();
        let ctx = SinkContext {
            name: "coupons",
            bindings: Arc::new(Bindings::default()),
            photo: PhotoPolicy::default(),
            max_records: 1,
            base_dir: Path::new("."),
            http: reqwest::Client::new(),
        };
        let msg = build(&cfg, &ctx).unwrap_err().to_string();
        assert!(msg.contains("coupons") && msg.contains("client_secret"), "{msg}");
    }

    #[test]
    fn debug_never_shows_the_secret() {
        assert!(!format!("{:?}", adapter()).contains("54vMfi"));
    }
}

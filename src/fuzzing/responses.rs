//! Vendor replies: each adapter's `classify` and token-answer parsers on framed input.
//!
//! A response input is text-framed so that seeds are the vendors' sample replies as written
//! in their specs, readable and editable by hand:
//!
//! ```text
//! <HTTP status>\n<Retry-After header value>\n<body bytes...>
//! ```
//!
//! A first line that is not a number between 100 and 999 means status 200, so mutations of
//! the body are not wasted on a status no parser reads; a missing second line means no
//! `Retry-After`. The header goes through the engine's own `parse_retry_after`. Adapters are
//! built once per process from the smallest real configs, as the vendor unit tests build them.

use super::bounded;
use crate::auth::TokenError;
use crate::config::{Binding, Bindings};
use crate::engine::parse_retry_after;
use crate::photo::PhotoPolicy;
use crate::secret::Secret;
use crate::vendors::barrier::{self, token::parse_answer, BarrierAdapter, SEND_COUPON};
use crate::vendors::bingzhouxing::{self, BingzhouxingAdapter, CAR_IN_OUT, HEARTBEAT, PARK_SPACE};
use crate::vendors::isp::{self, token::read_token_answer, IspAdapter, TokenAnswerField};
use crate::vendors::zvcms::{self, ZvcmsAdapter, USER_COUPON_LIST};
use crate::vendors::SinkContext;
use crate::vendors::{Adapter, Endpoint, HttpResponse, Verdict};
use bytes::Bytes;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Bingzhouxing replies through `classify` for each endpoint; a per-record rejection only
/// where a request can hold several records.
pub fn bingzhouxing_response(data: &[u8]) {
    static ADAPTER: OnceLock<BingzhouxingAdapter> = OnceLock::new();
    let adapter = ADAPTER.get_or_init(|| {
        let cfg: bingzhouxing::Config = config(r#"base_url = "http://127.0.0.1:9""#);
        built(bingzhouxing::build(&cfg, &context("bzx", 100, Some("fuzz-lot-token"))))
    });
    let response = frame(data);
    classify_all(adapter, &[HEARTBEAT, PARK_SPACE, CAR_IN_OUT], &response);
}

/// Inspur ISP replies through `classify` for its five endpoints, and token answers through
/// `read_token_answer` for either answer field.
pub fn isp_response(data: &[u8]) {
    static ADAPTER: OnceLock<IspAdapter> = OnceLock::new();
    let adapter = ADAPTER.get_or_init(|| {
        let cfg: isp::Config = config(
            "base_url = \"http://127.0.0.1:9\"\nclient_id = \"id\"\nclient_secret = { value = \"fuzz-secret\" }",
        );
        built(isp::build(&cfg, &context("isp", 50, None)))
    });
    let response = frame(data);
    let e = adapter.endpoints();
    classify_all(adapter, &[e.spot, e.spot_delete, e.spot_num, e.entrance, e.departure], &response);
    for field in [TokenAnswerField::AccessToken, TokenAnswerField::Token] {
        let token = read_token_answer(response.status, &response.body, field);
        check_token_result(&response.body, field.as_str(), &token, |t| t.expires_in);
    }
}

/// Barrier-gate replies to `sendCoupon` through `classify`, and token answers through
/// `parse_answer`: the fallback lifetime is used exactly when the answer gave none.
pub fn barrier_response(data: &[u8]) {
    static ADAPTER: OnceLock<BarrierAdapter> = OnceLock::new();
    let adapter = ADAPTER.get_or_init(|| {
        let cfg: barrier::Config = config(
            "base_url = \"http://127.0.0.1:9/artemis\"\nclient_id = \"244221\"\nclient_secret = { value = \"fuzz-secret\" }",
        );
        built(barrier::build(&cfg, &context("coupons", 100, None)))
    });
    let response = frame(data);
    classify_all(adapter, &[SEND_COUPON], &response);
    let fallback = Duration::from_secs(7_200);
    let token = parse_answer(response.status, &response.body, fallback);
    check_token_result(&response.body, "access_token", &token, |t| t.token.expires_in);
    if let Ok(issued) = &token {
        assert!(issued.lifetime_from_vendor || issued.token.expires_in == fallback, "fallback lifetime not used");
    }
}

/// zvcms coupon-list replies through `classify` of two adapters (a business refusal read as
/// an empty list, and as a rejection); every answered list is checked as
/// [`super::contract`] publishes it.
pub fn zvcms_response(data: &[u8]) {
    const BASE: &str = "base_url = \"http://127.0.0.1:9/\"\nopen_id = \"fuzz-open-id\"\n\
        grant_code = { value = \"fuzz-grant-code\" }\nsecret_key = { value = \"fuzz-secret-key\" }\n";
    static ADAPTERS: OnceLock<[ZvcmsAdapter; 2]> = OnceLock::new();
    let adapters = ADAPTERS.get_or_init(|| {
        let one = |extra: &str| {
            let cfg: zvcms::Config = config(&format!("{BASE}{extra}"));
            built(zvcms::build(&cfg, &context("member", 100, None)))
        };
        [one(""), one("business_error = \"reject\"\n")]
    });
    let response = frame(data);
    for adapter in adapters {
        let verdict = adapter.classify(&USER_COUPON_LIST, &response);
        check_verdict(&response, &verdict);
        if let Verdict::Answered(coupons) = verdict {
            super::contract::check_listed(coupons);
        }
    }
}

/// Splits `data` into status, `Retry-After` and body (see the module doc).
pub fn frame(data: &[u8]) -> HttpResponse {
    let (first, rest) = split_line(data);
    let status = std::str::from_utf8(first)
        .ok()
        .and_then(|s| s.trim().parse::<u16>().ok())
        .filter(|s| (100..=999).contains(s))
        .unwrap_or(200);
    let (header, body) = match rest {
        Some(rest) => {
            let (line, body) = split_line(rest);
            (Some(String::from_utf8_lossy(line).into_owned()), body.unwrap_or_default())
        }
        None => (None, &[][..]),
    };
    let retry_after = header.as_deref().filter(|h| !h.is_empty()).and_then(parse_retry_after);
    if let Some(after) = retry_after {
        assert!(after <= Duration::from_secs(3600), "Retry-After {header:?} gave {after:?}, over the 1 h cap");
    }
    HttpResponse { status, retry_after, body: Bytes::copy_from_slice(body) }
}

fn split_line(data: &[u8]) -> (&[u8], Option<&[u8]>) {
    match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], Some(&data[i + 1..])),
        None => (data, None),
    }
}

fn classify_all(adapter: &dyn Adapter, endpoints: &[Endpoint], response: &HttpResponse) {
    for endpoint in endpoints {
        let verdict = adapter.classify(endpoint, response);
        check_verdict(response, &verdict);
        if let Verdict::Reject { per_record: true, .. } = verdict {
            assert!(endpoint.max_records > 1, "per-record rejection on single-record endpoint {}", endpoint.name);
        }
    }
}

/// A sink context with one bound lot, as the vendor tests build it; `lot_token` for vendors
/// that issue a secret per lot.
fn context(name: &'static str, max_records: usize, lot_token: Option<&str>) -> SinkContext<'static> {
    let token = lot_token.map(Secret::new);
    let binding = Binding { lot: "P001".into(), vendor_lot: "V-001".into(), token };
    SinkContext {
        name,
        bindings: Arc::new(Bindings::from_list(vec![binding])),
        photo: PhotoPolicy::default(),
        max_records,
        base_dir: Path::new("."),
        http: reqwest::Client::new(),
    }
}

/// Parses a vendor's TOML table (the targets' configs are constants: a failure is a bug here).
fn config<T: serde::de::DeserializeOwned>(text: &str) -> T {
    toml::from_str(text).unwrap_or_else(|e| panic!("fuzz config does not parse: {e}"))
}

fn built<A>(adapter: Result<A, crate::config::ConfigError>) -> A {
    adapter.unwrap_or_else(|e| panic!("fuzz adapter: {e}"))
}

/// Checks what every verdict must satisfy whatever the vendor sent.
pub fn check_verdict(response: &HttpResponse, verdict: &Verdict) {
    let invented = |after: &Option<Duration>| after.is_some() && *after != response.retry_after;
    match verdict {
        Verdict::Retry { detail, after, .. } => {
            bounded("retry detail", detail);
            assert!(!invented(after), "Retry-After invented: {after:?}");
        }
        Verdict::Busy { after } => assert!(!invented(after), "Retry-After invented: {after:?}"),
        Verdict::Reject { reason, .. } => bounded("reject reason", reason),
        Verdict::Hold { detail, .. } => bounded("hold detail", detail),
        Verdict::Delivered | Verdict::Duplicate | Verdict::Answered(_) => {
            assert!((200..=299).contains(&response.status), "HTTP {} counted as delivered", response.status)
        }
        Verdict::RefreshAuth => {}
    }
}

/// Checks a token parser's result: a token's lifetime fits a clock; an error is bounded and
/// never quotes the token the vendor sent in `field` (error texts reach logs).
fn check_token_result<T>(body: &[u8], field: &str, result: &Result<T, TokenError>, lifetime: impl Fn(&T) -> Duration) {
    match result {
        Ok(issued) => {
            let life = lifetime(issued);
            assert!(!life.is_zero(), "token accepted with a zero lifetime");
            assert!(Instant::now().checked_add(life).is_some(), "token lifetime {life:?} overflows a clock");
        }
        Err(TokenError::Unavailable(reason) | TokenError::Rejected(reason)) => {
            bounded("token error", reason);
            if let Some(token) = sent_token(body, field) {
                assert!(!reason.contains(&token), "token error quotes the {field}: {reason:?}");
            }
        }
    }
}

/// The `field` string of a JSON body when it looks like a real token: 8 or more token
/// characters, written once in the body (so an error quoting it cannot have taken it from
/// another field or from the parser's own words).
fn sent_token(body: &[u8], field: &str) -> Option<String> {
    let json: serde_json::Value = serde_json::from_slice(body).ok()?;
    let token = json.get(field)?.as_str()?;
    let token_chars = token.len() >= 8 && token.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~+/=".contains(&b));
    let once = String::from_utf8_lossy(body).matches(token).count() == 1;
    (token_chars && once).then(|| token.to_string())
}

//! Shared pieces of the fuzz targets: the input framing of a vendor response, adapters built
//! from the smallest real configs, and the invariants every target checks beyond "no panic".
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
//! `Retry-After`. The header goes through the engine's own `parse_retry_after`.

use bytes::Bytes;
use lotbridge::auth::TokenError;
use lotbridge::config::{Binding, Bindings, SinkContext};
use lotbridge::engine::deliver::parse_retry_after;
use lotbridge::photo::PhotoPolicy;
use lotbridge::secret::Secret;
use lotbridge::vendors::{HttpResponse, Verdict};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Longest reason or detail a verdict may carry: they go into logs and dead-letter headers,
/// so a vendor must not be able to make them as long as its reply.
pub const MAX_REASON_CHARS: usize = 600;

/// The framed input of a vendor-response target.
#[derive(Debug)]
pub struct Framed {
    /// The response as the engine hands it to `classify`.
    pub response: HttpResponse,
    /// The raw `Retry-After` header text, if any.
    pub retry_after_header: Option<String>,
}

/// Splits `data` into status, `Retry-After` and body (see the crate doc).
pub fn frame(data: &[u8]) -> Framed {
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
    Framed {
        response: HttpResponse { status, retry_after, body: Bytes::copy_from_slice(body) },
        retry_after_header: header,
    }
}

fn split_line(data: &[u8]) -> (&[u8], Option<&[u8]>) {
    match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], Some(&data[i + 1..])),
        None => (data, None),
    }
}

/// A sink context with one bound lot, as the vendor tests build it; `lot_token` for vendors
/// that issue a secret per lot.
pub fn context(name: &'static str, max_records: usize, lot_token: Option<&str>) -> SinkContext<'static> {
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

/// Parses a vendor's TOML table (the fuzz targets' configs are constants: a failure is a bug here).
pub fn config<T: serde::de::DeserializeOwned>(text: &str) -> T {
    match toml::from_str(text) {
        Ok(cfg) => cfg,
        Err(e) => panic!("fuzz config does not parse: {e}"),
    }
}

/// Checks what every verdict must satisfy whatever the vendor sent.
pub fn check_verdict(response: &HttpResponse, verdict: &Verdict) {
    match verdict {
        Verdict::Retry { detail, after, .. } => {
            bounded("retry detail", detail);
            assert!(after.is_none() || *after == response.retry_after, "Retry-After invented: {after:?}");
        }
        Verdict::Reject { reason, .. } => bounded("reject reason", reason),
        Verdict::Busy { after } => {
            assert!(after.is_none() || *after == response.retry_after, "Retry-After invented: {after:?}")
        }
        Verdict::Delivered | Verdict::Duplicate | Verdict::Answered(_) => {
            assert!((200..=299).contains(&response.status), "HTTP {} counted as delivered", response.status)
        }
        Verdict::RefreshAuth => {}
    }
}

fn bounded(what: &str, text: &str) {
    let chars = text.chars().count();
    assert!(chars <= MAX_REASON_CHARS, "{what} is {chars} characters, over {MAX_REASON_CHARS}");
}

/// Checks a token parser's result: a token's lifetime fits a clock, an error is bounded and
/// never quotes the access token the vendor sent (error texts reach logs).
pub fn check_token_result<T>(body: &[u8], result: &Result<T, TokenError>, lifetime: impl Fn(&T) -> Duration) {
    match result {
        Ok(issued) => {
            let life = lifetime(issued);
            assert!(!life.is_zero(), "token accepted with a zero lifetime");
            assert!(Instant::now().checked_add(life).is_some(), "token lifetime {life:?} overflows a clock");
        }
        Err(TokenError::Unavailable(reason) | TokenError::Rejected(reason)) => {
            bounded("token error", reason);
            if let Some(token) = sent_token(body) {
                assert!(!reason.contains(&token), "token error quotes the access_token: {reason:?}");
            }
        }
    }
}

/// The `access_token` string of a JSON body when it looks like a real token: 8 or more
/// token characters, written once in the body (so an error quoting it cannot have taken it
/// from another field or from the parser's own words).
fn sent_token(body: &[u8]) -> Option<String> {
    let json: serde_json::Value = serde_json::from_slice(body).ok()?;
    let token = json.get("access_token")?.as_str()?;
    let token_chars = token.len() >= 8 && token.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~+/=".contains(&b));
    let once = String::from_utf8_lossy(body).matches(token).count() == 1;
    (token_chars && once).then(|| token.to_string())
}

//! The contract between the delivery engine and the vendor adapters.
//!
//! An adapter owns only what is specific to its vendor: its configuration, the mapping from
//! contract events to its records (pure), the assembly of records into a request body
//! (pure), its auth or signing (per attempt, so a retry re-stamps and re-signs), and the
//! classification of its responses into a [`Verdict`]. Batching, retries, rate limits,
//! the HTTP client and offsets are the engine's and know nothing of any vendor.
//!
//! Helpers several vendors share live here, once: [`plate`] (what "a plate without spaces"
//! means), [`missing_photo`] (what a required photo field holds without a photo) and
//! [`adjust`] (fields changed to fit a vendor, counted per sink and field, logged at most
//! once per lot, field and hour).

pub mod adjust;
pub mod barrier;
pub mod bingzhouxing;
mod context;
pub mod isp;
pub mod missing_photo;
pub mod plate;
pub mod zvcms;

pub use crate::config::VendorKind;
pub use context::SinkContext;

use crate::event::{Event, ListedCoupon};
use crate::photo::PhotoOutcome;
use bytes::Bytes;
use std::time::Duration;

/// How the engine treats the records of one endpoint within a lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coalesce {
    /// Every record is delivered, in lane order (entries before exits).
    Ordered,
    /// Only the newest undelivered record matters (space counts); a record whose bytes equal
    /// the last delivered one is not sent again.
    Latest,
    /// At most one record per period per lane (heartbeats).
    Throttle(Duration),
}

/// One vendor endpoint as the engine sees it: a label, a batch limit and a coalescing rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    /// Bounded label, e.g. `carInOut` or `park/spot-num`; records are batched per endpoint.
    pub name: &'static str,
    /// Most records in one request (1 = no batching).
    pub max_records: usize,
    /// How records of this endpoint coalesce within a lane.
    pub coalesce: Coalesce,
}

/// One event mapped to one vendor record.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapped {
    /// Where the record goes.
    pub endpoint: Endpoint,
    /// The vendor's serialized JSON for this record: an array element for batching
    /// endpoints, or the whole request data when `max_records == 1`. Its length is what
    /// batch byte limits and memory budgets count.
    pub record: Bytes,
    /// What the photo policy did, for vehicle events with a photo.
    pub photo: Option<PhotoOutcome>,
}

/// Why an event is not for a sink (counted, then its offset is done for that sink).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// The event's lot (for coupons: none of its lots) is bound to this sink.
    LotNotBound,
    /// The vendor has no endpoint for this event type.
    TypeNotHandled,
}

impl SkipReason {
    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::LotNotBound => "lot_not_bound",
            SkipReason::TypeNotHandled => "type_not_handled",
        }
    }
}

/// The result of mapping an event for one sink.
#[derive(Debug, Clone, PartialEq)]
pub enum Mapping {
    /// Not for this sink.
    Skip(SkipReason),
    /// Deliver this record.
    Record(Mapped),
}

/// An event that cannot be expressed in the vendor's terms: dead-lettered with this reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct MapError {
    /// Contract field at fault (`data.plate`).
    pub field: String,
    /// What the vendor cannot accept.
    pub reason: String,
}

impl MapError {
    /// A mapping error for `field`.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        MapError { field: field.into(), reason: reason.into() }
    }
}

/// A fully prepared request for one attempt: stamped, signed, with a current token.
#[derive(Debug, Clone)]
pub struct HttpRequest {
    /// Method.
    pub method: http::Method,
    /// Absolute URL.
    pub url: String,
    /// Headers (may hold a token: never log them).
    pub headers: http::HeaderMap,
    /// Body bytes.
    pub body: Bytes,
}

/// What came back from the vendor.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// HTTP status.
    pub status: u16,
    /// Parsed `Retry-After` (seconds form or HTTP date), if any.
    pub retry_after: Option<Duration>,
    /// Body bytes.
    pub body: Bytes,
}

/// Why an attempt is retried (bounded: a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RetryReason {
    /// Connection refused, reset, DNS.
    Transport,
    /// No answer in time.
    Timeout,
    /// HTTP 408 or 5xx (not 501).
    ServerError,
    /// The vendor said it failed in a way worth retrying (an in-body code).
    VendorError,
    /// The vendor rejected the signature's timestamp: re-sign and retry, a bounded number of times.
    StaleSignature,
    /// The token could not be obtained.
    Auth,
}

impl RetryReason {
    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            RetryReason::Transport => "transport",
            RetryReason::Timeout => "timeout",
            RetryReason::ServerError => "server_error",
            RetryReason::VendorError => "vendor_error",
            RetryReason::StaleSignature => "stale_signature",
            RetryReason::Auth => "auth",
        }
    }
}

/// Why a sink holds (bounded: a metric label). A hold is a fault of the sink, not of the
/// record: a wrong route, a proxy or firewall, a certificate, a refused signature or
/// credentials. The sink stops taking batches, probes with backoff, keeps its offsets and
/// never dead-letters for it; it resumes by itself once the fault clears.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HoldReason {
    /// HTTP 404 or 405: the URL or method is not served (a wrong `base_url`, a gateway route).
    Route,
    /// HTTP 403: refused by the vendor, a gateway or a firewall for every record.
    Forbidden,
    /// HTTP 407: a proxy wants credentials.
    Proxy,
    /// The TLS handshake failed (certificate, CA, protocol).
    Tls,
    /// The vendor's host name does not resolve.
    Dns,
    /// Signatures are refused even freshly stamped (a rotated token, a skewed clock).
    Signature,
    /// The vendor refuses the configured credentials.
    Credentials,
}

impl HoldReason {
    /// Every reason, for pre-created metric series.
    pub const ALL: [HoldReason; 7] = [
        HoldReason::Route,
        HoldReason::Forbidden,
        HoldReason::Proxy,
        HoldReason::Tls,
        HoldReason::Dns,
        HoldReason::Signature,
        HoldReason::Credentials,
    ];

    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            HoldReason::Route => "route",
            HoldReason::Forbidden => "forbidden",
            HoldReason::Proxy => "proxy",
            HoldReason::Tls => "tls",
            HoldReason::Dns => "dns",
            HoldReason::Signature => "signature",
            HoldReason::Credentials => "credentials",
        }
    }
}

/// The typed decision on one response.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Accepted.
    Delivered,
    /// Accepted, with an answer to publish (zvcms coupon lists).
    Answered(Vec<ListedCoupon>),
    /// The vendor already had it: as good as delivered.
    Duplicate,
    /// Try again later, with a fresh stamp and signature.
    Retry {
        /// Why.
        reason: RetryReason,
        /// The vendor's `Retry-After`, if any.
        after: Option<Duration>,
        /// Vendor code or status, for logs (bounded text).
        detail: String,
    },
    /// The vendor is overloaded (HTTP 429, a "busy" code): pause the whole sink.
    Busy {
        /// How long, if the vendor said.
        after: Option<Duration>,
    },
    /// The token was refused: refresh it once, then retry.
    RefreshAuth,
    /// The sink, not the record, is at fault: hold the sink and probe until it clears.
    Hold {
        /// Why.
        reason: HoldReason,
        /// Status or error, for logs (bounded text).
        detail: String,
    },
    /// Permanent failure of this request: dead-letter (a batch is bisected first when
    /// `per_record` says a single bad record may be the cause).
    Reject {
        /// Vendor code and message, for the dead letter.
        reason: String,
        /// A parameter error: some record in the batch is bad, not the whole request.
        per_record: bool,
    },
}

/// Why a request could not be prepared.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrepareError {
    /// The token endpoint failed in a way worth retrying.
    #[error("token unavailable: {0}")]
    AuthUnavailable(String),
    /// The credentials are wrong (`invalid_client`): an operator must act.
    #[error("credentials rejected: {0}")]
    AuthRejected(String),
    /// The lot has no binding (it was removed from the config while records were queued).
    #[error("lot has no binding for this sink")]
    Unbound,
    /// The engine asked for something the adapter does not have (a bug, not bad data).
    #[error("internal error: {0}")]
    Internal(String),
}

/// A configured sink's vendor logic, as the engine calls it.
#[async_trait::async_trait]
pub trait Adapter: Send + Sync + 'static {
    /// Which vendor.
    fn kind(&self) -> VendorKind;

    /// Maps one event (pure): skip it, dead-letter it (`Err`), or a record to deliver.
    /// Lane = the event's `lot`.
    fn map(&self, event: &Event) -> Result<Mapping, MapError>;

    /// Joins records of one endpoint and lane into request data (pure).
    fn assemble(&self, endpoint: &Endpoint, records: &[&[u8]]) -> Bytes;

    /// Builds the request for one attempt: fresh timestamp, nonce, signature and token.
    async fn prepare(&self, lot: &str, endpoint: &Endpoint, data: &Bytes) -> Result<HttpRequest, PrepareError>;

    /// Classifies a response (pure).
    fn classify(&self, endpoint: &Endpoint, response: &HttpResponse) -> Verdict;

    /// Forgets the token the vendor refused, given the headers of the refused request (a
    /// newer token fetched meanwhile stays). No-op for signature-only vendors.
    async fn invalidate_auth(&self, _refused: &http::HeaderMap) {}

    /// Checks that the credentials work (fetches a token); used by readiness.
    async fn check_auth(&self) -> Result<(), PrepareError> {
        Ok(())
    }

    /// Counters of the adapter's token cache, for token-based vendors (metrics).
    fn token_stats(&self) -> Option<&crate::auth::TokenStats> {
        None
    }

    /// Fields the adapter changed to fit the vendor (cut to width, plate spaces removed),
    /// for the `vendor_fields_adjusted_total` metric ([`crate::metrics::Metrics::export_adjustments`]).
    fn adjustments(&self) -> Option<&adjust::Adjustments> {
        None
    }

    /// Platform lot codes bound to this sink.
    fn bound_lots(&self) -> Vec<String>;

    /// Heartbeat period, for vendors that require one (the engine synthesizes
    /// `lot.heartbeat` events for live lots and maps them).
    fn heartbeat_every(&self) -> Option<Duration> {
        None
    }

    /// Whether the vendor wants the full lot list pushed daily at 01:00 UTC+8.
    fn daily_full_push(&self) -> bool {
        false
    }
}

/// Joins records as a JSON array: `[r1,r2,...]`.
pub fn json_array(records: &[&[u8]]) -> Bytes {
    let len = records.iter().map(|r| r.len() + 1).sum::<usize>() + 2;
    let mut out = Vec::with_capacity(len);
    out.push(b'[');
    for (i, r) in records.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(r);
    }
    out.push(b']');
    Bytes::from(out)
}

/// The verdict HTTP alone implies, before the body is read: `None` for 2xx (read the body).
///
/// 429 → pause the sink; 401 → refresh the token; 408 and 5xx except 501 → retry;
/// 403, 404, 405 and 407 → hold the sink (they refuse every record alike: a route, a
/// firewall, a proxy); any other status → permanent for the request.
pub fn classify_status(response: &HttpResponse) -> Option<Verdict> {
    let status = response.status;
    match status {
        200..=299 => None,
        429 => Some(Verdict::Busy { after: response.retry_after }),
        401 => Some(Verdict::RefreshAuth),
        408 | 500 | 502..=599 => Some(Verdict::Retry {
            reason: RetryReason::ServerError,
            after: response.retry_after,
            detail: format!("HTTP {status}"),
        }),
        403 | 404 | 405 | 407 => {
            let reason = match status {
                403 => HoldReason::Forbidden,
                407 => HoldReason::Proxy,
                _ => HoldReason::Route,
            };
            Some(Verdict::Hold { reason, detail: format!("HTTP {status}: {}", body_excerpt(&response.body)) })
        }
        _ => Some(Verdict::Reject {
            reason: format!("HTTP {status}: {}", body_excerpt(&response.body)),
            per_record: false,
        }),
    }
}

/// The start of a body, for reasons and logs: at most 200 characters, one line.
pub fn body_excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut s: String = text.chars().take(200).collect();
    s.retain(|c| c != '\n' && c != '\r');
    s
}

/// Reads a JSON field that vendors send as a string or as a number (`"200"` or `200`).
pub fn code_text(value: Option<&serde_json::Value>) -> Option<String> {
    match value? {
        serde_json::Value::String(s) => Some(s.trim().to_string()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(status: u16) -> HttpResponse {
        HttpResponse { status, retry_after: Some(Duration::from_secs(3)), body: Bytes::from_static(b"{}") }
    }

    #[test]
    fn status_table() {
        assert_eq!(classify_status(&resp(200)), None);
        assert_eq!(classify_status(&resp(429)), Some(Verdict::Busy { after: Some(Duration::from_secs(3)) }));
        assert_eq!(classify_status(&resp(401)), Some(Verdict::RefreshAuth));
        assert!(matches!(classify_status(&resp(503)), Some(Verdict::Retry { reason: RetryReason::ServerError, .. })));
        assert!(matches!(classify_status(&resp(408)), Some(Verdict::Retry { .. })));
        assert!(matches!(classify_status(&resp(501)), Some(Verdict::Reject { .. })));
        assert!(matches!(classify_status(&resp(400)), Some(Verdict::Reject { .. })));
        assert!(matches!(classify_status(&resp(413)), Some(Verdict::Reject { .. })));
        let hold = |s| match classify_status(&resp(s)) {
            Some(Verdict::Hold { reason, .. }) => Some(reason),
            _ => None,
        };
        assert_eq!(hold(404), Some(HoldReason::Route));
        assert_eq!(hold(405), Some(HoldReason::Route));
        assert_eq!(hold(403), Some(HoldReason::Forbidden));
        assert_eq!(hold(407), Some(HoldReason::Proxy));
    }

    #[test]
    fn arrays_and_codes() {
        assert_eq!(&json_array(&[b"1", b"{\"a\":2}"])[..], b"[1,{\"a\":2}]");
        assert_eq!(&json_array(&[])[..], b"[]");
        assert_eq!(code_text(Some(&serde_json::json!("200"))).as_deref(), Some("200"));
        assert_eq!(code_text(Some(&serde_json::json!(0))).as_deref(), Some("0"));
        assert_eq!(code_text(None), None);
    }
}

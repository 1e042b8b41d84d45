//! The platform's `/oauth/token` call, as a [`TokenFetcher`] for the shared token cache.
//!
//! The answer is read whatever the HTTP status: the platform reports
//! `{"error","error_description"}` with 400 or 401 as often as with 200. OAuth errors that
//! only the configuration can fix (`invalid_client` and the other RFC 6749 §5.2 client
//! errors) are [`TokenError::Rejected`], so the cache stops asking until its cool-down has
//! passed; server errors, timeouts and unreadable answers are [`TokenError::Unavailable`].

use crate::auth::{FetchedToken, TokenError, TokenFetcher};
use crate::secret::Secret;
use crate::vendors::{body_excerpt, code_text};
use http::header::{HeaderValue, CONTENT_TYPE};
use serde_json::Value;
use std::time::Duration;

/// OAuth error codes that mean the request or the credentials are wrong: retrying with the
/// same configuration cannot succeed.
const CONFIGURATION_ERRORS: [&str; 7] = [
    "invalid_client",
    "unauthorized_client",
    "invalid_grant",
    "invalid_request",
    "invalid_scope",
    "unsupported_grant_type",
    "access_denied",
];

/// Calls the token endpoint of one sink.
pub struct Fetcher {
    /// Sink name, for logs.
    pub sink: String,
    /// The shared HTTP client.
    pub http: reqwest::Client,
    /// Absolute token URL.
    pub url: String,
    /// `client_id`.
    pub client_id: String,
    /// `client_secret`.
    pub client_secret: Secret,
    /// Extra form fields (`grant_type`...).
    pub extra: Vec<(String, String)>,
    /// Timeout of one call.
    pub timeout: Duration,
    /// Lifetime assumed when the answer has none.
    pub fallback_lifetime: Duration,
}

/// A token read from an answer, and whether its lifetime came from the platform.
#[derive(Debug)]
pub struct Issued {
    /// The token and its lifetime.
    pub token: FetchedToken,
    /// False when `expires_in` was missing or unreadable and the fallback was used.
    pub lifetime_from_vendor: bool,
}

impl Fetcher {
    fn form(&self) -> String {
        let mut form = form_urlencoded::Serializer::new(String::new());
        form.append_pair("client_id", &self.client_id);
        form.append_pair("client_secret", self.client_secret.expose());
        for (key, value) in &self.extra {
            form.append_pair(key, value);
        }
        form.finish()
    }

    async fn call(&self) -> Result<(u16, bytes::Bytes), TokenError> {
        let sent = self
            .http
            .post(&self.url)
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(self.form())
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| TokenError::Unavailable(format!("token request failed: {e}")))?;
        let status = sent.status().as_u16();
        let body = sent.bytes().await.map_err(|e| TokenError::Unavailable(format!("token answer unreadable: {e}")))?;
        Ok((status, body))
    }
}

#[async_trait::async_trait]
impl TokenFetcher for Fetcher {
    async fn fetch(&self) -> Result<FetchedToken, TokenError> {
        let result = self.call().await.and_then(|(status, body)| parse_answer(status, &body, self.fallback_lifetime));
        match &result {
            Ok(issued) if !issued.lifetime_from_vendor => {
                tracing::warn!(sink = %self.sink, assumed_secs = self.fallback_lifetime.as_secs(),
                    "token answer has no usable expires_in; assuming token_lifetime_fallback_secs");
            }
            Ok(_) => {}
            // The cache asks again only after its cool-down, so this is logged rarely.
            Err(TokenError::Rejected(reason)) => {
                tracing::error!(sink = %self.sink, error = %reason,
                    "the coupon platform rejected the credentials: fix client_id, client_secret or token_form");
            }
            Err(TokenError::Unavailable(reason)) => tracing::warn!(sink = %self.sink, error = %reason, "no token"),
        }
        result.map(|issued| issued.token)
    }
}

/// Reads a token answer (pure).
pub fn parse_answer(status: u16, body: &[u8], fallback: Duration) -> Result<Issued, TokenError> {
    let json = serde_json::from_slice::<Value>(body).ok();
    if let Some(error) = json.as_ref().and_then(|j| code_text(j.get("error"))).filter(|e| !e.is_empty()) {
        return Err(oauth_error(status, &error, json.as_ref()));
    }
    match (status, json.as_ref()) {
        (200..=299, Some(json)) => token(json, fallback),
        (200..=299, None) => Err(TokenError::Unavailable(format!("HTTP {status} with a body that is not JSON"))),
        (408 | 429 | 500..=599, _) | (100..=199 | 300..=399, _) => {
            Err(TokenError::Unavailable(format!("HTTP {status}: {}", describe(body, json.as_ref()))))
        }
        // 401/403/404 without an OAuth error: wrong credentials or a wrong token_path.
        _ => Err(TokenError::Rejected(format!("HTTP {status}: {}", describe(body, json.as_ref())))),
    }
}

/// An answer as an error may quote it: a JSON object by its keys only (it may hold a token,
/// whatever its status), anything else by its start (an HTML error page says what went wrong).
fn describe(body: &[u8], json: Option<&Value>) -> String {
    match json.and_then(Value::as_object) {
        Some(object) => format!("answer keys: {}", keys(object)),
        None => body_excerpt(body),
    }
}

/// The keys of an answer, cut short: naming them says what came back without quoting values.
fn keys(object: &serde_json::Map<String, Value>) -> String {
    cut(&object.keys().map(String::as_str).collect::<Vec<_>>().join(", "))
}

fn oauth_error(status: u16, error: &str, json: Option<&Value>) -> TokenError {
    let description = json.and_then(|j| code_text(j.get("error_description"))).unwrap_or_default();
    let reason = format!("{}: {} (HTTP {status})", cut(error), cut(&description));
    if CONFIGURATION_ERRORS.contains(&error) {
        TokenError::Rejected(reason)
    } else {
        TokenError::Unavailable(reason)
    }
}

fn token(json: &Value, fallback: Duration) -> Result<Issued, TokenError> {
    let Some(value) = json.get("access_token").and_then(Value::as_str).filter(|t| !t.is_empty()) else {
        // Name the keys, never the values: a token under another name must not reach a log.
        let keys = json.as_object().map(keys).unwrap_or_default();
        return Err(TokenError::Unavailable(format!("answer has no access_token (keys: {keys})")));
    };
    if HeaderValue::from_str(value).is_err() {
        return Err(TokenError::Unavailable("access_token cannot be sent as a header value".into()));
    }
    let lifetime = expires_in(json.get("expires_in"));
    Ok(Issued {
        token: FetchedToken { value: Secret::new(value), expires_in: lifetime.unwrap_or(fallback) },
        lifetime_from_vendor: lifetime.is_some(),
    })
}

/// `expires_in` in seconds, as a number (`86400`) or a string (`"86400"`); zero or
/// unreadable values are `None` (a zero lifetime would refetch on every request).
pub fn expires_in(value: Option<&Value>) -> Option<Duration> {
    let secs = match value? {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    (secs.is_finite() && secs >= 1.0).then(|| Duration::from_secs_f64(secs.min(365.0 * 86400.0)))
}

fn cut(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(120).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const FALLBACK: Duration = Duration::from_secs(43200);

    fn parse(status: u16, body: &str) -> Result<Issued, TokenError> {
        parse_answer(status, body.as_bytes(), FALLBACK)
    }

    #[test]
    fn spec_example_with_string_lifetime() {
        let issued = parse(200, r#"{"access_token":"xxxxxx","token_type":"bearer","expires_in":"86400"}"#).unwrap();
        assert_eq!(issued.token.value.expose(), "xxxxxx");
        assert_eq!(issued.token.expires_in, Duration::from_secs(86400));
        assert!(issued.lifetime_from_vendor);
    }

    #[test]
    fn lifetime_as_number_string_or_missing() {
        assert_eq!(expires_in(Some(&json!(43199))), Some(Duration::from_secs(43199)));
        assert_eq!(expires_in(Some(&json!(" 7200 "))), Some(Duration::from_secs(7200)));
        assert_eq!(expires_in(Some(&json!(0))), None);
        assert_eq!(expires_in(Some(&json!("soon"))), None);
        assert_eq!(expires_in(None), None);
        let issued = parse(200, r#"{"access_token":"t"}"#).unwrap();
        assert_eq!((issued.token.expires_in, issued.lifetime_from_vendor), (FALLBACK, false));
    }

    #[test]
    fn spec_error_example_is_a_configuration_error_whatever_the_status() {
        for status in [200, 400, 401] {
            let err = parse(status, r#"{"error":"invalid_client","error_description":"Bad client credentials"}"#);
            let Err(TokenError::Rejected(reason)) = err else { panic!("HTTP {status}: {err:?}") };
            assert_eq!(reason, format!("invalid_client: Bad client credentials (HTTP {status})"));
        }
        assert!(matches!(parse(400, r#"{"error":"unsupported_grant_type"}"#), Err(TokenError::Rejected(_))));
        assert!(matches!(parse(400, r#"{"error":"invalid_grant"}"#), Err(TokenError::Rejected(_))));
    }

    #[test]
    fn outages_are_unavailable() {
        let cases = [
            (503, r#"{"error":"server_error"}"#),
            (200, r#"{"error":"temporarily_unavailable"}"#),
            (502, "<html>bad gateway</html>"),
            (429, ""),
            (200, "not json"),
            (200, r#"{"data":{"access_token":"hidden-token"}}"#),
        ];
        for (status, body) in cases {
            let err = parse(status, body);
            assert!(matches!(err, Err(TokenError::Unavailable(_))), "{status} {body}: {err:?}");
        }
    }

    #[test]
    fn a_token_under_another_key_is_not_logged() {
        let Err(TokenError::Unavailable(reason)) = parse(200, r#"{"data":{"access_token":"hidden-token"}}"#) else {
            panic!("must fail")
        };
        assert!(reason.contains("keys: data") && !reason.contains("hidden-token"), "{reason}");
    }

    #[test]
    fn bare_client_errors_are_rejected() {
        assert!(matches!(parse(401, ""), Err(TokenError::Rejected(_))));
        assert!(matches!(parse(404, "Not Found"), Err(TokenError::Rejected(_))));
    }

    /// Found by fuzzing (fuzz/regressions/barrier_response/): a token answer with a
    /// status other than 2xx was quoted whole, token included, into an error that is logged.
    #[test]
    fn a_token_in_a_failed_answer_is_not_quoted() {
        for status in [199, 302, 404, 503] {
            let err = parse(status, r#"{"access_token":"a1b212c3d4e5f6","expires12_in":7200}"#).unwrap_err();
            let text = err.to_string();
            assert!(text.contains("access_token, expires12_in") && !text.contains("a1b212c3d4e5f6"), "{text}");
        }
        let Err(TokenError::Unavailable(reason)) = parse(502, "<html>bad gateway</html>") else { panic!("must fail") };
        assert_eq!(reason, "HTTP 502: <html>bad gateway</html>", "a page that is not JSON is still quoted");
    }

    #[test]
    fn form_carries_credentials_and_extras() {
        let fetcher = Fetcher {
            sink: "s".into(),
            http: reqwest::Client::new(),
            url: "http://127.0.0.1:1/oauth/token".into(),
            client_id: "244221".into(),
            client_secret: Secret::new("54vMfi&="),
            extra: vec![("grant_type".into(), "client_credentials".into())],
            timeout: Duration::from_secs(1),
            fallback_lifetime: FALLBACK,
        };
        assert_eq!(fetcher.form(), "client_id=244221&client_secret=54vMfi%26%3D&grant_type=client_credentials");
    }
}

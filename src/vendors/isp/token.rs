//! The ISP token endpoint: `POST {token_path}` with the configured JSON fields, answered
//! with `{access_token, token_type, expires_in, scope, token}` (`expires_in` as a number or,
//! as in the spec's example, a string). The spec's answer carries two tokens; which one
//! data calls carry is `token_field` (default `access_token`).
//!
//! Rejected credentials (a 4xx status, `invalid_client`, code 1 or 401) become
//! [`TokenError::Rejected`], so the shared cache cools down instead of hammering the
//! endpoint; network trouble and server errors become [`TokenError::Unavailable`].

use super::config::TokenAnswerField;
use crate::auth::{FetchedToken, TokenError, TokenFetcher};
use crate::secret::Secret;
use crate::vendors::code_text;
use http::header::{HeaderValue, CONTENT_TYPE};
use serde_json::Value;
use std::time::Duration;

/// Lifetime assumed when the answer has no usable `expires_in`: a token that dies earlier
/// is refused with code 401 and refreshed then.
pub const FALLBACK_LIFETIME: Duration = Duration::from_secs(3_600);
/// How long one token request may take.
const TOKEN_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest vendor text quoted in an error.
const MAX_REASON_CHARS: usize = 120;

/// What to send to the token endpoint.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    /// Absolute URL of the token endpoint.
    pub url: String,
    /// JSON fields of the body; every value is treated as a secret.
    pub fields: Vec<(String, Secret)>,
    /// The answer's field holding the token data calls carry.
    pub answer_field: TokenAnswerField,
}

impl TokenRequest {
    /// The JSON body (holds the client secret: never log it).
    pub fn body(&self) -> Vec<u8> {
        let map: serde_json::Map<String, Value> =
            self.fields.iter().map(|(name, value)| (name.clone(), Value::from(value.expose()))).collect();
        serde_json::to_vec(&Value::Object(map)).unwrap_or_default()
    }
}

/// Fetches ISP tokens with the shared HTTP client.
pub struct IspTokenFetcher {
    http: reqwest::Client,
    request: TokenRequest,
}

impl IspTokenFetcher {
    /// A fetcher sending `request` through `http`.
    pub fn new(http: reqwest::Client, request: TokenRequest) -> Self {
        IspTokenFetcher { http, request }
    }
}

#[async_trait::async_trait]
impl TokenFetcher for IspTokenFetcher {
    async fn fetch(&self) -> Result<FetchedToken, TokenError> {
        let response = self
            .http
            .post(&self.request.url)
            .header(CONTENT_TYPE, "application/json")
            .body(self.request.body())
            .timeout(TOKEN_TIMEOUT)
            .send()
            .await
            .map_err(|e| TokenError::Unavailable(format!("token request failed: {e}")))?;
        let status = response.status().as_u16();
        let body = response
            .bytes()
            .await
            .map_err(|e| TokenError::Unavailable(format!("token answer could not be read: {e}")))?;
        read_token_answer(status, &body, self.request.answer_field)
    }
}

/// Interprets the token endpoint's answer (pure). Error texts quote the vendor's error
/// fields, never the body as a whole (which could hold a token).
pub fn read_token_answer(status: u16, body: &[u8], field: TokenAnswerField) -> Result<FetchedToken, TokenError> {
    let json: Option<Value> = serde_json::from_slice(body).ok();
    let why = || vendor_reason(status, json.as_ref());
    match status {
        408 | 429 | 500..=599 => return Err(TokenError::Unavailable(why())),
        400..=499 => return Err(TokenError::Rejected(why())),
        200..=299 => {}
        _ => return Err(TokenError::Unavailable(why())),
    }
    let Some(json) = json.as_ref().filter(|j| j.is_object()) else {
        return Err(TokenError::Unavailable(format!("HTTP {status}: the answer is not a JSON object")));
    };
    match json.get(field.as_str()).and_then(Value::as_str).filter(|t| !t.is_empty()) {
        Some(token) => accept(token, field, json.get("expires_in")),
        None => Err(refusal(json, field, why())),
    }
}

fn accept(token: &str, field: TokenAnswerField, expires_in: Option<&Value>) -> Result<FetchedToken, TokenError> {
    // A token that cannot travel in a header would fail every request that carries it.
    if HeaderValue::from_str(token).is_err() {
        return Err(TokenError::Unavailable(format!("{} holds characters a header cannot carry", field.as_str())));
    }
    Ok(FetchedToken { value: Secret::new(token), expires_in: lifetime(expires_in) })
}

/// A 2xx answer without a token: credentials refused (`code` 1 or 401, an OAuth `error`),
/// or something worth retrying.
fn refusal(json: &Value, field: TokenAnswerField, reason: String) -> TokenError {
    let code = code_text(json.get("code"));
    let oauth_error = json.get("error").and_then(Value::as_str);
    let refused = matches!(code.as_deref(), Some("1" | "401"))
        || matches!(oauth_error, Some("invalid_client" | "unauthorized" | "invalid_grant" | "unauthorized_client"));
    if refused {
        TokenError::Rejected(reason)
    } else {
        TokenError::Unavailable(format!("no {} in the answer ({reason})", field.as_str()))
    }
}

/// `expires_in` as a number or a string of seconds; anything else gets the fallback.
fn lifetime(value: Option<&Value>) -> Duration {
    let secs = match value {
        Some(Value::Number(n)) => n.as_f64(),
        Some(Value::String(s)) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    match secs.filter(|s| s.is_finite() && *s > 0.0) {
        Some(s) => Duration::from_secs_f64(s.min(u32::MAX as f64)),
        None => {
            tracing::warn!(fallback_secs = FALLBACK_LIFETIME.as_secs(), "isp token answer has no usable expires_in");
            FALLBACK_LIFETIME
        }
    }
}

/// `HTTP 401: invalid_client: Bad client credentials`, from the fields vendors put errors in.
fn vendor_reason(status: u16, json: Option<&Value>) -> String {
    let fields = ["error", "error_description", "code", "msg", "message"];
    let parts: Vec<String> = fields.iter().filter_map(|f| code_text(json.and_then(|j| j.get(*f)))).collect();
    let text: String = parts.join(": ").chars().take(MAX_REASON_CHARS).collect();
    if text.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}: {text}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(status: u16, body: &str) -> Result<FetchedToken, TokenError> {
        read_token_answer(status, body.as_bytes(), TokenAnswerField::AccessToken)
    }

    #[test]
    fn the_configured_field_is_the_token() {
        let body = br#"{"access_token":"eyJ.a.b","token_type":"bearer","expires_in":"34258","scope":"all","token":"5f1uONTWY90mZwyvlxGZTg=="}"#;
        let access = read_token_answer(200, body, TokenAnswerField::AccessToken).unwrap();
        assert_eq!(access.value.expose(), "eyJ.a.b");
        let token = read_token_answer(200, body, TokenAnswerField::Token).unwrap();
        assert_eq!(token.value.expose(), "5f1uONTWY90mZwyvlxGZTg==");
        assert_eq!(token.expires_in, Duration::from_secs(34_258));
        let Err(TokenError::Unavailable(why)) =
            read_token_answer(200, br#"{"access_token":"t"}"#, TokenAnswerField::Token)
        else {
            panic!("a missing token field is not a token");
        };
        assert!(why.starts_with("no token in the answer"), "{why}");
    }

    #[test]
    fn spec_answer_with_string_expiry() {
        let body = r#"{"access_token":"eyJhbGciOi.abc.def","token_type":"bearer","expires_in":"34258","scope":"all"}"#;
        let token = read(200, body).unwrap();
        assert_eq!(token.value.expose(), "eyJhbGciOi.abc.def");
        assert_eq!(token.expires_in, Duration::from_secs(34_258));
    }

    #[test]
    fn numeric_and_missing_expiry() {
        assert_eq!(
            read(200, r#"{"access_token":"t","expires_in":7200}"#).unwrap().expires_in,
            Duration::from_secs(7200)
        );
        assert_eq!(read(200, r#"{"access_token":"t"}"#).unwrap().expires_in, FALLBACK_LIFETIME);
        assert_eq!(read(200, r#"{"access_token":"t","expires_in":"soon"}"#).unwrap().expires_in, FALLBACK_LIFETIME);
        assert_eq!(read(200, r#"{"access_token":"t","expires_in":0}"#).unwrap().expires_in, FALLBACK_LIFETIME);
    }

    #[test]
    fn refused_credentials_are_rejected() {
        let cases = [
            (401, r#"{"error":"invalid_client","error_description":"Bad client credentials"}"#),
            (400, r#"{"error":"invalid_request"}"#),
            (404, "not found"),
            (200, r#"{"code":1,"msg":"客户端认证失败"}"#),
            (200, r#"{"code":"401","msg":"unauthorized"}"#),
            (200, r#"{"error":"invalid_client"}"#),
        ];
        for (status, body) in cases {
            assert!(matches!(read(status, body), Err(TokenError::Rejected(_))), "{status} {body}");
        }
        let Err(TokenError::Rejected(reason)) = read(401, cases[0].1) else { panic!() };
        assert_eq!(reason, "HTTP 401: invalid_client: Bad client credentials");
    }

    #[test]
    fn server_trouble_is_unavailable() {
        let cases = [
            (500, r#"{"code":500,"msg":"系统异常"}"#),
            (503, ""),
            (429, ""),
            (408, ""),
            (200, "<html>gateway</html>"),
            (200, r#"{"code":500,"msg":"系统异常"}"#),
            (200, r#"{"access_token":""}"#),
            (200, r#"{"access_token":"line\nbreak"}"#),
            (302, ""),
        ];
        for (status, body) in cases {
            assert!(matches!(read(status, body), Err(TokenError::Unavailable(_))), "{status} {body}");
        }
    }

    #[test]
    fn body_holds_the_configured_fields() {
        let request = TokenRequest {
            url: "http://127.0.0.1/oauth/token".into(),
            fields: vec![("client_id".into(), Secret::new("id")), ("client_secret".into(), Secret::new("s"))],
            answer_field: TokenAnswerField::AccessToken,
        };
        assert_eq!(String::from_utf8(request.body()).unwrap(), r#"{"client_id":"id","client_secret":"s"}"#);
        assert!(!format!("{request:?}").contains("\"s\""));
    }
}

//! The barrier-gate coupon platform simulator: `/oauth/token` and `sendCoupon` as strictly
//! as `specs/barrier-coupon-api.txt` allows.
//!
//! - Token: form-urlencoded `client_id` and `client_secret` (plus any extra fields the
//!   sink's `token_form` sends); wrong credentials answer HTTP 401
//!   `{"error":"invalid_client","error_description":"Bad client credentials"}`; tokens
//!   expire (`expires_in` as the spec's string by default, as a number on request).
//! - `sendCoupon`: a valid `access_token` header (unknown or expired: HTTP 401), a JSON
//!   object holding only the spec's fields, each checked against the spec's table; numeric
//!   fields may be numbers or digit strings, since the spec's table and example disagree.
//!   A refused coupon answers HTTP 200 `{"code":"400","msg":"参数错误: <field> ..."}`, an
//!   accepted one `{"code":"200","msg":"成功!"}` and is recorded under the label
//!   `sendCoupon` with its `parkCodes` text as the lot.
//!
//! Injected failures: a status answers that status with the endpoint's usual error body;
//! a code answers HTTP 200 with that code (`error` on the token endpoint, `code` on
//! `sendCoupon`); throttling answers 429 with `Retry-After`.

use crate::config::{Bindings, ConfigError};
use crate::secret::Secret;
use crate::sim::{Control, Failure, Injected, SimServer};
use crate::vendors::barrier::{Config, SEND_COUPON, TOKEN_HEADER};
use crate::vendors::code_text;
use axum::extract::State;
use axum::http::header::{CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use bytes::Bytes;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Request-log label of the token endpoint.
pub const TOKEN_ENDPOINT: &str = "oauth/token";

/// The fields `sendCoupon` accepts (the spec's table plus `telephone` from its example).
const COUPON_FIELDS: [&str; 9] = [
    "parkCodes",
    "generateObj",
    "plateNo",
    "telephone",
    "couponType",
    "deductContent",
    "startTime",
    "endTime",
    "couponSource",
];

/// How the token answer writes `expires_in`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExpiresIn {
    /// `"86400"`, as the spec's example.
    #[default]
    Text,
    /// `86400`, as the spec's table.
    Number,
}

/// A barrier-gate coupon platform, ready to start.
#[derive(Debug, Clone)]
pub struct Simulator {
    client_id: String,
    client_secret: Secret,
    token_form: BTreeMap<String, String>,
    token_path: String,
    send_path: String,
    token_lifetime: Duration,
    expires_in: ExpiresIn,
    parks: HashSet<String>,
    control: Arc<Control>,
}

impl Simulator {
    /// A platform knowing one client, serving `/oauth/token` and `/api/v1/sendCoupon`,
    /// issuing tokens for 86400 s and accepting any park code.
    pub fn new(client_id: impl Into<String>, client_secret: Secret) -> Simulator {
        Simulator {
            client_id: client_id.into(),
            client_secret,
            token_form: BTreeMap::new(),
            token_path: "/oauth/token".into(),
            send_path: "/api/v1/sendCoupon".into(),
            token_lifetime: Duration::from_secs(86400),
            expires_in: ExpiresIn::Text,
            parks: HashSet::new(),
            control: Control::new(),
        }
    }

    /// The platform a `[sinks.barrier_coupon]` table talks to: its client, its paths, its
    /// extra token fields, and the bound vendor lots as the only known park codes.
    ///
    /// The token path is read here from the keys themselves, as the gateway serves it: at
    /// the host's root as the spec says (`/oauth/token`), under `base_url`'s prefix only
    /// when `token_under_base_path` says the gateway does so, or at an absolute
    /// `token_path`'s own path. `sendCoupon` is under `base_url`.
    pub fn from_config(cfg: &Config, bindings: &Bindings, base_dir: &Path) -> Result<Simulator, ConfigError> {
        let client_secret = cfg.client_secret.resolve(base_dir).map_err(|source| ConfigError::Secret {
            context: "barrier_coupon simulator client_secret".into(),
            source,
        })?;
        let urls = cfg.urls("simulator")?;
        let sim = Simulator::new(cfg.client_id.clone(), client_secret)
            .with_paths(&gateway_token_path(cfg), &url_path(&urls.send))
            .with_token_form(cfg.token_form.clone())
            .with_parks(bindings.iter().map(|b| b.vendor_lot.clone()));
        Ok(sim)
    }

    /// Serves the endpoints at these paths.
    pub fn with_paths(mut self, token_path: &str, send_path: &str) -> Simulator {
        self.token_path = token_path.to_string();
        self.send_path = send_path.to_string();
        self
    }

    /// Requires these extra form fields, with these values, in token requests.
    pub fn with_token_form(mut self, fields: BTreeMap<String, String>) -> Simulator {
        self.token_form = fields;
        self
    }

    /// Issues tokens valid for `lifetime`.
    pub fn with_token_lifetime(mut self, lifetime: Duration) -> Simulator {
        self.token_lifetime = lifetime;
        self
    }

    /// Writes `expires_in` this way.
    pub fn with_expires_in(mut self, form: ExpiresIn) -> Simulator {
        self.expires_in = form;
        self
    }

    /// Accepts only these park codes (an empty list accepts any).
    pub fn with_parks(mut self, parks: impl IntoIterator<Item = String>) -> Simulator {
        self.parks = parks.into_iter().collect();
        self
    }

    /// Its faults, records and tokens (the same the started server uses).
    pub fn control(&self) -> Arc<Control> {
        self.control.clone()
    }

    /// Serves on `addr` (port 0 picks a free port).
    pub async fn start(self, addr: SocketAddr) -> std::io::Result<SimServer> {
        let paths_ok = [&self.token_path, &self.send_path].iter().all(|p| p.starts_with('/'));
        if !paths_ok || self.token_path == self.send_path {
            let msg = "token and sendCoupon paths must be distinct and start with /";
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, msg));
        }
        let control = self.control.clone();
        let router = Router::new()
            .route(&self.token_path, post(token))
            .route(&self.send_path, post(send_coupon))
            .with_state(Arc::new(self));
        SimServer::start(addr, router, control).await
    }
}

/// Where the gateway configured by `cfg` serves its token (see [`Simulator::from_config`]).
fn gateway_token_path(cfg: &Config) -> String {
    let path = cfg.token_path.trim();
    if path.starts_with("http://") || path.starts_with("https://") {
        return url_path(path);
    }
    if !cfg.token_under_base_path {
        return path.to_string();
    }
    let prefix = url_path(cfg.base_url.trim());
    format!("{}{path}", prefix.trim_end_matches('/'))
}

fn url_path(url: &str) -> String {
    reqwest::Url::parse(url).map(|u| u.path().to_string()).unwrap_or_else(|_| url.to_string())
}

/// One answer: status, JSON body, optional `Retry-After`.
struct Answer {
    status: StatusCode,
    body: Value,
    retry_after: Option<u64>,
}

impl Answer {
    fn new(status: u16, body: Value) -> Answer {
        Answer {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            body,
            retry_after: None,
        }
    }

    fn oauth_error(status: u16, error: &str, description: &str) -> Answer {
        Answer::new(status, json!({"error": error, "error_description": description}))
    }

    fn coupon(status: u16, code: &str, msg: &str) -> Answer {
        Answer::new(status, json!({"code": code, "msg": msg}))
    }

    /// The vendor code for the request log: `code`, else the OAuth `error`.
    fn code(&self) -> Option<String> {
        code_text(self.body.get("code")).or_else(|| code_text(self.body.get("error")))
    }

    fn send(self, control: &Control, endpoint: &str, records: usize) -> Response {
        control.log_request(endpoint, self.status.as_u16(), self.code().as_deref(), records);
        let mut response = (self.status, Json(self.body)).into_response();
        if let Some(secs) = self.retry_after {
            response.headers_mut().insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

fn injected_token_answer(injected: Injected) -> Answer {
    match injected {
        Injected::Throttle(secs) => Answer {
            retry_after: Some(secs),
            ..Answer::oauth_error(429, "temporarily_unavailable", "Too many requests")
        },
        Injected::Fail(Failure::Status(status)) => Answer::oauth_error(status, "server_error", "Simulated failure"),
        Injected::Fail(Failure::Code(code)) => Answer::oauth_error(200, &code, "Simulated failure"),
    }
}

fn injected_coupon_answer(injected: Injected) -> Answer {
    match injected {
        Injected::Throttle(secs) => {
            Answer { retry_after: Some(secs), ..Answer::coupon(429, "429", "请求过于频繁") }
        }
        Injected::Fail(Failure::Status(status)) => Answer::coupon(status, &status.to_string(), "模拟故障"),
        Injected::Fail(Failure::Code(code)) => Answer::coupon(200, &code, "模拟错误"),
    }
}

fn content_type_is(headers: &HeaderMap, expected: &str) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case(expected)))
}

async fn token(State(sim): State<Arc<Simulator>>, headers: HeaderMap, body: Bytes) -> Response {
    let answer = match sim.control.before().await {
        Some(injected) => injected_token_answer(injected),
        None => sim.token_answer(&headers, &body),
    };
    answer.send(&sim.control, TOKEN_ENDPOINT, 0)
}

async fn send_coupon(State(sim): State<Arc<Simulator>>, headers: HeaderMap, body: Bytes) -> Response {
    let answer = match sim.control.before().await {
        Some(injected) => injected_coupon_answer(injected),
        None => sim.coupon_answer(&headers, &body),
    };
    answer.send(&sim.control, SEND_COUPON.name, 1)
}

impl Simulator {
    fn token_answer(&self, headers: &HeaderMap, body: &[u8]) -> Answer {
        if !content_type_is(headers, "application/x-www-form-urlencoded") {
            return Answer::oauth_error(
                400,
                "invalid_request",
                "Content-Type must be application/x-www-form-urlencoded",
            );
        }
        let form: HashMap<String, String> = form_urlencoded::parse(body).into_owned().collect();
        let (Some(id), Some(secret)) = (form.get("client_id"), form.get("client_secret")) else {
            return Answer::oauth_error(400, "invalid_request", "Missing client_id or client_secret");
        };
        if *id != self.client_id || secret != self.client_secret.expose() || self.control.credentials_revoked() {
            return Answer::oauth_error(401, "invalid_client", "Bad client credentials");
        }
        if let Some((key, _)) = self.token_form.iter().find(|(k, v)| form.get(*k) != Some(*v)) {
            return Answer::oauth_error(400, "invalid_request", &format!("Missing or wrong parameter {key}"));
        }
        self.issue()
    }

    fn issue(&self) -> Answer {
        let token = self.control.issue_token(self.token_lifetime);
        let secs = self.token_lifetime.as_secs();
        let expires_in = match self.expires_in {
            ExpiresIn::Text => json!(secs.to_string()),
            ExpiresIn::Number => json!(secs),
        };
        Answer::new(200, json!({"access_token": token, "token_type": "bearer", "expires_in": expires_in}))
    }

    fn coupon_answer(&self, headers: &HeaderMap, body: &[u8]) -> Answer {
        let Some(token) = headers.get(TOKEN_HEADER).and_then(|v| v.to_str().ok()) else {
            return Answer::coupon(401, "401", "缺少 access_token");
        };
        if !self.control.token_valid(token) {
            return Answer::coupon(401, "401", "access_token 无效或已过期");
        }
        if !content_type_is(headers, "application/json") {
            return Answer::coupon(200, "400", "参数错误: Content-Type 必须为 application/json");
        }
        let parsed = serde_json::from_slice::<Value>(body).map_err(|_| "请求体不是合法的 JSON".to_string());
        match parsed.and_then(|coupon| check_coupon(&coupon, &self.parks).map(|parks| (coupon, parks))) {
            Ok((coupon, parks)) => {
                self.control.record(SEND_COUPON.name, &parks, coupon);
                Answer::coupon(200, "200", "成功!")
            }
            Err(problem) => Answer::coupon(200, "400", &format!("参数错误: {problem}")),
        }
    }
}

/// Checks a `sendCoupon` body against the spec's table; returns its `parkCodes`.
pub fn check_coupon(body: &Value, parks: &HashSet<String>) -> Result<String, String> {
    let obj = body.as_object().ok_or("请求体必须是 JSON 对象")?;
    if let Some(key) = obj.keys().find(|k| !COUPON_FIELDS.contains(&k.as_str())) {
        return Err(format!("{key} 不是本接口的字段"));
    }
    let park_codes = text(obj, "parkCodes")?;
    check_parks(park_codes, parks)?;
    check_target(obj)?;
    if integer(obj, "couponType")? != 4 {
        return Err("couponType 仅支持 4 (减时券)".into());
    }
    if integer(obj, "deductContent")? <= 0 {
        return Err("deductContent 必须为正整数 (分钟)".into());
    }
    let (start, end) = (integer(obj, "startTime")?, integer(obj, "endTime")?);
    if start <= 0 || start >= end {
        return Err("startTime 必须为正且早于 endTime".into());
    }
    text(obj, "couponSource")?;
    Ok(park_codes.to_string())
}

fn check_parks(park_codes: &str, parks: &HashSet<String>) -> Result<(), String> {
    for code in park_codes.split(',') {
        if code.is_empty() {
            return Err("parkCodes 含有空的停车场编号".into());
        }
        if !parks.is_empty() && !parks.contains(code) {
            return Err(format!("parkCodes 停车场编号 {code} 不存在"));
        }
    }
    Ok(())
}

/// `generateObj` 1 needs `plateNo`, 2 needs `telephone`; either, when present, is a string.
fn check_target(obj: &Map<String, Value>) -> Result<(), String> {
    for key in ["plateNo", "telephone"] {
        if obj.get(key).is_some_and(|v| !v.is_string()) {
            return Err(format!("{key} 必须为字符串"));
        }
    }
    match integer(obj, "generateObj")? {
        1 => text(obj, "plateNo").map(|_| ()),
        2 => text(obj, "telephone").map(|_| ()),
        other => Err(format!("generateObj 必须为 1 (车牌) 或 2 (手机号), 收到 {other}")),
    }
}

/// A required non-blank string.
fn text<'a>(obj: &'a Map<String, Value>, key: &str) -> Result<&'a str, String> {
    match obj.get(key) {
        None | Some(Value::Null) => Err(format!("{key} 不能为空")),
        Some(Value::String(s)) if s.trim().is_empty() => Err(format!("{key} 不能为空")),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(format!("{key} 必须为字符串")),
    }
}

/// A required integer, as a JSON number or a string of digits.
fn integer(obj: &Map<String, Value>, key: &str) -> Result<i64, String> {
    let parsed = match obj.get(key) {
        None | Some(Value::Null) => return Err(format!("{key} 不能为空")),
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => s.parse().ok(),
        Some(_) => None,
    };
    parsed.ok_or_else(|| format!("{key} 必须为整数"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_example() -> Value {
        json!({
            "parkCodes": "xxxxxx", "generateObj": "1", "plateNo": "浙 A11111", "telephone": "xxxxxxx",
            "couponType": "4", "deductContent": "60", "startTime": "1689064304393",
            "endTime": "1689067904394", "couponSource": "xxxxx"
        })
    }

    /// Keys to set on the spec's example (`None` removes the key).
    type Changes = Vec<(&'static str, Option<Value>)>;

    /// The error for the spec's example with `changes` applied.
    fn problem(changes: &Changes) -> String {
        let mut body = spec_example();
        let obj = body.as_object_mut().unwrap();
        for (key, value) in changes {
            match value {
                Some(v) => obj.insert(key.to_string(), v.clone()),
                None => obj.remove(*key),
            };
        }
        check_coupon(&body, &HashSet::new()).unwrap_err()
    }

    #[test]
    fn the_spec_example_passes_as_strings_and_as_typed() {
        assert_eq!(check_coupon(&spec_example(), &HashSet::new()).unwrap(), "xxxxxx");
        let typed = json!({"parkCodes": "A,B", "generateObj": 2, "telephone": "13800000000", "couponType": 4,
            "deductContent": 200, "startTime": 1615894842064_i64, "endTime": "1615894864919", "couponSource": "1001"});
        let parks = HashSet::from(["A".to_string(), "B".to_string()]);
        assert_eq!(check_coupon(&typed, &parks).unwrap(), "A,B");
    }

    #[test]
    fn each_broken_field_is_named() {
        let cases: Vec<(&str, Changes)> = vec![
            ("plateNo", vec![("plateNo", None)]),
            ("telephone", vec![("generateObj", Some(json!(2))), ("telephone", None)]),
            ("generateObj", vec![("generateObj", Some(json!("3")))]),
            ("couponType", vec![("couponType", Some(json!("1")))]),
            ("deductContent", vec![("deductContent", Some(json!("sixty")))]),
            ("startTime", vec![("endTime", Some(json!("1689064304393")))]),
            ("parkCodes", vec![("parkCodes", Some(json!("")))]),
            ("parkCodes", vec![("parkCodes", Some(json!("A,,B")))]),
            ("couponSource", vec![("couponSource", None)]),
            ("amount", vec![("amount", Some(json!(1)))]),
            ("plateNo", vec![("plateNo", Some(json!(11111)))]),
        ];
        for (field, changes) in cases {
            let msg = problem(&changes);
            assert!(msg.contains(field), "{field}: {msg}");
        }
    }

    #[test]
    fn unknown_parks_are_refused_when_parks_are_known() {
        let parks = HashSet::from(["A".to_string()]);
        assert!(check_coupon(&spec_example(), &parks).unwrap_err().contains("xxxxxx"));
    }

    #[test]
    fn from_config_serves_the_token_at_the_root_unless_prefixed() {
        let cfg: Config = toml::from_str(
            "base_url = \"http://127.0.0.1:9016/artemis\"\nclient_id = \"244221\"\nclient_secret = { value = \"54vMfi\" }",
        )
        .unwrap();
        let sim = Simulator::from_config(&cfg, &Bindings::default(), Path::new(".")).unwrap();
        assert_eq!((sim.token_path.as_str(), sim.send_path.as_str()), ("/oauth/token", "/artemis/api/v1/sendCoupon"));
        let prefixed: Config = toml::from_str(
            "base_url = \"http://127.0.0.1:9016/artemis/\"\nclient_id = \"1\"\nclient_secret = { value = \"s\" }\n\
             token_under_base_path = true",
        )
        .unwrap();
        let gateway = Simulator::from_config(&prefixed, &Bindings::default(), Path::new(".")).unwrap();
        assert_eq!(gateway.token_path, "/artemis/oauth/token");
        assert_eq!(sim.client_secret.expose(), "54vMfi");
    }
}

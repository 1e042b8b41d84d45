//! The Inspur ISP simulator: `/oauth/token` and the five data endpoints, as strict as the
//! spec allows.
//!
//! The token endpoint wants a JSON body with exactly the configured credential fields and
//! answers like the Spring OAuth server the spec's example comes from (`expires_in` as a
//! string; wrong credentials: HTTP 401 `invalid_client`). Data calls need the configured
//! header (`Authorization: Bearer <token>`) with a live token, else code 401; then the body
//! is checked against the spec's field tables: a JSON array of 1..=100 objects, required
//! fields present, types as listed, no unknown fields, `coordinate_system` one of the three
//! datums, times in Unix seconds, fees with at most two decimals, `car_type` and `pay_type`
//! codes or labels as the sink's `labels` setting says (the platform is configured for
//! one), photos valid base64 (optionally behind a `data:image/...;base64,` prefix) of at
//! most 512 KB and, in strict mode (the default), not empty (the spec marks them
//! required), space counts that add up, lots that are bound (except upserts, which create
//! them). A refusal is code 1 naming the record and field, and nothing of that request is
//! recorded. Success is code 200 (`/park/spot` DELETE: 0), as in the examples.
//!
//! The token answer carries both `access_token` and `token`, as the spec's does, with
//! different values: only the one the platform is configured to check (`token_field`)
//! opens data calls. Endpoints are served at the configured paths; limits are the spec's
//! unless a test sets them.

use crate::config::{Bindings, ConfigError};
use crate::secret::Secret;
use crate::sim::{Control, Failure, Injected, SimServer};
use crate::vendors::isp::config::{self, AuthHeader, Config, TokenAnswerField, SPEC_PHOTO_LIMIT};
use crate::vendors::isp::mapping::{DEPARTURE, ENTRANCE, SPOT, SPOT_DELETE, SPOT_NUM};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine as _;
use bytes::Bytes;
use serde_json::{json, Map, Value};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Endpoint label of the token endpoint in the request log.
pub const TOKEN: &str = "oauth/token";
/// Most records in one request (the spec gives none; lotbridge's issue sets 100).
pub const MAX_BATCH: usize = 100;
/// Lifetime of issued tokens unless set otherwise.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(7_200);
/// Success (status table; `DELETE /park/spot` example).
pub const CODE_OK: i64 = 0;
/// Success (the other examples).
pub const CODE_SUCCESS: i64 = 200;
/// Request or operation failed.
pub const CODE_FAILED: i64 = 1;
/// Not logged in, or the token expired.
pub const CODE_TOKEN: i64 = 401;
/// System error.
pub const CODE_SYSTEM: i64 = 500;
/// Bodies up to this size are read (100 departures with 512 KB photos).
const BODY_LIMIT: usize = 64 * 1024 * 1024;
/// Plausible Unix seconds: 2000-01-01 to 2100-01-01 (milliseconds fall outside).
const SECONDS_RANGE: std::ops::Range<i64> = 946_684_800..4_102_444_800;
const DATUMS: [&str; 3] = ["WGS84", "GCJ02", "BD09"];
const CAR_TYPE_CODES: [&str; 6] = ["1", "2", "3", "4", "5", "6"];
const CAR_TYPE_LABELS: [&str; 6] = ["大型车", "小型车", "警用车", "临时车", "无号牌车", "新能源汽车"];
/// `pay_type` labels of the spec's list (1-7); the list ends in "...", so other labels the
/// platform was configured with are accepted through [`Simulator::with_pay_type_other`].
const PAY_TYPE_LABELS: [&str; 7] = ["现金", "ETC", "微信", "支付宝", "信用卡", "储值卡", "月租卡"];

/// What a field must hold.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// A non-empty string.
    Code,
    /// Any string.
    Text,
    /// Any number.
    Number,
    /// An integer >= 0.
    Count,
    /// Unix seconds.
    Seconds,
    /// `WGS84`, `GCJ02` or `BD09`.
    Datum,
    /// A `car_type` code or label, as configured.
    CarType,
    /// A `pay_type` code or label, as configured.
    PayType,
    /// Yuan >= 0 with at most two decimals.
    Fee,
    /// Base64, optionally behind a data-URL prefix, within the photo limit.
    Photo,
}

struct Field {
    name: &'static str,
    kind: Kind,
    required: bool,
}

const fn req(name: &'static str, kind: Kind) -> Field {
    Field { name, kind, required: true }
}

const fn opt(name: &'static str, kind: Kind) -> Field {
    Field { name, kind, required: false }
}

/// One array endpoint: its label, field table and success code.
struct Table {
    label: &'static str,
    fields: &'static [Field],
    /// Whether `park_code` must be a bound lot (upserts create lots).
    bound_only: bool,
}

const SPOT_TABLE: Table = Table {
    label: SPOT,
    fields: &[
        req("park_code", Kind::Code),
        opt("park_name", Kind::Text),
        opt("longitude", Kind::Number),
        opt("latitude", Kind::Number),
        opt("address", Kind::Text),
        req("coordinate_system", Kind::Datum),
    ],
    bound_only: false,
};

const SPOT_NUM_TABLE: Table = Table {
    label: SPOT_NUM,
    fields: &[
        req("park_code", Kind::Code),
        req("total_spots_num", Kind::Count),
        req("remain_spots_num", Kind::Count),
        req("used_spots_num", Kind::Count),
    ],
    bound_only: true,
};

const ENTRANCE_TABLE: Table = Table {
    label: ENTRANCE,
    fields: &[
        req("park_code", Kind::Code),
        req("plate_number", Kind::Code),
        req("enter_time", Kind::Seconds),
        req("car_type", Kind::CarType),
        req("car_logo", Kind::Text),
        req("enter_pic", Kind::Photo),
    ],
    bound_only: true,
};

const DEPARTURE_TABLE: Table = Table {
    label: DEPARTURE,
    fields: &[
        req("park_code", Kind::Code),
        req("plate_number", Kind::Code),
        req("depart_time", Kind::Seconds),
        req("car_type", Kind::CarType),
        req("car_logo", Kind::Text),
        req("depart_pic", Kind::Photo),
        req("use_time", Kind::Count),
        req("payable_fee", Kind::Fee),
        req("paid_fee", Kind::Fee),
        req("pay_time", Kind::Seconds),
        req("pay_type", Kind::PayType),
    ],
    bound_only: true,
};

/// An Inspur ISP platform for one client.
pub struct Simulator {
    state: SimState,
}

/// Where the platform serves its endpoints (URL paths).
#[derive(Debug, Clone)]
struct Paths {
    token: String,
    spot: String,
    spot_num: String,
    entrance: String,
    departure: String,
}

impl Default for Paths {
    fn default() -> Self {
        Paths {
            token: config::TOKEN_PATH.into(),
            spot: config::SPOT_PATH.into(),
            spot_num: config::SPOT_NUM_PATH.into(),
            entrance: config::ENTRANCE_PATH.into(),
            departure: config::DEPARTURE_PATH.into(),
        }
    }
}

struct SimState {
    /// The token request's fields and values, exactly.
    credentials: Vec<(String, Secret)>,
    auth: AuthHeader,
    paths: Paths,
    /// The answer field whose token opens data calls.
    token_field: TokenAnswerField,
    /// Whether `car_type`/`pay_type` are labels (else codes).
    labels: bool,
    /// `pay_type` codes or labels beyond the spec's 1-7 (its list ends in "...").
    pay_type_other: Vec<String>,
    /// Whether required photo fields must not be empty.
    strict_photos: bool,
    token_lifetime: Duration,
    max_batch: usize,
    photo_limit: usize,
    /// Vendor lot codes accepted by everything but upserts; empty accepts any.
    lots: HashSet<String>,
    control: Arc<Control>,
}

/// A refusal: how many records the request held, and why.
struct Refusal {
    records: usize,
    msg: String,
}

impl Simulator {
    /// A platform for the default token fields `client_id`/`client_secret`, `Authorization:
    /// Bearer` with the `access_token`, the spec's paths, codes (not labels) with `8` as the
    /// extra `pay_type`, required photos not empty, 2-hour tokens, batches of 100, 512 KB
    /// photos and any lot code.
    pub fn new(client_id: &str, client_secret: &str) -> Simulator {
        let credentials = vec![
            ("client_id".to_string(), Secret::new(client_id)),
            ("client_secret".to_string(), Secret::new(client_secret)),
        ];
        let auth = AuthHeader { name: header::AUTHORIZATION, prefix: "Bearer ".into() };
        Simulator::with_credentials(credentials, auth)
    }

    /// The platform a `[sinks.inspur_isp]` table talks to: the same token fields and secrets,
    /// the same token header and token field, its paths, its `labels` setting and extra
    /// `pay_type`, its bound lots. Limits are the spec's, whatever the table says.
    pub fn from_config(cfg: &Config, bindings: &Bindings, base_dir: &Path) -> Result<Simulator, ConfigError> {
        let name = "inspur_isp simulator";
        let credentials = config::token_fields(cfg, base_dir, name)?;
        let auth = config::auth_header(&cfg.auth_header, &cfg.auth_prefix, name)?;
        let urls = cfg.data_urls(name)?;
        let paths = Paths {
            token: url_path(&cfg.token_url(name)?),
            spot: url_path(&urls.spot),
            spot_num: url_path(&urls.spot_num),
            entrance: url_path(&urls.entrance),
            departure: url_path(&urls.departure),
        };
        let other = if cfg.labels { &cfg.pay_type_other_label } else { &cfg.pay_type_other_code };
        let mut sim = Simulator::with_credentials(credentials, auth)
            .with_lots(bindings.iter().map(|b| b.vendor_lot.clone()))
            .with_token_field(cfg.token_field)
            .with_labels(cfg.labels)
            .with_pay_type_other(other);
        sim.state.paths = paths;
        Ok(sim)
    }

    fn with_credentials(credentials: Vec<(String, Secret)>, auth: AuthHeader) -> Simulator {
        let state = SimState {
            credentials,
            auth,
            paths: Paths::default(),
            token_field: TokenAnswerField::AccessToken,
            labels: false,
            pay_type_other: vec!["8".into()],
            strict_photos: true,
            token_lifetime: TOKEN_LIFETIME,
            max_batch: MAX_BATCH,
            photo_limit: SPEC_PHOTO_LIMIT,
            lots: HashSet::new(),
            control: Control::new(),
        };
        Simulator { state }
    }

    /// Accepts only these vendor lot codes (upserts excepted).
    pub fn with_lots(mut self, lots: impl IntoIterator<Item = String>) -> Simulator {
        self.state.lots = lots.into_iter().collect();
        self
    }

    /// Opens data calls with the answer's `field` only.
    pub fn with_token_field(mut self, field: TokenAnswerField) -> Simulator {
        self.state.token_field = field;
        self
    }

    /// Expects `car_type`/`pay_type` as labels (`true`) or codes (`false`).
    pub fn with_labels(mut self, labels: bool) -> Simulator {
        self.state.labels = labels;
        self
    }

    /// Also accepts this `pay_type` (the code or label of payments outside the spec's 1-7).
    pub fn with_pay_type_other(mut self, other: &str) -> Simulator {
        self.state.pay_type_other = vec![other.to_string()];
        self
    }

    /// Accepts empty required photo fields (`false`), as a lenient platform does.
    pub fn with_strict_photos(mut self, strict: bool) -> Simulator {
        self.state.strict_photos = strict;
        self
    }

    /// Issues tokens living `lifetime`.
    pub fn with_token_lifetime(mut self, lifetime: Duration) -> Simulator {
        self.state.token_lifetime = lifetime;
        self
    }

    /// Accepts at most `n` records per request.
    pub fn with_max_batch(mut self, n: usize) -> Simulator {
        self.state.max_batch = n;
        self
    }

    /// Accepts photo texts of at most `bytes`.
    pub fn with_photo_limit(mut self, bytes: usize) -> Simulator {
        self.state.photo_limit = bytes;
        self
    }

    /// Its faults and records (also reachable from the running server).
    pub fn control(&self) -> Arc<Control> {
        self.state.control.clone()
    }

    /// The routes, without the admin routes (tests may serve them their own way).
    pub fn router(self) -> Router {
        let paths = self.state.paths.clone();
        let state = Arc::new(self.state);
        Router::new()
            .route(&paths.token, post(token))
            .route(&paths.spot, post(spot).delete(spot_delete))
            .route(&paths.spot_num, post(spot_num))
            .route(&paths.entrance, post(entrance))
            .route(&paths.departure, post(departure))
            .layer(DefaultBodyLimit::max(BODY_LIMIT))
            .with_state(state)
    }

    /// Serves on `addr` (port 0 picks a free port).
    pub async fn start(self, addr: SocketAddr) -> std::io::Result<SimServer> {
        let control = self.control();
        SimServer::start(addr, self.router(), control).await
    }
}

type Sim = State<Arc<SimState>>;

async fn spot(State(sim): Sim, headers: HeaderMap, body: Bytes) -> Response {
    sim.data(&SPOT_TABLE, &headers, &body).await
}

async fn spot_num(State(sim): Sim, headers: HeaderMap, body: Bytes) -> Response {
    sim.data(&SPOT_NUM_TABLE, &headers, &body).await
}

async fn entrance(State(sim): Sim, headers: HeaderMap, body: Bytes) -> Response {
    sim.data(&ENTRANCE_TABLE, &headers, &body).await
}

async fn departure(State(sim): Sim, headers: HeaderMap, body: Bytes) -> Response {
    sim.data(&DEPARTURE_TABLE, &headers, &body).await
}

async fn spot_delete(State(sim): Sim, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(injected) = sim.control.before().await {
        return sim.injected(SPOT_DELETE, injected);
    }
    if let Some(refusal) = sim.turn_away(SPOT_DELETE, &headers) {
        return refusal;
    }
    match sim.check_delete(&body) {
        Ok(codes) => {
            for code in &codes {
                sim.control.record(SPOT_DELETE, code, json!({ "park_code": code }));
            }
            sim.reply(SPOT_DELETE, StatusCode::OK, CODE_OK, "success", codes.len())
        }
        Err(r) => sim.reply(SPOT_DELETE, StatusCode::OK, CODE_FAILED, &r.msg, r.records),
    }
}

async fn token(State(sim): Sim, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(injected) = sim.control.before().await {
        return sim.injected(TOKEN, injected);
    }
    let Some(fields) = is_json(&headers).then(|| serde_json::from_slice::<Map<String, Value>>(&body).ok()).flatten()
    else {
        return sim.oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "expected a JSON object body");
    };
    let matches = sim.credentials.iter().all(|(name, value)| fields.get(name) == Some(&json!(value.expose())));
    if !matches || fields.len() != sim.credentials.len() || sim.control.credentials_revoked() {
        return sim.oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "Bad client credentials");
    }
    // Both fields, as in the spec's answer; only the configured one is a live token.
    let live = sim.control.issue_token(sim.token_lifetime);
    let other = format!("{:032x}", rand::random::<u128>());
    let (access_token, token) = match sim.token_field {
        TokenAnswerField::AccessToken => (live, other),
        TokenAnswerField::Token => (other, live),
    };
    sim.control.log_request(TOKEN, 200, None, 0);
    let lifetime = sim.token_lifetime.as_secs().to_string();
    let answer = json!({"access_token": access_token, "token_type": "bearer", "expires_in": lifetime,
                        "scope": "all", "token": token});
    Json(answer).into_response()
}

/// The path of an absolute URL (`http://h:1/isp/park/spot` → `/isp/park/spot`).
fn url_path(url: &str) -> String {
    reqwest::Url::parse(url).map(|u| u.path().to_string()).unwrap_or_else(|_| "/".into())
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().to_ascii_lowercase().starts_with("application/json"))
}

impl SimState {
    async fn data(&self, table: &Table, headers: &HeaderMap, body: &[u8]) -> Response {
        if let Some(injected) = self.control.before().await {
            return self.injected(table.label, injected);
        }
        if let Some(refusal) = self.turn_away(table.label, headers) {
            return refusal;
        }
        match self.check_batch(table, body) {
            Ok(records) => {
                let n = records.len();
                for (lot, record) in records {
                    self.control.record(table.label, &lot, record);
                }
                self.reply(table.label, StatusCode::OK, CODE_SUCCESS, "success", n)
            }
            Err(r) => self.reply(table.label, StatusCode::OK, CODE_FAILED, &r.msg, r.records),
        }
    }

    /// The refusal of a data call without a live token (checked first) or not sent as JSON.
    fn turn_away(&self, label: &str, headers: &HeaderMap) -> Option<Response> {
        if !self.authorized(headers) {
            return Some(self.reply(label, StatusCode::OK, CODE_TOKEN, "未登录或 token 已过期,需重新获取 token", 0));
        }
        if !is_json(headers) {
            return Some(self.reply(label, StatusCode::OK, CODE_FAILED, "Content-Type must be application/json", 0));
        }
        None
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        let value = headers.get(&self.auth.name).and_then(|v| v.to_str().ok());
        let token = value.and_then(|v| v.strip_prefix(self.auth.prefix.as_str()));
        token.is_some_and(|t| self.control.token_valid(t))
    }

    fn check_batch(&self, table: &Table, body: &[u8]) -> Result<Vec<(String, Value)>, Refusal> {
        let refuse = |records, msg: String| Refusal { records, msg };
        let Ok(Value::Array(items)) = serde_json::from_slice::<Value>(body) else {
            return Err(refuse(0, "request body must be a JSON array".into()));
        };
        let n = items.len();
        if n == 0 || n > self.max_batch {
            return Err(refuse(n, format!("a request carries 1 to {} records, not {n}", self.max_batch)));
        }
        let mut out = Vec::with_capacity(n);
        for (i, item) in items.into_iter().enumerate() {
            let lot = self.check_record(table, &item).map_err(|msg| refuse(n, format!("[{i}]{msg}")))?;
            out.push((lot, item));
        }
        Ok(out)
    }

    /// Checks one array element against its table; returns its `park_code`, or the problem
    /// as the rest of a path (`.enter_time: must be ...`).
    fn check_record(&self, table: &Table, item: &Value) -> Result<String, String> {
        let obj = item.as_object().ok_or_else(|| ": must be a JSON object".to_string())?;
        if let Some(unknown) = obj.keys().find(|k| !table.fields.iter().any(|f| f.name == k.as_str())) {
            return Err(format!(".{unknown}: unknown field"));
        }
        for field in table.fields {
            match obj.get(field.name).filter(|v| !v.is_null()) {
                Some(value) => self.check_value(field.kind, value).map_err(|p| format!(".{}: {p}", field.name))?,
                None if field.required => return Err(format!(".{}: required", field.name)),
                None => {}
            }
        }
        check_counts(obj)?;
        let lot = obj.get("park_code").and_then(Value::as_str).unwrap_or_default().to_string();
        if table.bound_only && !self.lot_known(&lot) {
            return Err(format!(".park_code: unknown park {lot:?}"));
        }
        Ok(lot)
    }

    fn lot_known(&self, lot: &str) -> bool {
        self.lots.is_empty() || self.lots.contains(lot)
    }

    fn check_value(&self, kind: Kind, value: &Value) -> Result<(), String> {
        let text = || value.as_str().ok_or_else(|| "must be a string".to_string());
        match kind {
            Kind::Code if text()?.trim().is_empty() => Err("must not be empty".into()),
            Kind::Code => Ok(()),
            Kind::Text => text().map(drop),
            Kind::Number => value.as_f64().map(drop).ok_or_else(|| "must be a number".into()),
            Kind::Count => value.as_u64().map(drop).ok_or_else(|| "must be an integer >= 0".into()),
            Kind::Seconds => check_seconds(value),
            Kind::Datum => one_of(text()?, &DATUMS),
            Kind::CarType => self.check_label(text()?, &CAR_TYPE_CODES, &CAR_TYPE_LABELS, &[]),
            Kind::PayType => {
                let codes = ["1", "2", "3", "4", "5", "6", "7"];
                self.check_label(text()?, &codes, &PAY_TYPE_LABELS, &self.pay_type_other)
            }
            Kind::Fee => check_fee(value),
            Kind::Photo if self.strict_photos && text()?.is_empty() => Err("required: must not be empty".into()),
            Kind::Photo => check_photo(text()?, self.photo_limit),
        }
    }

    /// A code of `codes` or a label of `labels` as configured, or one of `extra`.
    fn check_label(&self, text: &str, codes: &[&str], labels: &[&str], extra: &[String]) -> Result<(), String> {
        let allowed = if self.labels { labels } else { codes };
        if extra.iter().any(|e| e == text) {
            return Ok(());
        }
        let other = if self.labels { codes } else { labels };
        if other.contains(&text) {
            let want = if self.labels { "labels" } else { "codes" };
            return Err(format!("{text:?}: this platform is configured for {want}"));
        }
        one_of(text, allowed)
    }

    fn check_delete(&self, body: &[u8]) -> Result<Vec<String>, Refusal> {
        let refuse = |msg: &str| Refusal { records: 0, msg: msg.to_string() };
        let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(body) else {
            return Err(refuse("request body must be a JSON object"));
        };
        if obj.len() != 1 {
            return Err(refuse("the body holds exactly park_code"));
        }
        let Some(joined) = obj.get("park_code").and_then(Value::as_str) else {
            return Err(refuse("park_code: required, a string"));
        };
        let codes: Vec<String> = joined.split(',').map(str::to_string).collect();
        if codes.iter().any(|c| c.trim().is_empty()) {
            return Err(refuse("park_code: codes separated by ',' must not be empty"));
        }
        match codes.iter().find(|c| !self.lot_known(c)) {
            Some(c) => Err(Refusal { records: codes.len(), msg: format!("park_code: unknown park {c:?}") }),
            None => Ok(codes),
        }
    }

    fn reply(&self, label: &str, status: StatusCode, code: i64, msg: &str, records: usize) -> Response {
        self.control.log_request(label, status.as_u16(), Some(&code.to_string()), records);
        (status, Json(json!({"code": code, "msg": msg}))).into_response()
    }

    fn oauth_error(&self, status: StatusCode, error: &str, description: &str) -> Response {
        self.control.log_request(TOKEN, status.as_u16(), None, 0);
        (status, Json(json!({"error": error, "error_description": description}))).into_response()
    }

    fn injected(&self, label: &str, injected: Injected) -> Response {
        match injected {
            Injected::Throttle(secs) => {
                self.control.log_request(label, 429, None, 0);
                let body = Json(json!({"code": 429, "msg": "请求过于频繁"}));
                (StatusCode::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, secs.to_string())], body).into_response()
            }
            Injected::Fail(Failure::Status(s)) => {
                let status = StatusCode::from_u16(s).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                let msg = if s >= 500 { "系统异常" } else { "请求/操作失败" };
                self.reply(label, status, i64::from(s), msg, 0)
            }
            Injected::Fail(Failure::Code(code)) => {
                self.control.log_request(label, 200, Some(&code), 0);
                let code_value = code.parse::<i64>().map(Value::from).unwrap_or_else(|_| Value::from(code.clone()));
                Json(json!({"code": code_value, "msg": format!("injected code {code}")})).into_response()
            }
        }
    }
}

/// Space counts must add up: used = total - remain.
fn check_counts(obj: &Map<String, Value>) -> Result<(), String> {
    let get = |k: &str| obj.get(k).and_then(Value::as_u64);
    match (get("total_spots_num"), get("remain_spots_num"), get("used_spots_num")) {
        (Some(total), Some(remain), Some(used)) if remain.checked_add(used) != Some(total) => {
            Err(format!(".used_spots_num: {used} + remain_spots_num {remain} != total_spots_num {total}"))
        }
        _ => Ok(()),
    }
}

fn one_of(text: &str, allowed: &[&str]) -> Result<(), String> {
    if allowed.contains(&text) {
        Ok(())
    } else {
        Err(format!("{text:?} is not one of {}", allowed.join(", ")))
    }
}

fn check_seconds(value: &Value) -> Result<(), String> {
    match value.as_i64() {
        Some(s) if SECONDS_RANGE.contains(&s) => Ok(()),
        Some(s) => Err(format!("{s} is not a Unix time in seconds")),
        None => Err("must be an integer (Unix seconds)".into()),
    }
}

/// Yuan with at most two decimals: `34.5` passes, `34.500000001` does not.
fn check_fee(value: &Value) -> Result<(), String> {
    let Some(yuan) = value.as_f64().filter(|y| *y >= 0.0) else {
        return Err("must be a number >= 0".into());
    };
    let cents = yuan * 100.0;
    // Relative: a correctly rounded two-decimal value is off by float rounding only.
    let tolerance = 1e-9 * cents.abs().max(1.0);
    if (cents - cents.round()).abs() > tolerance {
        return Err(format!("{value} has more than two decimals"));
    }
    Ok(())
}

/// Base64, optionally behind `data:image/<type>;base64,`, at most `limit` bytes in all.
/// Empty passes: the field is required, a photo is not always taken.
fn check_photo(text: &str, limit: usize) -> Result<(), String> {
    if text.len() > limit {
        return Err(format!("{} bytes, larger than the {limit} bytes allowed", text.len()));
    }
    let b64 = match text.strip_prefix("data:") {
        Some(rest) => match rest.split_once(";base64,") {
            Some((mime, b64)) if mime.starts_with("image/") => b64,
            _ => return Err("a data URL must read data:image/<type>;base64,<data>".into()),
        },
        None => text,
    };
    base64::engine::general_purpose::STANDARD.decode(b64).map(drop).map_err(|e| format!("not valid base64: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sim() -> Arc<SimState> {
        let s = Simulator::new("id", "secret").with_lots(["ATXL/1".to_string()]);
        Arc::new(s.state)
    }

    fn entrance_record() -> Value {
        json!({"park_code": "ATXL/1", "plate_number": "鲁A12345", "enter_time": 1588061331, "car_type": "2",
               "car_logo": "大众", "enter_pic": "data:image/jpg;base64,/9j/4AAQ"})
    }

    fn refusal(table: &Table, body: Value) -> String {
        match sim().check_batch(table, body.to_string().as_bytes()) {
            Ok(_) => panic!("accepted {body}"),
            Err(r) => r.msg,
        }
    }

    fn with(field: &str, value: Value) -> Value {
        let mut r = entrance_record();
        r[field] = value;
        json!([r])
    }

    #[test]
    fn accepts_the_spec_example() {
        let records = sim().check_batch(&ENTRANCE_TABLE, json!([entrance_record()]).to_string().as_bytes());
        assert_eq!(records.ok().map(|r| r.len()), Some(1));
    }

    #[test]
    fn entrance_field_checks() {
        let cases = [
            (with("enter_time", json!(1588061331000_i64)), "[0].enter_time: 1588061331000 is not a Unix time"),
            (with("enter_time", json!("1588061331")), "[0].enter_time: must be an integer"),
            (with("car_type", json!("轿车")), "[0].car_type: \"轿车\" is not one of"),
            (with("plate_number", json!("")), "[0].plate_number: must not be empty"),
            (with("enter_pic", json!("data:text/plain;base64,AAAA")), "[0].enter_pic: a data URL"),
            (with("enter_pic", json!("data:image/jpg;base64,@@@@")), "[0].enter_pic: not valid base64"),
            (with("park_code", json!("ELSEWHERE")), "[0].park_code: unknown park"),
            (with("park_code ", json!("ATXL/1")), "[0].park_code : unknown field"),
            (json!([entrance_record(), 5]), "[1]: must be a JSON object"),
            (json!({"park_code": "ATXL/1"}), "request body must be a JSON array"),
            (json!([]), "a request carries 1 to 100 records, not 0"),
        ];
        for (body, expected) in cases {
            let msg = refusal(&ENTRANCE_TABLE, body);
            assert!(msg.starts_with(expected), "{msg} vs {expected}");
        }
        let mut missing = entrance_record();
        missing.as_object_mut().unwrap().remove("car_logo");
        assert_eq!(refusal(&ENTRANCE_TABLE, json!([missing])), "[0].car_logo: required");
    }

    #[test]
    fn photo_limit_counts_the_whole_text() {
        let limit = 64;
        let fits = format!("data:image/jpg;base64,{}", "A".repeat(40));
        assert_eq!(fits.len(), 62);
        assert!(check_photo(&fits, limit).is_ok());
        let over = format!("data:image/jpg;base64,{}", "A".repeat(44));
        assert!(check_photo(&over, limit).unwrap_err().contains("larger than the 64 bytes"));
        assert!(check_photo("", limit).is_ok());
    }

    #[test]
    fn fees_have_two_decimals() {
        for ok in [json!(34.5), json!(0.07), json!(0), json!(19.99), json!(123456.78)] {
            assert!(check_fee(&ok).is_ok(), "{ok}");
        }
        for bad in [json!(34.500001), json!(0.001), json!(-1.0), json!("34.5")] {
            assert!(check_fee(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn lots_and_counts() {
        let good =
            json!([{"park_code": "ATXL/1", "total_spots_num": 1000, "remain_spots_num": 350, "used_spots_num": 650}]);
        assert!(sim().check_batch(&SPOT_NUM_TABLE, good.to_string().as_bytes()).is_ok());
        let bad =
            json!([{"park_code": "ATXL/1", "total_spots_num": 1000, "remain_spots_num": 350, "used_spots_num": 600}]);
        assert!(refusal(&SPOT_NUM_TABLE, bad).contains("!= total_spots_num 1000"));
        let datum = json!([{"park_code": "NEW/9", "coordinate_system": "CGCS2000"}]);
        assert!(refusal(&SPOT_TABLE, datum).starts_with("[0].coordinate_system:"));
        let new_lot = json!([{"park_code": "NEW/9", "coordinate_system": "GCJ02", "longitude": null}]);
        assert!(sim().check_batch(&SPOT_TABLE, new_lot.to_string().as_bytes()).is_ok(), "upserts create lots");
    }

    #[test]
    fn deletions_split_codes() {
        let s = sim();
        let codes = s.check_delete(br#"{"park_code":"ATXL/1"}"#).ok();
        assert_eq!(codes, Some(vec!["ATXL/1".to_string()]));
        for bad in [r#"{"park_code":"ATXL/1,"}"#, r#"{"park_code":"ATXL/1,NOPE"}"#, r#"[{"park_code":"ATXL/1"}]"#] {
            assert!(s.check_delete(bad.as_bytes()).is_err(), "{bad}");
        }
    }
}

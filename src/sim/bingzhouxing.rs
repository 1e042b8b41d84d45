//! The Bingzhouxing platform simulator: `heartbeat`, `parkSpace` and `carInOut` as strictly
//! as `specs/bingzhouxing-parking-api.txt` allows.
//!
//! Every request is a JSON envelope `{"cmd","lotCode","ts","auth","data"}` checked in the
//! platform's order, each failure answered in HTTP 200 with the platform's own code:
//! - `cmd` missing or empty: `1001`; not this path's command: `1008`;
//! - `lotCode`, `ts` or `auth` missing: `1501`; a `lotCode` no lot is bound to: `1000`;
//! - `auth` other than `md5(cmd + lotCode + ts + token)` (lowercase hex, recomputed from the
//!   lot's token), or a `ts` more than 10 s away from now: `1002`;
//! - `data` missing or a required field missing or blank (in strict mode, the default, an
//!   empty `imgData` too: the spec marks it required): `1501`; a value of the wrong type,
//!   too long, out of range, an unknown field, more than 100 records, an `imgData` over the
//!   spec's 50 000-character limit or not base64, a `carNo` with a space (the spec writes
//!   plates without): `1502`;
//! - a heartbeat from a lot sooner than the spec's cadence allows after its previous one
//!   (every minute; 5 s of jitter tolerated): `1502`.
//!
//! Success is `0`, or `0` and `200` in turn ([`Simulator::with_success_codes`]): the
//! protocol family answers either, and the adapter must take both. Limits are the spec's
//! whatever the sink's table says; tests may override them.
//!
//! `data` must be encoded as configured (object or JSON string) and `ts` is read in the
//! configured unit, so a mismatched adapter sees what a real platform would answer.
//! Accepted records are recorded under the endpoint labels `heartbeat`, `parkSpace` and
//! `carInOut` with the `lotCode` as the lot. A `carInOut` batch whose every record was
//! already received answers `1004` (data already exists) and records nothing again.
//!
//! Injected failures: a status answers that status with a Spring-style error body; a code
//! answers HTTP 200 with that code; throttling answers 429 with `Retry-After`.

use crate::config::{Bindings, ConfigError};
use crate::secret::Secret;
use crate::sim::{now_millis, Control, Failure, Injected, SimServer};
use crate::vendors::bingzhouxing::mapping::{self, MAX_BATCH};
use crate::vendors::bingzhouxing::{config, Config, DataEncoding, TsUnit, CAR_IN_OUT, HEARTBEAT, PARK_SPACE};
use axum::extract::State;
use axum::http::header::{CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use md5::{Digest, Md5};
use serde_json::{json, Map, Value};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How far `ts` may be from the platform's clock ("超过10S请求失效").
pub const FRESHNESS: Duration = Duration::from_secs(10);
/// The spec's heartbeat period ("每分钟").
pub const HEARTBEAT_PERIOD: Duration = Duration::from_secs(60);
/// How much sooner than [`HEARTBEAT_PERIOD`] a heartbeat may arrive (network jitter).
pub const HEARTBEAT_JITTER: Duration = Duration::from_secs(5);
/// Largest `totalSpace`/`surplusSpace`: the spec's `Integer(9)`.
const MAX_SPACE_COUNT: u64 = 999_999_999;

/// The commands the platform serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Command {
    Heartbeat,
    ParkSpace,
    CarInOut,
}

impl Command {
    /// The `cmd` value and endpoint label (the adapter's `Endpoint::name`).
    fn label(self) -> &'static str {
        match self {
            Command::Heartbeat => HEARTBEAT.name,
            Command::ParkSpace => PARK_SPACE.name,
            Command::CarInOut => CAR_IN_OUT.name,
        }
    }
}

/// A Bingzhouxing platform, ready to start.
#[derive(Debug)]
pub struct Simulator {
    /// Token by `lotCode`.
    lots: HashMap<String, Secret>,
    paths: [(String, Command); 3],
    ts_unit: TsUnit,
    data_encoding: DataEncoding,
    photo_limit: usize,
    /// Whether an empty `imgData` is refused.
    strict_photos: bool,
    /// Shortest accepted gap between two heartbeats of one lot.
    heartbeat_min_gap: Duration,
    /// Success codes answered in turn.
    success_codes: Vec<&'static str>,
    answered: std::sync::atomic::AtomicUsize,
    control: Arc<Control>,
    /// Keys of the `carInOut` records already accepted (for `1004`).
    seen: Mutex<HashSet<String>>,
    /// Strict reading of `1004`: a batch holding any record already received is refused
    /// whole with `1004`, its new records not recorded (the platform may do so; lotbridge
    /// must then split the batch). Off: `1004` only when nothing in it is new.
    duplicate_if_any: bool,
    /// Last accepted heartbeat of each `lotCode` (Unix ms); bounded by the known lots.
    heartbeats: Mutex<HashMap<String, i64>>,
}

impl Simulator {
    /// A platform knowing these lots (`lotCode`, token), on the spec's paths, with `ts` in
    /// milliseconds, `data` as an object, the 50 000-character photo limit, `imgData`
    /// required, heartbeats at most once a minute per lot and success answered `0`.
    pub fn new(lots: impl IntoIterator<Item = (String, Secret)>) -> Simulator {
        Simulator {
            lots: lots.into_iter().collect(),
            paths: [
                ("/park/heartbeat".into(), Command::Heartbeat),
                ("/dataSync/parkSpace".into(), Command::ParkSpace),
                ("/dataSync/carInOut".into(), Command::CarInOut),
            ],
            ts_unit: TsUnit::Millis,
            data_encoding: DataEncoding::Object,
            photo_limit: config::DEFAULT_PHOTO_LIMIT,
            strict_photos: true,
            heartbeat_min_gap: HEARTBEAT_PERIOD - HEARTBEAT_JITTER,
            success_codes: vec!["0"],
            answered: std::sync::atomic::AtomicUsize::new(0),
            control: Control::new(),
            seen: Mutex::new(HashSet::new()),
            duplicate_if_any: true,
            heartbeats: Mutex::new(HashMap::new()),
        }
    }

    /// Answers `1004` only for a batch whose every record was received before, recording
    /// the new ones of a mixed batch (the lenient reading of the spec).
    pub fn with_lenient_duplicates(mut self) -> Simulator {
        self.duplicate_if_any = false;
        self
    }

    /// The platform a `[sinks.bingzhouxing]` table talks to: its paths (with the
    /// `base_url` path prefix) and envelope options, and the bound lots' `lotCode`s and
    /// tokens. The photo limit is the spec's, whatever `photo_limit` says: a sink that
    /// raises it must see the refusals a real platform gives. Fails as the adapter does on
    /// a lot without token, and on one `lotCode` bound with two different tokens.
    pub fn from_config(cfg: &Config, bindings: &Bindings, _base_dir: &Path) -> Result<Simulator, ConfigError> {
        let name = "bingzhouxing simulator";
        let settings = cfg.validate(name)?;
        let mut lots: HashMap<String, Secret> = HashMap::new();
        for creds in config::credentials(name, bindings)?.into_values() {
            let known = lots.entry(creds.lot_code.clone()).or_insert_with(|| creds.token.clone());
            if *known != creds.token {
                let msg = format!("{name}: lotCode {:?} is bound with two different tokens", creds.lot_code);
                return Err(ConfigError::Invalid(msg));
            }
        }
        let mut sim = Simulator::new(lots).with_paths(
            &url_path(&settings.heartbeat_url),
            &url_path(&settings.park_space_url),
            &url_path(&settings.car_in_out_url),
        );
        sim.ts_unit = settings.ts_unit;
        sim.data_encoding = settings.data_encoding;
        Ok(sim)
    }

    /// Serves `heartbeat`, `parkSpace` and `carInOut` at these paths.
    pub fn with_paths(mut self, heartbeat: &str, park_space: &str, car_in_out: &str) -> Simulator {
        self.paths = [
            (heartbeat.to_string(), Command::Heartbeat),
            (park_space.to_string(), Command::ParkSpace),
            (car_in_out.to_string(), Command::CarInOut),
        ];
        self
    }

    /// Reads `ts` in this unit.
    pub fn with_ts_unit(mut self, unit: TsUnit) -> Simulator {
        self.ts_unit = unit;
        self
    }

    /// Requires `data` encoded this way.
    pub fn with_data_encoding(mut self, encoding: DataEncoding) -> Simulator {
        self.data_encoding = encoding;
        self
    }

    /// Refuses an `imgData` longer than `chars`.
    pub fn with_photo_limit(mut self, chars: usize) -> Simulator {
        self.photo_limit = chars;
        self
    }

    /// Accepts an empty `imgData` (`false`), as the spec's own example sends.
    pub fn with_strict_photos(mut self, strict: bool) -> Simulator {
        self.strict_photos = strict;
        self
    }

    /// Refuses a lot's heartbeat sooner than `gap` after its previous one (zero: any cadence).
    pub fn with_heartbeat_min_gap(mut self, gap: Duration) -> Simulator {
        self.heartbeat_min_gap = gap;
        self
    }

    /// Answers success with these codes in turn (`["0", "200"]`: both forms the protocol
    /// family uses). An empty list keeps `0`.
    pub fn with_success_codes(mut self, codes: &[&'static str]) -> Simulator {
        if !codes.is_empty() {
            self.success_codes = codes.to_vec();
        }
        self
    }

    /// Its faults and records (the same the started server uses).
    pub fn control(&self) -> Arc<Control> {
        self.control.clone()
    }

    /// Serves on `addr` (port 0 picks a free port).
    pub async fn start(self, addr: SocketAddr) -> std::io::Result<SimServer> {
        let distinct = self.paths.iter().map(|(p, _)| p).collect::<HashSet<_>>().len() == self.paths.len();
        if !distinct {
            let msg = "heartbeat, parkSpace and carInOut paths must be distinct";
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, msg));
        }
        let control = self.control.clone();
        // One dispatcher instead of a route per path: configured paths are data, and axum
        // panics on path syntax it reserves (`{`, `:`, `*`).
        let router = Router::new().fallback(dispatch).with_state(Arc::new(self));
        SimServer::start(addr, router, control).await
    }

    fn command_at(&self, path: &str) -> Option<Command> {
        self.paths.iter().find(|(p, _)| p == path).map(|(_, c)| *c)
    }
}

fn url_path(url: &str) -> String {
    reqwest::Url::parse(url).map(|u| u.path().to_string()).unwrap_or_else(|_| url.to_string())
}

/// A refused request: the platform's code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Refusal {
    code: &'static str,
    msg: String,
}

impl Refusal {
    fn new(code: &'static str, detail: impl std::fmt::Display) -> Refusal {
        Refusal { code, msg: format!("{}: {detail}", code_text(code)) }
    }
}

/// The platform's message for a code (the spec's table).
fn code_text(code: &str) -> &'static str {
    match code {
        "0" | "200" => "操作成功",
        "1000" => "平台无车场信息",
        "1001" => "指令不能为空",
        "1002" => "校验码错误",
        "1003" => "上报失败",
        "1004" => "数据已经存在",
        "1008" => "未找到指令",
        "1107" => "场端处理异常",
        "1501" => "参数不完整",
        "1502" => "参数不符合规定值",
        "2000" => "系统异常",
        "2001" => "业务异常",
        _ => "错误",
    }
}

/// One answer: status, JSON body, optional `Retry-After`.
struct Answer {
    status: StatusCode,
    body: Value,
    retry_after: Option<u64>,
}

impl Answer {
    fn code(code: &str, msg: &str) -> Answer {
        Answer { status: StatusCode::OK, body: json!({"code": code, "msg": msg, "data": ""}), retry_after: None }
    }

    fn http_error(status: u16, path: &str) -> Answer {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let error = status.canonical_reason().unwrap_or("Error");
        let body = json!({"timestamp": now_millis(), "status": status.as_u16(), "error": error, "path": path});
        Answer { status, body, retry_after: None }
    }

    fn injected(injected: Injected, path: &str) -> Answer {
        match injected {
            Injected::Throttle(secs) => Answer { retry_after: Some(secs), ..Answer::http_error(429, path) },
            Injected::Fail(Failure::Status(status)) => Answer::http_error(status, path),
            Injected::Fail(Failure::Code(code)) => Answer::code(&code, code_text(&code)),
        }
    }

    fn send(self, control: &Control, label: &str, records: usize) -> Response {
        let code = self.body.get("code").and_then(Value::as_str);
        control.log_request(label, self.status.as_u16(), code, records);
        let mut response = (self.status, Json(self.body)).into_response();
        if let Some(secs) = self.retry_after {
            response.headers_mut().insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// `ts=…,auth=…` of a request body, for the record of signing envelopes.
fn signing_envelope(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Envelope {
        ts: Option<Value>,
        auth: Option<Value>,
    }
    let e: Envelope = serde_json::from_slice(body).ok()?;
    Some(format!("ts={},auth={}", e.ts?, e.auth?))
}

async fn dispatch(
    State(sim): State<Arc<Simulator>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path();
    let Some(command) = sim.command_at(path) else {
        return Answer::http_error(404, path).send(&sim.control, "unknown", 0);
    };
    let label = command.label();
    if method != Method::POST {
        return Answer::http_error(405, path).send(&sim.control, label, 0);
    }
    if let Some(envelope) = signing_envelope(&body) {
        sim.control.note_envelope(envelope);
    }
    if let Some(injected) = sim.control.before().await {
        return Answer::injected(injected, path).send(&sim.control, label, 0);
    }
    if !is_json(&headers) {
        return Answer::http_error(415, path).send(&sim.control, label, 0);
    }
    let (answer, records) = match sim.handle(command, &body) {
        Ok(accepted) => sim.accept(command, accepted),
        Err((refusal, records)) => (Answer::code(refusal.code, &refusal.msg), records),
    };
    answer.send(&sim.control, label, records)
}

fn is_json(headers: &HeaderMap) -> bool {
    let value = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    value.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
}

/// A request that passed every check.
struct Accepted {
    lot_code: String,
    records: Vec<Value>,
}

impl Simulator {
    /// Checks one request; on refusal also says how many records it held (for the log).
    fn handle(&self, command: Command, body: &[u8]) -> Result<Accepted, (Refusal, usize)> {
        let envelope: Map<String, Value> = serde_json::from_slice(body)
            .map_err(|e| (Refusal::new("1502", format!("body is not a JSON object: {e}")), 0))?;
        let data = self.data(command, &envelope);
        let count = match &data {
            Ok(Some(Value::Array(items))) => items.len(),
            _ => 1,
        };
        let refused = |r: Refusal| (r, count);
        let lot_code = self.check_envelope(command, &envelope).map_err(refused)?;
        let records = match command {
            Command::Heartbeat => {
                self.check_cadence(&lot_code).map_err(refused)?;
                vec![json!({})]
            }
            Command::ParkSpace => vec![park_space(data.map_err(refused)?).map_err(refused)?],
            Command::CarInOut => self.car_in_out(data.map_err(refused)?).map_err(refused)?,
        };
        Ok(Accepted { lot_code, records })
    }

    /// `cmd`, `lotCode`, `ts` and `auth`, in the platform's order; returns the `lotCode`.
    fn check_envelope(&self, command: Command, envelope: &Map<String, Value>) -> Result<String, Refusal> {
        match envelope.get("cmd").and_then(Value::as_str) {
            None | Some("") => return Err(Refusal::new("1001", "cmd")),
            Some(cmd) if cmd != command.label() => {
                return Err(Refusal::new("1008", format!("cmd {cmd:?} is not served at this path")))
            }
            Some(_) => {}
        }
        let lot_code = envelope_text(envelope, "lotCode")?;
        let ts = envelope_text(envelope, "ts")?;
        let auth = envelope_text(envelope, "auth")?;
        let token = self.lots.get(lot_code).ok_or_else(|| Refusal::new("1000", format!("lotCode {lot_code:?}")))?;
        if auth != expected_auth(command.label(), lot_code, ts, token) {
            return Err(Refusal::new("1002", "auth does not match md5(cmd + lotCode + ts + token)"));
        }
        self.check_fresh(ts)?;
        Ok(lot_code.to_string())
    }

    /// A lot's heartbeat at least [`Simulator::with_heartbeat_min_gap`] after its last
    /// accepted one; remembers it when accepted.
    fn check_cadence(&self, lot_code: &str) -> Result<(), Refusal> {
        let now = now_millis();
        let min_gap = i64::try_from(self.heartbeat_min_gap.as_millis()).unwrap_or(i64::MAX);
        let mut last = self.heartbeats.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(previous) = last.get(lot_code) {
            let gap = now.saturating_sub(*previous);
            if gap < min_gap {
                let detail = format!("heartbeat {gap} ms after the previous one; the spec wants one a minute");
                return Err(Refusal::new("1502", detail));
            }
        }
        last.insert(lot_code.to_string(), now);
        Ok(())
    }

    fn check_fresh(&self, ts: &str) -> Result<(), Refusal> {
        let value: i64 = match ts.parse() {
            Ok(v) if ts.bytes().all(|b| b.is_ascii_digit()) => v,
            _ => return Err(Refusal::new("1502", format!("ts {ts:?} is not a Unix timestamp"))),
        };
        // A seconds stamp is up to 999 ms older than the moment it was taken.
        let (ts_ms, slack) = match self.ts_unit {
            TsUnit::Millis => (value, 0),
            TsUnit::Seconds => (value.saturating_mul(1000), 999),
        };
        let age = now_millis().saturating_sub(ts_ms);
        let limit = i64::try_from(FRESHNESS.as_millis()).unwrap_or(i64::MAX);
        if age > limit + slack || -age > limit {
            return Err(Refusal::new("1002", format!("ts is {} ms away from now, over 10 s", age.abs())));
        }
        Ok(())
    }

    /// The request's data as configured (`None` when absent).
    fn data(&self, command: Command, envelope: &Map<String, Value>) -> Result<Option<Value>, Refusal> {
        let Some(data) = envelope.get("data").filter(|d| !d.is_null()) else {
            return Ok(None);
        };
        match (self.data_encoding, data) {
            (DataEncoding::String, Value::String(text)) => serde_json::from_str(text)
                .map(Some)
                .map_err(|e| Refusal::new("1502", format!("data is not a JSON string of {}: {e}", command.label()))),
            (DataEncoding::String, _) => Err(Refusal::new("1502", "data must be a JSON string")),
            (DataEncoding::Object, Value::String(_)) => {
                Err(Refusal::new("1502", "data must be a JSON object or array"))
            }
            (DataEncoding::Object, other) => Ok(Some(other.clone())),
        }
    }

    fn car_in_out(&self, data: Option<Value>) -> Result<Vec<Value>, Refusal> {
        let items = match data {
            None => return Err(Refusal::new("1501", "data")),
            Some(Value::Array(items)) => items,
            Some(_) => return Err(Refusal::new("1502", "data must be an array of records")),
        };
        if items.is_empty() {
            return Err(Refusal::new("1501", "data holds no record"));
        }
        if items.len() > MAX_BATCH {
            return Err(Refusal::new("1502", format!("{} records, over the limit of {MAX_BATCH}", items.len())));
        }
        for (i, item) in items.iter().enumerate() {
            self.check_car(item, &format!("data[{i}]"))?;
        }
        Ok(items)
    }

    fn check_car(&self, item: &Value, at: &str) -> Result<(), Refusal> {
        let Some(record) = item.as_object() else {
            return Err(Refusal::new("1502", format!("{at} is not an object")));
        };
        if let Some(unknown) = record.keys().find(|k| !CAR_FIELDS.contains(&k.as_str())) {
            return Err(Refusal::new("1502", format!("{at}.{unknown} is not a field of carInOut")));
        }
        let field = |key: &str, need: Need, max: usize| text(record, at, key, need, max);
        if field("carNo", Need::Optional, mapping::CAR_NO_MAX)?.contains(char::is_whitespace) {
            return Err(Refusal::new("1502", format!("{at}.carNo must be written without spaces")));
        }
        one_of(field("inOutType", Need::Required, 3)?, &["in", "out"], at, "inOutType")?;
        check_time(field("inOutTime", Need::Required, 19)?, at)?;
        field("imgName", Need::Required, mapping::IMG_NAME_MAX)?;
        let img_need = if self.strict_photos { Need::Required } else { Need::Present };
        check_base64(field("imgData", img_need, self.photo_limit)?, at)?;
        field("nodeName", Need::Required, mapping::NODE_NAME_MAX)?;
        field("carColor", Need::Optional, mapping::CAR_COLOR_MAX)?;
        one_of(field("carStyle", Need::Required, 1)?, &["0", "1", "2"], at, "carStyle")?;
        field("carBrand", Need::Optional, mapping::CAR_BRAND_MAX)?;
        field("remark", Need::Optional, mapping::REMARK_MAX)?;
        Ok(())
    }

    /// Records what was accepted, or answers `1004` when a batch held a record received
    /// before (strict) or nothing new (lenient).
    fn accept(&self, command: Command, accepted: Accepted) -> (Answer, usize) {
        let count = accepted.records.len();
        let fresh: Vec<Value> = match command {
            Command::CarInOut => match self.unseen(&accepted.lot_code, accepted.records) {
                Some(fresh) => fresh,
                None => return (Answer::code("1004", "数据已经存在"), count),
            },
            _ => accepted.records,
        };
        if fresh.is_empty() {
            return (Answer::code("1004", "数据已经存在"), count);
        }
        for record in fresh {
            self.control.record(command.label(), &accepted.lot_code, record);
        }
        let turn = self.answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let code = self.success_codes.get(turn % self.success_codes.len().max(1)).copied().unwrap_or("0");
        (Answer::code(code, "操作成功"), count)
    }

    /// The records not received before (a vehicle passage is its lot, plate, direction,
    /// time and image), remembering them; `None` (nothing remembered) when the strict
    /// reading refuses the batch for holding one received before.
    fn unseen(&self, lot_code: &str, records: Vec<Value>) -> Option<Vec<Value>> {
        let mut seen = self.seen.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let key = |r: &Value| {
            let part = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
            [lot_code.to_string(), part("carNo"), part("inOutType"), part("inOutTime"), part("imgName")].join("\u{1f}")
        };
        let keys: Vec<String> = records.iter().map(key).collect();
        for again in keys.iter().filter(|k| seen.contains(*k)) {
            self.control.note_received_again(again);
        }
        if self.duplicate_if_any && keys.iter().any(|k| seen.contains(k)) {
            return None;
        }
        Some(records.into_iter().filter(|r| seen.insert(key(r))).collect())
    }
}

/// Every field the spec lists for a `carInOut` record.
const CAR_FIELDS: [&str; 10] =
    ["carNo", "inOutType", "inOutTime", "imgName", "imgData", "nodeName", "carColor", "carStyle", "carBrand", "remark"];

/// Whether a field must be there: required fields must not be blank; `Present` fields
/// (`imgData` outside strict mode: the spec's own example sends `""`) may be empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    Required,
    Present,
    Optional,
}

/// A string field of at most `max` characters (`null` counts as absent).
fn text<'a>(record: &'a Map<String, Value>, at: &str, key: &str, need: Need, max: usize) -> Result<&'a str, Refusal> {
    let value = match record.get(key) {
        None | Some(Value::Null) if need == Need::Optional => return Ok(""),
        None | Some(Value::Null) => return Err(Refusal::new("1501", format!("{at}.{key}"))),
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err(Refusal::new("1502", format!("{at}.{key} must be a string"))),
    };
    if need == Need::Required && value.trim().is_empty() {
        return Err(Refusal::new("1501", format!("{at}.{key} is blank")));
    }
    let chars = value.chars().count();
    if chars > max {
        return Err(Refusal::new("1502", format!("{at}.{key} is {chars} characters, over {max}")));
    }
    Ok(value)
}

fn envelope_text<'a>(envelope: &'a Map<String, Value>, key: &str) -> Result<&'a str, Refusal> {
    match envelope.get(key) {
        None | Some(Value::Null) => Err(Refusal::new("1501", key)),
        Some(Value::String(s)) if !s.is_empty() => Ok(s),
        Some(Value::String(_)) => Err(Refusal::new("1501", format!("{key} is empty"))),
        Some(_) => Err(Refusal::new("1502", format!("{key} must be a string"))),
    }
}

fn one_of(value: &str, allowed: &[&str], at: &str, key: &str) -> Result<(), Refusal> {
    if allowed.contains(&value) {
        return Ok(());
    }
    Err(Refusal::new("1502", format!("{at}.{key} {value:?} is not one of {}", allowed.join("/"))))
}

fn check_time(value: &str, at: &str) -> Result<(), Refusal> {
    match chrono::NaiveDateTime::parse_from_str(value, mapping::TIME_FORMAT) {
        Ok(_) if value.len() == 19 => Ok(()),
        _ => Err(Refusal::new("1502", format!("{at}.inOutTime {value:?} is not yyyy-MM-dd HH:mm:ss"))),
    }
}

fn check_base64(value: &str, at: &str) -> Result<(), Refusal> {
    if value.is_empty() || STANDARD.decode(value).is_ok() {
        return Ok(());
    }
    Err(Refusal::new("1502", format!("{at}.imgData is not base64")))
}

fn park_space(data: Option<Value>) -> Result<Value, Refusal> {
    let Some(Value::Object(fields)) = data else {
        return Err(Refusal::new(if data.is_none() { "1501" } else { "1502" }, "data must be an object"));
    };
    if let Some(unknown) = fields.keys().find(|k| !["totalSpace", "surplusSpace"].contains(&k.as_str())) {
        return Err(Refusal::new("1502", format!("data.{unknown} is not a field of parkSpace")));
    }
    let count = |key: &str| match fields.get(key) {
        None | Some(Value::Null) => Err(Refusal::new("1501", format!("data.{key}"))),
        Some(v) => v
            .as_u64()
            .filter(|n| *n <= MAX_SPACE_COUNT)
            .ok_or_else(|| Refusal::new("1502", format!("data.{key} must be an integer 0..={MAX_SPACE_COUNT}"))),
    };
    let (total, surplus) = (count("totalSpace")?, count("surplusSpace")?);
    if surplus > total {
        return Err(Refusal::new("1502", format!("data.surplusSpace {surplus} exceeds totalSpace {total}")));
    }
    Ok(Value::Object(fields))
}

/// `md5(cmd + lotCode + ts + token)` computed here from the formatted concatenation,
/// independently of the adapter's signing code.
fn expected_auth(cmd: &str, lot_code: &str, ts: &str, token: &Secret) -> String {
    hex::encode(Md5::digest(format!("{cmd}{lot_code}{ts}{}", token.expose()).as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sim() -> Simulator {
        Simulator::new([("350".to_string(), Secret::new("tok"))])
    }

    fn envelope(cmd: &str, ts: &str, data: Value) -> Vec<u8> {
        let auth = hex::encode(Md5::digest(format!("{cmd}350{ts}tok").as_bytes()));
        serde_json::to_vec(&json!({"cmd": cmd, "lotCode": "350", "ts": ts, "auth": auth, "data": data})).unwrap()
    }

    fn now() -> String {
        now_millis().to_string()
    }

    fn refused(result: Result<Accepted, (Refusal, usize)>) -> (&'static str, String) {
        match result {
            Ok(_) => panic!("accepted"),
            Err((r, _)) => (r.code, r.msg),
        }
    }

    fn car() -> Value {
        json!({"carNo": "京Q8K271", "inOutType": "in", "inOutTime": "2026-03-01 08:30:00", "imgName": "a.jpg",
               "imgData": "/9j/4A==", "nodeName": "东门", "carStyle": "0"})
    }

    #[test]
    fn strict_photos_plates_and_cadence() {
        let s = sim();
        let with = |key: &str, value: Value| {
            let mut record = car();
            record[key] = value;
            envelope("carInOut", &now(), json!([record]))
        };
        let (code, msg) = refused(s.handle(Command::CarInOut, &with("imgData", json!(""))));
        assert_eq!((code, msg.contains("data[0].imgData is blank")), ("1501", true), "{msg}");
        assert!(sim().with_strict_photos(false).handle(Command::CarInOut, &with("imgData", json!(""))).is_ok());
        for plate in ["京Q 8K271", "京Q\u{3000}8K271"] {
            let (code, msg) = refused(s.handle(Command::CarInOut, &with("carNo", json!(plate))));
            assert_eq!((code, msg.contains("carNo must be written without spaces")), ("1502", true), "{msg}");
        }
        let beat = || envelope("heartbeat", &now(), Value::Null);
        assert!(s.handle(Command::Heartbeat, &beat()).is_ok());
        let (code, msg) = refused(s.handle(Command::Heartbeat, &beat()));
        assert_eq!((code, msg.contains("one a minute")), ("1502", true), "{msg}");
        let any_cadence = sim().with_heartbeat_min_gap(Duration::ZERO);
        assert!(any_cadence.handle(Command::Heartbeat, &beat()).is_ok());
        assert!(any_cadence.handle(Command::Heartbeat, &beat()).is_ok());
    }

    #[test]
    fn success_codes_take_turns_when_configured() {
        let s = sim().with_success_codes(&["0", "200"]);
        let codes: Vec<Value> = (0..3)
            .map(|i| {
                let data = json!({"totalSpace": 9, "surplusSpace": i});
                let accepted = s.handle(Command::ParkSpace, &envelope("parkSpace", &now(), data)).ok().unwrap();
                s.accept(Command::ParkSpace, accepted).0.body["code"].clone()
            })
            .collect();
        assert_eq!(codes, [json!("0"), json!("200"), json!("0")]);
    }

    #[test]
    fn spec_example_space_is_accepted() {
        let body = envelope("parkSpace", &now(), json!({"totalSpace": 99, "surplusSpace": 9}));
        let accepted = sim().handle(Command::ParkSpace, &body).map_err(|(r, _)| r).unwrap();
        assert_eq!((accepted.lot_code.as_str(), accepted.records.len()), ("350", 1));
    }

    #[test]
    fn envelope_checks_use_the_platforms_codes() {
        let s = sim();
        let ts = now();
        let mut no_cmd: Value = serde_json::from_slice(&envelope("heartbeat", &ts, Value::Null)).unwrap();
        no_cmd["cmd"] = json!("");
        assert_eq!(refused(s.handle(Command::Heartbeat, no_cmd.to_string().as_bytes())).0, "1001");
        assert_eq!(refused(s.handle(Command::ParkSpace, &envelope("heartbeat", &ts, Value::Null))).0, "1008");
        let stale = (now_millis() - 11_000).to_string();
        let (code, msg) = refused(s.handle(Command::Heartbeat, &envelope("heartbeat", &stale, Value::Null)));
        assert_eq!(code, "1002", "{msg}");
        let future = (now_millis() + 11_000).to_string();
        assert_eq!(refused(s.handle(Command::Heartbeat, &envelope("heartbeat", &future, Value::Null))).0, "1002");
        let mut unknown: Value = serde_json::from_slice(&envelope("heartbeat", &ts, Value::Null)).unwrap();
        unknown["lotCode"] = json!("999");
        assert_eq!(refused(s.handle(Command::Heartbeat, unknown.to_string().as_bytes())).0, "1000");
        unknown.as_object_mut().unwrap().remove("auth");
        assert_eq!(refused(s.handle(Command::Heartbeat, unknown.to_string().as_bytes())).0, "1501");
    }

    #[test]
    fn uppercase_auth_is_refused() {
        let ts = now();
        let mut body: Value = serde_json::from_slice(&envelope("heartbeat", &ts, Value::Null)).unwrap();
        body["auth"] = json!(body["auth"].as_str().unwrap().to_uppercase());
        assert_eq!(refused(sim().handle(Command::Heartbeat, body.to_string().as_bytes())).0, "1002");
    }

    #[test]
    fn seconds_stamps_when_configured() {
        let s = sim().with_ts_unit(TsUnit::Seconds);
        let secs = (now_millis() / 1000).to_string();
        assert!(s.handle(Command::Heartbeat, &envelope("heartbeat", &secs, Value::Null)).is_ok());
        assert_eq!(refused(s.handle(Command::Heartbeat, &envelope("heartbeat", &now(), Value::Null))).0, "1002");
    }

    #[test]
    fn car_records_are_checked_field_by_field() {
        let s = sim();
        let check = |edit: &dyn Fn(&mut Value), code: &str, needle: &str| {
            let mut record = car();
            edit(&mut record);
            let (got, msg) =
                refused(s.handle(Command::CarInOut, &envelope("carInOut", &now(), json!([car(), record]))));
            assert_eq!(got, code, "{msg}");
            assert!(msg.contains(needle), "{msg}");
        };
        check(&|r| drop(r.as_object_mut().unwrap().remove("nodeName")), "1501", "data[1].nodeName");
        check(&|r| r["imgName"] = json!(" "), "1501", "data[1].imgName");
        check(&|r| r["inOutType"] = json!("up"), "1502", "inOutType");
        check(&|r| r["inOutTime"] = json!("2026-03-01T08:30:00"), "1502", "inOutTime");
        check(&|r| r["carStyle"] = json!(0), "1502", "carStyle must be a string");
        check(&|r| r["nodeName"] = json!("门".repeat(21)), "1502", "21 characters, over 20");
        check(&|r| r["imgData"] = json!("not base64!"), "1502", "imgData is not base64");
        check(&|r| r["plate"] = json!("x"), "1502", "data[1].plate is not a field");
        check(&|r| r["imgData"] = json!("A".repeat(50_004)), "1502", "imgData is 50004 characters, over 50000");
    }

    #[test]
    fn batches_hold_1_to_100_records() {
        let s = sim();
        let hundred = Value::Array(vec![car(); 100]);
        assert!(s.handle(Command::CarInOut, &envelope("carInOut", &now(), hundred)).is_ok());
        let result = s.handle(Command::CarInOut, &envelope("carInOut", &now(), Value::Array(vec![car(); 101])));
        let Err((refusal, count)) = result else { panic!("accepted 101") };
        assert_eq!((refusal.code, count), ("1502", 101));
        assert_eq!(refused(s.handle(Command::CarInOut, &envelope("carInOut", &now(), json!([])))).0, "1501");
    }

    #[test]
    fn data_encoding_is_enforced() {
        let data = json!({"totalSpace": 5, "surplusSpace": 1});
        let as_string = json!(data.to_string());
        let strict = sim().with_data_encoding(DataEncoding::String);
        assert!(strict.handle(Command::ParkSpace, &envelope("parkSpace", &now(), as_string.clone())).is_ok());
        assert_eq!(refused(strict.handle(Command::ParkSpace, &envelope("parkSpace", &now(), data))).0, "1502");
        assert_eq!(refused(sim().handle(Command::ParkSpace, &envelope("parkSpace", &now(), as_string))).0, "1502");
    }

    #[test]
    fn space_counts_are_checked() {
        let s = sim();
        for (data, code) in [
            (json!({"totalSpace": 5}), "1501"),
            (json!({"totalSpace": 5, "surplusSpace": 6}), "1502"),
            (json!({"totalSpace": "5", "surplusSpace": 1}), "1502"),
            (json!({"totalSpace": 1_000_000_000u64, "surplusSpace": 1}), "1502"),
            (Value::Null, "1501"),
        ] {
            assert_eq!(
                refused(s.handle(Command::ParkSpace, &envelope("parkSpace", &now(), data.clone()))).0,
                code,
                "{data}"
            );
        }
    }

    #[test]
    fn a_resent_batch_is_data_that_exists() {
        let s = sim();
        let accepted = || match s.handle(Command::CarInOut, &envelope("carInOut", &now(), json!([car()]))) {
            Ok(accepted) => accepted,
            Err((r, _)) => panic!("{r:?}"),
        };
        let (first, _) = s.accept(Command::CarInOut, accepted());
        let (second, _) = s.accept(Command::CarInOut, accepted());
        assert_eq!((first.body["code"].clone(), second.body["code"].clone()), (json!("0"), json!("1004")));
        assert_eq!(s.control.records_for("carInOut").len(), 1);
        s.accept(Command::CarInOut, accepted());
        assert_eq!(s.control.received_again(), 1, "one record received again, twice");
    }
}

//! The zvcms simulator: `POST /api/v2` with `coupon.user-coupon-list`, as strict as the
//! spec allows.
//!
//! Checks, in order: the envelope's fields and types, `OpenId`/`GrantCode`, the `Token`
//! (recomputed with the configured secret key and signing variant by the simulator's own
//! implementation of the published scheme in [`signature`], never the adapter's), the
//! `Timestamp` (at most 300 s off), the `Nonce` (a positive integer never seen before),
//! the `Action` and the `Params`. Refusals use the `{status: false, code, message}` form with these codes
//! (the vendor's global table is not public; they are the adapter's defaults):
//! 40001 wrong signature, 40002 unknown OpenId or GrantCode, 40003 stale timestamp,
//! 40004 reused nonce, 40005 malformed request.
//!
//! Members get a deterministic coupon list from the last digit `d` of their id: `d`
//! coupons cycling usable, used, expired; `0` means no coupons; `9` an unknown member
//! (the spec's business refusal, `status` true with code 20001 "查询的信息不存在").
//! Accepted queries are recorded under the endpoint `coupon.user-coupon-list` with their
//! `multi_store_sn` as the lot (zvcms requests carry no lot code).

mod signature;

use crate::config::{Bindings, ConfigError};
use crate::secret::Secret;
use crate::sim::{Control, Failure, Injected, SimServer};
use crate::vendors::zvcms::config::AmountUnit;
use crate::vendors::zvcms::sign::KeyStyle;
use crate::vendors::zvcms::{Account, Config, ACTION};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use bytes::Bytes;
use serde_json::{json, Map, Value};
use signature::{Scheme, Stamp};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Largest clock difference accepted, in seconds.
pub const MAX_SKEW_SECS: i64 = 300;
/// Wrong `Token`.
pub const CODE_BAD_SIGNATURE: u32 = 40001;
/// Unknown `OpenId` or `GrantCode`.
pub const CODE_BAD_ACCOUNT: u32 = 40002;
/// `Timestamp` more than [`MAX_SKEW_SECS`] off.
pub const CODE_STALE_TIMESTAMP: u32 = 40003;
/// `Nonce` already used.
pub const CODE_NONCE_REUSED: u32 = 40004;
/// Missing or malformed field, unknown `Action`, bad `Params`.
pub const CODE_BAD_REQUEST: u32 = 40005;
/// Business refusal: the member is unknown.
pub const CODE_NOT_FOUND: u32 = 20001;

/// Params keys the spec lists.
const PARAM_KEYS: [&str; 7] = ["user_id", "from_pay_page", "shopping", "checked", "expire", "amount", "multi_store_sn"];

/// A zvcms platform for one account.
pub struct Simulator {
    state: Arc<SimState>,
}

/// The account as the platform stores it: plain values, checked by [`signature`].
struct Keys {
    open_id: String,
    grant_code: Secret,
    secret_key: Secret,
    scheme: Scheme,
}

impl Keys {
    fn of(account: &Account) -> Keys {
        Keys {
            open_id: account.open_id.clone(),
            grant_code: account.grant_code.clone(),
            secret_key: account.secret_key.clone(),
            scheme: Scheme { pascal: account.style == KeyStyle::Pascal, sign_action: account.sign_action },
        }
    }
}

struct SimState {
    account: Keys,
    amount_unit: AmountUnit,
    control: Arc<Control>,
    /// Nonce → when it was seen (Unix seconds).
    nonces: Mutex<HashMap<String, i64>>,
}

/// A refusal in the vendor's form.
#[derive(Debug)]
struct Refusal {
    status: bool,
    code: u32,
    message: String,
}

impl Refusal {
    fn system(code: u32, message: impl Into<String>) -> Self {
        Refusal { status: false, code, message: message.into() }
    }
    fn bad(message: impl Into<String>) -> Self {
        Refusal::system(CODE_BAD_REQUEST, message)
    }
}

impl Simulator {
    /// A simulator for `account` (its `OpenId`, secrets and signing variant); `amount`
    /// filters read in yuan.
    pub fn new(account: Account) -> Simulator {
        Simulator::with_amount_unit(account, AmountUnit::Yuan)
    }

    /// A simulator reading `amount` filters in `unit`.
    pub fn with_amount_unit(account: Account, unit: AmountUnit) -> Simulator {
        let state = SimState {
            account: Keys::of(&account),
            amount_unit: unit,
            control: Control::new(),
            nonces: Mutex::new(HashMap::new()),
        };
        Simulator { state: Arc::new(state) }
    }

    /// The simulator of a `[sinks.zvcms]` table, knowing the same secrets as the adapter.
    pub fn from_config(cfg: &Config, _bindings: &Bindings, base_dir: &Path) -> Result<Simulator, ConfigError> {
        let account = Account::from_config(cfg, "zvcms simulator", |r, key| {
            r.resolve(base_dir)
                .map_err(|source| ConfigError::Secret { context: format!("zvcms simulator {key}"), source })
        })?;
        Ok(Simulator::with_amount_unit(account, cfg.amount_unit))
    }

    /// Its faults and records (also reachable from the running server).
    pub fn control(&self) -> Arc<Control> {
        self.state.control.clone()
    }

    /// Serves on `addr` (port 0 picks a free port).
    pub async fn start(self, addr: SocketAddr) -> std::io::Result<SimServer> {
        let control = self.control();
        let router = Router::new().route("/api/v2", post(handle)).with_state(self.state);
        SimServer::start(addr, router, control).await
    }
}

async fn handle(State(sim): State<Arc<SimState>>, body: Bytes) -> Response {
    if let Some(injected) = sim.control.before().await {
        return sim.injected(injected);
    }
    match sim.answer(&body) {
        Ok(reply) => {
            sim.control.log_request(ACTION, 200, Some("0"), 1);
            Json(reply).into_response()
        }
        Err(refusal) => {
            sim.control.log_request(ACTION, 200, Some(&refusal.code.to_string()), 1);
            Json(json!({"status": refusal.status, "code": refusal.code, "message": refusal.message})).into_response()
        }
    }
}

impl SimState {
    fn injected(&self, injected: Injected) -> Response {
        match injected {
            Injected::Throttle(secs) => {
                self.control.log_request(ACTION, 429, None, 0);
                let body = Json(json!({"status": false, "code": 429, "message": "请求过于频繁"}));
                (StatusCode::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, secs.to_string())], body).into_response()
            }
            Injected::Fail(Failure::Status(status)) => {
                self.control.log_request(ACTION, status, None, 0);
                let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                (code, Json(json!({"status": false, "code": status, "message": "服务器错误"}))).into_response()
            }
            Injected::Fail(Failure::Code(code)) => {
                self.control.log_request(ACTION, 200, Some(&code), 0);
                Json(json!({"status": false, "code": code, "message": "系统繁忙"})).into_response()
            }
        }
    }

    /// Checks one request and lists the member's coupons, or says why not.
    fn answer(&self, body: &[u8]) -> Result<Value, Refusal> {
        let request: Map<String, Value> =
            serde_json::from_slice(body).map_err(|_| Refusal::bad("请求体必须是JSON对象"))?;
        let field = |key: &str| -> Result<&str, Refusal> {
            request.get(key).and_then(Value::as_str).ok_or_else(|| Refusal::bad(format!("缺少参数或类型错误: {key}")))
        };
        let (open_id, grant_code, timestamp) = (field("OpenId")?, field("GrantCode")?, field("Timestamp")?);
        let (nonce, token, action) = (field("Nonce")?, field("Token")?, field("Action")?);
        let params =
            request.get("Params").and_then(Value::as_object).ok_or_else(|| Refusal::bad("缺少参数: Params"))?;
        if open_id != self.account.open_id || grant_code != self.account.grant_code.expose() {
            return Err(Refusal::system(CODE_BAD_ACCOUNT, "OpenId或GrantCode无效"));
        }
        self.check_signature(&Stamp { open_id, grant_code, timestamp, nonce, action }, token)?;
        if action != ACTION {
            return Err(Refusal::bad(format!("未知的接口方法: {}", action.chars().take(64).collect::<String>())));
        }
        let query = Query::parse(params, self.amount_unit)?;
        let coupons = coupons_of(&query)?;
        self.control.record(ACTION, &query.store, Value::Object(params.clone()));
        Ok(json!({"status": "true", "code": "0", "message": "成功", "data": {"item_list": coupons}}))
    }

    /// Token, then freshness, then nonce: a replayed request is caught by its nonce.
    fn check_signature(&self, stamp: &Stamp<'_>, token: &str) -> Result<(), Refusal> {
        let (timestamp, nonce) = (stamp.timestamp, stamp.nonce);
        let expected = signature::expected(self.account.secret_key.expose().as_bytes(), self.account.scheme, stamp);
        if token != expected {
            return Err(Refusal::system(CODE_BAD_SIGNATURE, "签名错误"));
        }
        let ts: i64 = digits(timestamp).ok_or_else(|| Refusal::bad("Timestamp必须是秒级时间戳"))?;
        let now = crate::sim::now_millis() / 1000;
        if (now - ts).abs() > MAX_SKEW_SECS {
            return Err(Refusal::system(CODE_STALE_TIMESTAMP, "时间戳已过期"));
        }
        // Plain digits of a positive 64-bit integer: lotbridge's nonces use 63 bits.
        let positive = nonce.bytes().all(|b| b.is_ascii_digit()) && nonce.parse::<u64>().is_ok_and(|n| n > 0);
        if !positive {
            return Err(Refusal::bad("Nonce必须是正整数"));
        }
        let mut seen = self.nonces.lock().unwrap_or_else(|p| p.into_inner());
        // A nonce older than twice the window can no longer come with an accepted timestamp.
        seen.retain(|_, at| now - *at <= 2 * MAX_SKEW_SECS);
        if seen.insert(nonce.to_string(), now).is_some() {
            return Err(Refusal::system(CODE_NONCE_REUSED, "Nonce重复"));
        }
        Ok(())
    }
}

/// Plain decimal digits (no sign, no spaces), small enough for an `i64`.
fn digits(text: &str) -> Option<i64> {
    let plain = !text.is_empty() && text.len() <= 18 && text.bytes().all(|b| b.is_ascii_digit());
    if plain {
        text.parse().ok()
    } else {
        None
    }
}

/// A validated `Params`.
#[derive(Debug)]
struct Query {
    user_id: u64,
    /// `canuse`, `used` or `expired`.
    expire: Option<String>,
    /// The order amount in fen.
    amount_fen: Option<u64>,
    store: String,
}

impl Query {
    fn parse(params: &Map<String, Value>, unit: AmountUnit) -> Result<Query, Refusal> {
        if let Some(unknown) = params.keys().find(|k| !PARAM_KEYS.contains(&k.as_str())) {
            return Err(Refusal::bad(format!("未知的业务参数: {}", unknown.chars().take(32).collect::<String>())));
        }
        let user_id = int(params, "user_id")?.filter(|n| *n > 0).ok_or_else(|| Refusal::bad("参数错误: user_id"))?;
        flag(params, "from_pay_page")?;
        let shopping = flag(params, "shopping")? == Some(1);
        let checked = text(params, "checked")?;
        if shopping {
            check_basket(checked)?;
        }
        let expire = text(params, "expire")?.filter(|e| !e.is_empty());
        if expire.is_some_and(|e| !["used", "canuse", "expired"].contains(&e)) {
            return Err(Refusal::bad("参数错误: expire"));
        }
        let amount_fen = int(params, "amount")?.map(|a| unit.to_fen(a));
        let store = text(params, "multi_store_sn")?.unwrap_or_default();
        if store.chars().count() > 64 {
            return Err(Refusal::bad("参数错误: multi_store_sn"));
        }
        // Filters apply to plain listings only (shopping = 0), as the spec says.
        let (expire, amount_fen) = if shopping { (Some("canuse"), None) } else { (expire, amount_fen) };
        Ok(Query { user_id, expire: expire.map(str::to_string), amount_fen, store: store.to_string() })
    }
}

/// An optional integer: absent, `null` or `""` is none; digits as a string or a number.
fn int(params: &Map<String, Value>, key: &str) -> Result<Option<u64>, Refusal> {
    let wrong = || Refusal::bad(format!("参数类型错误: {key}"));
    match params.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => digits(s).and_then(|n| u64::try_from(n).ok()).map(Some).ok_or_else(wrong),
        Some(Value::Number(n)) => n.as_u64().map(Some).ok_or_else(wrong),
        Some(_) => Err(wrong()),
    }
}

fn flag(params: &Map<String, Value>, key: &str) -> Result<Option<u64>, Refusal> {
    match int(params, key)? {
        Some(n) if n > 1 => Err(Refusal::bad(format!("参数错误: {key} 只能是0或1"))),
        other => Ok(other),
    }
}

fn text<'a>(params: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, Refusal> {
    match params.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(Refusal::bad(format!("参数类型错误: {key} 必须是字符串"))),
    }
}

/// `checked` (required when `shopping` is 1): a JSON list of `{bar_code, offline_price, buy_num}`.
fn check_basket(checked: Option<&str>) -> Result<(), Refusal> {
    let wrong = || Refusal::bad("参数错误: shopping为1时必须传checked");
    let items: Vec<Value> = serde_json::from_str(checked.ok_or_else(wrong)?).map_err(|_| wrong())?;
    let good = |item: &Value| {
        item.get("bar_code").is_some_and(Value::is_string)
            && item.get("offline_price").is_some_and(Value::is_number)
            && item.get("buy_num").is_some_and(Value::is_u64)
    };
    if items.is_empty() || !items.iter().all(good) {
        return Err(wrong());
    }
    Ok(())
}

/// 2024-01-01 00:00:00 UTC+8.
const VALID_FROM: i64 = 1_704_038_400;
/// 2099-12-31 23:59:59 UTC+8.
const VALID_UNTIL: i64 = 4_102_415_999;
/// The spec example's expired period, 2019-03-19 to 2019-03-21 UTC+8.
const EXPIRED: (i64, i64) = (1_552_924_800, 1_553_183_999);

/// The member's coupons after the filters, or the business refusal for unknown members.
fn coupons_of(query: &Query) -> Result<Vec<Value>, Refusal> {
    let count = query.user_id % 10;
    if count == 9 {
        return Err(Refusal { status: true, code: CODE_NOT_FOUND, message: "查询的信息不存在".into() });
    }
    let wanted = |i: u64| match query.expire.as_deref() {
        Some("canuse") => i % 3 == 0,
        Some("used") => i % 3 == 1,
        Some("expired") => i % 3 == 2,
        _ => true,
    };
    let affordable = |i: u64| query.amount_fen.is_none_or(|fen| min_amount_use(i) <= fen);
    Ok((0..count).filter(|i| wanted(*i) && affordable(*i)).map(|i| coupon(query.user_id, i)).collect())
}

/// Coupon `i` alternates a 100-yuan-minimum amount coupon and an unconditional discount.
fn min_amount_use(i: u64) -> u64 {
    if i % 2 == 0 {
        10_000
    } else {
        0
    }
}

/// Coupon `i` of a member: ids and amounts as numbers, times as strings, as the spec's table.
fn coupon(member: u64, i: u64) -> Value {
    let id = (member % 1_000_000) * 100 + i + 1;
    let (status, (start, end), date_time) = match i % 3 {
        0 => (0, (VALID_FROM, VALID_UNTIL), "未使用"),
        1 => (1, (VALID_FROM, VALID_UNTIL), "已使用"),
        _ => (0, EXPIRED, "已过期"),
    };
    let (title, coupon_type, desc) =
        if i % 2 == 0 { ("停车满100元减10元", 0, "停车费满100元可用") } else { ("停车9折券", 1, "") };
    let definition = 100 + i % 2;
    json!({
        "id": id, "coupon_id": definition, "start_at": start.to_string(), "end_at": end.to_string(),
        "status": status, "verify_code": format!("ZV{id:08}"), "is_lock": if i == 3 { 2 } else { 1 },
        "date_time": date_time,
        "coupon": {"id": definition, "title": title, "coupon_type": coupon_type,
                   "min_amount_use": min_amount_use(i), "desc": desc},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    fn parse(value: Value) -> Result<Query, Refusal> {
        Query::parse(&params(value), AmountUnit::Yuan)
    }

    fn refused(value: Value) -> String {
        let refusal = parse(value).unwrap_err();
        assert_eq!((refusal.status, refusal.code), (false, CODE_BAD_REQUEST));
        refusal.message
    }

    #[test]
    fn params_are_checked() {
        assert!(refused(json!({"user_id": "12", "colour": "red"})).contains("colour"));
        assert!(refused(json!({"user_id": "abc"})).contains("user_id"));
        assert!(refused(json!({"user_id": ""})).contains("user_id"));
        assert!(refused(json!({"user_id": 12, "shopping": "2"})).contains("shopping"));
        assert!(refused(json!({"user_id": 12, "shopping": 1})).contains("checked"));
        assert!(refused(json!({"user_id": 12, "expire": "soon"})).contains("expire"));
        assert!(refused(json!({"user_id": 12, "amount": "-1"})).contains("amount"));
        assert!(refused(json!({"user_id": 12, "multi_store_sn": 7})).contains("multi_store_sn"));
    }

    #[test]
    fn spec_basket_and_typed_params_are_accepted() {
        let checked = r#"[{"bar_code":"P5C503FB51B4843301","offline_price":120,"buy_num":2},{"bar_code":"P5C503FB51C2F96986","offline_price":20,"buy_num":2}]"#;
        let q = parse(json!({"user_id": "12", "shopping": "1", "checked": checked})).unwrap();
        assert_eq!(q.expire.as_deref(), Some("canuse"));
        let q = parse(json!({"user_id": 12, "amount": 150, "expire": "used", "multi_store_sn": "S-1"})).unwrap();
        assert_eq!((q.user_id, q.amount_fen, q.store.as_str()), (12, Some(15_000), "S-1"));
    }

    fn listed(value: Value) -> Vec<Value> {
        coupons_of(&parse(value).unwrap()).unwrap()
    }

    #[test]
    fn coupons_follow_the_member_id() {
        assert_eq!(listed(json!({"user_id": "1003"})).len(), 3);
        assert!(listed(json!({"user_id": "1000"})).is_empty());
        let unknown = coupons_of(&parse(json!({"user_id": "1009"})).unwrap()).unwrap_err();
        assert_eq!((unknown.status, unknown.code), (true, CODE_NOT_FOUND));
        let used = listed(json!({"user_id": "1008", "expire": "used"}));
        assert!(used.len() == 3 && used.iter().all(|c| c["status"] == 1), "{used:?}");
        let under_100 = listed(json!({"user_id": "1003", "amount": "99"}));
        assert_eq!(under_100.len(), 1);
        assert_eq!(under_100[0]["coupon"]["min_amount_use"], 0);
    }
}

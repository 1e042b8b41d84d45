//! Reading zvcms replies `{status, code, message, data}` into a [`Verdict`] (pure).
//!
//! The spec shows three forms: success (`status` true, `code` 0, a coupon list), a business
//! refusal (`status` true, a non-zero code, e.g. "查询的信息不存在") and a system error
//! (`status` false, a code from a global table that is not public). `status` arrives as a
//! bool or as `"true"`/`"false"`, `code` and every number as a string or a number.
//!
//! A coupon's state is decided from the reply's own fields, never from the clock, so the
//! same reply always classifies the same way: `status` 1 is `used`; otherwise a `date_time`
//! saying 过期 (expired) is `expired`; otherwise `status` 0 is `usable`; anything else is
//! `unknown`.

use super::config::BusinessError;
use crate::event::ListedCoupon;
use crate::vendors::{body_excerpt, classify_status, code_text, HttpResponse, RetryReason, Verdict};
use chrono::{DateTime, Datelike, FixedOffset, NaiveDateTime, TimeZone};
use serde_json::{Map, Value};

/// How one sink reads the codes it gets.
#[derive(Debug, Clone)]
pub struct CodeTable {
    /// What a business refusal becomes.
    pub business: BusinessError,
    /// `status` false codes that are configuration problems.
    pub reject: Vec<String>,
    /// `status` false codes that ask for a fresh timestamp or nonce.
    pub stale: Vec<String>,
}

/// Longest vendor message kept in a reason or detail, in characters.
const MESSAGE_CHARS: usize = 120;

impl CodeTable {
    /// Classifies one response.
    pub fn classify(&self, response: &HttpResponse) -> Verdict {
        // No token to refresh: a 401 means the account itself is refused.
        if response.status == 401 {
            return reject(format!("HTTP 401: {}: check zvcms open_id and grant_code", body_excerpt(&response.body)));
        }
        if let Some(verdict) = classify_status(response) {
            return verdict;
        }
        match serde_json::from_slice::<Value>(&response.body) {
            Ok(Value::Object(reply)) => self.classify_reply(&reply),
            _ => unreadable(format!("unparseable reply: {}", body_excerpt(&response.body))),
        }
    }

    fn classify_reply(&self, reply: &Map<String, Value>) -> Verdict {
        let Some(ok) = flag(reply.get("status")) else {
            return unreadable("reply without a readable status".into());
        };
        // A success reply may leave the code out: `status` is the primary flag.
        let code = code_text(reply.get("code")).unwrap_or_else(|| if ok { "0".into() } else { "?".into() });
        let message = message(reply);
        match (ok, code.as_str()) {
            (true, "0") => coupons(reply.get("data")),
            (true, _) => self.business_refusal(&code, &message),
            (false, _) => self.system_error(&code, &message),
        }
    }

    fn business_refusal(&self, code: &str, message: &str) -> Verdict {
        match self.business {
            BusinessError::EmptyList => Verdict::Answered(Vec::new()),
            BusinessError::Reject => Verdict::Reject {
                reason: format!("zvcms code {}: {message}", body_excerpt(code.as_bytes())),
                per_record: true,
            },
        }
    }

    fn system_error(&self, code: &str, message: &str) -> Verdict {
        // The code is quoted cut short like the message: a reason goes into logs and headers.
        let text = format!("zvcms code {}: {message}", body_excerpt(code.as_bytes()));
        if self.reject.iter().any(|c| c == code) {
            return reject(format!("{text}: check zvcms open_id, grant_code, secret_key and the signing options"));
        }
        let reason =
            if self.stale.iter().any(|c| c == code) { RetryReason::StaleSignature } else { RetryReason::VendorError };
        Verdict::Retry { reason, after: None, detail: text }
    }
}

fn reject(reason: String) -> Verdict {
    Verdict::Reject { reason, per_record: false }
}

/// A 200 whose body cannot be read: most likely a proxy or a half-deployed server.
fn unreadable(detail: String) -> Verdict {
    Verdict::Retry { reason: RetryReason::VendorError, after: None, detail }
}

fn message(reply: &Map<String, Value>) -> String {
    let text = code_text(reply.get("message")).unwrap_or_default();
    text.chars().filter(|c| !c.is_control()).take(MESSAGE_CHARS).collect()
}

/// `true`, `"true"`, `1` or `"1"` (and their opposites).
fn flag(value: Option<&Value>) -> Option<bool> {
    match code_text(value)?.to_ascii_lowercase().as_str() {
        "true" | "1" => Some(true),
        "false" | "0" => Some(false),
        _ => None,
    }
}

/// The coupons of a success reply; `data` may be an object, or `[]`/`null` when empty
/// (PHP encodes an empty map as a list), and `item_list` a list or a map keyed "0", "1"...
fn coupons(data: Option<&Value>) -> Verdict {
    let items = match data.and_then(|d| d.get("item_list")) {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items.iter().collect(),
        Some(Value::Object(map)) => keyed_items(map),
        Some(_) => return unreadable("data.item_list is neither a list nor a map".into()),
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        match item.as_object() {
            Some(item) => out.push(listed(item)),
            None => return unreadable(format!("data.item_list[{i}] is not an object")),
        }
    }
    Verdict::Answered(out)
}

fn keyed_items(map: &Map<String, Value>) -> Vec<&Value> {
    let mut entries: Vec<(&String, &Value)> = map.iter().collect();
    entries.sort_by_key(|(k, _)| (k.parse::<u64>().unwrap_or(u64::MAX), k.to_string()));
    entries.into_iter().map(|(_, v)| v).collect()
}

/// One reply item, normalized.
fn listed(item: &Map<String, Value>) -> ListedCoupon {
    let empty = Map::new();
    let coupon = item.get("coupon").and_then(Value::as_object).unwrap_or(&empty);
    ListedCoupon {
        id: text(item.get("id")),
        coupon_id: text(item.get("coupon_id")),
        definition_id: text(coupon.get("id")),
        title: text(coupon.get("title")),
        description: text(coupon.get("desc")),
        kind: kind(int(coupon.get("coupon_type"))).into(),
        min_amount_cents: int(coupon.get("min_amount_use")).and_then(|n| u64::try_from(n).ok()).unwrap_or(0),
        valid_from: time(item.get("start_at")),
        valid_until: time(item.get("end_at")),
        status: state(int(item.get("status")), &text(item.get("date_time"))).into(),
        verify_code: Some(text(item.get("verify_code"))).filter(|c| !c.is_empty()),
        locked: int(item.get("is_lock")) == Some(2),
    }
}

fn text(value: Option<&Value>) -> String {
    match value {
        Some(Value::Null) | None => String::new(),
        other => code_text(other).unwrap_or_default(),
    }
}

fn int(value: Option<&Value>) -> Option<i64> {
    text(value).parse().ok()
}

/// `coupon_type`: 0 a fixed amount, 1 a discount.
fn kind(coupon_type: Option<i64>) -> &'static str {
    match coupon_type {
        Some(0) => "amount",
        Some(1) => "discount",
        _ => "unknown",
    }
}

fn state(status: Option<i64>, date_time: &str) -> &'static str {
    match status {
        Some(1) => "used",
        _ if date_time.contains("过期") => "expired",
        Some(0) => "usable",
        _ => "unknown",
    }
}

/// The zone the platform's dates are in (UTC+8; checked when compiling).
const CHINA: FixedOffset = match FixedOffset::east_opt(8 * 3600) {
    Some(offset) => offset,
    None => panic!("UTC+8 is a valid offset"),
};

/// Unix seconds (the spec's form) or `yyyy-MM-dd HH:mm:ss` China time → RFC 3339 in UTC+8;
/// `None` outside the years RFC 3339 can write (0000-9999), which no coupon means.
fn time(value: Option<&Value>) -> Option<String> {
    let text = text(value);
    let at = match text.parse::<i64>() {
        Ok(secs) => DateTime::from_timestamp(secs, 0)?.with_timezone(&CHINA),
        Err(_) => {
            let naive = NaiveDateTime::parse_from_str(&text, "%Y-%m-%d %H:%M:%S").ok()?;
            CHINA.from_local_datetime(&naive).single()?
        }
    };
    (0..=9999).contains(&at.year()).then(|| at.to_rfc3339())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::time::Duration;

    const SPEC_SUCCESS: &str = r#"{ "status": "true", "code": "0", "message": "说明", "data": { "item_list": [ { "id": "", "coupon_id": "", "start_at": "1552924800", "end_at": "1553183999", "status": "", "verify_code": "", "is_lock": "", "date_time": "已过期", "coupon": { "id": "", "title": "", "coupon_type": "", "min_amount_use": "", "desc": "" } } ] } }"#;
    const SPEC_BUSINESS: &str =
        r#"{ "status": true, "code": "异常编码,根据不同的业务返回编码", "message": "异常说明:查询的信息不存在" }"#;
    const SPEC_SYSTEM: &str =
        r#"{ "status": false, "code": "系统错误编码:详见全局返回编码", "message": "系统错误说明" }"#;

    fn table(business: BusinessError) -> CodeTable {
        CodeTable {
            business,
            reject: super::super::config::default_reject_codes(),
            stale: super::super::config::default_stale_codes(),
        }
    }

    fn classify(status: u16, body: &str) -> Verdict {
        let response = HttpResponse {
            status,
            retry_after: Some(Duration::from_secs(9)),
            body: Bytes::copy_from_slice(body.as_bytes()),
        };
        table(BusinessError::EmptyList).classify(&response)
    }

    fn answered(body: &str) -> Vec<ListedCoupon> {
        match classify(200, body) {
            Verdict::Answered(list) => list,
            other => panic!("not answered: {other:?}"),
        }
    }

    fn retry_reason(verdict: Verdict) -> RetryReason {
        match verdict {
            Verdict::Retry { reason, .. } => reason,
            other => panic!("not a retry: {other:?}"),
        }
    }

    #[test]
    fn spec_success_example() {
        let expected = ListedCoupon {
            id: String::new(),
            coupon_id: String::new(),
            definition_id: String::new(),
            title: String::new(),
            description: String::new(),
            kind: "unknown".into(),
            min_amount_cents: 0,
            valid_from: Some("2019-03-19T00:00:00+08:00".into()),
            valid_until: Some("2019-03-21T23:59:59+08:00".into()),
            status: "expired".into(),
            verify_code: None,
            locked: false,
        };
        assert_eq!(answered(SPEC_SUCCESS), vec![expected]);
    }

    #[test]
    fn typed_reply_is_normalized() {
        let body = r#"{"status": true, "code": 0, "message": "ok", "data": {"item_list": [
            {"id": 7001, "coupon_id": 12, "start_at": 1700000000, "end_at": "2030-01-01 00:00:00", "status": 0,
             "verify_code": "V-9", "is_lock": 2, "date_time": "未使用",
             "coupon": {"id": 1200, "title": "满100减10", "coupon_type": 0, "min_amount_use": 10000, "desc": "周末可用"}},
            {"id": "7002", "coupon_id": "13", "status": "1", "is_lock": "1", "coupon": {"coupon_type": "1"}}]}}"#;
        let list = answered(body);
        assert_eq!(list.len(), 2);
        let first = &list[0];
        assert_eq!((first.id.as_str(), first.coupon_id.as_str(), first.title.as_str()), ("7001", "12", "满100减10"));
        assert_eq!((first.kind.as_str(), first.min_amount_cents, first.status.as_str()), ("amount", 10_000, "usable"));
        // `coupon.id` and `coupon.desc` are carried as sent, even when the id differs.
        assert_eq!((first.definition_id.as_str(), first.description.as_str()), ("1200", "周末可用"));
        assert_eq!(first.valid_from.as_deref(), Some("2023-11-15T06:13:20+08:00"));
        assert_eq!(first.valid_until.as_deref(), Some("2030-01-01T00:00:00+08:00"));
        assert_eq!((first.verify_code.as_deref(), first.locked), (Some("V-9"), true));
        let second = &list[1];
        assert_eq!((second.kind.as_str(), second.status.as_str(), second.locked), ("discount", "used", false));
        assert_eq!((second.valid_from.as_deref(), second.verify_code.as_deref()), (None, None));
        assert_eq!((second.definition_id.as_str(), second.description.as_str()), ("", ""));
    }

    #[test]
    fn empty_and_keyed_lists() {
        assert!(answered(r#"{"status": "true", "code": "0", "data": []}"#).is_empty());
        assert!(answered(r#"{"status": true, "code": 0, "data": null}"#).is_empty());
        assert!(answered(r#"{"status": true, "data": {"item_list": []}}"#).is_empty());
        let keyed = r#"{"status": true, "code": "0", "data": {"item_list": {"1": {"id": "b"}, "0": {"id": "a"}}}}"#;
        let ids: Vec<String> = answered(keyed).into_iter().map(|c| c.id).collect();
        assert_eq!(ids, ["a", "b"]);
    }

    #[test]
    fn spec_business_refusal() {
        assert_eq!(classify(200, SPEC_BUSINESS), Verdict::Answered(Vec::new()));
        let response =
            HttpResponse { status: 200, retry_after: None, body: Bytes::from_static(SPEC_BUSINESS.as_bytes()) };
        match table(BusinessError::Reject).classify(&response) {
            Verdict::Reject { reason, per_record } => {
                assert!(per_record);
                assert!(reason.contains("查询的信息不存在"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn system_errors() {
        assert_eq!(retry_reason(classify(200, SPEC_SYSTEM)), RetryReason::VendorError);
        assert_eq!(retry_reason(classify(200, r#"{"status": "false", "code": 50000}"#)), RetryReason::VendorError);
        for stale in ["40003", "40004"] {
            let body = format!(r#"{{"status": false, "code": {stale}, "message": "时间戳过期"}}"#);
            assert_eq!(retry_reason(classify(200, &body)), RetryReason::StaleSignature, "{stale}");
        }
        for config in ["40001", "40002", "40005"] {
            let body = format!(r#"{{"status": false, "code": "{config}", "message": "签名错误"}}"#);
            match classify(200, &body) {
                Verdict::Reject { reason, per_record: false } => {
                    assert!(reason.contains(config) && reason.contains("签名错误"), "{reason}")
                }
                other => panic!("{config}: {other:?}"),
            }
        }
    }

    #[test]
    fn http_statuses() {
        assert!(matches!(classify(401, "{}"), Verdict::Reject { per_record: false, .. }));
        assert_eq!(retry_reason(classify(503, "busy")), RetryReason::ServerError);
        assert_eq!(classify(429, ""), Verdict::Busy { after: Some(Duration::from_secs(9)) });
        assert!(matches!(classify(404, "no"), Verdict::Hold { .. }), "a wrong route holds the sink");
    }

    #[test]
    fn unreadable_replies_are_retried() {
        for body in ["<html>502</html>", "", "[]", r#"{"code": 0}"#, r#"{"status": "maybe"}"#] {
            assert_eq!(retry_reason(classify(200, body)), RetryReason::VendorError, "{body}");
        }
        let bad_item = r#"{"status": true, "code": 0, "data": {"item_list": [1]}}"#;
        assert_eq!(retry_reason(classify(200, bad_item)), RetryReason::VendorError);
        let bad_list = r#"{"status": true, "code": 0, "data": {"item_list": "none"}}"#;
        assert_eq!(retry_reason(classify(200, bad_list)), RetryReason::VendorError);
    }

    /// Found by the fuzz target's bound on reasons (fuzz/regressions/zvcms_response/): a code
    /// as long as the reply went whole into the reason, then into logs and dead letters.
    #[test]
    fn a_long_code_is_cut_short() {
        let code = "9".repeat(700);
        let system = classify(200, &format!(r#"{{"status":false,"code":"{code}","message":"x"}}"#));
        let Verdict::Retry { detail, .. } = system else { panic!("{system:?}") };
        assert!(detail.chars().count() < 400 && detail.starts_with("zvcms code 9999"), "{detail}");
        let response = HttpResponse {
            status: 200,
            retry_after: None,
            body: Bytes::from(format!(r#"{{"status":true,"code":"{code}","message":"x"}}"#)),
        };
        let Verdict::Reject { reason, .. } = table(BusinessError::Reject).classify(&response) else { panic!() };
        assert!(reason.chars().count() < 400, "{reason}");
    }

    /// Found by the zvcms fuzz target (fuzz/regressions/zvcms_response/): Unix seconds far
    /// outside 0000-9999 gave dates like `-1199-02-15T22:13:21+08:00`, which are not RFC 3339,
    /// into the results record.
    #[test]
    fn dates_outside_rfc3339_years_are_unknown() {
        let body = r#"{"status":true,"code":0,"data":{"item_list":[
            {"id":"1","start_at":"99999999999999","end_at":"-99999999999"},
            {"id":"2","start_at":"0","end_at":"9999-12-31 23:59:59"}]}}"#;
        let coupons = answered(body);
        assert_eq!((coupons[0].valid_from.as_deref(), coupons[0].valid_until.as_deref()), (None, None));
        assert_eq!(coupons[1].valid_from.as_deref(), Some("1970-01-01T08:00:00+08:00"));
        assert_eq!(coupons[1].valid_until.as_deref(), Some("9999-12-31T23:59:59+08:00"));
    }
}

//! The platform's return codes and what each means for delivery.
//!
//! Replies are `{"code","msg","data"}` inside HTTP 200. Success is `"200"` per the spec's
//! table and `"0"` per its examples and the deployed family, so both count. `1004` (data
//! already exists) means the platform has the record: a redelivery after a lost reply.

use crate::vendors::{body_excerpt, classify_status, code_text, HttpResponse, RetryReason, Verdict};

/// What lotbridge does with a code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Delivered,
    Duplicate,
    /// The signature or its `ts` was refused: re-stamp, re-sign, retry (bounded by the engine).
    Resign,
    Retry,
    /// A parameter error: in a batch, maybe only one record is bad.
    RejectRecords,
    Reject,
}

/// Every code of the spec's table: (code, the spec's meaning, action). Codes 1005-1014
/// answer the platform's downlink queries and should never come back to an upload;
/// if they do, retrying cannot help.
const CODES: [(&str, &str, Action); 17] = [
    ("0", "成功", Action::Delivered),
    ("200", "成功", Action::Delivered),
    ("1000", "平台无车场信息 (unknown lotCode)", Action::Reject),
    ("1001", "指令不能为空 (empty cmd)", Action::Reject),
    ("1002", "校验码错误 (auth or ts refused)", Action::Resign),
    ("1003", "上报失败 (report failed)", Action::Retry),
    ("1004", "数据已经存在 (data already exists)", Action::Duplicate),
    ("1005", "无最新指令 (no pending command)", Action::Reject),
    ("1006", "查无数据 (no data found)", Action::Reject),
    ("1007", "车场无返回结果 (lot returned nothing)", Action::Reject),
    ("1008", "未找到指令 (unknown cmd)", Action::Reject),
    ("1014", "数据不存在 (data does not exist)", Action::Reject),
    ("1107", "场端处理异常 (lot-side processing error)", Action::Retry),
    ("1501", "参数不完整 (missing parameters)", Action::RejectRecords),
    ("1502", "参数不符合规定值 (parameter out of spec)", Action::RejectRecords),
    ("2000", "系统异常 (system error)", Action::Retry),
    ("2001", "业务异常 (business error)", Action::Reject),
];

/// The spec's meaning of `code`, for messages (`None` for codes the spec does not list).
pub fn meaning(code: &str) -> Option<&'static str> {
    CODES.iter().find(|(c, _, _)| *c == code).map(|(_, m, _)| *m)
}

/// Classifies one reply; `batching` says whether the request may hold several records.
pub fn classify(response: &HttpResponse, batching: bool) -> Verdict {
    if let Some(verdict) = classify_status(response) {
        return verdict;
    }
    let Some((code, msg)) = parse_reply(&response.body) else {
        return Verdict::Retry {
            reason: RetryReason::VendorError,
            after: response.retry_after,
            detail: format!("unreadable reply: {}", body_excerpt(&response.body)),
        };
    };
    let action = CODES.iter().find(|(c, _, _)| *c == code).map_or(Action::Reject, |(_, _, a)| *a);
    let detail = describe(&code, &msg);
    match action {
        Action::Delivered => Verdict::Delivered,
        Action::Duplicate => Verdict::Duplicate,
        Action::Resign => Verdict::Retry { reason: RetryReason::StaleSignature, after: response.retry_after, detail },
        Action::Retry => Verdict::Retry { reason: RetryReason::VendorError, after: response.retry_after, detail },
        Action::RejectRecords => Verdict::Reject { reason: detail, per_record: batching },
        Action::Reject => Verdict::Reject { reason: detail, per_record: false },
    }
}

/// `code` (string or number) and `msg` of a reply; `None` if it is not such an object.
fn parse_reply(body: &[u8]) -> Option<(String, String)> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let code = code_text(value.get("code")).filter(|c| !c.is_empty())?;
    let msg = value.get("msg").or_else(|| value.get("message")).and_then(|m| m.as_str()).unwrap_or_default();
    Some((code, msg.to_string()))
}

/// `code 1502: <msg> [<the spec's meaning>]`, bounded: it goes into logs and dead letters.
fn describe(code: &str, msg: &str) -> String {
    let code = body_excerpt(code.as_bytes());
    let msg = body_excerpt(msg.as_bytes());
    match (meaning(&code), msg.is_empty()) {
        (Some(m), true) => format!("code {code}: {m}"),
        (Some(m), false) => format!("code {code}: {msg} [{m}]"),
        (None, _) => format!("code {code}: {msg}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::time::Duration;

    fn reply(status: u16, body: &str) -> HttpResponse {
        HttpResponse { status, retry_after: None, body: Bytes::from(body.to_string()) }
    }

    fn code(c: &str) -> Verdict {
        classify(&reply(200, &format!(r#"{{"code":"{c}","msg":"m{c}","data":""}}"#)), true)
    }

    fn retry_reason(v: &Verdict) -> Option<RetryReason> {
        match v {
            Verdict::Retry { reason, .. } => Some(*reason),
            _ => None,
        }
    }

    #[test]
    fn every_code_of_the_spec() {
        assert_eq!(code("0"), Verdict::Delivered);
        assert_eq!(code("200"), Verdict::Delivered);
        assert_eq!(code("1004"), Verdict::Duplicate);
        assert_eq!(retry_reason(&code("1002")), Some(RetryReason::StaleSignature));
        for c in ["1003", "1107", "2000"] {
            assert_eq!(retry_reason(&code(c)), Some(RetryReason::VendorError), "{c}");
        }
        for c in ["1501", "1502"] {
            assert!(matches!(code(c), Verdict::Reject { per_record: true, .. }), "{c}");
        }
        for c in ["1000", "1001", "2001", "1005", "1006", "1007", "1008", "1014"] {
            assert!(matches!(code(c), Verdict::Reject { per_record: false, .. }), "{c}");
        }
        assert_eq!(CODES.len(), 17, "the spec's 16 codes plus the examples' success \"0\"");
    }

    #[test]
    fn reasons_carry_code_message_and_meaning() {
        let Verdict::Reject { reason, .. } = code("1000") else { panic!("reject") };
        assert_eq!(reason, "code 1000: m1000 [平台无车场信息 (unknown lotCode)]");
        let v = classify(&reply(200, r#"{"code":"1003","msg":""}"#), true);
        assert_eq!(
            v,
            Verdict::Retry {
                reason: RetryReason::VendorError,
                after: None,
                detail: "code 1003: 上报失败 (report failed)".into()
            }
        );
    }

    #[test]
    fn unknown_codes_are_rejected_with_their_text() {
        let v = classify(&reply(200, r#"{"code":"4711","msg":"车场已停用"}"#), true);
        assert_eq!(v, Verdict::Reject { reason: "code 4711: 车场已停用".into(), per_record: false });
    }

    #[test]
    fn numeric_codes_and_single_record_endpoints() {
        assert_eq!(classify(&reply(200, r#"{"code":0,"msg":"操作成功"}"#), false), Verdict::Delivered);
        let v = classify(&reply(200, r#"{"code":1502,"msg":"bad"}"#), false);
        assert!(matches!(v, Verdict::Reject { per_record: false, .. }), "{v:?}");
    }

    #[test]
    fn unreadable_replies_are_retried() {
        for body in ["<html>gateway</html>", "", r#"{"msg":"no code"}"#, r#"{"code":""}"#, "[]"] {
            let v = classify(&reply(200, body), true);
            assert_eq!(retry_reason(&v), Some(RetryReason::VendorError), "{body:?}");
        }
    }

    #[test]
    fn http_statuses_come_first() {
        let mut busy = reply(429, r#"{"code":"0"}"#);
        busy.retry_after = Some(Duration::from_secs(7));
        assert_eq!(classify(&busy, true), Verdict::Busy { after: Some(Duration::from_secs(7)) });
        assert_eq!(retry_reason(&classify(&reply(502, "bad gateway"), true)), Some(RetryReason::ServerError));
        assert!(matches!(classify(&reply(404, "not found"), true), Verdict::Hold { .. }), "a wrong route holds");
        assert!(matches!(classify(&reply(400, "bad"), true), Verdict::Reject { .. }));
    }

    #[test]
    fn retry_after_is_passed_on() {
        let mut r = reply(200, r#"{"code":"2000","msg":"busy"}"#);
        r.retry_after = Some(Duration::from_secs(5));
        assert!(matches!(classify(&r, true), Verdict::Retry { after: Some(d), .. } if d == Duration::from_secs(5)));
    }
}

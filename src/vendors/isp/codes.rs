//! ISP answers to verdicts (pure). The status table: `0` success (the examples say `200`:
//! both are accepted), `1` failure, `401` token missing or expired, `500` system error.
//! The HTTP status is read first; the platform reports failures inside HTTP 200 bodies.

use crate::vendors::{body_excerpt, classify_status, code_text, Endpoint, HttpResponse, RetryReason, Verdict};
use serde_json::Value;

/// Longest vendor message quoted in a verdict.
const MAX_MSG_CHARS: usize = 120;

/// The verdict on one ISP response.
pub fn classify(endpoint: &Endpoint, response: &HttpResponse) -> Verdict {
    if let Some(verdict) = classify_status(response) {
        return per_record(verdict, endpoint);
    }
    let Some(body) = serde_json::from_slice::<Value>(&response.body).ok().filter(Value::is_object) else {
        return vendor_retry(response, format!("unparseable body: {}", body_excerpt(&response.body)));
    };
    let Some(code) = code_text(body.get("code")) else {
        return vendor_retry(response, format!("no code in body: {}", body_excerpt(&response.body)));
    };
    // The code is quoted cut short like the message: a reason goes into logs and headers.
    let what = format!("code {}: {}", body_excerpt(code.as_bytes()), message(&body));
    match code.as_str() {
        "0" | "200" => Verdict::Delivered,
        "401" => Verdict::RefreshAuth,
        "500" => vendor_retry(response, what),
        // Code 1 answers a bad parameter: in a batch, one record may be the cause.
        "1" => Verdict::Reject { reason: what, per_record: endpoint.max_records > 1 },
        other if other.len() == 3 && other.starts_with('5') => vendor_retry(response, what),
        // Codes outside the spec's table: retrying would stall the lane on an answer that
        // will not change, so the record goes to the dead letters with the vendor's words.
        _ => Verdict::Reject { reason: format!("unknown {what}"), per_record: false },
    }
}

/// A non-2xx status on a batch may come from one bad record (HTTP 400 on a parameter).
fn per_record(verdict: Verdict, endpoint: &Endpoint) -> Verdict {
    match verdict {
        Verdict::Reject { reason, .. } => Verdict::Reject { reason, per_record: endpoint.max_records > 1 },
        other => other,
    }
}

fn vendor_retry(response: &HttpResponse, detail: String) -> Verdict {
    Verdict::Retry { reason: RetryReason::VendorError, after: response.retry_after, detail }
}

/// The message, from `msg` (examples) or `message` (the field table).
fn message(body: &Value) -> String {
    let text = code_text(body.get("msg")).or_else(|| code_text(body.get("message"))).unwrap_or_default();
    text.chars().take(MAX_MSG_CHARS).filter(|c| !c.is_control()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vendors::isp::mapping::Endpoints;
    use bytes::Bytes;
    use std::time::Duration;

    fn answer(status: u16, body: &str) -> HttpResponse {
        HttpResponse { status, retry_after: None, body: Bytes::copy_from_slice(body.as_bytes()) }
    }

    fn verdict(status: u16, body: &str) -> Verdict {
        classify(&Endpoints::new(100).entrance, &answer(status, body))
    }

    #[test]
    fn every_code_in_the_spec() {
        assert_eq!(verdict(200, r#"{"code":0,"msg":"success"}"#), Verdict::Delivered);
        assert_eq!(verdict(200, r#"{"code": 200, "msg": "success"}"#), Verdict::Delivered);
        assert_eq!(verdict(200, r#"{"code":"200","message":"success"}"#), Verdict::Delivered);
        assert_eq!(verdict(200, r#"{"code":401,"msg":"token 已过期"}"#), Verdict::RefreshAuth);
        let retry = verdict(200, r#"{"code":500,"msg":"系统异常"}"#);
        let expected_retry =
            Verdict::Retry { reason: RetryReason::VendorError, after: None, detail: "code 500: 系统异常".into() };
        assert_eq!(retry, expected_retry);
        let reject = verdict(200, r#"{"code":1,"message":"plate_number 不能为空"}"#);
        assert_eq!(reject, Verdict::Reject { reason: "code 1: plate_number 不能为空".into(), per_record: true });
    }

    #[test]
    fn code_1_on_a_single_record_endpoint_is_not_bisected() {
        let eps = Endpoints::new(100);
        let v = classify(&eps.spot_num, &answer(200, r#"{"code":1,"msg":"failed"}"#));
        assert_eq!(v, Verdict::Reject { reason: "code 1: failed".into(), per_record: false });
    }

    #[test]
    fn http_statuses() {
        assert_eq!(verdict(401, ""), Verdict::RefreshAuth);
        let busy = classify(
            &Endpoints::new(100).entrance,
            &HttpResponse { status: 429, retry_after: Some(Duration::from_secs(7)), body: Bytes::new() },
        );
        assert_eq!(busy, Verdict::Busy { after: Some(Duration::from_secs(7)) });
        assert!(matches!(verdict(502, ""), Verdict::Retry { reason: RetryReason::ServerError, .. }));
        assert!(matches!(verdict(400, r#"{"code":1}"#), Verdict::Reject { per_record: true, .. }));
    }

    #[test]
    fn unreadable_or_unknown_answers() {
        assert!(matches!(
            verdict(200, "<html>bad gateway</html>"),
            Verdict::Retry { reason: RetryReason::VendorError, .. }
        ));
        assert!(matches!(verdict(200, r#"{"msg":"success"}"#), Verdict::Retry { .. }));
        assert!(matches!(verdict(200, r#"{"code":503}"#), Verdict::Retry { .. }));
        let v = verdict(200, r#"{"code":403,"msg":"forbidden"}"#);
        assert_eq!(v, Verdict::Reject { reason: "unknown code 403: forbidden".into(), per_record: false });
    }

    /// Found by the fuzz target's bound on reasons (fuzz/regressions/isp_response/): a code
    /// as long as the reply went whole into the reason, then into logs and dead letters.
    #[test]
    fn a_long_code_is_cut_short() {
        let Verdict::Reject { reason, .. } = verdict(200, &format!(r#"{{"code":"{}","msg":"x"}}"#, "9".repeat(700)))
        else {
            panic!("must reject")
        };
        assert!(reason.chars().count() < 400 && reason.starts_with("unknown code 9999"), "{reason}");
    }
}

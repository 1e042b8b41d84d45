//! The platform's answers to `sendCoupon`, classified (pure).
//!
//! The spec names one code: `"200"` success (sent as a string; a number is accepted too).
//! Everything else is read from the configured [`CodeTable`]: auth-failure codes refresh
//! the token, retryable codes retry, `"429"` pauses the sink, and any other code is the
//! platform refusing this coupon (unknown park, bad plate, wrong source code...), which a
//! retry cannot fix: it is dead-lettered with the code and message.

use super::config::CodeTable;
use crate::vendors::{body_excerpt, classify_status, code_text, HttpResponse, RetryReason, Verdict};
use serde_json::Value;

/// The platform's success code.
pub const SUCCESS: &str = "200";
/// An in-body "too many requests".
pub const BUSY: &str = "429";
/// Longest vendor message kept in a reason (reasons go to logs and dead-letter headers).
const MAX_MSG_CHARS: usize = 120;

/// The verdict on one `sendCoupon` answer.
pub fn classify(table: &CodeTable, response: &HttpResponse) -> Verdict {
    // Non-2xx answers carry no more than their status says (401 = token expired).
    if let Some(verdict) = classify_status(response) {
        return verdict;
    }
    let Ok(body) = serde_json::from_slice::<Value>(&response.body) else {
        return retry(response, format!("HTTP {} with a body that is not JSON", response.status));
    };
    let Some(code) = code_text(body.get("code")) else {
        return retry(response, format!("no code in answer: {}", body_excerpt(&response.body)));
    };
    by_code(table, &code, &message(&body), response)
}

fn by_code(table: &CodeTable, code: &str, msg: &str, response: &HttpResponse) -> Verdict {
    match code {
        SUCCESS => Verdict::Delivered,
        BUSY => Verdict::Busy { after: response.retry_after },
        c if table.auth.iter().any(|a| a == c) => Verdict::RefreshAuth,
        c if table.retryable.iter().any(|r| r == c) => {
            retry(response, format!("code {}: {msg}", body_excerpt(c.as_bytes())))
        }
        // The code is quoted cut short like the message: a reason goes into logs and headers.
        c => Verdict::Reject { reason: format!("code {}: {msg}", body_excerpt(c.as_bytes())), per_record: false },
    }
}

fn message(body: &Value) -> String {
    let msg = code_text(body.get("msg")).unwrap_or_default();
    msg.chars().filter(|c| !c.is_control()).take(MAX_MSG_CHARS).collect()
}

fn retry(response: &HttpResponse, detail: String) -> Verdict {
    Verdict::Retry { reason: RetryReason::VendorError, after: response.retry_after, detail }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::time::Duration;

    fn table() -> CodeTable {
        CodeTable { auth: vec!["401".into()], retryable: vec!["500".into(), "503".into()] }
    }

    fn answer(status: u16, body: &str) -> Verdict {
        let response =
            HttpResponse { status, retry_after: Some(Duration::from_secs(5)), body: Bytes::from(body.to_string()) };
        classify(&table(), &response)
    }

    fn is_vendor_retry(v: &Verdict) -> bool {
        matches!(v, Verdict::Retry { reason: RetryReason::VendorError, .. })
    }

    #[test]
    fn spec_success_as_string_or_number() {
        assert_eq!(answer(200, r#"{"code":"200","msg":"成功!"}"#), Verdict::Delivered);
        assert_eq!(answer(200, r#"{"code":200,"msg":"成功"}"#), Verdict::Delivered);
    }

    #[test]
    fn in_body_codes() {
        assert_eq!(answer(200, r#"{"code":"401","msg":"token失效"}"#), Verdict::RefreshAuth);
        assert_eq!(
            answer(200, r#"{"code":"429","msg":"busy"}"#),
            Verdict::Busy { after: Some(Duration::from_secs(5)) }
        );
        let retry = answer(200, r#"{"code":503,"msg":"系统繁忙"}"#);
        assert!(is_vendor_retry(&retry), "{retry:?}");
        let reject = answer(200, r#"{"code":"400","msg":"停车场编号不存在"}"#);
        assert_eq!(reject, Verdict::Reject { reason: "code 400: 停车场编号不存在".into(), per_record: false });
    }

    #[test]
    fn http_statuses() {
        assert_eq!(answer(401, r#"{"code":"401"}"#), Verdict::RefreshAuth);
        assert_eq!(answer(429, ""), Verdict::Busy { after: Some(Duration::from_secs(5)) });
        assert!(matches!(answer(502, "bad gateway"), Verdict::Retry { reason: RetryReason::ServerError, .. }));
        let Verdict::Hold { detail, .. } = answer(404, "no such path") else { panic!("404 must hold the sink") };
        assert!(detail.contains("404") && detail.contains("no such path"), "{detail}");
    }

    #[test]
    fn unreadable_answers_are_retried() {
        assert!(is_vendor_retry(&answer(200, "<html>gateway</html>")));
        assert!(is_vendor_retry(&answer(200, r#"{"msg":"no code"}"#)));
        assert!(is_vendor_retry(&answer(200, "")));
    }

    #[test]
    fn long_messages_are_cut() {
        let long = "错".repeat(500);
        let Verdict::Reject { reason, .. } = answer(200, &format!(r#"{{"code":"1","msg":"{long}"}}"#)) else {
            panic!("must reject")
        };
        assert!(reason.chars().count() < 140, "{}", reason.len());
    }

    /// Found by the fuzz target's bound on reasons (fuzz/regressions/barrier_response/): a
    /// code as long as the reply went whole into the reason, then into logs and dead letters.
    #[test]
    fn a_long_code_is_cut_short() {
        let code = "9".repeat(700);
        for body in [format!(r#"{{"code":"{code}","msg":"x"}}"#), format!(r#"{{"code":"5{code}"}}"#)] {
            let (Verdict::Reject { reason, .. } | Verdict::Retry { detail: reason, .. }) = answer(200, &body) else {
                panic!("{body}")
            };
            assert!(reason.chars().count() < 300 && reason.contains("9999"), "{reason}");
        }
    }
}

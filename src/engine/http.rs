//! HTTP execution of one prepared request: the request itself, its timing and counting,
//! and the turn of a transport failure or an answer into a [`Verdict`].

use super::sink::Sink;
use crate::text::cut;
use crate::vendors::{Endpoint, HoldReason, HttpRequest, HttpResponse, RetryReason, Verdict};
use std::time::Duration;
use tokio::time::Instant;

/// Sends one prepared request for `sink` and classifies the result; counts and times it.
pub(crate) async fn send(
    sink: &Sink,
    endpoint: &Endpoint,
    request: HttpRequest,
    records: usize,
    bytes: usize,
) -> Verdict {
    let labels = [sink.name(), endpoint.name];
    sink.metrics.batch_records.with_label_values(&labels).observe(records as f64);
    sink.metrics.batch_bytes.with_label_values(&labels).observe(bytes as f64);
    let start = Instant::now();
    let result = execute(&sink.http, request, sink.config.request_timeout()).await;
    sink.metrics.request_seconds.with_label_values(&labels).observe(start.elapsed().as_secs_f64());
    let verdict = match result {
        Ok(response) => sink.adapter.classify(endpoint, &response),
        Err(e) => transport_verdict(&e),
    };
    sink.metrics.requests.with_label_values(&[sink.name(), endpoint.name, verdict_class(&verdict)]).inc();
    verdict
}

/// A transport failure: TLS and DNS failures hold the sink (they fail every record alike
/// until an operator or the network fixes them); the rest are retried.
fn transport_verdict(e: &reqwest::Error) -> Verdict {
    let detail = transport_detail(e);
    match hold_reason(&detail) {
        Some(reason) if !e.is_timeout() => Verdict::Hold { reason, detail },
        _ => {
            let reason = if e.is_timeout() { RetryReason::Timeout } else { RetryReason::Transport };
            Verdict::Retry { reason, after: None, detail }
        }
    }
}

/// Whether the text of a transport error names a TLS or DNS failure.
fn hold_reason(detail: &str) -> Option<HoldReason> {
    let text = detail.to_ascii_lowercase();
    let tls = ["certificate", "tls", "handshake", "unknownissuer", "ssl"];
    let dns = ["dns error", "failed to lookup address", "name or service not known", "no such host"];
    if tls.iter().any(|w| text.contains(w)) {
        Some(HoldReason::Tls)
    } else if dns.iter().any(|w| text.contains(w)) {
        Some(HoldReason::Dns)
    } else {
        None
    }
}

/// A transport error without its URL (a URL may carry a query-string secret): the kind
/// and the chain of underlying causes, at most 200 characters.
pub(crate) fn transport_detail(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else {
        "transport"
    };
    let mut causes = Vec::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        causes.push(s.to_string());
        source = s.source();
    }
    describe(kind, &causes)
}

/// `kind: cause: cause`, at most 200 characters, cut on a character boundary (causes may
/// carry any text: a resolver's or a TLS library's message, a vendor's host name).
fn describe(kind: &str, causes: &[String]) -> String {
    cut(&format!("{kind}: {}", causes.join(": ")), 200).into_owned()
}

/// Outcome class of a verdict (a bounded label).
fn verdict_class(v: &Verdict) -> &'static str {
    match v {
        Verdict::Delivered | Verdict::Answered(_) => "ok",
        Verdict::Duplicate => "duplicate",
        Verdict::Retry { reason, .. } => reason.as_str(),
        Verdict::Busy { .. } => "busy",
        Verdict::RefreshAuth => "auth_refused",
        Verdict::Hold { .. } => "held",
        Verdict::Reject { .. } => "rejected",
    }
}

/// Sends one prepared request.
pub async fn execute(
    http: &reqwest::Client,
    req: HttpRequest,
    timeout: Duration,
) -> Result<HttpResponse, reqwest::Error> {
    let response =
        http.request(req.method, &req.url).headers(req.headers).body(req.body).timeout(timeout).send().await?;
    let status = response.status().as_u16();
    let retry_after =
        response.headers().get(reqwest::header::RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(parse_retry_after);
    let body = response.bytes().await?;
    Ok(HttpResponse { status, retry_after, body })
}

/// `Retry-After` as seconds or as an HTTP date.
pub(crate) fn parse_retry_after(text: &str) -> Option<Duration> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Some(Duration::from_secs(secs.min(3600)));
    }
    let when = chrono::DateTime::parse_from_rfc2822(text).ok()?;
    let secs = (when.timestamp() - chrono::Utc::now().timestamp()).clamp(0, 3600);
    Some(Duration::from_secs(secs as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_details_are_cut_between_characters() {
        // Byte 200 falls inside a character here: a byte truncation would panic.
        let causes = vec![format!("{}{}", "x".repeat(189), "无法解析主机名".repeat(10))];
        let text = describe("connect", &causes);
        assert!(text.starts_with("connect: xxx") && text.ends_with('…'), "{text}");
        assert!(text.chars().count() <= 201);
    }

    #[test]
    fn tls_and_dns_failures_hold_the_sink() {
        let tls = "connect: invalid peer certificate: UnknownIssuer";
        assert_eq!(hold_reason(tls), Some(HoldReason::Tls));
        assert_eq!(hold_reason("connect: dns error: failed to lookup address information"), Some(HoldReason::Dns));
        assert_eq!(hold_reason("connect: tcp connect error: Connection refused (os error 111)"), None);
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after(" 99999 "), Some(Duration::from_secs(3600)), "capped at an hour");
        let later = (chrono::Utc::now() + chrono::Duration::seconds(30)).to_rfc2822();
        let parsed = parse_retry_after(&later).unwrap();
        assert!(parsed <= Duration::from_secs(30) && parsed >= Duration::from_secs(28), "{parsed:?}");
        assert_eq!(parse_retry_after("soon"), None);
    }
}

//! The lane task and the attempt loop: rate limits, concurrency, per-attempt signing,
//! typed retry decisions, sink-wide pauses on 429, bisection of rejected batches, and
//! dead letters for what is permanently refused.

use super::lane::{Item, Next};
use super::output::Stage;
use super::sink::{Lane, Outcome, Sink};
use crate::event::{encode_listed, CouponsListed, ListedCoupon};
use crate::vendors::{Endpoint, HttpRequest, HttpResponse, PrepareError, RetryReason, Verdict};
use backoff::backoff::Backoff;
use backoff::ExponentialBackoff;
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How long a lane with nothing to do lives before it frees its memory.
const LANE_IDLE: Duration = Duration::from_secs(60);

/// Runs one lane until it has been idle for a while.
pub async fn run_lane(sink: Arc<Sink>, lot: String, lane: Arc<Lane>) {
    loop {
        if sink.is_stopping() {
            sink.remove_lane(&lot, &lane);
            return;
        }
        let next = lane.lock().next(sink.limits(), Instant::now());
        match next {
            Next::Send(items) => {
                let tickets = items.iter().map(|i| i.origin.as_ref().map(|o| &o.ticket));
                let mut flags = sink.partitions.are_current(tickets).into_iter();
                let (current, revoked): (Vec<Item>, Vec<Item>) =
                    items.into_iter().partition(|_| flags.next().unwrap_or(false));
                revoked.iter().for_each(|i| sink.drop_revoked(i));
                if !current.is_empty() {
                    deliver(&sink, &lot, &lane, current).await;
                }
            }
            Next::WaitUntil(due) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(due) => {}
                    _ = lane.notify.notified() => {}
                    _ = sink.stopped() => {}
                }
            }
            Next::Idle => {
                tokio::select! {
                    _ = lane.notify.notified() => {}
                    _ = sink.stopped() => {}
                    _ = tokio::time::sleep(LANE_IDLE) => {
                        if sink.retire_lane(&lot, &lane) {
                            return;
                        }
                    }
                }
            }
        }
    }
}

/// The end of an attempt loop.
enum Final {
    Delivered,
    Duplicate,
    Answered(Vec<ListedCoupon>),
    Rejected {
        reason: String,
        per_record: bool,
        attempts: u32,
    },
    /// The sink is stopping: no outcome, the records are read again after the restart.
    Abandoned,
}

/// Delivers a batch; a batch refused for a parameter error is bisected so only the bad
/// records are dead-lettered.
async fn deliver(sink: &Arc<Sink>, lot: &str, lane: &Lane, items: Vec<Item>) {
    let endpoint = items[0].mapped.endpoint;
    match attempt_loop(sink, lot, &endpoint, &items).await {
        Final::Delivered => settle_delivered(sink, lane, &endpoint, items, Outcome::Delivered),
        Final::Duplicate => settle_delivered(sink, lane, &endpoint, items, Outcome::Duplicate),
        Final::Answered(coupons) => {
            for item in &items {
                publish_answer(sink, item, &coupons).await;
            }
            settle_delivered(sink, lane, &endpoint, items, Outcome::Delivered);
        }
        Final::Rejected { per_record: true, .. } if items.len() > 1 => {
            let mut left = items;
            let right = left.split_off(left.len() / 2);
            Box::pin(deliver(sink, lot, lane, left)).await;
            Box::pin(deliver(sink, lot, lane, right)).await;
        }
        Final::Abandoned => items.iter().for_each(|i| sink.drop_revoked(i)),
        Final::Rejected { reason, attempts, .. } => {
            for item in &items {
                dead_letter(sink, lot, item, &reason, attempts).await;
            }
        }
    }
}

fn settle_delivered(sink: &Sink, lane: &Lane, endpoint: &Endpoint, items: Vec<Item>, outcome: Outcome) {
    if let Some(last) = items.last() {
        lane.lock().delivered(endpoint, &last.mapped.record, Instant::now());
    }
    if endpoint.name == "heartbeat" {
        sink.metrics.heartbeats.with_label_values(&[sink.name()]).inc_by(items.len() as u64);
    }
    sink.finish_all(&items, outcome);
}

async fn dead_letter(sink: &Sink, lot: &str, item: &Item, reason: &str, attempts: u32) {
    sink.metrics.lot_failures.record(sink.name(), lot, reason);
    match &item.origin {
        Some(origin) => sink.dead_letter(origin, Stage::Deliver, reason, attempts).await,
        None => tracing::warn!(sink = sink.name(), lot, error = reason, "generated record refused by the vendor"),
    }
    sink.finish(item, Outcome::DeadLettered);
}

async fn publish_answer(sink: &Sink, item: &Item, coupons: &[ListedCoupon]) {
    let Some(reply) = &item.reply_to else { return };
    let data = CouponsListed {
        in_reply_to: reply.request_id.clone(),
        member_id: reply.member_id.clone(),
        coupons: coupons.to_vec(),
    };
    let id = format!("{}.listed", reply.request_id);
    let value = Bytes::from(encode_listed(&reply.lot, &id, chrono::Utc::now().fixed_offset(), &data));
    let mut wait = Duration::from_millis(200);
    loop {
        match sink.output.publish_result(&reply.member_id, &value).await {
            Ok(()) => {
                sink.metrics.results_published.with_label_values(&[sink.name(), "ok"]).inc();
                return;
            }
            Err(e) => {
                sink.metrics.results_published.with_label_values(&[sink.name(), "error"]).inc();
                tracing::error!(sink = sink.name(), error = %e, "publishing an answer failed; retrying, offsets held");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// Retry state of one batch.
struct Attempts {
    backoff: ExponentialBackoff,
    started: Instant,
    give_up: Option<Duration>,
    count: u32,
    stale_signatures: u32,
    auth_refreshes: u32,
}

impl Attempts {
    fn new(sink: &Sink) -> Attempts {
        let r = &sink.config.retry;
        let backoff = ExponentialBackoff {
            initial_interval: Duration::from_millis(r.initial_ms),
            current_interval: Duration::from_millis(r.initial_ms),
            max_interval: Duration::from_millis(r.max_interval_ms),
            multiplier: r.multiplier,
            randomization_factor: 0.5,
            max_elapsed_time: None,
            ..ExponentialBackoff::default()
        };
        Attempts {
            backoff,
            started: Instant::now(),
            give_up: r.give_up_after_secs.map(Duration::from_secs),
            count: 0,
            stale_signatures: 0,
            auth_refreshes: 0,
        }
    }

    fn next_wait(&mut self) -> Duration {
        self.backoff.next_backoff().unwrap_or(self.backoff.max_interval)
    }

    fn gave_up(&self) -> bool {
        self.give_up.is_some_and(|g| self.started.elapsed() >= g)
    }
}

async fn attempt_loop(sink: &Sink, lot: &str, endpoint: &Endpoint, items: &[Item]) -> Final {
    let records: Vec<&[u8]> = items.iter().map(|i| &i.mapped.record[..]).collect();
    let data = sink.adapter.assemble(endpoint, &records);
    let mut st = Attempts::new(sink);
    let mut sent_headers = http::HeaderMap::new();
    loop {
        st.count += 1;
        if sink.is_stopping() {
            return Final::Abandoned;
        }
        sink.wait_unpaused().await;
        sink.wait_rate(lot).await;
        let verdict = {
            let Ok(_permit) = sink.permits.acquire().await else {
                return rejected("sink is shutting down", &st);
            };
            match sink.adapter.prepare(lot, endpoint, &data).await {
                Ok(request) => {
                    clear_credentials_rejected(sink);
                    sent_headers = request.headers.clone();
                    send(sink, endpoint, request, items.len(), data.len()).await
                }
                Err(PrepareError::Unbound) => return rejected("the lot is no longer bound to this sink", &st),
                Err(PrepareError::Internal(e)) => return rejected(&format!("internal error: {e}"), &st),
                Err(e) => auth_verdict(sink, e),
            }
        };
        match verdict {
            Verdict::Delivered => return Final::Delivered,
            Verdict::Duplicate => return Final::Duplicate,
            Verdict::Answered(coupons) => return Final::Answered(coupons),
            Verdict::Reject { reason, per_record } => {
                return Final::Rejected { reason, per_record, attempts: st.count };
            }
            Verdict::RefreshAuth => {
                sink.adapter.invalidate_auth(&sent_headers).await;
                st.auth_refreshes += 1;
                count_retry(sink, "auth_refresh");
                if st.auth_refreshes > 1 && !pause(sink, st.next_wait()).await {
                    return Final::Abandoned;
                }
            }
            Verdict::Busy { after } => {
                let wait = after.unwrap_or_else(|| st.next_wait());
                count_retry(sink, "busy");
                sink.pause_for(wait);
            }
            Verdict::Retry { reason, after, detail } => {
                count_retry(sink, reason.as_str());
                sink.metrics.lot_failures.record(sink.name(), lot, &detail);
                if reason == RetryReason::StaleSignature {
                    st.stale_signatures += 1;
                    if st.stale_signatures > sink.config.retry.stale_signature_retries {
                        return rejected(&format!("signature refused {} times: {detail}", st.stale_signatures), &st);
                    }
                }
                if st.gave_up() {
                    let secs = st.started.elapsed().as_secs();
                    return rejected(&format!("gave up after {secs} s and {} attempts: {detail}", st.count), &st);
                }
                let wait = st.next_wait().max(after.unwrap_or_default());
                tracing::debug!(sink = sink.name(), lot, reason = reason.as_str(), detail, ?wait, "retrying");
                if !pause(sink, wait).await {
                    return Final::Abandoned;
                }
            }
        }
    }
}

/// Sleeps `wait` unless the sink stops first; false if it stopped.
async fn pause(sink: &Sink, wait: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(wait) => true,
        _ = sink.stopped() => false,
    }
}

fn rejected(reason: &str, st: &Attempts) -> Final {
    Final::Rejected { reason: reason.to_string(), per_record: false, attempts: st.count }
}

fn count_retry(sink: &Sink, reason: &str) {
    sink.metrics.retries.with_label_values(&[sink.name(), reason]).inc();
}

/// A request could be prepared, so the credentials work (again): lower the alert gauge.
fn clear_credentials_rejected(sink: &Sink) {
    let gauge = sink.metrics.credentials_rejected.with_label_values(&[sink.name()]);
    if gauge.get() != 0 {
        gauge.set(0);
    }
}

/// A token that cannot be had becomes a retry: the data waits in Kafka until an operator
/// fixes the credentials (the token cache keeps the vendor from being hammered).
fn auth_verdict(sink: &Sink, e: PrepareError) -> Verdict {
    let rejected = matches!(e, PrepareError::AuthRejected(_));
    sink.metrics.credentials_rejected.with_label_values(&[sink.name()]).set(i64::from(rejected));
    if rejected {
        tracing::error!(sink = sink.name(), error = %e, "vendor rejects the configured credentials: fix them; records wait in Kafka");
    }
    Verdict::Retry { reason: RetryReason::Auth, after: None, detail: e.to_string() }
}

async fn send(sink: &Sink, endpoint: &Endpoint, request: HttpRequest, records: usize, bytes: usize) -> Verdict {
    let labels = [sink.name(), endpoint.name];
    sink.metrics.batch_records.with_label_values(&labels).observe(records as f64);
    sink.metrics.batch_bytes.with_label_values(&labels).observe(bytes as f64);
    let start = Instant::now();
    let result = execute(&sink.http, request, sink.config.request_timeout()).await;
    sink.metrics.request_seconds.with_label_values(&labels).observe(start.elapsed().as_secs_f64());
    let verdict = match result {
        Ok(response) => sink.adapter.classify(endpoint, &response),
        Err(e) => {
            let reason = if e.is_timeout() { RetryReason::Timeout } else { RetryReason::Transport };
            Verdict::Retry { reason, after: None, detail: transport_detail(&e) }
        }
    };
    sink.metrics.requests.with_label_values(&[sink.name(), endpoint.name, verdict_class(&verdict)]).inc();
    verdict
}

/// A transport error without its URL (a URL may carry a query-string secret): the kind
/// and the chain of underlying causes.
fn transport_detail(e: &reqwest::Error) -> String {
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
    let mut text = format!("{kind}: {}", causes.join(": "));
    text.truncate(200);
    text
}

/// Outcome class of a verdict (a bounded label).
fn verdict_class(v: &Verdict) -> &'static str {
    match v {
        Verdict::Delivered | Verdict::Answered(_) => "ok",
        Verdict::Duplicate => "duplicate",
        Verdict::Retry { reason, .. } => reason.as_str(),
        Verdict::Busy { .. } => "busy",
        Verdict::RefreshAuth => "auth_refused",
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
pub fn parse_retry_after(text: &str) -> Option<Duration> {
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
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after(" 99999 "), Some(Duration::from_secs(3600)), "capped at an hour");
        let later = (chrono::Utc::now() + chrono::Duration::seconds(30)).to_rfc2822();
        let parsed = parse_retry_after(&later).unwrap();
        assert!(parsed <= Duration::from_secs(30) && parsed >= Duration::from_secs(28), "{parsed:?}");
        assert_eq!(parse_retry_after("soon"), None);
    }
}

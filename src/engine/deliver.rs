//! The lane task and the attempt loop. The loop only carries out what the pure decision in
//! `retry.rs` says: wait at the gate, prepare (sign, stamp, token) inside each attempt,
//! send, decide, act. Batches refused for a parameter error are bisected so only the bad
//! records are dead-lettered.

use super::http::send;
use super::lane::{Item, Next};
use super::lanes::Lane;
use super::output::{until_acked, Stage};
use super::retry::{clears_hold, retry_label, Attempts, Final, Step};
use super::sink::Sink;
use super::task::panic_text;
use crate::engine::acks::Outcome;
use crate::event::{encode_listed, CouponsListed, EventType, ListedCoupon};
use crate::vendors::{Endpoint, HoldReason, PrepareError, RetryReason, Verdict};
use bytes::Bytes;
use futures::FutureExt;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

pub use super::http::execute;

/// How long a lane with nothing to do lives before it frees its memory.
const LANE_IDLE: Duration = Duration::from_secs(60);

/// Runs one lane until it has been idle for a while.
pub(crate) async fn run_lane(sink: Arc<Sink>, lot: String, lane: Arc<Lane>) {
    loop {
        if sink.is_stopping() {
            sink.lanes.remove(&lot, &lane);
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
                    lane.set_in_flight(current.len());
                    deliver(&sink, &lot, &lane, current).await;
                    lane.set_in_flight(0);
                }
            }
            Next::WaitUntil(due) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(due) => {}
                    _ = lane.notified() => {}
                    _ = sink.stopped() => {}
                }
            }
            Next::Idle => {
                tokio::select! {
                    _ = lane.notified() => {}
                    _ = sink.stopped() => {}
                    _ = tokio::time::sleep(LANE_IDLE) => {
                        if sink.lanes.retire(&lot, &lane) {
                            return;
                        }
                    }
                }
            }
        }
    }
}

/// Delivers a batch; a batch refused for a parameter error is bisected so only the bad
/// records are dead-lettered.
async fn deliver(sink: &Arc<Sink>, lot: &str, lane: &Lane, items: Vec<Item>) {
    let endpoint = items[0].mapped.endpoint;
    // A panic in adapter code (assembling, signing, classifying) is this batch's failure:
    // bisected like a parameter error, so only the record that causes it is dead-lettered.
    let attempts = AssertUnwindSafe(attempt_loop(sink, lot, &endpoint, &items)).catch_unwind().await;
    let done = attempts.unwrap_or_else(|p| Final::Rejected {
        reason: format!("internal error: panic while sending: {}", panic_text(&*p)),
        per_record: true,
        attempts: 1,
    });
    match done {
        // A duplicate answer to a batch may mean only some of it was there before (a replay
        // after a crash mixes old and new records), and the platform then recorded none of
        // it: split until each duplicate answer covers one record. A parameter error is
        // split the same way, so only the bad records are dead-lettered.
        Final::Rejected { per_record: true, .. } | Final::Duplicate if items.len() > 1 => {
            let mut left = items;
            let right = left.split_off(left.len() / 2);
            Box::pin(deliver(sink, lot, lane, left)).await;
            Box::pin(deliver(sink, lot, lane, right)).await;
        }
        Final::Delivered => settle_delivered(sink, lane, &endpoint, items, Outcome::Delivered),
        Final::Duplicate => settle_delivered(sink, lane, &endpoint, items, Outcome::Duplicate),
        Final::Answered(coupons) => {
            for item in &items {
                publish_answer(sink, item, &coupons).await;
            }
            settle_delivered(sink, lane, &endpoint, items, Outcome::Delivered);
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
    let heartbeats = items.iter().filter(|i| i.event_type == EventType::LotHeartbeat).count();
    if heartbeats > 0 {
        sink.metrics.heartbeats.with_label_values(&[sink.name()]).inc_by(heartbeats as u64);
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
    let ok = sink.metrics.results_published.with_label_values(&[sink.name(), "ok"]);
    let failed = sink.metrics.results_published.with_label_values(&[sink.name(), "error"]);
    until_acked("answer", sink.name(), &ok, &failed, || sink.output.publish_result(&reply.member_id, &value)).await;
}

async fn attempt_loop(sink: &Sink, lot: &str, endpoint: &Endpoint, items: &[Item]) -> Final {
    let records: Vec<&[u8]> = items.iter().map(|i| &i.mapped.record[..]).collect();
    let data = sink.adapter.assemble(endpoint, &records);
    let mut st = Attempts::new(&sink.config.retry, Instant::now());
    let mut sent_headers = http::HeaderMap::new();
    // While the sink is held, this lane's probe slot, kept across attempts.
    let mut probe = None;
    loop {
        st.begin();
        if sink.is_stopping() {
            return Final::Abandoned;
        }
        if probe.is_none() {
            probe = sink.gate.turn().await;
        }
        sink.gate.wait_unpaused().await;
        sink.gate.wait_rate(lot).await;
        let step = {
            let Some(_permit) = sink.gate.permit().await else {
                return st.reject("sink is shutting down");
            };
            // A request that finished while this one waited for its slot may have paused
            // the sink (429): that pause was set before the slot was freed.
            sink.gate.wait_unpaused().await;
            let verdict = match sink.adapter.prepare(lot, endpoint, &data).await {
                Ok(request) => {
                    clear_credentials_rejected(sink);
                    sent_headers = request.headers.clone();
                    send(sink, endpoint, request, items.len(), data.len()).await
                }
                Err(PrepareError::Unbound) => return st.reject("the lot is no longer bound to this sink"),
                Err(PrepareError::Internal(e)) => return st.reject(format!("internal error: {e}")),
                Err(e) => auth_verdict(sink, e),
            };
            if let Some(label) = retry_label(&verdict) {
                sink.metrics.retries.with_label_values(&[sink.name(), label]).inc();
            }
            if clears_hold(&verdict) {
                sink.gate.clear_hold();
                probe = None;
            }
            let step = st.decide(verdict, Instant::now());
            if let Step::PauseSink { wait } = step {
                // Set while this request still holds its slot, so no other request slips
                // out between the vendor's 429 and the pause.
                sink.gate.pause_for(wait);
            }
            step
        };
        match step {
            Step::Finish(done) => return done,
            Step::RefreshAuth { wait } => {
                sink.adapter.invalidate_auth(&sent_headers).await;
                if let Some(wait) = wait {
                    if !pause(sink, wait).await {
                        return Final::Abandoned;
                    }
                }
            }
            Step::PauseSink { .. } => {}
            Step::Retry { wait, reason, detail } => {
                sink.metrics.lot_failures.record(sink.name(), lot, &detail);
                tracing::debug!(sink = sink.name(), lot, reason = reason.as_str(), detail, ?wait, "retrying");
                if !pause(sink, wait).await {
                    return Final::Abandoned;
                }
            }
            Step::Hold { wait, reason, detail } => {
                sink.metrics.lot_failures.record(sink.name(), lot, &detail);
                sink.gate.hold(reason, &detail);
                if probe.is_none() {
                    probe = sink.gate.turn().await;
                }
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

/// A request could be prepared, so the credentials work (again): lower the alert gauge.
fn clear_credentials_rejected(sink: &Sink) {
    let gauge = sink.metrics.credentials_rejected.with_label_values(&[sink.name()]);
    if gauge.get() != 0 {
        gauge.set(0);
    }
}

/// A token that cannot be had: refused credentials hold the sink until an operator fixes
/// them (the token cache keeps the vendor from being hammered); an unavailable token
/// endpoint is retried. Either way the data waits in Kafka.
fn auth_verdict(sink: &Sink, e: PrepareError) -> Verdict {
    let rejected = matches!(e, PrepareError::AuthRejected(_));
    sink.metrics.credentials_rejected.with_label_values(&[sink.name()]).set(i64::from(rejected));
    if rejected {
        return Verdict::Hold { reason: HoldReason::Credentials, detail: e.to_string() };
    }
    Verdict::Retry { reason: RetryReason::Auth, after: None, detail: e.to_string() }
}

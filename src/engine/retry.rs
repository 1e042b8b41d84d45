//! The retry decision, pure: from the verdict on one attempt and the batch's attempt state
//! to the next step. The attempt loop in `deliver.rs` only carries steps out, so every rule
//! here is tested as a table, without a clock, a socket or a sink.

use crate::config::RetryConfig;
use crate::event::ListedCoupon;
use crate::vendors::{HoldReason, RetryReason, Verdict};
use backoff::backoff::Backoff;
use backoff::ExponentialBackoff;
use std::time::Duration;
use tokio::time::Instant;

/// How a batch's attempts end.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Final {
    /// Accepted.
    Delivered,
    /// The vendor already had it.
    Duplicate,
    /// Accepted, with an answer to publish.
    Answered(Vec<ListedCoupon>),
    /// Refused for good: dead-letter (bisect first when `per_record`).
    Rejected { reason: String, per_record: bool, attempts: u32 },
    /// The sink is stopping: no outcome, the records are read again after the restart.
    Abandoned,
}

/// What the attempt loop does next.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Step {
    /// Stop with this outcome.
    Finish(Final),
    /// Forget the refused token and try again, after `wait` if set.
    RefreshAuth { wait: Option<Duration> },
    /// Pause the whole sink for `wait`, then try again.
    PauseSink { wait: Duration },
    /// Try again after `wait`.
    Retry { wait: Duration, reason: RetryReason, detail: String },
    /// The sink is at fault: hold it (one probe at a time), try again after `wait`. Never
    /// finishes the batch: a sink fault dead-letters nothing, whatever the give-up policy.
    Hold { wait: Duration, reason: HoldReason, detail: String },
}

/// The attempt state of one batch.
pub(crate) struct Attempts {
    backoff: ExponentialBackoff,
    started: Instant,
    give_up: Option<Duration>,
    give_up_attempts: Option<u32>,
    stale_signature_retries: u32,
    count: u32,
    stale_signatures: u32,
    auth_refreshes: u32,
}

impl Attempts {
    /// Fresh state for a batch under `config`, started at `now`.
    pub(crate) fn new(config: &RetryConfig, now: Instant) -> Attempts {
        Attempts::with_jitter(config, now, 0.5)
    }

    /// [`Attempts::new`] with a chosen randomization factor (0 for exact tables).
    pub(crate) fn with_jitter(r: &RetryConfig, now: Instant, jitter: f64) -> Attempts {
        let backoff = ExponentialBackoff {
            initial_interval: Duration::from_millis(r.initial_ms),
            current_interval: Duration::from_millis(r.initial_ms),
            max_interval: Duration::from_millis(r.max_interval_ms),
            multiplier: r.multiplier,
            randomization_factor: jitter,
            max_elapsed_time: None,
            ..ExponentialBackoff::default()
        };
        Attempts {
            backoff,
            started: now,
            give_up: r.give_up_after_secs.map(Duration::from_secs),
            give_up_attempts: r.give_up_after_attempts,
            stale_signature_retries: r.stale_signature_retries,
            count: 0,
            stale_signatures: 0,
            auth_refreshes: 0,
        }
    }

    /// Counts an attempt about to be made.
    pub(crate) fn begin(&mut self) {
        self.count += 1;
    }

    /// A final refusal with the attempts made.
    pub(crate) fn reject(&self, reason: impl Into<String>) -> Final {
        Final::Rejected { reason: reason.into(), per_record: false, attempts: self.count }
    }

    fn next_wait(&mut self) -> Duration {
        self.backoff.next_backoff().unwrap_or(self.backoff.max_interval)
    }

    /// Decides the next step after `verdict`, at `now`.
    pub(crate) fn decide(&mut self, verdict: Verdict, now: Instant) -> Step {
        match verdict {
            Verdict::Delivered => Step::Finish(Final::Delivered),
            Verdict::Duplicate => Step::Finish(Final::Duplicate),
            Verdict::Answered(coupons) => Step::Finish(Final::Answered(coupons)),
            Verdict::Reject { reason, per_record } => {
                Step::Finish(Final::Rejected { reason, per_record, attempts: self.count })
            }
            Verdict::RefreshAuth => {
                self.auth_refreshes += 1;
                // The first refusal is a token that just expired: refresh and retry at once.
                let wait = (self.auth_refreshes > 1).then(|| self.next_wait());
                Step::RefreshAuth { wait }
            }
            Verdict::Busy { after } => {
                let wait = after.unwrap_or_else(|| self.next_wait());
                Step::PauseSink { wait }
            }
            Verdict::Retry { reason, after, detail } => self.retry(reason, after, detail, now),
            Verdict::Hold { reason, detail } => Step::Hold { wait: self.next_wait(), reason, detail },
        }
    }

    fn retry(&mut self, reason: RetryReason, after: Option<Duration>, detail: String, now: Instant) -> Step {
        if reason == RetryReason::StaleSignature {
            self.stale_signatures += 1;
            if self.stale_signatures > self.stale_signature_retries {
                // Freshly stamped and signed, still refused: the token or the clock is wrong,
                // for every record of the sink alike.
                let detail = format!("signature refused {} times: {detail}", self.stale_signatures);
                return Step::Hold { wait: self.next_wait(), reason: HoldReason::Signature, detail };
            }
        }
        let elapsed = now.saturating_duration_since(self.started);
        if self.give_up.is_some_and(|g| elapsed >= g) || self.give_up_attempts.is_some_and(|n| self.count >= n) {
            let secs = elapsed.as_secs();
            return Step::Finish(self.reject(format!("gave up after {secs} s and {} attempts: {detail}", self.count)));
        }
        let wait = self.next_wait().max(after.unwrap_or_default());
        Step::Retry { wait, reason, detail }
    }
}

/// The retry counter label of a verdict, if it leads to another attempt.
pub(crate) fn retry_label(verdict: &Verdict) -> Option<&'static str> {
    match verdict {
        Verdict::RefreshAuth => Some("auth_refresh"),
        Verdict::Busy { .. } => Some("busy"),
        Verdict::Retry { reason, .. } => Some(reason.as_str()),
        Verdict::Hold { reason, .. } => Some(reason.as_str()),
        _ => None,
    }
}

/// Whether an answer proves the sink works again (the vendor understood the request), so
/// a hold ends. Transport failures, timeouts, server errors and refused signatures prove
/// nothing either way.
pub(crate) fn clears_hold(verdict: &Verdict) -> bool {
    match verdict {
        Verdict::Delivered
        | Verdict::Duplicate
        | Verdict::Answered(_)
        | Verdict::Reject { .. }
        | Verdict::Busy { .. } => true,
        Verdict::Retry { reason, .. } => *reason == RetryReason::VendorError,
        Verdict::RefreshAuth | Verdict::Hold { .. } => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> RetryConfig {
        RetryConfig {
            initial_ms: 100,
            max_interval_ms: 1000,
            multiplier: 2.0,
            give_up_after_secs: None,
            give_up_after_attempts: None,
            stale_signature_retries: 2,
        }
    }

    fn retry(reason: RetryReason, after: Option<u64>) -> Verdict {
        Verdict::Retry { reason, after: after.map(Duration::from_secs), detail: "d".into() }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Runs verdicts through one batch's state; returns the steps.
    fn run(config: RetryConfig, verdicts: Vec<(Verdict, u64)>) -> Vec<Step> {
        let t0 = Instant::now();
        let mut st = Attempts::with_jitter(&config, t0, 0.0);
        verdicts
            .into_iter()
            .map(|(v, at_secs)| {
                st.begin();
                st.decide(v, t0 + Duration::from_secs(at_secs))
            })
            .collect()
    }

    #[test]
    fn final_verdicts_finish_with_the_attempts_made() {
        let table = [
            (Verdict::Delivered, Step::Finish(Final::Delivered)),
            (Verdict::Duplicate, Step::Finish(Final::Duplicate)),
            (Verdict::Answered(vec![]), Step::Finish(Final::Answered(vec![]))),
            (
                Verdict::Reject { reason: "bad".into(), per_record: true },
                Step::Finish(Final::Rejected { reason: "bad".into(), per_record: true, attempts: 1 }),
            ),
        ];
        for (verdict, want) in table {
            assert_eq!(run(config(), vec![(verdict.clone(), 0)]), [want], "{verdict:?}");
        }
    }

    #[test]
    fn retries_back_off_exponentially_up_to_the_cap_and_honour_retry_after() {
        let steps = run(
            config(),
            vec![
                (retry(RetryReason::ServerError, None), 0),
                (retry(RetryReason::Transport, None), 0),
                (retry(RetryReason::Timeout, Some(5)), 0),
                (retry(RetryReason::ServerError, None), 0),
                (retry(RetryReason::ServerError, None), 0),
            ],
        );
        let waits: Vec<Duration> = steps
            .iter()
            .map(|s| match s {
                Step::Retry { wait, .. } => *wait,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(waits, [ms(100), ms(200), Duration::from_secs(5), ms(800), ms(1000)]);
    }

    #[test]
    fn first_auth_refusal_refreshes_at_once_later_ones_back_off() {
        let steps =
            run(config(), vec![(Verdict::RefreshAuth, 0), (Verdict::RefreshAuth, 0), (Verdict::RefreshAuth, 0)]);
        assert_eq!(
            steps,
            [
                Step::RefreshAuth { wait: None },
                Step::RefreshAuth { wait: Some(ms(100)) },
                Step::RefreshAuth { wait: Some(ms(200)) }
            ]
        );
    }

    #[test]
    fn busy_pauses_the_sink_for_the_vendors_wait_or_the_backoff() {
        let steps = run(
            config(),
            vec![(Verdict::Busy { after: Some(Duration::from_secs(7)) }, 0), (Verdict::Busy { after: None }, 0)],
        );
        assert_eq!(steps, [Step::PauseSink { wait: Duration::from_secs(7) }, Step::PauseSink { wait: ms(100) }]);
    }

    #[test]
    fn stale_signatures_are_retried_a_bounded_number_of_times() {
        let stale = || (retry(RetryReason::StaleSignature, None), 0);
        let steps = run(config(), vec![stale(), stale(), stale()]);
        assert!(matches!(steps[0], Step::Retry { reason: RetryReason::StaleSignature, .. }));
        assert!(matches!(steps[1], Step::Retry { .. }));
        assert_eq!(
            steps[2],
            Step::Hold { wait: ms(400), reason: HoldReason::Signature, detail: "signature refused 3 times: d".into() },
            "refused after re-signing: the sink's token or clock, never a dead letter"
        );
    }

    #[test]
    fn sink_faults_hold_and_never_finish_even_past_the_give_up_age() {
        let cfg = RetryConfig { give_up_after_secs: Some(60), ..config() };
        let hold = |reason| (Verdict::Hold { reason, detail: "HTTP 404".into() }, 3600);
        let steps = run(cfg, vec![hold(HoldReason::Route), hold(HoldReason::Tls), hold(HoldReason::Credentials)]);
        let waits: Vec<Duration> = steps
            .iter()
            .map(|s| match s {
                Step::Hold { wait, .. } => *wait,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(waits, [ms(100), ms(200), ms(400)], "held with backoff");
    }

    #[test]
    fn only_answers_the_vendor_understood_end_a_hold() {
        let yes = [
            Verdict::Delivered,
            Verdict::Duplicate,
            Verdict::Reject { reason: "r".into(), per_record: false },
            Verdict::Busy { after: None },
            retry(RetryReason::VendorError, None),
        ];
        let no = [
            retry(RetryReason::Transport, None),
            retry(RetryReason::ServerError, None),
            retry(RetryReason::StaleSignature, None),
            Verdict::RefreshAuth,
            Verdict::Hold { reason: HoldReason::Route, detail: "d".into() },
        ];
        yes.iter().for_each(|v| assert!(clears_hold(v), "{v:?}"));
        no.iter().for_each(|v| assert!(!clears_hold(v), "{v:?}"));
    }

    #[test]
    fn give_up_after_an_age_when_configured_and_never_by_default() {
        let cfg = RetryConfig { give_up_after_secs: Some(60), ..config() };
        let steps =
            run(cfg, vec![(retry(RetryReason::ServerError, None), 10), (retry(RetryReason::ServerError, None), 61)]);
        assert!(matches!(steps[0], Step::Retry { .. }));
        assert_eq!(
            steps[1],
            Step::Finish(Final::Rejected {
                reason: "gave up after 61 s and 2 attempts: d".into(),
                per_record: false,
                attempts: 2
            })
        );
        let forever = run(config(), vec![(retry(RetryReason::ServerError, None), 86_400 * 30)]);
        assert!(matches!(forever[0], Step::Retry { .. }), "default: keep waiting");
        let cfg = RetryConfig { give_up_after_attempts: Some(2), ..config() };
        let steps = run(cfg, vec![(retry(RetryReason::Timeout, None), 0), (retry(RetryReason::Timeout, None), 0)]);
        assert!(matches!(steps[0], Step::Retry { .. }));
        assert_eq!(
            steps[1],
            Step::Finish(Final::Rejected {
                reason: "gave up after 0 s and 2 attempts: d".into(),
                per_record: false,
                attempts: 2
            })
        );
    }
}

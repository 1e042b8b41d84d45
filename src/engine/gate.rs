//! The gate every request of a sink passes: a sink-wide pause (HTTP 429 or a vendor's
//! "busy" code), the sink's rate limit and its optional per-lot limit, and the concurrency
//! limit. Lanes wait here; nothing else reads or writes this state.
//!
//! # One vendor budget across replicas
//! `requests_per_second` and `burst` are the whole budget of the sink's vendor, shared by
//! every replica of the sink's consumer group. A replica's [`RateShare`] is the part of it
//! in proportion to the input partitions it owns: `rate x owned / total` requests per
//! second (exact, governor refills one request every `total / (rate x owned)` s) and
//! `burst x owned / total` rounded down, at least 1. Since a partition has one owner, the
//! replicas together keep to the rate (and to the burst, unless more replicas own
//! partitions than the burst allows one each). This assumes the load spreads over the
//! partitions (records keyed by lot, many lots); a replica whose partitions carry more than
//! their share waits on its limiter while another idles. A lone replica owns every partition
//! and gets the whole rate; one owning none keeps 1 request per second. The per-lot limit
//! stays per lot: a lot's records are on one partition, so one replica sends them.
//!
//! The rebalance callbacks set the owned count (after a revoke's drain, and on assign), so
//! the share follows each rebalance before records of the new assignment are read; the
//! total is asked from the cluster by the intake (see `intake.rs`). Until it is known the
//! replica uses the whole rate, as a lone replica does.

use crate::config::RateLimitConfig;
use crate::metrics::Metrics;
use crate::vendors::HoldReason;
use governor::clock::DefaultClock;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use prometheus::{Gauge, Histogram, IntCounter, IntGauge, IntGaugeVec};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, Semaphore, SemaphorePermit};
use tokio::time::Instant;

/// How often per-lot limiter state is pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(10);

type DirectLimiter = RateLimiter<NotKeyed, InMemoryState, DefaultClock>;
type LotLimiter = RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock>;

/// Pause, hold, rate limits and concurrency of one sink.
pub(crate) struct Gate {
    sink: String,
    held: Mutex<Option<HoldReason>>,
    unheld: Notify,
    probe: Semaphore,
    held_gauge: IntGaugeVec,
    share: Arc<RateShare>,
    lot_limiter: Option<LotLimiter>,
    permits: Semaphore,
    paused_until: Mutex<Option<Instant>>,
    pruned_at: Mutex<Instant>,
    paused_gauge: IntGauge,
    wait_seconds: Histogram,
    waits: IntCounter,
}

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n.max(1)).unwrap_or(NonZeroU32::MIN)
}

/// The sink-wide limit of a replica owning `owned` of the `total` input partitions (`None`:
/// not known yet), and its rate in requests per second. See the module doc.
fn share_quota(rate: u32, burst: u32, owned: usize, total: Option<usize>) -> (Quota, f64) {
    let rate = rate.max(1);
    let whole = (Quota::per_second(nz(rate)).allow_burst(nz(burst)), f64::from(rate));
    let Some(total) = total.filter(|t| *t > 0) else { return whole };
    let owned = owned.min(total);
    if owned == total {
        return whole;
    }
    if owned == 0 {
        return (Quota::per_second(NonZeroU32::MIN), 1.0);
    }
    let (owned, total) = (owned as u128, total as u128);
    let period_nanos = 1_000_000_000 * total / (u128::from(rate) * owned);
    let period = Duration::from_nanos(u64::try_from(period_nanos).unwrap_or(u64::MAX));
    let share_burst = u32::try_from(u128::from(burst) * owned / total).unwrap_or(u32::MAX);
    let quota = Quota::with_period(period).unwrap_or(whole.0).allow_burst(nz(share_burst));
    (quota, f64::from(rate) * owned as f64 / total as f64)
}

/// This replica's share of the sink's rate limit: owned and total input partitions, and
/// the limiter built for them. Shared with the consumer's rebalance callbacks.
pub(crate) struct RateShare {
    rate: u32,
    burst: u32,
    state: Mutex<ShareState>,
    gauge: Gauge,
}

struct ShareState {
    owned: usize,
    total: Option<usize>,
    quota: Quota,
    limiter: Arc<DirectLimiter>,
}

impl RateShare {
    fn new(rl: &RateLimitConfig, gauge: Gauge) -> RateShare {
        let (quota, per_second) = share_quota(rl.requests_per_second, rl.burst, 0, None);
        gauge.set(per_second);
        let limiter = Arc::new(RateLimiter::direct(quota));
        let state = ShareState { owned: 0, total: None, quota, limiter };
        RateShare { rate: rl.requests_per_second, burst: rl.burst, state: Mutex::new(state), gauge }
    }

    /// Sets how many input partitions this replica owns (after each rebalance).
    pub(crate) fn set_owned(&self, owned: usize) {
        self.update(|s| s.owned = owned);
    }

    /// Sets how many partitions the sink's input topics have in all.
    pub(crate) fn set_total(&self, total: usize) {
        self.update(|s| s.total = Some(total));
    }

    /// The total last set, if any.
    pub(crate) fn total(&self) -> Option<usize> {
        self.lock().total
    }

    /// Applies `change`; builds a new limiter only when the quota changed (a new limiter
    /// starts with its burst available).
    fn update(&self, change: impl FnOnce(&mut ShareState)) {
        let mut s = self.lock();
        change(&mut s);
        let (quota, per_second) = share_quota(self.rate, self.burst, s.owned, s.total);
        if quota != s.quota {
            s.quota = quota;
            s.limiter = Arc::new(RateLimiter::direct(quota));
            self.gauge.set(per_second);
        }
    }

    fn limiter(&self) -> Arc<DirectLimiter> {
        self.lock().limiter.clone()
    }

    /// Waits for a request slot of the current limiter; a wait that began on a limiter
    /// replaced meanwhile also takes its slot from the new one, so every request counts
    /// against the share in force when it leaves.
    async fn until_ready(&self) {
        loop {
            let limiter = self.limiter();
            limiter.until_ready().await;
            if Arc::ptr_eq(&limiter, &self.limiter()) {
                return;
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ShareState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Gate {
    /// A gate with the sink's limits; its series are labelled `sink`.
    pub(crate) fn new(rl: &RateLimitConfig, concurrency: usize, metrics: &Metrics, sink: &str) -> Gate {
        let share_gauge = metrics.rate_limit_share.with_label_values(&[sink]);
        Gate {
            sink: sink.to_string(),
            held: Mutex::new(None),
            unheld: Notify::new(),
            probe: Semaphore::new(1),
            held_gauge: metrics.sink_held.clone(),
            share: Arc::new(RateShare::new(rl, share_gauge)),
            lot_limiter: rl.per_lot_per_second.map(|n| RateLimiter::keyed(Quota::per_second(nz(n)))),
            permits: Semaphore::new(concurrency),
            paused_until: Mutex::new(None),
            pruned_at: Mutex::new(Instant::now()),
            paused_gauge: metrics.sink_paused.with_label_values(&[sink]),
            wait_seconds: metrics.rate_limit_wait_seconds.with_label_values(&[sink]),
            waits: metrics.rate_limit_waits.with_label_values(&[sink]),
        }
    }

    /// Pauses every lane of the sink for `period` (a longer pause already set stays).
    pub(crate) fn pause_for(&self, period: Duration) {
        let until = Instant::now() + period;
        let mut guard = self.paused_until.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none_or(|u| u < until) {
            *guard = Some(until);
        }
        self.paused_gauge.set(1);
    }

    /// Waits while the sink is paused.
    pub(crate) async fn wait_unpaused(&self) {
        loop {
            let until = *self.paused_until.lock().unwrap_or_else(|p| p.into_inner());
            match until {
                Some(u) if u > Instant::now() => tokio::time::sleep_until(u).await,
                Some(_) => {
                    *self.paused_until.lock().unwrap_or_else(|p| p.into_inner()) = None;
                    self.paused_gauge.set(0);
                    return;
                }
                None => return,
            }
        }
    }

    /// Holds the sink for a fault of its own: from now on one lane at a time probes (see
    /// [`Gate::turn`]) until an answer proves the sink works again.
    pub(crate) fn hold(&self, reason: HoldReason, detail: &str) {
        let before = self.held.lock().unwrap_or_else(|p| p.into_inner()).replace(reason);
        if before != Some(reason) {
            for r in HoldReason::ALL {
                self.held_gauge.with_label_values(&[&self.sink, r.as_str()]).set(i64::from(r == reason));
            }
            tracing::error!(
                sink = %self.sink,
                reason = reason.as_str(),
                error = detail,
                "sink held: every record would fail alike; records wait in Kafka, nothing is dead-lettered; probing until it clears"
            );
        }
    }

    /// Ends a hold (an answer proved the sink works): every lane goes on.
    pub(crate) fn clear_hold(&self) {
        let Some(reason) = self.held.lock().unwrap_or_else(|p| p.into_inner()).take() else { return };
        self.held_gauge.with_label_values(&[&self.sink, reason.as_str()]).set(0);
        self.unheld.notify_waiters();
        tracing::info!(sink = %self.sink, reason = reason.as_str(), "sink hold cleared: delivering again");
    }

    /// Why the sink is held, if it is.
    pub(crate) fn held(&self) -> Option<HoldReason> {
        *self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the sink is held.
    pub(crate) fn is_held(&self) -> bool {
        self.held.lock().unwrap_or_else(|p| p.into_inner()).is_some()
    }

    /// While the sink is held, waits for this lane's turn to probe and returns the probe
    /// slot (keep it across the attempts until the hold ends); `None` when not held.
    pub(crate) async fn turn(&self) -> Option<SemaphorePermit<'_>> {
        loop {
            let unheld = self.unheld.notified();
            if !self.is_held() {
                return None;
            }
            tokio::select! {
                permit = self.probe.acquire() => match permit {
                    Ok(p) if self.is_held() => return Some(p),
                    Ok(_) => return None,
                    Err(_) => return None,
                },
                _ = unheld => {}
            }
        }
    }

    /// Waits for the rate limiters; records the time spent.
    pub(crate) async fn wait_rate(&self, lot: &str) {
        let start = Instant::now();
        self.share.until_ready().await;
        if let Some(per_lot) = &self.lot_limiter {
            per_lot.until_key_ready(&lot.to_string()).await;
        }
        let waited = start.elapsed().as_secs_f64();
        self.wait_seconds.observe(waited);
        if waited >= 0.001 {
            self.waits.inc();
        }
    }

    /// This replica's share of the sink's rate limit.
    pub(crate) fn rate_share(&self) -> Arc<RateShare> {
        self.share.clone()
    }

    /// A request slot; `None` once the sink is closing.
    pub(crate) async fn permit(&self) -> Option<SemaphorePermit<'_>> {
        self.permits.acquire().await.ok()
    }

    /// Forgets per-lot limiter state that no longer limits anything (lots gone quiet), so
    /// the keyed limiter does not grow with every lot ever seen. Called from housekeeping;
    /// does the work at most every [`PRUNE_EVERY`].
    pub(crate) fn prune(&self) {
        let mut at = self.pruned_at.lock().unwrap_or_else(|p| p.into_inner());
        if at.elapsed() < PRUNE_EVERY {
            return;
        }
        *at = Instant::now();
        self.prune_now();
    }

    fn prune_now(&self) {
        if let Some(per_lot) = &self.lot_limiter {
            per_lot.retain_recent();
            per_lot.shrink_to_fit();
        }
    }

    /// Lots the per-lot limiter tracks (for tests of pruning).
    #[cfg(test)]
    pub(crate) fn tracked_lots(&self) -> usize {
        self.lot_limiter.as_ref().map_or(0, |l| l.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn gate(per_lot: Option<u32>) -> Gate {
        let rl = RateLimitConfig { requests_per_second: 1000, burst: 1000, per_lot_per_second: per_lot };
        Gate::new(&rl, 2, &Metrics::new().unwrap(), "s")
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_holds_every_caller_until_it_ends_and_a_shorter_one_does_not_cut_it() {
        let g = gate(None);
        let start = Instant::now();
        g.pause_for(Duration::from_secs(5));
        g.pause_for(Duration::from_secs(1));
        g.wait_unpaused().await;
        assert_eq!(start.elapsed(), Duration::from_secs(5));
        assert_eq!(g.paused_gauge.get(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_held_sink_lets_one_probe_through_at_a_time_until_the_hold_clears() {
        let g = Arc::new(gate(None));
        assert!(g.turn().await.is_none(), "not held: no probe slot needed");
        g.hold(HoldReason::Route, "HTTP 404");
        assert_eq!(g.held_gauge.with_label_values(&["s", "route"]).get(), 1);
        let first = g.turn().await;
        assert!(first.is_some(), "the first lane probes");
        let waiting = tokio::spawn({
            let g = g.clone();
            async move { g.turn().await.is_none() }
        });
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!waiting.is_finished(), "a second lane waits while the first probes");
        g.clear_hold();
        assert!(waiting.await.unwrap(), "the hold cleared: the waiting lane goes on without a probe slot");
        assert_eq!(g.held_gauge.with_label_values(&["s", "route"]).get(), 0);
        drop(first);
    }

    #[test]
    fn a_replica_gets_the_share_of_the_rate_its_partitions_are_of_the_total() {
        let q = |owned, total| share_quota(20, 5, owned, total);
        let whole = Quota::per_second(nz(20)).allow_burst(nz(5));
        assert_eq!(q(4, Some(4)), (whole, 20.0), "a lone replica: the whole rate");
        assert_eq!(q(2, None), (whole, 20.0), "total unknown: the whole rate");
        let half = q(2, Some(4));
        assert_eq!(half.1, 10.0);
        assert_eq!(half.0.replenish_interval(), Duration::from_millis(100));
        assert_eq!(half.0.burst_size().get(), 2, "burst 5 x 2/4, rounded down");
        let third = q(2, Some(6));
        assert_eq!(third.0.replenish_interval(), Duration::from_millis(150));
        assert_eq!(third.0.burst_size().get(), 1);
        assert_eq!(q(0, Some(4)).1, 1.0, "no partitions: 1/s");
    }

    #[tokio::test]
    async fn per_lot_limiter_state_is_pruned_once_lots_go_quiet() {
        let g = gate(Some(50));
        for lot in 0..200 {
            g.wait_rate(&format!("lot-{lot}")).await;
        }
        assert_eq!(g.tracked_lots(), 200);
        // A lot's state is back to full after one period (20 ms at 50/s): wait for that.
        let deadline = Instant::now() + Duration::from_secs(10);
        while g.tracked_lots() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
            g.prune_now();
        }
        assert_eq!(g.tracked_lots(), 0, "lots whose limiter state is back to full are forgotten");
    }
}

//! The faults the demo injects by default, at fixed points of the run: a Bingzhouxing
//! outage (connections refused), expired tokens at the two token-based platforms, a few
//! server errors at zvcms, and a handful of records that are not valid events.

use crate::sim::{Failure, SimServer};
use std::collections::HashMap;
use std::time::Duration;

/// One scheduled fault.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// The named sink's simulator refuses connections for this long.
    Outage(&'static str, Duration),
    /// The token platforms forget every token they issued.
    ExpireTokens,
    /// The named sink's simulator answers the next `n` calls with HTTP 503.
    ServerErrors(&'static str, usize),
    /// This many invalid records are produced.
    Invalid(usize),
}

/// The schedule for a run of `duration`: (fraction of the run elapsed, fault).
pub fn schedule(duration: Duration) -> Vec<(f64, Fault)> {
    let outage = (duration / 5).clamp(Duration::from_secs(1), Duration::from_secs(6));
    vec![
        (0.2, Fault::Outage("bzx", outage)),
        (0.45, Fault::ExpireTokens),
        (0.55, Fault::ServerErrors("members", 3)),
        (0.6, Fault::Invalid(6)),
    ]
}

/// Applies a simulator fault; returns a line for the user. `Invalid` is the producer's.
pub fn apply(fault: &Fault, sims: &HashMap<String, SimServer>) -> String {
    match fault {
        Fault::Outage(sink, period) => {
            if let Some(s) = sims.get(*sink) {
                s.control.refuse_for(*period);
            }
            format!("fault: {sink} refuses connections for {} s", period.as_secs_f64())
        }
        Fault::ExpireTokens => {
            for name in ["isp", "coupons"] {
                if let Some(s) = sims.get(name) {
                    s.control.expire_tokens();
                }
            }
            "fault: isp and coupons expire every token they issued".into()
        }
        Fault::ServerErrors(sink, n) => {
            if let Some(s) = sims.get(*sink) {
                s.control.fail_next(*n, Failure::Status(503));
            }
            format!("fault: {sink} answers the next {n} calls with HTTP 503")
        }
        Fault::Invalid(n) => format!("fault: {n} invalid records produced (dead-lettered by every sink)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fault_happens_inside_the_run_and_the_outage_ends_in_it() {
        let d = Duration::from_secs(30);
        let plan = schedule(d);
        assert!(plan.iter().all(|(at, _)| *at > 0.0 && *at < 1.0));
        let Some((at, Fault::Outage(_, period))) = plan.first() else { panic!("outage first") };
        assert!(d.mul_f64(*at) + *period < d, "the vendor comes back before production ends");
    }
}

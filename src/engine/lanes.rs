//! The lane registry of one sink: a lane per platform lot, created on its first record and
//! retired when idle. A lane cannot retire between the lookup and the push of a record,
//! since both happen under the registry's lock.

use super::lane::{Item, Queue, Settled};
use prometheus::IntGauge;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Notify;
use tokio::time::Instant;

/// One lane's queue and wake-up.
#[derive(Default)]
pub(crate) struct Lane {
    queue: Mutex<Queue>,
    notify: Notify,
    /// Records of the batch being delivered (taken out of the queue).
    in_flight: AtomicUsize,
}

impl Lane {
    /// The queue, locked.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes how many records the lane's task is delivering now (0 when done).
    pub(crate) fn set_in_flight(&self, records: usize) {
        self.in_flight.store(records, Ordering::Relaxed);
    }

    /// Completes when something was queued since the last wake-up.
    pub(crate) async fn notified(&self) {
        self.notify.notified().await
    }
}

/// The lanes of one sink, by platform lot.
pub(crate) struct Lanes {
    lanes: Mutex<HashMap<String, Arc<Lane>>>,
    gauge: IntGauge,
}

impl Lanes {
    /// An empty registry; `gauge` counts its lanes.
    pub(crate) fn new(gauge: IntGauge) -> Lanes {
        Lanes { lanes: Mutex::new(HashMap::new()), gauge }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<Lane>>> {
        self.lanes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues items of one lot on its lane, in order, with one wake-up. Returns the items
    /// settled without a request, and the lane if it was just created (its task must be
    /// started).
    pub(crate) fn enqueue(&self, lot: &str, items: Vec<Item>) -> (Vec<(Item, Settled)>, Option<Arc<Lane>>) {
        let mut lanes = self.lock();
        let (lane, created) = match lanes.get(lot) {
            Some(lane) => (lane.clone(), false),
            None => {
                let lane = Arc::new(Lane::default());
                lanes.insert(lot.to_string(), lane.clone());
                self.gauge.set(lanes.len() as i64);
                (lane, true)
            }
        };
        let now = Instant::now();
        let settled = {
            let mut queue = lane.lock();
            items.into_iter().flat_map(|item| queue.push(item, now)).collect()
        };
        lane.notify.notify_one();
        (settled, created.then_some(lane))
    }

    /// Records waiting per lot: queued, and in the batch being delivered (status view).
    pub(crate) fn queued(&self) -> Vec<(String, usize)> {
        let lanes: Vec<(String, Arc<Lane>)> = self.lock().iter().map(|(l, lane)| (l.clone(), lane.clone())).collect();
        let waiting = |lane: &Lane| lane.lock().len() + lane.in_flight.load(Ordering::Relaxed);
        lanes.into_iter().map(|(lot, lane)| (lot, waiting(&lane))).collect()
    }

    /// Active lanes.
    pub(crate) fn count(&self) -> usize {
        self.lock().len()
    }

    /// Removes a lane whatever it holds (shutdown): its records are read again later.
    pub(crate) fn remove(&self, lot: &str, lane: &Arc<Lane>) {
        let mut lanes = self.lock();
        if lanes.get(lot).is_some_and(|l| Arc::ptr_eq(l, lane)) {
            lanes.remove(lot);
        }
        self.gauge.set(lanes.len() as i64);
    }

    /// Removes an idle lane; false if something arrived meanwhile (the lane goes on).
    pub(crate) fn retire(&self, lot: &str, lane: &Arc<Lane>) -> bool {
        let mut lanes = self.lock();
        if !lane.lock().is_empty() {
            return false;
        }
        lanes.remove(lot);
        self.gauge.set(lanes.len() as i64);
        true
    }
}

//! Contiguous offset watermarks: an offset is stored only once every record at or below it
//! has a final outcome (delivered, duplicate, skipped, coalesced or dead-lettered).
//!
//! Outcomes arrive out of order (lanes run concurrently); the watermark of a partition moves
//! only across an unbroken run of finished records, so a failed record is never skipped
//! over the way Vector's kafka source does (vector #24543).

use super::ahead::Ahead;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// A topic partition.
pub type TopicPartition = (Arc<str>, i32);

/// The records of one partition that are read but not all finished.
#[derive(Debug, Default)]
pub struct Tracker {
    pending: VecDeque<Slot>,
    last: Option<i64>,
    /// Finished records behind an unfinished one: they cannot be committed yet, so a crash
    /// now would deliver them again.
    finished_ahead: usize,
}

#[derive(Debug)]
struct Slot {
    offset: i64,
    done: bool,
    since: Instant,
}

impl Tracker {
    /// Registers a record just read. Returns false for an offset at or below one already
    /// registered (a re-fetch after a seek): it is handled already.
    pub fn register(&mut self, offset: i64, now: Instant) -> bool {
        if self.last.is_some_and(|last| offset <= last) {
            return false;
        }
        self.last = Some(offset);
        self.pending.push_back(Slot { offset, done: false, since: now });
        true
    }

    /// The offset after the last one registered: where reading must go on.
    pub fn next_to_read(&self) -> Option<i64> {
        self.last.map(|l| l + 1)
    }

    /// Marks `offset` finished. Returns the new watermark (the next offset to consume) when
    /// it moved.
    pub fn complete(&mut self, offset: i64) -> Option<i64> {
        let idx = self.pending.binary_search_by_key(&offset, |s| s.offset).ok()?;
        if self.pending[idx].done {
            return None;
        }
        self.pending[idx].done = true;
        self.finished_ahead += 1;
        let mut watermark = None;
        while self.pending.front().is_some_and(|s| s.done) {
            watermark = self.pending.pop_front().map(|s| s.offset + 1);
            self.finished_ahead -= 1;
        }
        watermark
    }

    /// Finished records that wait behind an unfinished one (see `finished_ahead`).
    pub fn finished_ahead(&self) -> usize {
        self.finished_ahead
    }

    /// The offsets of finished records still tracked (behind an unfinished one), ascending.
    pub fn finished_offsets(&self) -> impl Iterator<Item = i64> + '_ {
        self.pending.iter().filter(|s| s.done).map(|s| s.offset)
    }

    /// Records read but not all finished.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether every read record is finished.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// When the oldest unfinished record was read.
    pub fn oldest(&self) -> Option<Instant> {
        self.pending.iter().find(|s| !s.done).map(|s| s.since)
    }
}

/// Identifies a record's partition within one assignment (a revoked and re-assigned
/// partition gets a new generation, so late outcomes of the old one are ignored).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Ticket {
    /// Topic and partition.
    pub tp: TopicPartition,
    /// Assignment generation.
    pub generation: u64,
    /// The record's offset.
    pub offset: i64,
}

#[derive(Debug, Default)]
struct PartitionState {
    generation: u64,
    tracker: Tracker,
    /// The next offset to consume as the group last committed it (at first, where reading
    /// started).
    committed: Option<i64>,
    /// The last watermark stored for the next commit.
    stored: Option<i64>,
    /// Records finished before this assignment, beyond the committed offset (the map
    /// committed with it, see `ahead.rs`): not sent again.
    before: Ahead,
    /// The watermark and finished-ahead count last written into a map by
    /// [`Partitions::changed_maps`].
    mapped: Option<(i64, usize)>,
    /// How many finished-ahead records the last committed map named, with its offset.
    covered: (i64, usize),
}

impl PartitionState {
    /// Finished records a crash now would deliver again: those stored but not yet committed
    /// (counted in offsets), and those finished behind an unfinished one that the last
    /// committed map does not name.
    fn uncommitted(&self) -> usize {
        let stored_ahead = match (self.stored, self.committed) {
            (Some(stored), Some(committed)) => usize::try_from(stored - committed).unwrap_or(0),
            _ => 0,
        };
        let (at, named) = self.covered;
        let covered = if Some(at) == self.committed { named } else { 0 };
        stored_ahead + self.tracker.finished_ahead().saturating_sub(covered)
    }
}

/// The trackers of every partition assigned to one sink's consumer.
#[derive(Debug, Default)]
pub struct Partitions {
    inner: Mutex<PartitionsInner>,
    /// Bumped on every assign and revoke, so readers know when to look generations up again.
    changes: AtomicU64,
    /// Whether any partition was assigned with records finished before (a fast path for
    /// [`Partitions::finished_before`]).
    any_before: AtomicBool,
}

#[derive(Debug, Default)]
struct PartitionsInner {
    next_generation: u64,
    assigned: HashMap<TopicPartition, PartitionState>,
}

impl Partitions {
    fn lock(&self) -> MutexGuard<'_, PartitionsInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts tracking newly assigned partitions.
    pub fn assign(&self, tps: impl IntoIterator<Item = TopicPartition>) {
        let mut inner = self.lock();
        for tp in tps {
            inner.next_generation += 1;
            let generation = inner.next_generation;
            inner.assigned.insert(tp, PartitionState { generation, ..PartitionState::default() });
        }
        self.changes.fetch_add(1, Ordering::Release);
    }

    /// Stops tracking revoked partitions: outcomes of their records are ignored from now on.
    pub fn revoke(&self, tps: &[TopicPartition]) {
        let mut inner = self.lock();
        for tp in tps {
            inner.assigned.remove(tp);
        }
        self.changes.fetch_add(1, Ordering::Release);
    }

    /// Counts assignment changes (assign or revoke) so far.
    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::Acquire)
    }

    /// The current generation of every assigned partition.
    pub fn generations(&self) -> HashMap<TopicPartition, u64> {
        self.lock().assigned.iter().map(|(tp, s)| (tp.clone(), s.generation)).collect()
    }

    /// Registers a record; `None` if its partition is not assigned (a late message).
    #[cfg(test)]
    pub fn register(&self, tp: &TopicPartition, offset: i64) -> Option<Ticket> {
        self.register_all([(tp, offset)]).pop().flatten()
    }

    /// Registers records under the current assignment, in read order (tests).
    #[cfg(test)]
    pub fn register_all<'a>(
        &self,
        records: impl IntoIterator<Item = (&'a TopicPartition, i64)>,
    ) -> Vec<Option<Ticket>> {
        let generations = self.generations();
        let stamped: Vec<_> = records.into_iter().map(|(tp, o)| (tp, o, generations.get(tp).copied())).collect();
        self.register_read(stamped)
    }

    /// Registers records in read order under one lock, each with the generation of its
    /// partition when it was read; `None` for each whose partition is not assigned (a late
    /// message), was re-assigned since it was read (a batch decoded ahead across a
    /// rebalance: the new assignment reads it again from the committed offset), or that
    /// was registered already (a re-fetch).
    pub fn register_read<'a>(
        &self,
        records: impl IntoIterator<Item = (&'a TopicPartition, i64, Option<u64>)>,
    ) -> Vec<Option<Ticket>> {
        let now = Instant::now();
        let mut inner = self.lock();
        let register = |(tp, offset, read_under): (&TopicPartition, i64, Option<u64>)| {
            let state = inner.assigned.get_mut(tp).filter(|s| Some(s.generation) == read_under)?;
            state.committed.get_or_insert(offset);
            state.tracker.register(offset, now).then(|| Ticket { tp: tp.clone(), generation: state.generation, offset })
        };
        records.into_iter().map(register).collect()
    }

    /// Marks a record finished; returns the watermark to store when it moved.
    #[cfg(test)]
    pub fn complete(&self, ticket: &Ticket) -> Option<i64> {
        self.complete_all([ticket]).pop().map(|(_, next, _)| next)
    }

    /// Marks records finished under one lock; returns each partition whose watermark moved,
    /// once, with its new watermark and the finished-ahead map to store with it.
    pub fn complete_all<'a>(
        &self,
        tickets: impl IntoIterator<Item = &'a Ticket>,
    ) -> Vec<(TopicPartition, i64, String)> {
        let mut inner = self.lock();
        let mut moved: Vec<(TopicPartition, i64)> = Vec::new();
        for ticket in tickets {
            let Some(state) = inner.assigned.get_mut(&ticket.tp).filter(|s| s.generation == ticket.generation) else {
                continue;
            };
            let Some(next) = state.tracker.complete(ticket.offset) else { continue };
            state.stored = Some(next);
            match moved.iter_mut().find(|(tp, _)| *tp == ticket.tp) {
                Some(entry) => entry.1 = entry.1.max(next),
                None => moved.push((ticket.tp.clone(), next)),
            }
        }
        let mut stored = Vec::with_capacity(moved.len());
        for (tp, next) in moved {
            let map = match inner.assigned.get_mut(&tp) {
                Some(state) if state.tracker.finished_ahead() > 0 => {
                    state.before.forget_below(next);
                    Ahead::encode(next, state.tracker.finished_offsets())
                }
                Some(state) => {
                    state.before.forget_below(next);
                    String::new()
                }
                None => String::new(),
            };
            stored.push((tp, next, map));
        }
        stored
    }

    /// The maps of partitions whose finished-ahead records changed since the last call
    /// while their watermark did not move past them, with the watermark each goes with: a
    /// stuck record would otherwise keep every record finished behind it out of the commits.
    pub fn changed_maps(&self) -> Vec<(TopicPartition, i64, String)> {
        let mut inner = self.lock();
        let mut maps = Vec::new();
        for (tp, state) in inner.assigned.iter_mut() {
            let (Some(watermark), ahead) = (state.stored.or(state.committed), state.tracker.finished_ahead()) else {
                continue;
            };
            if ahead == 0 || state.mapped == Some((watermark, ahead)) {
                continue;
            }
            state.mapped = Some((watermark, ahead));
            maps.push((tp.clone(), watermark, Ahead::encode(watermark, state.tracker.finished_offsets())));
        }
        maps
    }

    /// Sets the records of an assigned partition finished before this assignment (the map
    /// committed with its offset).
    pub fn set_finished_before(&self, tp: &TopicPartition, before: Ahead) {
        if before.is_empty() {
            return;
        }
        if let Some(state) = self.lock().assigned.get_mut(tp) {
            state.before = before;
            self.any_before.store(true, Ordering::Release);
        }
    }

    /// For each ticket, whether its record was finished before this assignment.
    pub fn finished_before(&self, tickets: &[Option<Ticket>]) -> Vec<bool> {
        if !self.any_before.load(Ordering::Acquire) {
            return vec![false; tickets.len()];
        }
        let inner = self.lock();
        let before = |t: &Ticket| {
            inner.assigned.get(&t.tp).is_some_and(|s| s.generation == t.generation && s.before.contains(t.offset))
        };
        tickets.iter().map(|t| t.as_ref().is_some_and(before)).collect()
    }

    /// Whether the ticket's partition is still assigned in the same generation.
    #[cfg(test)]
    pub fn is_current(&self, ticket: &Ticket) -> bool {
        self.lock().assigned.get(&ticket.tp).is_some_and(|s| s.generation == ticket.generation)
    }

    /// [`Partitions::is_current`] for many tickets under one lock (`None`: not from Kafka,
    /// always current).
    pub fn are_current<'a>(&self, tickets: impl IntoIterator<Item = Option<&'a Ticket>>) -> Vec<bool> {
        let inner = self.lock();
        let current = |t: &Ticket| inner.assigned.get(&t.tp).is_some_and(|s| s.generation == t.generation);
        tickets.into_iter().map(|t| t.is_none_or(current)).collect()
    }

    /// Whether `tp` is assigned.
    pub fn owns(&self, tp: &TopicPartition) -> bool {
        self.lock().assigned.contains_key(tp)
    }

    /// Tracker slots of every assigned partition: records read and not yet behind the
    /// watermark, finished or not (what the trackers hold in memory).
    pub fn slots(&self) -> usize {
        self.lock().assigned.values().map(|s| s.tracker.len()).sum()
    }

    /// Unfinished records in the given partitions.
    pub fn unfinished(&self, tps: &[TopicPartition]) -> usize {
        let inner = self.lock();
        tps.iter().filter_map(|tp| inner.assigned.get(tp)).map(|s| s.tracker.len()).sum()
    }

    /// When the oldest unfinished record of any partition was read.
    pub fn oldest(&self) -> Option<Instant> {
        self.lock().assigned.values().filter_map(|s| s.tracker.oldest()).min()
    }

    /// Records the group's committed position of an assigned partition (from the commit
    /// callback).
    pub fn committed(&self, tp: &TopicPartition, next: i64, named: usize) {
        if let Some(state) = self.lock().assigned.get_mut(tp) {
            state.committed = Some(state.committed.map_or(next, |c| c.max(next)));
            if state.committed == Some(next) {
                state.covered = (next, named);
            }
        }
    }

    /// Finished records of every assigned partition that are not committed yet (stored
    /// for the next commit, or waiting behind an unfinished one): what a crash now would
    /// deliver a second time.
    pub fn uncommitted(&self) -> usize {
        self.lock().assigned.values().map(PartitionState::uncommitted).sum()
    }

    /// Where reading must go on, for every assigned partition that has read something.
    pub fn read_positions(&self) -> Vec<(TopicPartition, i64)> {
        self.lock().assigned.iter().filter_map(|(tp, s)| s.tracker.next_to_read().map(|n| (tp.clone(), n))).collect()
    }

    /// Every assigned partition.
    pub fn assigned(&self) -> Vec<TopicPartition> {
        self.lock().assigned.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watermark_moves_only_over_contiguous_outcomes() {
        let mut t = Tracker::default();
        let now = Instant::now();
        for o in [10, 11, 12, 14] {
            assert!(t.register(o, now));
        }
        assert!(!t.register(12, now), "a re-fetched record is not registered twice");
        assert_eq!(t.next_to_read(), Some(15));
        assert_eq!(t.complete(11), None, "10 is still open");
        assert_eq!(t.complete(14), None);
        assert_eq!(t.finished_ahead(), 2, "11 and 14 wait behind 10");
        assert_eq!(t.complete(14), None, "a second outcome for 14 changes nothing");
        assert_eq!(t.finished_ahead(), 2);
        assert_eq!(t.complete(10), Some(12), "10 and 11 done: next to consume is 12");
        assert_eq!(t.finished_ahead(), 1, "14 waits behind 12");
        assert_eq!(t.complete(12), Some(15), "the gap at 13 (compacted) is skipped");
        assert!(t.is_empty());
        assert_eq!(t.finished_ahead(), 0);
        assert_eq!(t.complete(99), None, "unknown offsets are ignored");
    }

    #[test]
    fn a_failed_record_holds_the_watermark() {
        let mut t = Tracker::default();
        let now = Instant::now();
        (0..100).for_each(|o| assert!(t.register(o, now)));
        for o in 1..100 {
            assert_eq!(t.complete(o), None);
        }
        assert_eq!(t.len(), 100);
        assert_eq!(t.complete(0), Some(100));
    }

    #[test]
    fn revoked_generations_are_ignored() {
        let p = Partitions::default();
        let tp: TopicPartition = (Arc::from("events"), 0);
        p.assign([tp.clone()]);
        let old = p.register(&tp, 5).unwrap();
        p.revoke(std::slice::from_ref(&tp));
        assert!(p.register(&tp, 6).is_none());
        p.assign([tp.clone()]);
        let new = p.register(&tp, 5).unwrap();
        assert_ne!(old.generation, new.generation);
        assert!(!p.is_current(&old));
        assert_eq!(p.complete(&old), None, "a late outcome of the old assignment");
        assert_eq!(p.unfinished(std::slice::from_ref(&tp)), 1);
        assert_eq!(p.complete(&new), Some(6));
    }

    #[test]
    fn records_read_under_an_earlier_assignment_are_not_registered_into_a_later_one() {
        let p = Partitions::default();
        let tp: TopicPartition = (Arc::from("events"), 0);
        p.assign([tp.clone()]);
        let read_under = p.generations().get(&tp).copied();
        let changes = p.changes();
        // The batch is decoded ahead; meanwhile the partition is revoked (the drain timed
        // out) and assigned again.
        p.revoke(std::slice::from_ref(&tp));
        p.assign([tp.clone()]);
        assert!(p.changes() > changes, "readers can tell the assignment changed");
        let stale = p.register_read([(&tp, 100, read_under), (&tp, 101, read_under)]);
        assert_eq!(stale, [None, None], "stale read-ahead records are dropped before registration");
        let now = p.generations().get(&tp).copied();
        let fresh: Vec<Ticket> = p.register_read([(&tp, 100, now), (&tp, 101, now)]).into_iter().flatten().collect();
        assert_eq!(fresh.len(), 2, "read again under the new assignment, they register");
        assert_eq!(p.complete_all(&fresh), [(tp, 102, String::new())]);
    }

    #[test]
    fn uncommitted_counts_stored_and_waiting_records_until_the_commit() {
        let p = Partitions::default();
        let tp: TopicPartition = (Arc::from("events"), 0);
        p.assign([tp.clone()]);
        let t: Vec<Ticket> = p.register_all((100..110).map(|o| (&tp, o))).into_iter().flatten().collect();
        assert_eq!(p.uncommitted(), 0, "reading started at the committed position 100");
        p.complete_all(&t[..4]);
        p.complete_all(&t[6..8]);
        assert_eq!(p.uncommitted(), 4 + 2, "100..=103 stored, 106 and 107 behind 104");
        p.committed(&tp, 104, 0);
        assert_eq!(p.uncommitted(), 2);
        p.committed(&tp, 90, 0);
        assert_eq!(p.uncommitted(), 2, "an older commit result does not move it back");
        p.complete_all(&t[4..6]);
        assert_eq!(p.uncommitted(), 4, "104..=107 stored");
        p.committed(&tp, 108, 0);
        assert_eq!(p.uncommitted(), 0);
    }

    #[test]
    fn finished_ahead_records_go_into_maps_and_a_committed_map_ends_their_exposure() {
        let p = Partitions::default();
        let tp: TopicPartition = (Arc::from("events"), 0);
        p.assign([tp.clone()]);
        let t: Vec<Ticket> = (10..16).map(|o| p.register(&tp, o).unwrap()).collect();
        p.complete_all([&t[2], &t[3], &t[5]]);
        let maps = p.changed_maps();
        assert_eq!(maps, [(tp.clone(), 10, "lb1:10:2+2,1+1".to_string())], "10 and 11 unfinished");
        assert!(p.changed_maps().is_empty(), "unchanged since");
        assert_eq!(p.uncommitted(), 3);
        p.committed(&tp, 10, 3);
        assert_eq!(p.uncommitted(), 0, "the committed map names all three");
        let moved = p.complete_all([&t[0]]);
        assert_eq!(moved, [(tp.clone(), 11, "lb1:11:1+2,1+1".to_string())], "stored with the map");
    }

    #[test]
    fn records_named_by_the_committed_map_are_finished_before_in_this_generation_only() {
        let p = Partitions::default();
        let tp: TopicPartition = (Arc::from("events"), 0);
        p.assign([tp.clone()]);
        p.set_finished_before(&tp, Ahead::decode("lb1:5:1+2", 5).unwrap());
        let tickets: Vec<Option<Ticket>> = (5..9).map(|o| p.register(&tp, o)).collect();
        assert_eq!(p.finished_before(&tickets), [false, true, true, false]);
        p.revoke(std::slice::from_ref(&tp));
        p.assign([tp.clone()]);
        let again: Vec<Option<Ticket>> = (5..9).map(|o| p.register(&tp, o)).collect();
        assert_eq!(p.finished_before(&again), [false; 4], "a new assignment reads its own map");
    }

    #[test]
    fn batch_completion_reports_each_moved_partition_once() {
        let p = Partitions::default();
        let (a, b): (TopicPartition, TopicPartition) = ((Arc::from("events"), 0), (Arc::from("events"), 1));
        p.assign([a.clone(), b.clone()]);
        let read = [(&a, 0), (&a, 1), (&b, 7), (&a, 2), (&a, 1)];
        let tickets = p.register_all(read);
        assert!(tickets[4].is_none(), "offset 1 of partition 0 again: a re-fetch");
        let t: Vec<Ticket> = tickets.into_iter().flatten().collect();
        assert_eq!(p.are_current(t.iter().map(Some).chain([None])), [true; 5]);
        assert_eq!(
            p.complete_all([&t[1], &t[2]]),
            [(b.clone(), 8, String::new())],
            "offset 0 of partition 0 is still open"
        );
        assert_eq!(p.complete_all([&t[3], &t[0]]), [(a.clone(), 3, String::new())], "the highest watermark, once");
        p.revoke(std::slice::from_ref(&a));
        assert_eq!(p.are_current([Some(&t[0]), Some(&t[2])]), [false, true]);
    }
}

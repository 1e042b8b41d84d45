//! The finished-ahead map: which records beyond a partition's watermark already have a
//! final outcome, written into the metadata of the partition's committed offset, so that
//! whoever reads the partition next (this process after a crash, or another replica after
//! a rebalance) does not send them again.
//!
//! Kafka keeps one offset per partition, while the lanes of different lots finish out of
//! order: without the map, every record finished behind an unfinished one is delivered a
//! second time after a crash (the largest share of crash duplicates, see RELIABILITY.md).
//!
//! Format, ASCII: `lb1:<watermark>:<gap>+<len>,<gap>+<len>,...`, each range of finished
//! offsets as its distance from the end of the previous range (from the watermark for the
//! first) and its length. At most [`MAX_METADATA`] bytes: ranges that do not fit are left
//! out, and their records are sent again, which at-least-once allows. A text that does not
//! parse, or whose watermark is not the committed offset it came with, is ignored the same
//! way: the map can only ever spare a resend, never skip a record it does not name.

/// The most bytes of map in a commit; Kafka's `offset.metadata.max.bytes` defaults to 4096.
pub(crate) const MAX_METADATA: usize = 3000;
/// The most tracker slots scanned to build a map (a stuck record can leave millions behind
/// it; a map is rebuilt every commit interval).
const MAX_SCAN: usize = 1 << 20;
const PREFIX: &str = "lb1:";

/// Finished offsets beyond a watermark, as sorted, disjoint ranges `[start, end)`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Ahead {
    ranges: Vec<(i64, i64)>,
}

impl Ahead {
    /// The map text for `watermark` and the finished offsets after it (ascending); empty
    /// when none is finished.
    pub(crate) fn encode(watermark: i64, finished: impl Iterator<Item = i64>) -> String {
        let mut text = String::new();
        let mut end = watermark;
        let mut run: Option<(i64, i64)> = None;
        let push = |text: &mut String, end: &mut i64, (start, stop): (i64, i64)| -> bool {
            let range = format!("{}+{}", start - *end, stop - start);
            let head = if text.is_empty() { PREFIX.len() + watermark.to_string().len() + 1 } else { 1 };
            if text.len() + head + range.len() > MAX_METADATA {
                return false;
            }
            if text.is_empty() {
                text.push_str(PREFIX);
                text.push_str(&watermark.to_string());
                text.push(':');
            } else {
                text.push(',');
            }
            text.push_str(&range);
            *end = stop;
            true
        };
        for offset in finished.take(MAX_SCAN) {
            if offset < end {
                continue; // at or behind the watermark, or out of order: never named
            }
            match &mut run {
                Some((_, stop)) if *stop == offset => *stop += 1,
                _ => {
                    if let Some(done) = run.replace((offset, offset + 1)) {
                        if !push(&mut text, &mut end, done) {
                            return text;
                        }
                    }
                }
            }
        }
        if let Some(done) = run {
            push(&mut text, &mut end, done);
        }
        text
    }

    /// The map in `text` if it was written for `committed` (the offset it was committed
    /// with); `None` for anything else.
    pub(crate) fn decode(text: &str, committed: i64) -> Option<Ahead> {
        let rest = text.strip_prefix(PREFIX)?;
        let (watermark, list) = rest.split_once(':')?;
        let watermark: i64 = watermark.parse().ok()?;
        if watermark != committed || watermark < 0 || text.len() > MAX_METADATA {
            return None;
        }
        let mut ranges = Vec::new();
        let mut end = watermark;
        for range in list.split(',') {
            let (gap, len) = range.split_once('+')?;
            let (gap, len): (i64, i64) = (gap.parse().ok()?, len.parse().ok()?);
            if gap < 0 || len <= 0 {
                return None;
            }
            let start = end.checked_add(gap)?;
            let stop = start.checked_add(len)?;
            ranges.push((start, stop));
            end = stop;
        }
        Some(Ahead { ranges })
    }

    /// Whether `offset` was finished.
    pub(crate) fn contains(&self, offset: i64) -> bool {
        let i = self.ranges.partition_point(|(_, stop)| *stop <= offset);
        self.ranges.get(i).is_some_and(|(start, _)| *start <= offset)
    }

    /// Forgets ranges wholly below `watermark`.
    pub(crate) fn forget_below(&mut self, watermark: i64) {
        self.ranges.retain(|(_, stop)| *stop > watermark);
    }

    /// Whether nothing is named.
    pub(crate) fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// How many offsets are named.
    pub(crate) fn len(&self) -> usize {
        self.ranges.iter().map(|(a, b)| usize::try_from(b - a).unwrap_or(0)).sum()
    }

    /// Offsets named.
    #[cfg(test)]
    fn offsets(&self) -> Vec<i64> {
        self.ranges.iter().flat_map(|(a, b)| *a..*b).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finished_offsets_round_trip_as_ranges() {
        let finished = [12, 13, 14, 20, 22, 23];
        let text = Ahead::encode(10, finished.into_iter());
        assert_eq!(text, "lb1:10:2+3,5+1,1+2");
        let ahead = Ahead::decode(&text, 10).expect("decodes");
        assert_eq!(ahead.offsets(), finished);
        assert!(!ahead.contains(10) && !ahead.contains(11) && ahead.contains(12) && !ahead.contains(21));
        assert!(ahead.contains(23) && !ahead.contains(24));
    }

    #[test]
    fn nothing_finished_ahead_is_no_map() {
        assert_eq!(Ahead::encode(7, std::iter::empty()), "");
        assert_eq!(Ahead::encode(7, [3, 6].into_iter()), "", "offsets behind the watermark are never named");
    }

    #[test]
    fn a_map_too_large_names_only_what_fits() {
        // Every other offset finished: one range each, far more than fit.
        let finished = (0..10_000).map(|i| 101 + 2 * i);
        let text = Ahead::encode(100, finished);
        assert!(text.len() <= MAX_METADATA, "{}", text.len());
        let ahead = Ahead::decode(&text, 100).expect("decodes");
        let named = ahead.offsets();
        assert!(named.len() > 500, "{}", named.len());
        assert_eq!(named, (0..named.len() as i64).map(|i| 101 + 2 * i).collect::<Vec<_>>(), "a prefix, in order");
    }

    #[test]
    fn anything_unreadable_or_for_another_offset_is_ignored() {
        for text in [
            "",
            "lb1:10:",
            "lb1:10:2+0",
            "lb1:10:-1+2",
            "lb1:10:2+3,x",
            "lb2:10:2+3",
            "lb1:x:2+3",
            "lb1:10:9223372036854775807+1",
            "lb1:-5:1+1",
            "committed by kafka-consumer-groups",
        ] {
            assert_eq!(Ahead::decode(text, 10), None, "{text:?}");
        }
        assert_eq!(Ahead::decode("lb1:10:2+3", 11), None, "a map for another offset");
        assert!(Ahead::decode("lb1:10:2+3", 10).is_some());
    }

    #[test]
    fn ranges_below_the_watermark_are_forgotten() {
        let mut ahead = Ahead::decode("lb1:0:2+3,5+1", 0).expect("decodes");
        ahead.forget_below(5);
        assert_eq!(ahead.offsets(), [10]);
        ahead.forget_below(11);
        assert!(ahead.is_empty());
    }
}

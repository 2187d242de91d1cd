//! Per-publisher sequence checks on the subscriber side, in constant memory
//! when events arrive in order: gaps (a jump past the next expected
//! sequence), reorders (a late arrival that fills a gap), duplicates, and at
//! the end what never arrived.

use std::collections::BTreeMap;

/// What one subscriber saw of one publisher's sequences (0, 1, 2, ...).
#[derive(Default, Debug, Clone)]
pub struct SeqTracker {
    /// One past the highest sequence seen.
    next: u64,
    /// Sequences below `next` not seen yet: start → end (exclusive).
    holes: BTreeMap<u64, u64>,
    pub unique: u64,
    pub gaps: u64,
    pub dups: u64,
    pub reorders: u64,
}

impl SeqTracker {
    /// Records sequence `s`; true when it is new.
    pub fn observe(&mut self, s: u64) -> bool {
        if s >= self.next {
            if s > self.next {
                self.gaps += 1;
                self.holes.insert(self.next, s);
            }
            self.next = s + 1;
            self.unique += 1;
            return true;
        }
        // Below `next`: a late arrival filling a hole, or a duplicate.
        let Some((&start, &end)) = self.holes.range(..=s).next_back() else {
            self.dups += 1;
            return false;
        };
        if s >= end {
            self.dups += 1;
            return false;
        }
        self.holes.remove(&start);
        if start < s {
            self.holes.insert(start, s);
        }
        if s + 1 < end {
            self.holes.insert(s + 1, end);
        }
        self.reorders += 1;
        self.unique += 1;
        true
    }

    /// Sequences below `accepted` (the publisher's acknowledged count) that
    /// never arrived.
    pub fn missing(&self, accepted: u64) -> u64 {
        let in_holes: u64 = self
            .holes
            .iter()
            .map(|(&a, &b)| b.min(accepted).saturating_sub(a))
            .sum();
        in_holes + accepted.saturating_sub(self.next)
    }
}

#[cfg(test)]
mod tests {
    use super::SeqTracker;

    #[test]
    fn in_order_then_gap_reorder_dup() {
        let mut t = SeqTracker::default();
        for s in 0..5 {
            assert!(t.observe(s));
        }
        assert_eq!((t.gaps, t.missing(5)), (0, 0));
        assert!(t.observe(8)); // 5, 6, 7 missing
        assert_eq!((t.gaps, t.missing(9)), (1, 3));
        assert!(t.observe(6)); // late
        assert!(!t.observe(6)); // dup
        assert!(!t.observe(2)); // dup
        assert_eq!((t.reorders, t.dups, t.missing(9)), (1, 2, 2));
        assert_eq!(t.missing(12), 5); // 5, 7, 9, 10, 11
        assert_eq!(t.unique, 7);
    }
}

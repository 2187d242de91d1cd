//! Whether a cursor still names the event it was given for.
//!
//! A cursor is a position plus the time of the event stored there. Recovery
//! moves a log to a new epoch when it cuts stored data it can see was cut
//! (a torn record), but some losses leave no trace in what remains: a file
//! cut exactly between two records (a page cache lost with `fsync =
//! "never"`), or a Redis server restarted from an older snapshot. The log
//! then hands the same positions out again, to new events. Their times
//! differ from the old events' (a log's times never go back, and the new
//! events were stored after the old ones), so a resume compares the time in
//! the cursor with the event stored at its position, and a mismatch is a
//! `416` (`GapReason::Recovered`) pointing at the last event both logs
//! share, instead of a silent skip of the new events.

use crate::{
    cursor::Cursor,
    store::{Gap, GapReason, Store},
};

/// `Some(gap)` when the log holds another event than `c`'s at `c`'s
/// position, or has gone back past it in the same epoch; `None` when it
/// holds the same one, or when this cannot tell (another epoch, a position
/// not retained or lost, a store error: the resume's own checks decide).
pub async fn mismatch(store: &dyn Store, topic: &str, c: &Cursor) -> Option<Box<Gap>> {
    if c.seq == 0 {
        return None;
    }
    let at = store.read(topic, c.seq - 1, 1).await.ok()?;
    let here = at.first().filter(|e| e.seq == c.seq);
    if here.is_some_and(|e| e.time_ms == c.time_ms) {
        return None;
    }
    let bounds = store.bounds(topic).await.ok()?;
    let hi = match here {
        Some(_) if c.epoch == bounds.epoch || bounds.forks.iter().any(|f| f.epoch == c.epoch) => {
            c.seq
        }
        // Ahead of the log it names: the log went back past it, and what it
        // holds from the last event both share on may be new events.
        None if c.epoch == bounds.epoch && c.seq > bounds.latest_seq => bounds.latest_seq + 1,
        // Lost, trimmed, another log: the resume's own checks decide.
        _ => return None,
    };
    // The last event both logs share is the last one stored no later than
    // the cursor's event: events stored after the loss are all later.
    let (mut lo, mut lo_time) = (bounds.first_seq - 1, bounds.first_time_ms);
    let mut hi = hi;
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        let page = store.read(topic, mid - 1, 1).await.ok()?;
        match page.first() {
            Some(e) if e.seq < hi && e.time_ms <= c.time_ms => (lo, lo_time) = (e.seq, e.time_ms),
            // Past `c`'s time, or no event in [mid, hi): the answer is below.
            _ => hi = mid,
        }
    }
    Some(Box::new(Gap {
        requested: c.clone(),
        next_cursor: Cursor::new(lo_time, lo, bounds.epoch.clone()),
        latest_cursor: bounds.latest_cursor(),
        lost: None,
        reason: GapReason::Recovered,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        cursor::now_ms,
        event::{AppendOutcome, NewEvent},
        memory_store::MemoryStore,
    };

    async fn publish(store: &MemoryStore, n: usize, time_ms: i64) -> Vec<Cursor> {
        let mut out = Vec::new();
        for i in 0..n {
            let res = store
                .append("t", vec![NewEvent::data(format!("{i}"))], time_ms)
                .await
                .unwrap();
            let AppendOutcome::Stored(e) = &res[0] else {
                panic!()
            };
            let epoch = store.bounds("t").await.unwrap().epoch;
            out.push(e.cursor(&epoch));
        }
        out
    }

    #[tokio::test]
    async fn a_position_handed_out_again_is_a_gap_back_to_the_shared_prefix() {
        let store = MemoryStore::default();
        store.open_topic("t").await.unwrap();
        let t0 = now_ms() - 60_000;
        let old = publish(&store, 6, t0).await;
        // The same epoch kept events 1 to 3, then stored three others.
        store.rewind("t", 3);
        let new = publish(&store, 3, t0 + 1_000).await;
        for c in &old[..3] {
            assert!(mismatch(&store, "t", c).await.is_none(), "{c}");
        }
        for c in &old[3..] {
            let gap = mismatch(&store, "t", c).await.expect("another event there");
            assert_eq!(gap.reason, GapReason::Recovered);
            assert_eq!(gap.next_cursor, old[2], "the last event both logs share");
        }
        for c in &new {
            assert!(mismatch(&store, "t", c).await.is_none(), "{c}");
        }
        // Gone back past the cursor, with new events since the shared part:
        // resuming after the latest would skip them.
        store.rewind("t", 2);
        let newer = publish(&store, 1, t0 + 2_000).await;
        let gap = mismatch(&store, "t", &old[5])
            .await
            .expect("ahead of the log");
        assert_eq!(gap.next_cursor, old[1]);
        assert!(mismatch(&store, "t", &newer[0]).await.is_none());
    }
}

//! The follower's decisions, without a store or an actor.

use bytes::Bytes;

use super::*;

fn bounds(epoch: &Epoch, first: u64, latest: u64) -> TopicBounds {
    TopicBounds {
        epoch: epoch.clone(),
        first_seq: first,
        first_time_ms: 10,
        latest_seq: latest,
        latest_time_ms: 20,
        forks: Vec::new(),
        lost: Vec::new(),
    }
}

fn events(seqs: std::ops::RangeInclusive<u64>) -> Vec<StoredEvent> {
    seqs.map(|seq| StoredEvent {
        seq,
        time_ms: seq as i64,
        event_type: None,
        data: Bytes::from_static(b"x"),
    })
    .collect()
}

#[test]
fn adopts_a_fresh_log_a_continued_one_and_a_reset() {
    let (e1, e2) = (Epoch::generate(), Epoch::generate());
    let mut f = Follower::default();
    assert_eq!(f.adopt(bounds(&e1, 1, 5)), Adopted::Fresh);
    // The same log, longer (another instance appended while we restarted):
    // what we applied stays ours, the rest is to be filled.
    assert_eq!(f.adopt(bounds(&e1, 1, 8)), Adopted::Continued);
    assert_eq!(f.latest(), Some(5));
    assert_eq!(f.start_fill(), Some(5));
    f.fill_done();
    assert_eq!(f.apply(&events(6..=8)), Apply::Fresh { from: 0 });
    assert_eq!(f.start_fill(), None);
    // Another epoch: the log was wiped and recreated.
    assert!(f.is_reset(&bounds(&e2, 1, 0)));
    assert_eq!(f.adopt(bounds(&e2, 1, 0)), Adopted::Reset);
    assert_eq!(f.latest(), Some(0));
}

#[test]
fn applies_what_follows_skips_what_it_has_and_fills_a_hole() {
    let e = Epoch::generate();
    let mut f = Follower::default();
    assert_eq!(f.apply(&events(1..=2)), Apply::Nothing, "not loaded yet");
    f.adopt(bounds(&e, 1, 3));
    assert_eq!(f.apply(&events(2..=5)), Apply::Fresh { from: 2 });
    assert_eq!(f.latest(), Some(5));
    assert_eq!(f.apply(&events(1..=5)), Apply::Nothing, "all applied");
    assert_eq!(f.apply(&events(8..=9)), Apply::Fill, "6 and 7 missing");
    assert_eq!(f.start_fill(), Some(5));
    assert_eq!(
        f.apply(&events(10..=10)),
        Apply::Nothing,
        "a fill is running"
    );
    f.fill_done();
    assert_eq!(f.apply(&events(6..=10)), Apply::Fresh { from: 0 });
}

#[test]
fn learns_of_other_instances_appends_only_when_it_can_show_them() {
    let e = Epoch::generate();
    let mut f = Follower::default();
    f.adopt(bounds(&e, 1, 3));
    assert_eq!(
        f.learn_latest(&bounds(&e, 1, 7), 1),
        (None, false),
        "own append in flight"
    );
    assert_eq!(f.learn_latest(&bounds(&e, 1, 7), 0), (Some(7), true));
    assert_eq!(
        f.learn_latest(&bounds(&e, 1, 7), 0),
        (Some(7), false),
        "known already"
    );
    let other = Epoch::generate();
    assert_eq!(f.learn_latest(&bounds(&other, 1, 9), 0), (None, false));
}

#[test]
fn starts_subscriptions_where_asked_or_refuses_with_the_gap() {
    let e = Epoch::generate();
    let mut f = Follower::default();
    f.adopt(bounds(&e, 1, 10));
    // Retention moved the start of the log to 4.
    f.refresh_first(&bounds(&e, 4, 12));
    assert_eq!(f.bounds().unwrap().first_seq, 4);
    assert_eq!(f.bounds().unwrap().latest_seq, 10, "the latest stays ours");
    let start = |s: &Start, on_gap| f.check_start(s, on_gap, Some((12, 77)));
    assert_eq!(start(&Start::Earliest, false).unwrap().after_seq, 3);
    let latest = start(&Start::Latest, false).unwrap();
    assert_eq!((latest.after_seq, latest.after_time_ms), (12, 77));
    let at = |seq| Start::After(Cursor::new(5, seq, e.clone()));
    assert_eq!(start(&at(7), false).unwrap().after_seq, 7);
    let gap = start(&at(1), false).unwrap_err();
    assert_eq!(gap.lost, Some(2));
    let resumed = start(&at(1), true).unwrap();
    assert_eq!(
        (resumed.after_seq, resumed.gap.map(|g| g.lost)),
        (3, Some(Some(2)))
    );
    // Past what this topic applied (10) but stored (12): another
    // instance's events, on their way here.
    assert_eq!(start(&at(12), false).unwrap().after_seq, 12);
    assert_eq!(
        start(&at(13), false).unwrap_err().reason,
        GapReason::Ahead,
        "ahead of the store too"
    );
    assert_eq!(
        f.check_start(&at(11), false, None).unwrap_err().reason,
        GapReason::Ahead,
        "the store's latest unknown"
    );
    let other = Start::After(Cursor::new(5, 7, Epoch::generate()));
    assert_eq!(
        start(&other, false).unwrap_err().lost,
        None,
        "another epoch"
    );
}

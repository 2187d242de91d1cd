//! A model-based property test of the delivery state machine: a topic's
//! fan-out, its subscriptions and their catch-ups, driven without actix or
//! sockets through random interleavings of publishes, body takes, resumes
//! reaching the topic late, catch-up pages, topic restarts, late
//! subscribers, clients that go away and streams whose token expires.
//! Whatever the interleaving, each body yields the published sequence after
//! its start, with no gap and no duplicate, and never holds more than the
//! high watermark plus one batch; a finished stream's last frame names the
//! last event its body yielded, and nothing follows it.

use std::sync::Arc;

use bytes::Bytes;
use proptest::prelude::*;

use super::*;
use crate::topic::fanout::{Fanout, FanoutLimits, Order};

const MARKS: Watermarks = Watermarks {
    high_events: 6,
    high_bytes: 1 << 20,
    low_events: 2,
    low_bytes: 1 << 20,
};
const TAIL: usize = 8;
const MAX_BATCH: usize = 5;
/// Events per catch-up page.
const PAGE: usize = 4;
/// A catch-up reads its next page once no more than this waits.
const AHEAD_BYTES: usize = 3 * FRAME_LEN;
const FRAME_LEN: usize = 7;
const MAX_SUBS: usize = 4;

fn frame(seq: u64) -> FramedEvent {
    FramedEvent {
        seq,
        time_ms: 0,
        frame: Bytes::from(format!("{seq:06}\n")),
    }
}

#[derive(Debug, Clone)]
enum Op {
    Publish(usize),
    /// Subscriber `i % n`'s body takes one chunk.
    Take(usize),
    /// The topic handles subscriber `i`'s oldest resume in flight.
    Rejoin(usize),
    /// Subscriber `i`'s catch-up reads one page, if there is room.
    CatchUp(usize),
    /// The topic actor restarts and reloads.
    Restart,
    /// A new subscriber starts after `latest * k / 4`.
    Subscribe(u8),
    /// Subscriber `i`'s client goes away.
    Leave(usize),
    /// Subscriber `i`'s stream ends with a last frame (its token expired).
    Finish(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1..=MAX_BATCH).prop_map(Op::Publish),
        6 => any::<usize>().prop_map(Op::Take),
        3 => any::<usize>().prop_map(Op::Rejoin),
        3 => any::<usize>().prop_map(Op::CatchUp),
        1 => Just(Op::Restart),
        1 => (0u8..=4).prop_map(Op::Subscribe),
        1 => any::<usize>().prop_map(Op::Leave),
        1 => any::<usize>().prop_map(Op::Finish),
    ]
}

struct Sub {
    sub: Arc<Subscription>,
    /// Where it started.
    start: u64,
    /// Sequences its body yielded.
    got: Vec<u64>,
    /// Resumes sent to the topic and not handled yet.
    rejoins: usize,
    /// Its catch-up runs.
    catching_up: bool,
    left: bool,
    /// The position its last frame named, once finished.
    finished: Option<u64>,
    /// Its body yielded the last frame.
    end_seen: bool,
}

struct Model {
    fanout: Fanout<()>,
    subs: Vec<Sub>,
    /// Every stored event (the store).
    log: Vec<FramedEvent>,
    next_id: u64,
}

impl Model {
    fn new() -> Self {
        Model {
            fanout: Fanout::new(FanoutLimits {
                tail_events: TAIL,
                tail_bytes: 1 << 20,
                chunk_events: MARKS.high_events as usize,
            }),
            subs: Vec::new(),
            log: Vec::new(),
            next_id: 1,
        }
    }

    fn latest(&self) -> u64 {
        self.log.len() as u64
    }

    fn pick(&self, i: usize) -> Option<usize> {
        (!self.subs.is_empty()).then(|| i % self.subs.len())
    }

    fn obey(&mut self, orders: Vec<Order>) {
        for o in orders {
            match o {
                Order::CatchUp(id) => {
                    let s = self.subs.iter_mut().find(|s| s.sub.id == id).unwrap();
                    assert!(!s.catching_up, "one catch-up at a time");
                    s.catching_up = true;
                }
                Order::End(id, reason) => panic!("stream {id} ended: {reason:?}"),
            }
        }
    }

    fn subscribe(&mut self, after: u64) {
        let id = self.next_id;
        self.next_id += 1;
        let sub = Arc::new(Subscription::new(id, Arc::from("t"), MARKS));
        sub.start_after(after, 0);
        self.fanout.add(sub.clone(), ());
        self.subs.push(Sub {
            sub,
            start: after,
            got: Vec::new(),
            rejoins: 0,
            catching_up: false,
            left: false,
            finished: None,
            end_seen: false,
        });
        let order = self.fanout.feed(id, self.latest());
        self.obey(order.into_iter().collect());
    }

    /// Applies one step; returns whether anything happened.
    fn step(&mut self, op: &Op) -> bool {
        match *op {
            Op::Publish(n) => {
                let first = self.latest() + 1;
                let batch: Arc<[FramedEvent]> = (first..first + n as u64).map(frame).collect();
                self.log.extend(batch.iter().cloned());
                let orders = self.fanout.publish(&batch);
                self.obey(orders);
                true
            }
            Op::Take(i) => {
                let Some(i) = self.pick(i) else { return false };
                let s = &mut self.subs[i];
                if s.left {
                    return false;
                }
                let waker = futures_util::task::noop_waker();
                let mut cx = std::task::Context::from_waker(&waker);
                let Poll::Ready(Some(taken)) = s.sub.poll_take(&mut cx) else {
                    return false;
                };
                let text = std::str::from_utf8(&taken.bytes).unwrap();
                for line in text.lines() {
                    assert!(
                        !s.end_seen,
                        "sub {}: {line:?} after the last frame",
                        s.sub.id
                    );
                    if let Some(named) = line.strip_prefix("end ") {
                        let named: u64 = named.parse().unwrap();
                        let last = s.got.last().map_or(s.start, |l| *l);
                        assert_eq!(Some(named), s.finished);
                        assert_eq!(
                            named, last,
                            "sub {}: last frame names another event",
                            s.sub.id
                        );
                        s.end_seen = true;
                        continue;
                    }
                    let seq: u64 = line.parse().unwrap();
                    let expected = s.got.last().map_or(s.start, |l| *l) + 1;
                    assert_eq!(seq, expected, "sub {}: gap or duplicate", s.sub.id);
                    s.got.push(seq);
                }
                if taken.resume {
                    s.rejoins += 1;
                }
                true
            }
            Op::Rejoin(i) => {
                let Some(i) = self.pick(i) else { return false };
                if self.subs[i].rejoins == 0 {
                    return false;
                }
                self.subs[i].rejoins -= 1;
                let id = self.subs[i].sub.id;
                let order = self.fanout.feed(id, self.latest());
                self.obey(order.into_iter().collect());
                true
            }
            Op::CatchUp(i) => {
                let Some(i) = self.pick(i) else { return false };
                let s = &mut self.subs[i];
                if !s.catching_up {
                    return false;
                }
                let b = s.sub.backlog();
                if b.bytes > AHEAD_BYTES || b.events > MARKS.high_events {
                    return false;
                }
                let (after, _) = s.sub.position();
                let page: Vec<FramedEvent> = self
                    .log
                    .iter()
                    .skip(after as usize)
                    .take(PAGE)
                    .cloned()
                    .collect();
                let short = page.len() < PAGE;
                if !page.is_empty() {
                    let buf = Bytes::from(
                        page.iter()
                            .flat_map(|f| f.frame.to_vec())
                            .collect::<Vec<_>>(),
                    );
                    let mut at = 0;
                    let framed: Arc<[FramedEvent]> = page
                        .iter()
                        .map(|f| {
                            let e = FramedEvent {
                                frame: buf.slice(at..at + f.frame.len()),
                                ..f.clone()
                            };
                            at += f.frame.len();
                            e
                        })
                        .collect();
                    match s.sub.push_page(&framed, buf) {
                        Offer::Queued => {}
                        // The catch-up ends with its client.
                        Offer::Gone => {
                            s.catching_up = false;
                            return true;
                        }
                        other => panic!("catch-up page: {other:?}"),
                    }
                }
                if short {
                    s.catching_up = false;
                    s.sub.caught_up();
                    s.rejoins += 1;
                }
                true
            }
            Op::Restart => {
                self.fanout.hold_all();
                let orders = self.fanout.feed_all(self.latest());
                self.obey(orders);
                true
            }
            Op::Subscribe(k) => {
                if self.subs.len() >= MAX_SUBS {
                    return false;
                }
                self.subscribe(self.latest() * u64::from(k) / 4);
                true
            }
            Op::Leave(i) => {
                let Some(i) = self.pick(i) else { return false };
                let s = &mut self.subs[i];
                if s.left {
                    return false;
                }
                s.left = true;
                s.sub.close();
                self.fanout.remove(s.sub.id);
                true
            }
            Op::Finish(i) => {
                let Some(i) = self.pick(i) else { return false };
                let s = &mut self.subs[i];
                let mut named = None;
                let finished = s.sub.finish(|seq, _| {
                    named = Some(seq);
                    Bytes::from(format!("end {seq:06}\n"))
                });
                assert_eq!(finished, !s.left && s.finished.is_none());
                if finished {
                    s.finished = named;
                }
                finished
            }
        }
    }

    fn check_backlogs(&self) {
        let one_batch = MAX_BATCH.max(PAGE).max(MARKS.high_events as usize) as u64;
        for s in &self.subs {
            let b = s.sub.backlog();
            assert!(
                b.events <= MARKS.high_events + one_batch,
                "sub {} holds {} events",
                s.sub.id,
                b.events
            );
        }
    }

    /// Runs every subscriber to quiescence: its body reads all, resumes
    /// reach the topic, catch-ups finish.
    fn drain(&mut self) {
        for _ in 0..100_000 {
            let mut moved = false;
            for i in 0..self.subs.len() {
                for op in [Op::Take(i), Op::Rejoin(i), Op::CatchUp(i)] {
                    moved |= self.step(&op);
                    self.check_backlogs();
                }
            }
            if !moved {
                return;
            }
        }
        panic!("no quiescence");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_body_yields_the_log_once_in_order(ops in proptest::collection::vec(op(), 1..200)) {
        let mut m = Model::new();
        m.subscribe(0);
        for op in &ops {
            m.step(op);
            m.check_backlogs();
        }
        m.drain();
        let latest = m.latest();
        for s in m.subs.iter().filter(|s| !s.left) {
            let end = s.finished.unwrap_or(latest);
            let want: Vec<u64> = (s.start + 1..=end).collect();
            prop_assert_eq!(&s.got, &want, "sub {} flow {:?}", s.sub.id, s.sub.flow());
            if s.finished.is_some() {
                prop_assert!(s.end_seen, "sub {}: no last frame", s.sub.id);
                let waker = futures_util::task::noop_waker();
                let mut cx = std::task::Context::from_waker(&waker);
                prop_assert!(matches!(s.sub.poll_take(&mut cx), Poll::Ready(None)));
            } else {
                prop_assert_eq!(s.sub.flow(), Flow::Live);
            }
        }
    }
}

#[test]
fn a_paused_subscriber_resumes_at_its_low_watermark() {
    let mut m = Model::new();
    m.subscribe(0);
    m.step(&Op::Publish(5));
    m.step(&Op::Publish(5));
    assert_eq!(m.subs[0].sub.flow(), Flow::Live);
    // Ten queued, over the high watermark: the next batch pauses it.
    m.step(&Op::Publish(1));
    assert_eq!(m.subs[0].sub.flow(), Flow::Paused);
    // Takes drain it; the take that reaches the low watermark resumes it.
    while m.subs[0].rejoins == 0 {
        assert!(m.step(&Op::Take(0)));
    }
    assert_eq!(m.subs[0].sub.flow(), Flow::Rejoining);
    m.step(&Op::Rejoin(0));
    m.drain();
    assert_eq!(m.subs[0].got, (1..=11).collect::<Vec<_>>());
    assert_eq!(m.subs[0].sub.flow(), Flow::Live);
}

//! The pipe from a subscriber's producers to its HTTP response body.
//!
//! Each session has one [`Outbox`] (inside its [`SessionLink`]). The topic
//! queues live batches there directly, from its own thread, without a
//! message to the session: a queued batch is a reference to the framed
//! events every subscriber shares, so queueing costs no copy and no
//! allocation beyond the queue slot. The session queues what it reads from
//! the store on a catch-up, its heartbeats and notices. The response body,
//! when the socket can take more, takes everything queued (up to
//! [`CHUNK_MAX`] bytes) as one chunk: frames that arrived while the socket
//! was busy go out in one write.
//!
//! Progress is acknowledged when the body *takes* a chunk, so a subscriber's
//! outstanding depth (what the topic's watermarks measure) covers everything
//! not yet handed to the socket; the watermarks bound the queue.

use std::{
    collections::VecDeque,
    convert::Infallible,
    pin::Pin,
    sync::{atomic::Ordering, Arc},
    task::{Context, Poll, Waker},
};

use actix::Addr;
use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use tokio::sync::oneshot;

use crate::{
    link::SessionLink,
    metrics::metrics,
    sse::FramedEvent,
    topic::{Ready, TopicActor},
};

/// Most bytes the body takes at once (a single larger event is one chunk).
pub const CHUNK_MAX: usize = 64 << 10;

/// Something queued for the body, in wire order.
enum Item {
    /// `batch[from..]`, shared with the topic's tail and other subscribers.
    Events {
        batch: Arc<[FramedEvent]>,
        from: usize,
        /// Live events (not read back from the store) feed the
        /// publish→delivery latency histogram.
        live: bool,
        /// The buffer the frames are consecutive slices of, when they are
        /// (a catch-up page): a run of them is taken as one slice, no copy.
        page: Option<Bytes>,
    },
    /// A frame that is not an event (keep-alive, probe, notice).
    Raw(Bytes),
}

/// A subscriber's queue of frames not yet taken by its body.
#[derive(Default)]
pub struct Outbox {
    items: VecDeque<Item>,
    /// Event frame bytes queued and not yet taken.
    queued_bytes: usize,
    /// Last sequence queued; anything at or below is skipped, which makes a
    /// duplicate impossible whatever the producers queue.
    last_seq: u64,
    /// Time of the event at `last_seq` (0 until one is queued).
    last_time_ms: i64,
    /// The body waits for frames.
    waker: Option<Waker>,
    /// Chunks the body has taken, to tell a stuck socket from a busy one.
    takes: u64,
    /// The body is gone: the client disconnected.
    closed: bool,
    /// The session ended: the body ends once the queue is drained.
    ended: bool,
}

/// What became of frames offered to an outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queued {
    /// Queued (or already queued before: nothing new).
    Yes,
    /// Not queued: something else is waiting, which is a write already.
    Busy,
    /// The body is gone.
    Closed,
    /// The frames do not follow the last queued sequence.
    Gap {
        /// The sequence that should have come next.
        expected: u64,
        /// The one that came.
        got: u64,
    },
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("items", &self.items.len())
            .field("queued_bytes", &self.queued_bytes)
            .field("last_seq", &self.last_seq)
            .field("closed", &self.closed)
            .field("ended", &self.ended)
            .finish()
    }
}

impl Outbox {
    /// An outbox whose subscriber has everything up to `after_seq`.
    pub fn new(after_seq: u64) -> Self {
        Outbox {
            last_seq: after_seq,
            ..Outbox::default()
        }
    }

    /// Moves the position of a subscriber that has nothing queued yet.
    pub(crate) fn reset(&mut self, after_seq: u64) {
        self.last_seq = after_seq;
    }

    fn wake(&mut self) -> Option<Waker> {
        self.waker.take()
    }
}

/// Queues the events of `batch` after the subscriber's position; the part at
/// or below it is skipped and its bytes acknowledged at once (the producer
/// counts the whole batch as delivered).
pub fn queue_events(link: &SessionLink, batch: &Arc<[FramedEvent]>, live: bool) -> Queued {
    queue(link, batch, live, None)
}

/// Queues a catch-up page: `batch`'s frames are consecutive slices of `page`.
pub fn queue_page(link: &SessionLink, batch: &Arc<[FramedEvent]>, page: Bytes) -> Queued {
    queue(link, batch, false, Some(page))
}

fn queue(
    link: &SessionLink,
    batch: &Arc<[FramedEvent]>,
    live: bool,
    page: Option<Bytes>,
) -> Queued {
    let mut ob = link.outbox.lock().expect("outbox poisoned");
    // An ended session takes nothing more: its body ends once drained.
    if ob.closed || ob.ended {
        return Queued::Closed;
    }
    let from = batch.partition_point(|e| e.seq <= ob.last_seq);
    let skipped: u64 = batch[..from].iter().map(|e| e.frame.len() as u64).sum();
    let Some(last) = batch.last().filter(|_| from < batch.len()) else {
        drop(ob);
        link.acked_bytes.fetch_add(skipped, Ordering::SeqCst);
        return Queued::Yes;
    };
    let first = batch[from].seq;
    if first != ob.last_seq + 1 {
        return Queued::Gap {
            expected: ob.last_seq + 1,
            got: first,
        };
    }
    ob.last_seq = last.seq;
    ob.last_time_ms = last.time_ms;
    ob.queued_bytes += batch[from..].iter().map(|e| e.frame.len()).sum::<usize>();
    ob.items.push_back(Item::Events {
        batch: batch.clone(),
        from,
        live,
        page,
    });
    let waker = ob.wake();
    drop(ob);
    if skipped > 0 {
        link.acked_bytes.fetch_add(skipped, Ordering::SeqCst);
    }
    if let Some(w) = waker {
        w.wake();
    }
    Queued::Yes
}

/// Queues a non-event frame; with `only_if_idle`, only when nothing else
/// waits (a keep-alive behind queued events adds nothing).
pub fn queue_raw(link: &SessionLink, frame: Bytes, only_if_idle: bool) -> Queued {
    let mut ob = link.outbox.lock().expect("outbox poisoned");
    if ob.closed {
        return Queued::Closed;
    }
    if only_if_idle && !ob.items.is_empty() {
        return Queued::Busy;
    }
    ob.items.push_back(Item::Raw(frame));
    let waker = ob.wake();
    drop(ob);
    if let Some(w) = waker {
        w.wake();
    }
    Queued::Yes
}

/// Queues the `event: gap` notice of a catch-up that found events trimmed,
/// moving the subscriber's position to `resumed_after`.
pub fn queue_gap_notice(link: &SessionLink, notice: Bytes, resumed_after: u64) -> Queued {
    {
        let mut ob = link.outbox.lock().expect("outbox poisoned");
        if ob.closed {
            return Queued::Closed;
        }
        ob.last_seq = ob.last_seq.max(resumed_after);
    }
    queue_raw(link, notice, false)
}

/// The frames that open a stream (`retry:`, a gap notice), put before
/// anything the topic may already have queued; the body must not exist yet.
pub fn queue_opening(link: &SessionLink, frames: Vec<Bytes>) {
    let mut ob = link.outbox.lock().expect("outbox poisoned");
    for f in frames.into_iter().rev() {
        ob.items.push_front(Item::Raw(f));
    }
}

/// The subscriber's position: last sequence queued and its time.
pub fn position(link: &SessionLink) -> (u64, i64) {
    let ob = link.outbox.lock().expect("outbox poisoned");
    (ob.last_seq, ob.last_time_ms)
}

/// What waits for the socket: event bytes queued, whether anything is
/// queued, how many chunks the body took so far, and whether the body is gone.
pub fn backlog(link: &SessionLink) -> (usize, bool, u64, bool) {
    let ob = link.outbox.lock().expect("outbox poisoned");
    (ob.queued_bytes, !ob.items.is_empty(), ob.takes, ob.closed)
}

/// Ends the body once what is queued is taken; with `discard`, at once.
pub fn end(link: &SessionLink, discard: bool) {
    let mut ob = link.outbox.lock().expect("outbox poisoned");
    ob.ended = true;
    if discard {
        ob.items.clear();
        ob.queued_bytes = 0;
    }
    let waker = ob.wake();
    drop(ob);
    if let Some(w) = waker {
        w.wake();
    }
}

/// Bytes for the body and what writing them acknowledges.
#[derive(Debug)]
struct Chunk {
    bytes: Bytes,
    ack: Option<Ack>,
}

/// Progress a chunk acknowledges once the body takes it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ack {
    /// Last sequence in the chunk.
    pub last_seq: u64,
    /// Events in the chunk.
    pub events: u64,
    /// Bytes to acknowledge against what the topic counted as delivered.
    pub bytes: u64,
}

/// Takes up to [`CHUNK_MAX`] bytes off the front of the queue.
fn take(ob: &mut Outbox, now_ms: i64) -> Option<Chunk> {
    let single_raw = matches!(ob.items.front(), Some(Item::Raw(_)));
    if single_raw && !matches!(ob.items.get(1), Some(Item::Events { .. })) {
        // Control frames are few and small; each goes as it is.
        let Some(Item::Raw(b)) = ob.items.pop_front() else {
            unreachable!("front is raw")
        };
        ob.takes += 1;
        return Some(Chunk {
            bytes: b,
            ack: None,
        });
    }
    // A lone frame goes out as it is, without a copy.
    if ob.items.len() == 1 {
        if let Some(Item::Events {
            batch, from, live, ..
        }) = ob.items.front()
        {
            if *from + 1 == batch.len() {
                let e = &batch[*from];
                let chunk = Chunk {
                    bytes: e.frame.clone(),
                    ack: Some(Ack {
                        last_seq: e.seq,
                        events: 1,
                        bytes: e.frame.len() as u64,
                    }),
                };
                if *live {
                    observe_latency(now_ms, std::slice::from_ref(e));
                }
                ob.queued_bytes -= e.frame.len();
                ob.items.pop_front();
                ob.takes += 1;
                return Some(chunk);
            }
        }
    }
    if let Some(c) = take_page_run(ob) {
        return Some(c);
    }
    let mut buf = BytesMut::with_capacity(ob.queued_bytes.min(CHUNK_MAX) + 64);
    let mut ack = Ack::default();
    while let Some(item) = ob.items.front_mut() {
        match item {
            Item::Raw(b) => {
                if !buf.is_empty() && buf.len() + b.len() > CHUNK_MAX {
                    break;
                }
                buf.extend_from_slice(b);
                ob.items.pop_front();
            }
            Item::Events {
                batch, from, live, ..
            } => {
                let start = *from;
                let mut end = start;
                for e in &batch[start..] {
                    if !buf.is_empty() && buf.len() + e.frame.len() > CHUNK_MAX {
                        break;
                    }
                    buf.extend_from_slice(&e.frame);
                    ack.bytes += e.frame.len() as u64;
                    end += 1;
                }
                if end > start {
                    ack.last_seq = batch[end - 1].seq;
                    ack.events += (end - start) as u64;
                    if *live {
                        observe_latency(now_ms, &batch[start..end]);
                    }
                }
                if end < batch.len() {
                    *from = end;
                    break;
                }
                ob.items.pop_front();
            }
        }
    }
    ob.queued_bytes -= ack.bytes as usize;
    ob.takes += 1;
    Some(Chunk {
        bytes: buf.freeze(),
        ack: (ack.events > 0).then_some(ack),
    })
}

/// Takes a run of frames of a page as one slice of it, when the page is
/// the front of the queue.
fn take_page_run(ob: &mut Outbox) -> Option<Chunk> {
    let Some(Item::Events {
        batch,
        from,
        page: Some(page),
        ..
    }) = ob.items.front_mut()
    else {
        return None;
    };
    let start = *from;
    let mut len = 0;
    let mut end = start;
    for e in &batch[start..] {
        if len > 0 && len + e.frame.len() > CHUNK_MAX {
            break;
        }
        len += e.frame.len();
        end += 1;
    }
    let offset = batch[start].frame.as_ptr() as usize - page.as_ptr() as usize;
    let bytes = page.slice(offset..offset + len);
    let ack = Ack {
        last_seq: batch[end - 1].seq,
        events: (end - start) as u64,
        bytes: len as u64,
    };
    if end < batch.len() {
        *from = end;
    } else {
        ob.items.pop_front();
    }
    ob.queued_bytes -= len;
    ob.takes += 1;
    Some(Chunk {
        bytes,
        ack: Some(ack),
    })
}

fn observe_latency(now_ms: i64, events: &[FramedEvent]) {
    thread_local! {
        /// Observations gathered without atomics, then added to the shared
        /// histogram once per chunk instead of once per event.
        static LOCAL: prometheus::local::LocalHistogram = metrics().delivery_seconds.local();
    }
    LOCAL.with(|h| {
        for e in events {
            h.observe((now_ms - e.time_ms).max(0) as f64 / 1000.0);
        }
        h.flush();
    });
}

/// Applies acknowledgements to a session's shared counters and, when a
/// paused subscriber has drained to its low watermark, tells its topic.
#[derive(Clone)]
pub struct Acker {
    /// Its topic, for `Ready`.
    pub topic: Addr<TopicActor>,
    /// Low watermark, events.
    pub low_events: u64,
    /// Low watermark, bytes.
    pub low_bytes: u64,
}

impl Acker {
    /// Acknowledges progress on `l`.
    pub fn acknowledge(&self, l: &SessionLink, a: Ack) {
        l.acked_seq.fetch_max(a.last_seq, Ordering::SeqCst);
        l.acked_bytes.fetch_add(a.bytes, Ordering::SeqCst);
        if a.events > 0 {
            l.events_sent.fetch_add(a.events, Ordering::Relaxed);
            metrics().delivered.inc_by(a.events);
        }
        if l.outstanding_events() <= self.low_events
            && l.outstanding_bytes() <= self.low_bytes
            && l.paused
                .compare_exchange(true, false, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        {
            // Control message: must not be dropped by a full mailbox, and
            // at most one is in flight per session.
            self.topic.do_send(Ready {
                id: l.id,
                after_seq: None,
            });
        }
    }
}

/// The session's notice that its body is gone (resolves when it is dropped).
pub type BodyGone = oneshot::Receiver<()>;

/// The response body of a session: its outbox's frames as the socket takes
/// them, acknowledged then.
pub struct Body {
    link: Arc<SessionLink>,
    acker: Acker,
    /// Dropped with the body, which tells the session.
    _gone: oneshot::Sender<()>,
}

/// The body of a session on `link` and the notice its session waits on.
pub fn body(link: Arc<SessionLink>, acker: Acker) -> (Body, BodyGone) {
    let (tx, rx) = oneshot::channel();
    (
        Body {
            link,
            acker,
            _gone: tx,
        },
        rx,
    )
}

impl Stream for Body {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let l = &this.link;
        let now = l.age_ms();
        let chunk = {
            let mut ob = l.outbox.lock().expect("outbox poisoned");
            if ob.items.is_empty() {
                if ob.ended {
                    return Poll::Ready(None);
                }
                if !ob.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    ob.waker = Some(cx.waker().clone());
                }
                return Poll::Pending;
            }
            take(&mut ob, crate::cursor::now_ms()).expect("queue is not empty")
        };
        l.bytes_sent
            .fetch_add(chunk.bytes.len() as u64, Ordering::Relaxed);
        l.last_write_ms.store(now, Ordering::Relaxed);
        if let Some(a) = chunk.ack {
            this.acker.acknowledge(l, a);
        }
        l.room.notify_one();
        Poll::Ready(Some(Ok(chunk.bytes)))
    }
}

impl Drop for Body {
    fn drop(&mut self) {
        let mut ob = self.link.outbox.lock().expect("outbox poisoned");
        ob.closed = true;
        ob.items.clear();
        ob.queued_bytes = 0;
        ob.waker = None;
        drop(ob);
        // A catch-up waiting for room learns of it now.
        self.link.room.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(seq: u64, len: usize) -> FramedEvent {
        FramedEvent {
            seq,
            time_ms: 0,
            frame: Bytes::from(vec![b'x'; len]),
        }
    }

    #[test]
    fn takes_a_page_as_slices_of_it() {
        let frames: Vec<Vec<u8>> = (0..300u64)
            .map(|s| vec![b'a' + (s % 26) as u8; 300 + s as usize])
            .collect();
        let page = Bytes::from(frames.concat());
        let mut at = 0;
        let batch: Arc<[FramedEvent]> = frames
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let e = FramedEvent {
                    seq: i as u64 + 1,
                    time_ms: 0,
                    frame: page.slice(at..at + f.len()),
                };
                at += f.len();
                e
            })
            .collect();
        let mut ob = Outbox::new(0);
        ob.queued_bytes = page.len();
        ob.items.push_back(Item::Events {
            batch,
            from: 0,
            live: false,
            page: Some(page.clone()),
        });
        let mut out = Vec::new();
        let mut last = 0;
        while !ob.items.is_empty() {
            let c = take(&mut ob, 0).unwrap();
            assert!(c.bytes.len() <= CHUNK_MAX);
            let a = c.ack.unwrap();
            assert_eq!(a.bytes as usize, c.bytes.len());
            last = a.last_seq;
            out.extend_from_slice(&c.bytes);
        }
        assert_eq!(out, page);
        assert_eq!(last, 300);
        assert_eq!(ob.queued_bytes, 0);
    }

    #[test]
    fn takes_bounded_chunks_with_exact_acks() {
        let mut ob = Outbox::new(0);
        let batch: Arc<[FramedEvent]> = (1..=100)
            .map(|s| framed(s, 1000))
            .chain(std::iter::once(framed(101, CHUNK_MAX + 10)))
            .collect();
        ob.queued_bytes = batch.iter().map(|e| e.frame.len()).sum();
        ob.items.push_back(Item::Events {
            batch,
            from: 0,
            live: false,
            page: None,
        });
        ob.items.push_back(Item::Raw(Bytes::from_static(b":\n\n")));
        let mut chunks = Vec::new();
        while !ob.items.is_empty() {
            chunks.push(take(&mut ob, 0).unwrap());
        }
        assert!(chunks.iter().all(|c| c.bytes.len() <= CHUNK_MAX + 10 + 3));
        let acks: Vec<Ack> = chunks.iter().filter_map(|c| c.ack).collect();
        assert_eq!(
            acks.iter().map(|a| a.bytes).sum::<u64>(),
            100 * 1000 + (CHUNK_MAX as u64 + 10)
        );
        assert_eq!(acks.iter().map(|a| a.events).sum::<u64>(), 101);
        assert_eq!(acks.last().unwrap().last_seq, 101);
        assert_eq!(ob.queued_bytes, 0);
    }
}

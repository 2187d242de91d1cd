//! The queue of frames a subscriber has not yet handed to its socket, and
//! how the response body takes them: everything queued, up to
//! [`CHUNK_MAX`] bytes, as one chunk, so frames that arrived while the
//! socket was busy go out in one write.
//!
//! A queued batch is a reference to the framed events every subscriber
//! shares, so queueing costs no copy and no allocation beyond the queue
//! slot. This module only moves bytes; the positions and the flow state
//! that decide what may be queued belong to [`super::Subscription`].

use std::{collections::VecDeque, sync::Arc};

use bytes::{Bytes, BytesMut};

use crate::{metrics::metrics, sse::FramedEvent};

/// Most bytes the body takes at once (a single larger event is one chunk).
pub const CHUNK_MAX: usize = 64 << 10;

/// Something queued for the body, in wire order.
enum Item {
    /// `batch[from..]`, shared with the topic's tail and other subscribers.
    Events {
        batch: Arc<[FramedEvent]>,
        from: usize,
        /// Events offered live (to a subscriber that was up to date when
        /// they were stored) feed the publish→delivery latency histogram;
        /// catch-ups, from the tail or the store, do not.
        live: bool,
        /// The buffer the frames are consecutive slices of, when they are
        /// (a catch-up page): a run of them is taken as one slice, no copy.
        page: Option<Bytes>,
    },
    /// A frame that is not an event (keep-alive, probe, notice).
    Raw(Bytes),
}

/// Frames queued and not yet taken.
#[derive(Default)]
pub(super) struct Outbox {
    items: VecDeque<Item>,
    /// Event frame bytes queued.
    pub(super) bytes: usize,
    /// Event frames queued.
    pub(super) events: u64,
    /// Chunks taken so far, to tell a stuck socket from a busy one.
    pub(super) takes: u64,
}

/// A chunk for the socket and the events in it.
#[derive(Debug)]
pub(super) struct Chunk {
    pub(super) bytes: Bytes,
    /// Events in the chunk.
    pub(super) events: u64,
}

impl Outbox {
    pub(super) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Queues `batch[from..]`.
    pub(super) fn push_events(
        &mut self,
        batch: &Arc<[FramedEvent]>,
        from: usize,
        live: bool,
        page: Option<Bytes>,
    ) {
        self.bytes += batch[from..].iter().map(|e| e.frame.len()).sum::<usize>();
        self.events += (batch.len() - from) as u64;
        self.items.push_back(Item::Events {
            batch: batch.clone(),
            from,
            live,
            page,
        });
    }

    /// Queues a control frame behind everything else.
    pub(super) fn push_raw(&mut self, frame: Bytes) {
        self.items.push_back(Item::Raw(frame));
    }

    /// Puts control frames in front of everything queued.
    pub(super) fn push_front_raw(&mut self, frames: Vec<Bytes>) {
        for f in frames.into_iter().rev() {
            self.items.push_front(Item::Raw(f));
        }
    }

    /// Drops everything queued.
    pub(super) fn clear(&mut self) {
        self.items.clear();
        self.bytes = 0;
        self.events = 0;
    }

    /// Takes up to [`CHUNK_MAX`] bytes off the front (a single larger frame
    /// is one chunk); `None` when nothing is queued.
    pub(super) fn take(&mut self, now_ms: i64) -> Option<Chunk> {
        let chunk = self.take_inner(now_ms)?;
        self.events -= chunk.events;
        self.takes += 1;
        Some(chunk)
    }

    fn take_inner(&mut self, now_ms: i64) -> Option<Chunk> {
        let single_raw = matches!(self.items.front(), Some(Item::Raw(_)));
        if single_raw && !matches!(self.items.get(1), Some(Item::Events { .. })) {
            // Control frames are few and small; each goes as it is.
            let Some(Item::Raw(b)) = self.items.pop_front() else {
                unreachable!("front is raw")
            };
            return Some(Chunk {
                bytes: b,
                events: 0,
            });
        }
        if let Some(c) = self.take_lone_frame(now_ms) {
            return Some(c);
        }
        if let Some(c) = self.take_page_run() {
            return Some(c);
        }
        if self.items.is_empty() {
            return None;
        }
        let mut buf = BytesMut::with_capacity(self.bytes.min(CHUNK_MAX) + 64);
        let (mut events, mut event_bytes) = (0u64, 0usize);
        while let Some(item) = self.items.front_mut() {
            match item {
                Item::Raw(b) => {
                    if !buf.is_empty() && buf.len() + b.len() > CHUNK_MAX {
                        break;
                    }
                    buf.extend_from_slice(b);
                    self.items.pop_front();
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
                        event_bytes += e.frame.len();
                        end += 1;
                    }
                    events += (end - start) as u64;
                    if *live && end > start {
                        observe_latency(now_ms, &batch[start..end]);
                    }
                    if end < batch.len() {
                        *from = end;
                        break;
                    }
                    self.items.pop_front();
                }
            }
        }
        self.bytes -= event_bytes;
        Some(Chunk {
            bytes: buf.freeze(),
            events,
        })
    }

    /// A lone frame goes out as it is, without a copy.
    fn take_lone_frame(&mut self, now_ms: i64) -> Option<Chunk> {
        if self.items.len() != 1 {
            return None;
        }
        let Some(Item::Events {
            batch, from, live, ..
        }) = self.items.front()
        else {
            return None;
        };
        if *from + 1 != batch.len() {
            return None;
        }
        let e = &batch[*from];
        if *live {
            observe_latency(now_ms, std::slice::from_ref(e));
        }
        let chunk = Chunk {
            bytes: e.frame.clone(),
            events: 1,
        };
        self.bytes -= e.frame.len();
        self.items.pop_front();
        Some(chunk)
    }

    /// Takes a run of frames of a page as one slice of it, when the page is
    /// the front of the queue.
    fn take_page_run(&mut self) -> Option<Chunk> {
        let Some(Item::Events {
            batch,
            from,
            page: Some(page),
            ..
        }) = self.items.front_mut()
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
        let events = (end - start) as u64;
        if end < batch.len() {
            *from = end;
        } else {
            self.items.pop_front();
        }
        self.bytes -= len;
        Some(Chunk { bytes, events })
    }
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
        let mut ob = Outbox::default();
        ob.push_events(&batch, 0, false, Some(page.clone()));
        let mut out = Vec::new();
        let mut events = 0;
        while !ob.is_empty() {
            let c = ob.take(0).unwrap();
            assert!(c.bytes.len() <= CHUNK_MAX);
            events += c.events;
            out.extend_from_slice(&c.bytes);
        }
        assert_eq!(out, page);
        assert_eq!(events, 300);
        assert_eq!((ob.bytes, ob.events), (0, 0));
    }

    #[test]
    fn takes_bounded_chunks_with_exact_counts() {
        let mut ob = Outbox::default();
        let batch: Arc<[FramedEvent]> = (1..=100)
            .map(|s| framed(s, 1000))
            .chain(std::iter::once(framed(101, CHUNK_MAX + 10)))
            .collect();
        ob.push_events(&batch, 0, false, None);
        ob.push_raw(Bytes::from_static(b":\n\n"));
        let mut chunks = Vec::new();
        while !ob.is_empty() {
            chunks.push(ob.take(0).unwrap());
        }
        assert!(chunks.iter().all(|c| c.bytes.len() <= CHUNK_MAX + 10 + 3));
        let total: usize = chunks.iter().map(|c| c.bytes.len()).sum();
        assert_eq!(total, 100 * 1000 + CHUNK_MAX + 10 + 3);
        assert_eq!(chunks.iter().map(|c| c.events).sum::<u64>(), 101);
        assert_eq!((ob.bytes, ob.events), (0, 0));
    }
}

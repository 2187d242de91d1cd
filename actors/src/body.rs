//! The pipe from a session to its HTTP response body.
//!
//! A session sends [`Chunk`]s of at most [`CHUNK_MAX`] bytes into a channel of
//! [`CHUNK_SLOTS`] slots; the response body takes them as the socket accepts
//! them. Progress is acknowledged when the body *takes* a chunk, not when the
//! session queues it, so a subscriber's outstanding depth (what the topic's
//! watermarks measure) covers everything not yet handed to the socket, and a
//! slow reader holds at most a couple of small chunks here.

use std::{
    convert::Infallible,
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use actix::Addr;
use bytes::Bytes;
use futures_util::Stream;
use tokio::sync::mpsc;

use crate::{
    link::SessionLink,
    metrics::metrics,
    topic::{Ready, TopicActor},
};

/// Largest chunk a session queues (a single larger event is one chunk).
pub const CHUNK_MAX: usize = 64 << 10;
/// Chunks that may wait between a session and its socket.
pub const CHUNK_SLOTS: usize = 2;

/// Bytes for the body and what writing them acknowledges.
#[derive(Debug)]
pub struct Chunk {
    /// Wire bytes.
    pub bytes: Bytes,
    /// Events progress, when the chunk carries events.
    pub ack: Option<Ack>,
}

/// Progress a chunk acknowledges once the body takes it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ack {
    /// Last sequence in the chunk.
    pub last_seq: u64,
    /// Events in the chunk.
    pub events: u64,
    /// Bytes to acknowledge against what the topic counted as delivered
    /// (may exceed the chunk: skipped duplicates are acknowledged too).
    pub bytes: u64,
}

/// A chunk channel: the session's end.
pub type ChunkSender = mpsc::Sender<Chunk>;

/// A new chunk channel.
pub fn channel() -> (ChunkSender, mpsc::Receiver<Chunk>) {
    mpsc::channel(CHUNK_SLOTS)
}

/// Applies acknowledgements to a session's shared counters and, when a
/// paused subscriber has drained to its low watermark, tells its topic.
#[derive(Clone)]
pub struct Acker {
    /// The session's counters.
    pub link: Arc<SessionLink>,
    /// Its topic, for `Ready`.
    pub topic: Addr<TopicActor>,
    /// Low watermark, events.
    pub low_events: u64,
    /// Low watermark, bytes.
    pub low_bytes: u64,
}

impl Acker {
    /// Notes that `wire_bytes` reached the socket, acknowledging `ack`.
    pub fn written(&self, wire_bytes: usize, ack: Option<Ack>) {
        let l = &self.link;
        l.bytes_sent.fetch_add(wire_bytes as u64, Ordering::Relaxed);
        l.last_write_ms.store(l.age_ms(), Ordering::Relaxed);
        if let Some(a) = ack {
            self.acknowledge(a);
        }
    }

    /// Acknowledges progress (also for events skipped as already written).
    pub fn acknowledge(&self, a: Ack) {
        let l = &self.link;
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

/// The response body: chunks as the socket takes them, acknowledged then.
pub fn body_stream(
    mut rx: mpsc::Receiver<Chunk>,
    acker: Acker,
) -> impl Stream<Item = Result<Bytes, Infallible>> {
    futures_util::stream::poll_fn(move |cx| {
        rx.poll_recv(cx).map(|chunk| {
            chunk.map(|c| {
                acker.written(c.bytes.len(), c.ack);
                Ok(c.bytes)
            })
        })
    })
}

/// What ended a send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendFailure {
    /// The body is gone (client disconnected).
    Closed,
    /// The socket took nothing for the stall timeout.
    Stalled,
}

/// Sends one chunk, giving up after `stall`; the link shows the wait.
pub async fn send(
    tx: &ChunkSender,
    link: &SessionLink,
    chunk: Chunk,
    stall: Duration,
) -> Result<(), SendFailure> {
    link.waiting_since_ms
        .store(link.age_ms(), Ordering::Relaxed);
    let res = match tokio::time::timeout(stall, tx.send(chunk)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(SendFailure::Closed),
        Err(_) => Err(SendFailure::Stalled),
    };
    link.waiting_since_ms.store(-1, Ordering::Relaxed);
    res
}

/// Packs frames into chunks of at most [`CHUNK_MAX`] bytes, each with the
/// progress it acknowledges, one chunk at a time: a session holds one chunk
/// of copies, never a whole batch.
pub struct Packer<I: Iterator> {
    frames: std::iter::Peekable<I>,
}

/// Chunks over `frames` (sequence, wire bytes), built as they are taken.
pub fn pack<I: Iterator<Item = (u64, Bytes)>>(frames: I) -> Packer<I> {
    Packer {
        frames: frames.peekable(),
    }
}

impl<I: Iterator<Item = (u64, Bytes)>> Iterator for Packer<I> {
    type Item = Chunk;

    fn next(&mut self) -> Option<Chunk> {
        let mut buf = bytes::BytesMut::new();
        let mut ack = Ack::default();
        while let Some((_, frame)) = self.frames.peek() {
            if !buf.is_empty() && buf.len() + frame.len() > CHUNK_MAX {
                break;
            }
            let (seq, frame) = self.frames.next().expect("peeked");
            if buf.is_empty() && self.frames.peek().is_none() {
                // A lone frame goes out as it is, without a copy.
                return Some(Chunk {
                    ack: Some(Ack {
                        last_seq: seq,
                        events: 1,
                        bytes: frame.len() as u64,
                    }),
                    bytes: frame,
                });
            }
            buf.extend_from_slice(&frame);
            ack.last_seq = seq;
            ack.events += 1;
        }
        if buf.is_empty() {
            return None;
        }
        ack.bytes = buf.len() as u64;
        Some(Chunk {
            bytes: buf.freeze(),
            ack: Some(ack),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_into_bounded_chunks_with_exact_acks() {
        let small = Bytes::from(vec![b'x'; 1000]);
        let big = Bytes::from(vec![b'y'; CHUNK_MAX + 10]);
        let mut frames: Vec<(u64, Bytes)> = (1..=100).map(|s| (s, small.clone())).collect();
        frames.push((101, big));
        let chunks: Vec<Chunk> = pack(frames.into_iter()).collect();
        assert!(chunks
            .iter()
            .all(|c| c.bytes.len() <= CHUNK_MAX || c.ack.unwrap().events == 1));
        let total: u64 = chunks.iter().map(|c| c.ack.unwrap().bytes).sum();
        assert_eq!(total, 100 * 1000 + (CHUNK_MAX as u64 + 10));
        assert_eq!(
            chunks.iter().map(|c| c.ack.unwrap().events).sum::<u64>(),
            101
        );
        assert_eq!(chunks.last().unwrap().ack.unwrap().last_seq, 101);
    }
}

//! A Server-Sent Events parser that follows the WHATWG rules for
//! `text/event-stream` ("Interpreting an event stream"), incremental and
//! independent of any HTTP library.
//!
//! It is the one SSE parser of the Sluice project: the [`Subscription`]
//! stream, the `sluice sub` command, the benchmarks and the integration
//! tests all read streams through it.
//!
//! What it does, as the specification says:
//!
//! - lines end with CR LF, LF or CR (a CR at the end of one chunk and a LF
//!   at the start of the next are one line end);
//! - one byte order mark at the very start of the stream is skipped;
//! - `data:` lines are joined with LF; a block without any `data:` line
//!   dispatches no message;
//! - `id:` sets the last event id unless its value contains NUL, and the id
//!   persists: a message without an `id:` line carries the previous one
//!   (as `EventSource.lastEventId` does); an empty `id:` clears it;
//! - `retry:` is taken only when its value is ASCII digits;
//! - a single space after the colon is removed; a line without a colon is a
//!   field with an empty value; unknown fields are ignored;
//! - a block still open when the stream ends is discarded.
//!
//! Beyond the specification it reports comments (lines starting with `:`)
//! and a `retry:` in a block without data, which a client may want to see.
//! Invalid UTF-8 is replaced (U+FFFD), as a browser decodes the stream.
//!
//! ```
//! use sluice_client::sse::{Decoder, Frame};
//!
//! let mut decoder = Decoder::new();
//! decoder.feed(b"retry: 1000\n\nid: c1\nevent: order\ndata: a\r\ndata: b\r");
//! decoder.feed(b"\n\r\n: keep-alive\n");
//! assert_eq!(decoder.next_frame(), Some(Frame::Retry(std::time::Duration::from_secs(1))));
//! let Some(Frame::Message(m)) = decoder.next_frame() else { panic!() };
//! assert_eq!((m.id.as_deref(), m.event.as_deref(), m.data.as_str()), (Some("c1"), Some("order"), "a\nb"));
//! assert_eq!(decoder.next_frame(), Some(Frame::Comment("keep-alive".into())));
//! assert_eq!(decoder.next_frame(), None);
//! ```
//!
//! [`Subscription`]: crate::Subscription

use std::time::Duration;

use bytes::{Buf as _, BytesMut};

/// The media type of an event stream.
pub const MEDIA_TYPE: &str = "text/event-stream";

/// One thing read from an event stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A dispatched event: a block with at least one `data:` line.
    Message(Message),
    /// A comment line (`: text`), without the colon and one leading space.
    Comment(String),
    /// A valid `retry:` field in a block that dispatched no message.
    Retry(Duration),
}

/// A dispatched event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    /// The last event id at dispatch (`EventSource.lastEventId`): the `id:`
    /// of this block or, without one, of an earlier block; `None` when no
    /// id was ever set or the last `id:` was empty.
    pub id: Option<String>,
    /// The `event:` type; `None` when the block had none (the specification
    /// names that type `message`).
    pub event: Option<String>,
    /// The `data:` lines joined with LF.
    pub data: String,
    /// A valid `retry:` in the same block, if any.
    pub retry: Option<Duration>,
}

/// An incremental event-stream parser: [`feed`](Decoder::feed) it bytes as
/// they arrive, take [`next_frame`](Decoder::next_frame)s until `None`.
#[derive(Debug, Default)]
pub struct Decoder {
    /// Bytes not parsed yet (at most one partial line after `next_frame`
    /// returned `None`).
    buf: BytesMut,
    /// How much of `buf` is known to hold no line end.
    scanned: usize,
    /// The first bytes have been checked for a byte order mark.
    bom_done: bool,
    /// The last line ended with CR: a LF right after it belongs to it.
    skip_lf: bool,
    data: String,
    has_data: bool,
    event: String,
    retry: Option<Duration>,
    id_buffer: String,
    last_event_id: String,
}

impl Decoder {
    /// A parser at the start of a stream.
    pub fn new() -> Decoder {
        Decoder::default()
    }

    /// Adds bytes received from the stream.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes fed but not parsed yet (a line still incomplete).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The last event id as of the last blank line: what a reconnect sends
    /// as `Last-Event-ID` (an id-only block changes it without a message).
    pub fn last_event_id(&self) -> Option<&str> {
        (!self.last_event_id.is_empty()).then_some(self.last_event_id.as_str())
    }

    /// Parses every frame of a complete stream (what is left open at the
    /// end is discarded, as at the end of a stream).
    pub fn decode_all(bytes: &[u8]) -> Vec<Frame> {
        let mut d = Decoder::new();
        d.feed(bytes);
        std::iter::from_fn(|| d.next_frame()).collect()
    }

    /// The next complete frame from the bytes fed so far, or `None` until
    /// more bytes are fed.
    pub fn next_frame(&mut self) -> Option<Frame> {
        if !self.bom_done {
            const BOM: &[u8] = b"\xEF\xBB\xBF";
            let n = self.buf.len().min(BOM.len());
            if self.buf[..n] != BOM[..n] {
                self.bom_done = true;
            } else if n == BOM.len() {
                self.buf.advance(BOM.len());
                self.bom_done = true;
            } else {
                // A prefix of the mark: wait for the rest to tell.
                return None;
            }
        }
        loop {
            if self.skip_lf && !self.buf.is_empty() {
                self.skip_lf = false;
                if self.buf[0] == b'\n' {
                    self.buf.advance(1);
                }
            }
            let Some(i) = memchr::memchr2(b'\n', b'\r', &self.buf[self.scanned..]) else {
                self.scanned = self.buf.len();
                return None;
            };
            let end = self.scanned + i;
            self.skip_lf = self.buf[end] == b'\r';
            let line = self.buf.split_to(end + 1);
            self.scanned = 0;
            if let Some(frame) = self.line(&line[..end]) {
                return Some(frame);
            }
        }
    }

    /// Processes one line (without its end); a frame when it completes one.
    fn line(&mut self, line: &[u8]) -> Option<Frame> {
        if line.is_empty() {
            return self.dispatch();
        }
        if line[0] == b':' {
            let text = line[1..].strip_prefix(b" ").unwrap_or(&line[1..]);
            return Some(Frame::Comment(String::from_utf8_lossy(text).into_owned()));
        }
        let (name, value) = match memchr::memchr(b':', line) {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        match name {
            b"data" => {
                self.data.push_str(&String::from_utf8_lossy(value));
                self.data.push('\n');
                self.has_data = true;
            }
            b"event" => self.event = String::from_utf8_lossy(value).into_owned(),
            b"id" if !value.contains(&0) => {
                self.id_buffer = String::from_utf8_lossy(value).into_owned();
            }
            b"retry" if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
                // Digits beyond u64 are still digits: the longest wait.
                let ms = std::str::from_utf8(value)
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(u64::MAX);
                self.retry = Some(Duration::from_millis(ms));
            }
            _ => {}
        }
        None
    }

    /// A blank line: dispatches the block's message, if it has data.
    fn dispatch(&mut self) -> Option<Frame> {
        if self.last_event_id != self.id_buffer {
            self.last_event_id.clone_from(&self.id_buffer);
        }
        let retry = self.retry.take();
        let event = std::mem::take(&mut self.event);
        if !std::mem::take(&mut self.has_data) {
            self.data.clear();
            return retry.map(Frame::Retry);
        }
        let mut data = std::mem::take(&mut self.data);
        data.pop(); // the LF after the last data line
        Some(Frame::Message(Message {
            id: self.last_event_id().map(str::to_owned),
            event: (!event.is_empty()).then_some(event),
            data,
            retry,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(id: Option<&str>, event: Option<&str>, data: &str) -> Frame {
        Frame::Message(Message {
            id: id.map(Into::into),
            event: event.map(Into::into),
            data: data.into(),
            retry: None,
        })
    }

    /// Every way of cutting the input into two chunks gives the same frames.
    fn same_in_any_split(wire: &[u8]) -> Vec<Frame> {
        let whole = Decoder::decode_all(wire);
        for cut in 0..=wire.len() {
            let mut d = Decoder::new();
            let mut got = Vec::new();
            d.feed(&wire[..cut]);
            got.extend(std::iter::from_fn(|| d.next_frame()));
            d.feed(&wire[cut..]);
            got.extend(std::iter::from_fn(|| d.next_frame()));
            assert_eq!(
                got,
                whole,
                "cut at {cut} of {:?}",
                String::from_utf8_lossy(wire)
            );
        }
        whole
    }

    #[test]
    fn data_lines_join_with_lf_and_one_space_is_removed() {
        let f = same_in_any_split(b"data:a\ndata:  b\ndata\ndata: \n\n");
        assert_eq!(f, vec![msg(None, None, "a\n b\n\n")]);
    }

    #[test]
    fn cr_lf_and_crlf_all_end_lines() {
        let f = same_in_any_split(b"id: 1\rdata: a\r\ndata: b\n\r\ndata: c\r\r");
        assert_eq!(
            f,
            vec![msg(Some("1"), None, "a\nb"), msg(Some("1"), None, "c")]
        );
    }

    #[test]
    fn a_leading_byte_order_mark_is_skipped_once() {
        let f = same_in_any_split(b"\xEF\xBB\xBFdata: x\n\n\xEF\xBB\xBFdata: y\n\n");
        // A second mark is part of a field name, so that line is ignored.
        assert_eq!(f, vec![msg(None, None, "x")]);
    }

    #[test]
    fn id_persists_is_cleared_by_an_empty_id_and_ignores_nul() {
        let f =
            same_in_any_split(b"id: a\ndata: 1\n\ndata: 2\n\nid: b\0c\ndata: 3\n\nid\ndata: 4\n\n");
        assert_eq!(
            f,
            vec![
                msg(Some("a"), None, "1"),
                msg(Some("a"), None, "2"),
                msg(Some("a"), None, "3"),
                msg(None, None, "4"),
            ]
        );
    }

    #[test]
    fn an_id_only_block_moves_the_last_event_id_without_a_message() {
        let mut d = Decoder::new();
        d.feed(b"id: a\ndata: 1\n\nid: b\n\n");
        assert!(matches!(d.next_frame(), Some(Frame::Message(_))));
        assert_eq!(d.next_frame(), None);
        assert_eq!(d.last_event_id(), Some("b"));
        // The id counts at the blank line, not before.
        d.feed(b"id: c\n");
        assert_eq!(d.next_frame(), None);
        assert_eq!(d.last_event_id(), Some("b"));
    }

    #[test]
    fn retry_takes_digits_only() {
        let f = same_in_any_split(
            b"retry: 1500\n\nretry: 15x\n\nretry: -1\n\nretry:\n\nretry: 2000\ndata: d\n\n",
        );
        assert_eq!(
            f,
            vec![
                Frame::Retry(Duration::from_millis(1500)),
                Frame::Message(Message {
                    data: "d".into(),
                    retry: Some(Duration::from_millis(2000)),
                    ..Message::default()
                }),
            ]
        );
    }

    #[test]
    fn comments_events_and_unknown_fields() {
        let f = same_in_any_split(
            b": keep-alive\n:\nevent: gap\nfoo: bar\ndata: {}\n\nevent: x\n\ndata: y\n\n",
        );
        assert_eq!(
            f,
            vec![
                Frame::Comment("keep-alive".into()),
                Frame::Comment(String::new()),
                msg(None, Some("gap"), "{}"),
                // The event type of a block without data does not carry over.
                msg(None, None, "y"),
            ]
        );
    }

    #[test]
    fn an_unfinished_block_is_not_dispatched() {
        assert_eq!(
            Decoder::decode_all(b"data: a\n\ndata: b\n"),
            vec![msg(None, None, "a")]
        );
        assert_eq!(Decoder::decode_all(b"data: a"), vec![]);
    }

    #[test]
    fn invalid_utf8_is_replaced_and_multibyte_text_survives_any_split() {
        let mut wire = "data: é€😀".as_bytes().to_vec();
        wire.extend_from_slice(b"\xFF\n\n");
        let f = same_in_any_split(&wire);
        assert_eq!(f, vec![msg(None, None, "é€😀\u{FFFD}")]);
        let f = same_in_any_split("data: é€😀\n\n".as_bytes());
        assert_eq!(f, vec![msg(None, None, "é€😀")]);
    }

    #[test]
    fn byte_by_byte_feeding_gives_the_same_frames() {
        let wire: String = (0..50)
            .map(|i| format!("id: c{i}\r\nevent: t\r\ndata: line {i}\r\ndata: more\r\n\r\n: p\r\n"))
            .collect();
        let whole = Decoder::decode_all(wire.as_bytes());
        assert_eq!(whole.len(), 100);
        let mut d = Decoder::new();
        let mut got = Vec::new();
        for b in wire.as_bytes() {
            d.feed(std::slice::from_ref(b));
            got.extend(std::iter::from_fn(|| d.next_frame()));
        }
        assert_eq!(got, whole);
    }
}

//! SSE framing: each event is framed once, as shared bytes, for every
//! subscriber. Encoding follows the WHATWG event-stream format through
//! `russe` (the encoder behind actix-web-lab's SSE), which splits data on CR,
//! LF and CRLF into one `data:` line each.

use std::time::Duration;

use bytes::Bytes;
use bytestring::ByteString;
use russe::{Event, Message};

use crate::{
    cursor::{write_cursor, Epoch},
    event::StoredEvent,
};

/// An event framed for the wire, with the position it carries.
#[derive(Clone, Debug)]
pub struct FramedEvent {
    /// The event's sequence in its topic.
    pub seq: u64,
    /// Store time, for publish→delivery latency.
    pub time_ms: i64,
    /// `id:`, optional `event:`, `data:` lines and the blank line.
    pub frame: Bytes,
}

/// The `: keep-alive` comment sent while a stream is idle.
pub const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";

/// An empty comment and blank line: a complete frame that every client
/// ignores, written to find out whether the socket is still there.
pub const PROBE: &[u8] = b":\n\n";

/// Frames one stored event. Every published event and every event a
/// catch-up reads is framed here, so it writes the frame in one buffer sized
/// up front; the output is byte for byte what `russe` encodes (checked by the
/// tests below).
pub fn frame_event(ev: &StoredEvent, epoch: &Epoch) -> FramedEvent {
    let mut out = Vec::with_capacity(frame_capacity(ev, epoch));
    write_frame(&mut out, ev, epoch);
    FramedEvent {
        seq: ev.seq,
        time_ms: ev.time_ms,
        frame: Bytes::from(out),
    }
}

/// Frames a page of stored events into one buffer that the frames share:
/// one allocation for the page instead of one per event.
pub fn frame_events(events: &[StoredEvent], epoch: &Epoch) -> Vec<FramedEvent> {
    frame_page(events, epoch).1
}

/// [`frame_events`], with the buffer: the frames are its consecutive slices.
pub fn frame_page(events: &[StoredEvent], epoch: &Epoch) -> (Bytes, Vec<FramedEvent>) {
    let mut out = Vec::with_capacity(events.iter().map(|e| frame_capacity(e, epoch)).sum());
    let mut ends = Vec::with_capacity(events.len());
    for ev in events {
        write_frame(&mut out, ev, epoch);
        ends.push(out.len());
    }
    let page = Bytes::from(out);
    let mut start = 0;
    let frames = events
        .iter()
        .zip(ends)
        .map(|(ev, end)| {
            let frame = page.slice(start..end);
            start = end;
            FramedEvent {
                seq: ev.seq,
                time_ms: ev.time_ms,
                frame,
            }
        })
        .collect();
    (page, frames)
}

fn frame_capacity(ev: &StoredEvent, epoch: &Epoch) -> usize {
    64 + epoch.as_str().len() + ev.event_type.as_ref().map_or(0, |t| t.len() + 8) + ev.data.len()
}

fn write_frame(out: &mut Vec<u8>, ev: &StoredEvent, epoch: &Epoch) {
    // Not validated again here: the HTTP layer admits only UTF-8 and the log
    // checksums what it stores (a 7 % share of a catch-up's instructions).
    let data: &[u8] = &ev.data;
    out.extend_from_slice(b"id: ");
    write_cursor(out, ev.time_ms, ev.seq, epoch);
    out.push(b'\n');
    if let Some(t) = &ev.event_type {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(t.as_bytes());
        out.push(b'\n');
    }
    write_data_lines(out, data);
    out.push(b'\n');
}

/// Position of the first CR or LF. Payloads are scanned for every event
/// framed and rarely hold either, so this tests eight bytes at a time for
/// a byte below 0x0e (CR, LF or a rarer control character), and only such
/// a word byte by byte.
fn find_line_end(data: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    let is_end = |b: &u8| *b == b'\r' || *b == b'\n';
    let mut words = data.chunks_exact(8);
    let mut at = 0;
    for w in words.by_ref() {
        let x = u64::from_ne_bytes(w.try_into().expect("8 bytes"));
        if x.wrapping_sub(ONES * 0x0e) & !x & HIGHS != 0 {
            if let Some(i) = w.iter().position(is_end) {
                return Some(at + i);
            }
        }
        at += 8;
    }
    words.remainder().iter().position(is_end).map(|i| at + i)
}

/// `data:` lines as the WHATWG format wants them: one per line of `data`,
/// where CRLF, CR and LF all end a line, empty lines kept.
fn write_data_lines(out: &mut Vec<u8>, mut data: &[u8]) {
    loop {
        out.extend_from_slice(b"data: ");
        let Some(i) = find_line_end(data) else {
            out.extend_from_slice(data);
            out.push(b'\n');
            return;
        };
        out.extend_from_slice(&data[..i]);
        out.push(b'\n');
        let crlf = data[i] == b'\r' && data.get(i + 1) == Some(&b'\n');
        data = &data[i + 1 + usize::from(crlf)..];
    }
}

/// The `retry:` field that opens every stream.
pub fn retry_frame(retry: Duration) -> Bytes {
    encode(Event::Retry(retry))
}

/// The `event:` names of broker notices. Publishers may not use them: a
/// subscriber could not tell a published `gap` or `auth-expired` from the
/// broker's own.
pub const GAP: &str = "gap";
pub const AUTH_EXPIRED: &str = "auth-expired";
pub const RESERVED_EVENT_TYPES: [&str; 2] = [GAP, AUTH_EXPIRED];

/// A named event with an id, for broker notices such as `event: gap`; the
/// name must be one of [`RESERVED_EVENT_TYPES`].
pub fn notice_frame(event: &str, id: &str, data: &str) -> Bytes {
    encode(Event::Message(Message {
        data: ByteString::from(data),
        event: Some(ByteString::from(event)),
        retry: None,
        id: Some(ByteString::from(id)),
    }))
}

fn encode(ev: Event) -> Bytes {
    // Cursors, event types and notices are validated ASCII without CR/LF, the
    // only inputs russe refuses.
    ev.into_bytestring()
        .expect("validated SSE fields")
        .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_multiline_data_and_type() {
        let epoch = Epoch::parse("abcd").unwrap();
        let ev = StoredEvent {
            seq: 1,
            time_ms: 0,
            event_type: Some("order".into()),
            data: Bytes::from_static(b"a\r\nb\rc\nd"),
        };
        let f = frame_event(&ev, &epoch);
        assert_eq!(
            std::str::from_utf8(&f.frame).unwrap(),
            "id: 19700101T000000.000Z-0000000000000001-abcd\nevent: order\ndata: a\ndata: b\ndata: c\ndata: d\n\n"
        );
    }

    #[test]
    fn frames_like_russe() {
        let epoch = Epoch::parse("abcd").unwrap();
        for (data, ty) in [
            ("", None),
            ("x", Some("t")),
            ("a\n", None),
            ("\n\n", None),
            ("a\r\n\r\nb\r", Some("order.created")),
            ("\r", None),
            ("é ☃\nü", None),
            ("{\"id\": 42}", Some("e")),
        ] {
            let ev = StoredEvent {
                seq: 77,
                time_ms: 1_764_000_000_123,
                event_type: ty.map(String::from),
                data: Bytes::from(data),
            };
            let want = encode(Event::Message(Message {
                data: ByteString::from(data),
                event: ty.map(ByteString::from),
                retry: None,
                id: Some(ByteString::from(ev.cursor(&epoch).to_string())),
            }));
            assert_eq!(frame_event(&ev, &epoch).frame, want, "{data:?}");
            let (page, frames) = frame_page(&[ev.clone(), ev.clone()], &epoch);
            assert_eq!(frames[1].frame, want, "{data:?}");
            assert_eq!(page.len(), 2 * want.len());
        }
    }

    #[test]
    fn finds_line_ends_anywhere() {
        for len in 0..40 {
            for at in 0..len {
                for c in [b'\r', b'\n'] {
                    let mut d: Vec<u8> = (0..len).map(|i| [b'x', 9, 0][i % 3]).collect();
                    d[at] = c;
                    if at + 1 < len {
                        d[at + 1] = 0x8a;
                    }
                    assert_eq!(find_line_end(&d), Some(at), "{len} {at}");
                }
            }
            assert_eq!(find_line_end(&vec![0x8d; len]), None);
            let controls: Vec<u8> = (0..len).map(|i| [0, 9, 0x0b, 0x0c, 0x0e][i % 5]).collect();
            assert_eq!(find_line_end(&controls), None);
        }
    }

    #[test]
    fn empty_data_still_has_a_data_line() {
        let epoch = Epoch::parse("abcd").unwrap();
        let ev = StoredEvent {
            seq: 2,
            time_ms: 0,
            event_type: None,
            data: Bytes::new(),
        };
        let s = String::from_utf8(frame_event(&ev, &epoch).frame.to_vec()).unwrap();
        assert!(s.ends_with("\ndata: \n\n"), "{s:?}");
    }
}

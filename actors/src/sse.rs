//! SSE framing: each event is framed once, as shared bytes, for every
//! subscriber. Encoding follows the WHATWG event-stream format through
//! `russe` (the encoder behind actix-web-lab's SSE), which splits data on CR,
//! LF and CRLF into one `data:` line each.

use std::time::Duration;

use bytes::Bytes;
use bytestring::ByteString;
use russe::{Event, Message};

use crate::{cursor::Epoch, event::StoredEvent};

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

/// Frames one stored event.
pub fn frame_event(ev: &StoredEvent, epoch: &Epoch) -> FramedEvent {
    let data = ByteString::try_from(ev.data.clone())
        .unwrap_or_else(|_| ByteString::from(ev.data_str().into_owned()));
    let msg = Message {
        data,
        event: ev.event_type.as_deref().map(ByteString::from),
        retry: None,
        id: Some(ByteString::from(ev.cursor(epoch).to_string())),
    };
    FramedEvent {
        seq: ev.seq,
        time_ms: ev.time_ms,
        frame: encode(Event::Message(msg)),
    }
}

/// The `retry:` field that opens every stream.
pub fn retry_frame(retry: Duration) -> Bytes {
    encode(Event::Retry(retry))
}

/// A named event with an id, for broker notices such as `event: gap`.
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

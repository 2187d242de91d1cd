//! SSE framing read back through the one spec-following parser,
//! `sluice_client::sse`: what a subscriber's `EventSource` sees is what was
//! published, whatever the data holds (CR, LF, CRLF, NUL, a byte order
//! mark, `data:` look-alikes, invalid UTF-8) and wherever the stream is cut
//! into reads (inside a CRLF, inside a UTF-8 sequence).

use std::time::Duration;

use bytes::Bytes;
use sluice_actors::{
    cursor::Epoch,
    event::StoredEvent,
    sse::{frame_event, frame_page, notice_frame, retry_frame, KEEP_ALIVE, PROBE},
};
use sluice_client::sse::{Decoder, Frame, Message};

use super::Choices;

/// Bytes data is made of: line ends, NUL, blanks, field look-alikes, a
/// byte order mark, pieces of multi-byte UTF-8 and plain letters.
const PALETTE: &[&[u8]] = &[
    b"\r",
    b"\n",
    b"\r\n",
    b"\0",
    b" ",
    b":",
    b"data:",
    b"id: x",
    b"retry: 5",
    b"\xEF\xBB\xBF",
    "é".as_bytes(),
    "☃".as_bytes(),
    "😀".as_bytes(),
    b"\xF0\x9F",
    b"\x98\x80",
    b"\xC3",
    b"\xFF",
    b"a",
    b"xyz",
];
const TYPE_CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-";

/// Reads `data` as choices: events, how they are framed, what comes
/// between them, and where the stream is cut.
pub fn run(data: &[u8]) {
    let mut c = Choices::new(data);
    let epoch = Epoch::parse(&c.word(b"abcdefghijklmnopqrstuvwxyz0123456789", 16)).expect("epoch");
    let mut events = Vec::new();
    let mut seq = c.u64() >> c.below(64);
    while events.len() < 12 && c.more() {
        let mut bytes = Vec::new();
        for _ in 0..c.below(12) {
            if c.below(4) == 0 {
                bytes.push(c.byte());
            } else {
                let piece: &[u8] = c.pick::<&[u8]>(PALETTE);
                bytes.extend_from_slice(piece);
            }
        }
        let event_type = c.flag().then(|| c.word(TYPE_CHARS, 64));
        seq = seq.wrapping_add(1);
        events.push(StoredEvent {
            seq,
            time_ms: c.u64() as i64 % 253_402_300_799_999,
            event_type,
            data: Bytes::from(bytes),
        });
    }
    let cuts: Vec<usize> = (0..c.below(16)).map(|_| c.below(4096)).collect();
    stream(&events, &epoch, c.byte(), &cuts);
}

/// `events` framed as a stream (a `retry:` first, keep-alives and a gap
/// notice between them; `layout` picks which), cut at `cuts` (byte
/// offsets, any order) and read back.
pub fn stream(events: &[StoredEvent], epoch: &Epoch, layout: u8, cuts: &[usize]) {
    let mut wire = Vec::new();
    let mut want = Vec::new();
    let retry = Duration::from_millis(u64::from(layout) * 37);
    wire.extend_from_slice(&retry_frame(retry));
    want.push(Frame::Retry(retry));
    // Half the time the events come as one page (a catch-up's framing).
    let (_, page) = frame_page(events, epoch);
    for (i, ev) in events.iter().enumerate() {
        let frame = frame_event(ev, epoch);
        assert_eq!(frame.frame, reference_frame(ev, epoch), "{ev:?}");
        assert_eq!(
            page[i].frame, frame.frame,
            "a page frames as single events do"
        );
        let id = ev.cursor(epoch).to_string();
        wire.extend_from_slice(&frame.frame);
        want.push(Frame::Message(Message {
            id: Some(id.clone()),
            event: ev.event_type.clone(),
            data: String::from_utf8_lossy(&normalized(&ev.data)).into_owned(),
            retry: None,
        }));
        match (layout >> (i % 8)) & 3 {
            1 => {
                wire.extend_from_slice(KEEP_ALIVE);
                want.push(Frame::Comment("keep-alive".into()));
            }
            2 => {
                wire.extend_from_slice(PROBE);
                want.push(Frame::Comment(String::new()));
            }
            3 => {
                let data = r#"{"requested":"x","lost":3}"#;
                wire.extend_from_slice(&notice_frame("gap", &id, data));
                want.push(Frame::Message(Message {
                    id: Some(id),
                    event: Some("gap".into()),
                    data: data.into(),
                    retry: None,
                }));
            }
            _ => {}
        }
    }
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (wire.len() + 1)).collect();
    cuts.sort_unstable();
    let mut decoder = Decoder::new();
    let mut got = Vec::new();
    let mut from = 0;
    for to in cuts.into_iter().chain([wire.len()]) {
        decoder.feed(&wire[from..to]);
        from = to;
        got.extend(std::iter::from_fn(|| decoder.next_frame()));
    }
    assert_eq!(got, want, "read back differs from what was framed");
    assert_eq!(decoder.buffered(), 0, "bytes left after the last frame");
}

/// The data as the client reads it: each of CRLF, CR and LF is one line
/// end, read as LF.
fn normalized(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut i = 0;
    while i < data.len() {
        match data[i] {
            b'\r' => {
                out.push(b'\n');
                if data.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    out
}

/// The frame written the plain way: `id:`, `event:` when there is a
/// type, one `data:` line per line of the data, a blank line.
fn reference_frame(ev: &StoredEvent, epoch: &Epoch) -> Bytes {
    let mut out = format!("id: {}\n", ev.cursor(epoch)).into_bytes();
    if let Some(t) = &ev.event_type {
        out.extend_from_slice(format!("event: {t}\n").as_bytes());
    }
    for line in normalized(&ev.data).split(|b| *b == b'\n') {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out.push(b'\n');
    Bytes::from(out)
}

//! The on-disk record: one event with its dedup information, so the event
//! and its dedup record are made durable by the same write.
//!
//! ```text
//! u32 LE  body length
//! u32 LE  CRC-32 (IEEE) of the body
//! body:
//!   u64 LE  seq
//!   i64 LE  time (ms since the Unix epoch)
//!   u8      flags: 1 = event type, 2 = idempotency key, 4 = producer
//!   [u8 len, type bytes]                         when flag 1
//!   [u8 len, key bytes, u128 LE fingerprint]     when flag 2
//!   [u8 len, producer id bytes, u64 LE seq]      when flag 4
//!   data (the rest of the body)
//! ```

use bytes::Bytes;
use sluice_actors::event::{NewEvent, StoredEvent};

/// Length of the length + CRC prefix.
pub const HEADER_LEN: usize = 8;
/// Offset of the time field from the start of a record.
pub const TIME_OFFSET: usize = HEADER_LEN + 8;
/// Bytes to read to learn a record's seq and time.
pub const PREFIX_LEN: usize = HEADER_LEN + 16;

const FLAG_TYPE: u8 = 1;
const FLAG_KEY: u8 = 2;
const FLAG_PRODUCER: u8 = 4;

/// A record read back from disk.
#[derive(Debug)]
pub struct DecodedRecord {
    /// The event.
    pub event: StoredEvent,
    /// Idempotency key and body fingerprint.
    pub key: Option<(String, u128)>,
    /// Producer id and sequence.
    pub producer: Option<(String, u64)>,
}

/// Bytes [`encode`] appends for `ev`.
pub fn encoded_len(ev: &NewEvent) -> usize {
    HEADER_LEN
        + 17
        + ev.event_type.as_ref().map_or(0, |t| 1 + t.len())
        + ev.idempotency_key.as_ref().map_or(0, |k| 1 + k.len() + 16)
        + ev.producer.as_ref().map_or(0, |(p, _)| 1 + p.len() + 8)
        + ev.data.len()
}

/// Appends the record of `ev` stored at `seq`/`time_ms` to `buf`.
pub fn encode(buf: &mut Vec<u8>, ev: &NewEvent, seq: u64, time_ms: i64) {
    let start = open_frame(buf);
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.extend_from_slice(&time_ms.to_le_bytes());
    let mut flags = 0;
    if ev.event_type.is_some() {
        flags |= FLAG_TYPE;
    }
    if ev.idempotency_key.is_some() {
        flags |= FLAG_KEY;
    }
    if ev.producer.is_some() {
        flags |= FLAG_PRODUCER;
    }
    buf.push(flags);
    // Lengths fit a byte: the HTTP layer caps types and producer ids at 64
    // bytes and keys at 255.
    if let Some(t) = &ev.event_type {
        buf.push(t.len() as u8);
        buf.extend_from_slice(t.as_bytes());
    }
    if let Some(k) = &ev.idempotency_key {
        buf.push(k.len() as u8);
        buf.extend_from_slice(k.as_bytes());
        buf.extend_from_slice(&ev.fingerprint().to_le_bytes());
    }
    if let Some((p, s)) = &ev.producer {
        buf.push(p.len() as u8);
        buf.extend_from_slice(p.as_bytes());
        buf.extend_from_slice(&s.to_le_bytes());
    }
    buf.extend_from_slice(&ev.data);
    seal_frame(buf, start);
}

/// Starts a checksummed frame (`u32 LE` body length, `u32 LE` CRC-32 of
/// the body, body) at the end of `buf` and returns where it starts; the
/// caller appends the body, then calls [`seal_frame`]. Segment records and
/// journal records are both such frames.
pub fn open_frame(buf: &mut Vec<u8>) -> usize {
    let start = buf.len();
    buf.extend_from_slice(&[0; HEADER_LEN]);
    start
}

/// Fills in the length and CRC of the frame that starts at `start` and
/// runs to the end of `buf`.
pub fn seal_frame(buf: &mut [u8], start: usize) {
    let body = &buf[start + HEADER_LEN..];
    let (len, crc) = (body.len() as u32, crc32fast::hash(body));
    buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Why there is no intact frame at the start of a byte slice.
#[derive(Debug, PartialEq, Eq)]
pub enum Damage {
    /// Too few bytes for the frame the prefix announces (or for a prefix).
    Truncated,
    /// The body does not match its CRC.
    Corrupt,
}

/// The body of the checksummed frame at the start of `buf` (the frame is
/// `HEADER_LEN + body.len()` bytes long).
pub fn frame_body(buf: &[u8]) -> Result<&[u8], Damage> {
    if buf.len() < HEADER_LEN {
        return Err(Damage::Truncated);
    }
    let len = u32::from_le_bytes(buf[0..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(buf[4..8].try_into().expect("4 bytes"));
    let body = buf
        .get(HEADER_LEN..HEADER_LEN + len)
        .ok_or(Damage::Truncated)?;
    if crc32fast::hash(body) != crc {
        return Err(Damage::Corrupt);
    }
    Ok(body)
}

/// What [`next`] found at the start of a byte slice.
#[derive(Debug)]
pub enum Next {
    /// A whole, intact record of `len` bytes (prefix included).
    Record(DecodedRecord, usize),
    /// Too few bytes for the record the prefix announces (or for a prefix).
    Truncated,
    /// The bytes are not a valid record.
    Corrupt,
}

/// Decodes the record at the start of `buf`, `data` shared from `shared`
/// when given (no copy), else copied.
pub fn next(buf: &[u8], shared: Option<&Bytes>) -> Next {
    let body = match frame_body(buf) {
        Ok(body) => body,
        Err(Damage::Truncated) => return Next::Truncated,
        Err(Damage::Corrupt) => return Next::Corrupt,
    };
    match decode_body(body, buf, shared) {
        Some(r) => Next::Record(r, HEADER_LEN + body.len()),
        None => Next::Corrupt,
    }
}

/// Shortest record: the header, seq, time and flags.
pub const MIN_RECORD_LEN: usize = HEADER_LEN + 17;

/// After damage at the start of `buf`: where the next intact record starts
/// whose sequence is at least `min_seq` (the damage cannot hide more
/// records than it has bytes for, which bounds the sequences worth trying).
/// `None` when no intact record follows: the damage runs to the end.
///
/// A position is taken only when its whole frame passes its CRC-32 and
/// decodes, and its sequence fits: random bytes pass by chance about once
/// in 2^32 tries, and then must also carry a plausible sequence.
pub fn resync(buf: &[u8], min_seq: u64) -> Option<usize> {
    let max_seq = min_seq.saturating_add((buf.len() / MIN_RECORD_LEN) as u64);
    (1..buf.len().saturating_sub(MIN_RECORD_LEN - 1)).find(|&at| {
        let b = &buf[at..];
        let seq = u64::from_le_bytes(b[HEADER_LEN..HEADER_LEN + 8].try_into().expect("8 bytes"));
        (min_seq..=max_seq).contains(&seq)
            && matches!(next(b, None), Next::Record(ref r, _) if r.event.seq == seq)
    })
}

fn decode_body(body: &[u8], whole: &[u8], shared: Option<&Bytes>) -> Option<DecodedRecord> {
    let mut r = Reader::new(body);
    let seq = u64::from_le_bytes(r.array()?);
    let time_ms = i64::from_le_bytes(r.array()?);
    let flags = r.take(1)?[0];
    let event_type = if flags & FLAG_TYPE != 0 {
        Some(r.string()?)
    } else {
        None
    };
    let key = if flags & FLAG_KEY != 0 {
        let k = r.string()?;
        Some((k, u128::from_le_bytes(r.array()?)))
    } else {
        None
    };
    let producer = if flags & FLAG_PRODUCER != 0 {
        let p = r.string()?;
        Some((p, u64::from_le_bytes(r.array()?)))
    } else {
        None
    };
    let data_start = HEADER_LEN + r.at;
    let data_end = HEADER_LEN + body.len();
    let data = match shared {
        // `whole` is a sub-slice of `shared`: slice it instead of copying.
        Some(s) => {
            let base = whole.as_ptr() as usize - s.as_ptr() as usize;
            s.slice(base + data_start..base + data_end)
        }
        None => Bytes::copy_from_slice(&whole[data_start..data_end]),
    };
    Some(DecodedRecord {
        event: StoredEvent {
            seq,
            time_ms,
            event_type,
            data,
        },
        key,
        producer,
    })
}

/// Reads a frame's body front to back; `None` once it runs short.
pub struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `b`.
    pub fn new(b: &'a [u8]) -> Self {
        Reader { b, at: 0 }
    }

    /// The next `n` bytes.
    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.b.get(self.at..self.at + n)?;
        self.at += n;
        Some(s)
    }

    /// The next `N` bytes, for a `from_le_bytes`.
    pub fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    /// Everything not read yet.
    pub fn rest(&self) -> &'a [u8] {
        &self.b[self.at..]
    }

    fn string(&mut self) -> Option<String> {
        let n = self.take(1)?[0] as usize;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let ev = NewEvent {
            data: Bytes::from_static(b"hello"),
            event_type: Some("t".into()),
            idempotency_key: Some("k".into()),
            producer: Some(("p".into(), 9)),
        };
        let mut buf = Vec::new();
        encode(&mut buf, &ev, 3, 1234);
        assert_eq!(buf.len(), encoded_len(&ev));
        let shared = Bytes::from(buf.clone());
        match next(&shared, Some(&shared)) {
            Next::Record(r, n) => {
                assert_eq!(n, buf.len());
                assert_eq!(r.event.seq, 3);
                assert_eq!(r.event.time_ms, 1234);
                assert_eq!(&r.event.data[..], b"hello");
                assert_eq!(r.event.event_type.as_deref(), Some("t"));
                assert_eq!(r.key, Some(("k".into(), ev.fingerprint())));
                assert_eq!(r.producer, Some(("p".into(), 9)));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(next(&buf[..buf.len() - 1], None), Next::Truncated));
        let mut bad = buf.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(matches!(next(&bad, None), Next::Corrupt));
    }

    fn event(data: &'static [u8]) -> NewEvent {
        NewEvent {
            data: Bytes::from_static(data),
            event_type: None,
            idempotency_key: None,
            producer: None,
        }
    }

    #[test]
    fn resync_finds_the_next_intact_record_after_damage() {
        let mut buf = Vec::new();
        encode(&mut buf, &event(b"one"), 1, 10);
        let second = buf.len();
        encode(&mut buf, &event(b"two"), 2, 10);
        let third = buf.len();
        encode(&mut buf, &event(b"three"), 3, 10);
        // A flipped byte in record 2: resync from record 2 lands on 3.
        let mut bad = buf.clone();
        bad[second + HEADER_LEN + 3] ^= 0x40;
        assert!(matches!(next(&bad[second..], None), Next::Corrupt));
        assert_eq!(resync(&bad[second..], 2), Some(third - second));
        // A record below the sequence asked for is not a place to go on.
        assert_eq!(resync(&buf, 4), None);
        // Zeros, garbage and a torn end hold nothing.
        assert_eq!(resync(&[0u8; 300], 1), None);
        assert_eq!(resync(&buf[third..buf.len() - 1], 3), None);
    }
}

//! Cursors: the position of an event in its topic's log, as the client sees it.
//!
//! Layout: `YYYYMMDDTHHMMSS.mmmZ-<seq: 16 hex>-<epoch>`, e.g.
//! `20240520T103022.123Z-000000000000002a-k3f9x2ab`. Every part is fixed width
//! except the epoch, and the epoch is the same for every cursor of one log, so
//! plain byte order is log order as long as the time never goes backwards
//! within a topic (the topic actor enforces that, see [`monotonic_time`]).

use std::{fmt, sync::Arc};

use chrono::{DateTime, Utc};
use rand::Rng;
use serde::{Deserialize, Serialize};

/// Longest epoch token accepted when parsing a cursor.
const MAX_EPOCH_LEN: usize = 16;
/// Length of the epochs this broker generates.
const EPOCH_LEN: usize = 8;
/// Length of the `YYYYMMDDTHHMMSS.mmmZ` prefix.
const TIME_LEN: usize = 20;
/// Length of the fixed-width hex sequence.
const SEQ_LEN: usize = 16;

/// The identity of one incarnation of a topic's log. A log that is wiped and
/// recreated gets a new epoch, so cursors of the old log are recognised.
///
/// Shared, not owned: every stored event's cursor carries its log's epoch,
/// and cloning it must not allocate.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Epoch(Arc<str>);

impl Epoch {
    /// A fresh random epoch (8 characters of `[a-z0-9]`).
    pub fn generate() -> Self {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        let mut rng = rand::rng();
        let token: String = (0..EPOCH_LEN)
            .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
            .collect();
        Epoch(token.into())
    }

    /// Accepts an epoch read back from storage; `None` when it is not one we
    /// could have generated.
    pub fn parse(s: &str) -> Option<Self> {
        valid_epoch(s).then(|| Epoch(s.into()))
    }

    /// The token as it appears in cursors.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn valid_epoch(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_EPOCH_LEN
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// A parsed cursor: event time, per-topic sequence and log epoch.
///
/// Sequence numbers start at 1; the cursor with sequence 0 means "before the
/// first event" and is what a client resumes from to read the whole log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cursor {
    /// Event time, milliseconds since the Unix epoch (UTC).
    pub time_ms: i64,
    /// Position in the topic's log.
    pub seq: u64,
    /// The log incarnation the position belongs to.
    pub epoch: Epoch,
}

/// Why a cursor string was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed cursor: {0}")]
pub struct CursorParseError(pub &'static str);

impl Cursor {
    /// Builds a cursor.
    pub fn new(time_ms: i64, seq: u64, epoch: Epoch) -> Self {
        Cursor {
            time_ms,
            seq,
            epoch,
        }
    }

    /// Parses the textual form. Strict: every byte is checked, so anything
    /// that parses is a cursor this broker could have issued.
    pub fn parse(s: &str) -> Result<Self, CursorParseError> {
        if s.len() > 64 {
            return Err(CursorParseError("longer than 64 bytes"));
        }
        // The parts are sliced at fixed byte offsets, which in other text
        // can fall inside a character (a `cursor` query parameter is
        // percent-decoded UTF-8).
        if !s.is_ascii() {
            return Err(CursorParseError("not ASCII"));
        }
        let b = s.as_bytes();
        if b.len() < TIME_LEN + 1 + SEQ_LEN + 2 {
            return Err(CursorParseError("too short"));
        }
        let time_ms = parse_time(&s[..TIME_LEN])?;
        if b[TIME_LEN] != b'-' || b[TIME_LEN + SEQ_LEN + 1] != b'-' {
            return Err(CursorParseError("expected '-' separators"));
        }
        let seq_str = &s[TIME_LEN + 1..TIME_LEN + 1 + SEQ_LEN];
        if !seq_str
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
        {
            return Err(CursorParseError("sequence is not lowercase hex"));
        }
        let seq = u64::from_str_radix(seq_str, 16)
            .map_err(|_| CursorParseError("sequence is not lowercase hex"))?;
        let epoch = &s[TIME_LEN + SEQ_LEN + 2..];
        if !valid_epoch(epoch) {
            return Err(CursorParseError("bad epoch"));
        }
        Ok(Cursor {
            time_ms,
            seq,
            epoch: Epoch(epoch.into()),
        })
    }
}

impl Cursor {
    /// Appends the textual form to `out`. Publishes and fan-out render a
    /// cursor for every event, so this avoids the formatting machinery.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        write_cursor(out, self.time_ms, self.seq, &self.epoch);
    }
}

/// Appends the textual form of the cursor (`time_ms`, `seq`, `epoch`) to `out`.
pub fn write_cursor(out: &mut Vec<u8>, time_ms: i64, seq: u64, epoch: &Epoch) {
    thread_local! {
        /// The last time rendered on this thread: the events of one batch
        /// share their time, so most cursors reuse it.
        static LAST_TIME: std::cell::Cell<(i64, [u8; TIME_LEN])> =
            const { std::cell::Cell::new((0, *b"19700101T000000.000Z")) };
    }
    let time = LAST_TIME.with(|last| {
        let (t, text) = last.get();
        if t == time_ms {
            return text;
        }
        let mut text = [0u8; TIME_LEN];
        format_time(time_ms, &mut text);
        last.set((time_ms, text));
        text
    });
    out.reserve(TIME_LEN + SEQ_LEN + 2 + epoch.0.len());
    out.extend_from_slice(&time);
    out.push(b'-');
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut hex = [0u8; SEQ_LEN];
    for (i, h) in hex.iter_mut().enumerate() {
        *h = HEX[((seq >> (4 * (SEQ_LEN - 1 - i))) & 0xf) as usize];
    }
    out.extend_from_slice(&hex);
    out.push(b'-');
    out.extend_from_slice(epoch.0.as_bytes());
}

/// `YYYYMMDDTHHMMSS.mmmZ` of a time in ms since the Unix epoch; a time
/// outside years 0..=9999 renders as the Unix epoch, as chrono's default.
fn format_time(time_ms: i64, out: &mut [u8; TIME_LEN]) {
    // Days since 0000-03-01 and the civil date from them (H. Hinnant's
    // days_from_civil inverse), in plain integer arithmetic.
    const MIN_MS: i64 = -62_167_219_200_000; // 0000-01-01T00:00:00Z
    const MAX_MS: i64 = 253_402_300_799_999; // 9999-12-31T23:59:59.999Z
    let t = if (MIN_MS..=MAX_MS).contains(&time_ms) {
        time_ms
    } else {
        0
    };
    let days = t.div_euclid(86_400_000);
    let ms_of_day = t.rem_euclid(86_400_000);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (secs, ms) = (ms_of_day / 1000, ms_of_day % 1000);
    let put = |out: &mut [u8; TIME_LEN], at: usize, width: usize, mut v: i64| {
        for i in (at..at + width).rev() {
            out[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(out, 0, 4, year);
    put(out, 4, 2, month);
    put(out, 6, 2, day);
    out[8] = b'T';
    put(out, 9, 2, secs / 3600);
    put(out, 11, 2, secs / 60 % 60);
    put(out, 13, 2, secs % 60);
    out[15] = b'.';
    put(out, 16, 3, ms);
    out[19] = b'Z';
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = Vec::with_capacity(TIME_LEN + SEQ_LEN + 2 + MAX_EPOCH_LEN);
        self.write_to(&mut buf);
        f.write_str(std::str::from_utf8(&buf).expect("cursors are ASCII"))
    }
}

fn to_datetime(time_ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(time_ms).unwrap_or_default()
}

/// RFC 3339 form of an event time, as in the history API's `time` field.
pub fn rfc3339_millis(time_ms: i64) -> String {
    to_datetime(time_ms)
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

fn parse_time(s: &str) -> Result<i64, CursorParseError> {
    const BAD: CursorParseError = CursorParseError("time is not YYYYMMDDTHHMMSS.mmmZ");
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| -> Result<u32, CursorParseError> {
        let part = &b[r];
        if !part.iter().all(u8::is_ascii_digit) {
            return Err(BAD);
        }
        Ok(part
            .iter()
            .fold(0u32, |acc, d| acc * 10 + u32::from(d - b'0')))
    };
    if b[8] != b'T' || b[15] != b'.' || b[19] != b'Z' {
        return Err(BAD);
    }
    let date = chrono::NaiveDate::from_ymd_opt(digits(0..4)? as i32, digits(4..6)?, digits(6..8)?)
        .ok_or(BAD)?;
    let time = chrono::NaiveTime::from_hms_milli_opt(
        digits(9..11)?,
        digits(11..13)?,
        digits(13..15)?,
        digits(16..19)?,
    )
    .ok_or(BAD)?;
    Ok(date.and_time(time).and_utc().timestamp_millis())
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// The time to stamp on the next event of a log whose latest event has
/// `latest_ms`: never earlier, so cursors keep byte order = log order even
/// when the wall clock steps back.
pub fn monotonic_time(latest_ms: i64) -> i64 {
    now_ms().max(latest_ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, Timelike};

    #[test]
    fn round_trips_and_orders() {
        let e = Epoch::parse("k3f9x2ab").unwrap();
        let a = Cursor::new(1_716_201_022_123, 42, e.clone());
        let s = a.to_string();
        assert_eq!(s, "20240520T103022.123Z-000000000000002a-k3f9x2ab");
        assert_eq!(Cursor::parse(&s).unwrap(), a);
        let b = Cursor::new(1_716_201_022_123, 43, e.clone()).to_string();
        let c = Cursor::new(1_716_201_022_124, 44, e).to_string();
        assert!(s < b && b < c);
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "abc",
            "20240520T103022.123Z-000000000000002a-",
            "20240520T103022.123Z-000000000000002A-k3f9",
            "20241320T103022.123Z-000000000000002a-k3f9",
            "20240520T103022.123Z_000000000000002a-k3f9",
            "20240520T103022.123Z-000000000000002a-K3F9",
            "20240520T103022.123Z-000000000000002a-k3f9 x",
            "20240520T103022.123Z-000000000000002a-aaaaaaaaaaaaaaaaa",
        ] {
            assert!(Cursor::parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn formats_like_chrono() {
        let e = Epoch::parse("abcd").unwrap();
        let mut t = -62_167_219_200_000i64;
        while t <= 253_402_300_799_999 {
            let fast = Cursor::new(t, 0x0123_4567_89ab_cdef, e.clone()).to_string();
            let d = to_datetime(t);
            let slow = format!(
                "{:04}{:02}{:02}T{:02}{:02}{:02}.{:03}Z-0123456789abcdef-abcd",
                d.year(),
                d.month(),
                d.day(),
                d.hour(),
                d.minute(),
                d.second(),
                d.timestamp_subsec_millis()
            );
            assert_eq!(fast, slow, "{t}");
            t += 7_777_777_777_777 / 1000 + 12_345;
        }
        for t in [0, 1, 951_782_400_000, 4_107_542_399_999, -1, -86_400_001] {
            let d = to_datetime(t);
            assert_eq!(
                &Cursor::new(t, 0, e.clone()).to_string()[..8],
                format!("{:04}{:02}{:02}", d.year(), d.month(), d.day())
            );
        }
        assert!(Cursor::new(i64::MAX, 0, e.clone())
            .to_string()
            .starts_with("19700101T000000.000Z"));
    }

    #[test]
    fn text_that_is_not_ascii_is_refused_not_sliced() {
        // Byte 20 (the first separator) inside a three-byte character.
        let s = "20240520T103022.123\u{20ac}000000000000002a-k3f9";
        assert_eq!(Cursor::parse(s), Err(CursorParseError("not ASCII")));
        assert!(Cursor::parse("20240520T103022.123Z-00000000000000\u{e9}-k3f9").is_err());
        assert!(Cursor::parse("20240520T103022.123Z-000000000000002a-k3f\u{e9}").is_err());
    }

    #[test]
    fn zero_cursor_is_valid() {
        let c = Cursor::new(0, 0, Epoch::parse("abcd").unwrap());
        assert_eq!(Cursor::parse(&c.to_string()).unwrap(), c);
    }
}

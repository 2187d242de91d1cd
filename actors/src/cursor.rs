//! Cursors: the position of an event in its topic's log, as the client sees it.
//!
//! Layout: `YYYYMMDDTHHMMSS.mmmZ-<seq: 16 hex>-<epoch>`, e.g.
//! `20240520T103022.123Z-000000000000002a-k3f9x2ab`. Every part is fixed width
//! except the epoch, and the epoch is the same for every cursor of one log, so
//! plain byte order is log order as long as the time never goes backwards
//! within a topic (the topic actor enforces that, see [`monotonic_time`]).

use std::fmt;

use chrono::{DateTime, Datelike, Timelike, Utc};
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
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Epoch(String);

impl Epoch {
    /// A fresh random epoch (8 characters of `[a-z0-9]`).
    pub fn generate() -> Self {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        let mut rng = rand::rng();
        let token = (0..EPOCH_LEN)
            .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
            .collect();
        Epoch(token)
    }

    /// Accepts an epoch read back from storage; `None` when it is not one we
    /// could have generated.
    pub fn parse(s: &str) -> Option<Self> {
        valid_epoch(s).then(|| Epoch(s.to_owned()))
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
            epoch: Epoch(epoch.to_owned()),
        })
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = to_datetime(self.time_ms);
        write!(
            f,
            "{:04}{:02}{:02}T{:02}{:02}{:02}.{:03}Z-{:016x}-{}",
            t.year(),
            t.month(),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.timestamp_subsec_millis(),
            self.seq,
            self.epoch
        )
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
    fn zero_cursor_is_valid() {
        let c = Cursor::new(0, 0, Epoch::parse("abcd").unwrap());
        assert_eq!(Cursor::parse(&c.to_string()).unwrap(), c);
    }
}

//! Event payloads: a JSON object carrying publisher id, per-publisher
//! sequence and send time (unix micros), padded to a requested size, and the
//! NDJSON batch lines that wrap it.

use serde::{de::IgnoredAny, Deserialize};
use std::time::{SystemTime, UNIX_EPOCH};

/// The fields a subscriber needs back from a payload.
#[derive(Debug, Deserialize, PartialEq)]
pub struct Stamp {
    /// Publisher id.
    pub p: u32,
    /// Sequence number within that publisher, from 0.
    pub s: u64,
    /// Send time, unix microseconds.
    pub t: u64,
    #[serde(default, rename = "pad")]
    _pad: IgnoredAny,
}

/// Now, in unix microseconds.
pub fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// `{"p":..,"s":..,"t":..,"pad":"xx.."}`, padded to `size` bytes when that is
/// larger than the unpadded object.
pub fn encode(p: u32, s: u64, t: u64, size: usize) -> String {
    let head = format!(r#"{{"p":{p},"s":{s},"t":{t},"pad":""#);
    let pad = size.saturating_sub(head.len() + 2);
    let mut out = String::with_capacity(head.len() + pad + 2);
    out.push_str(&head);
    out.extend(std::iter::repeat_n('x', pad));
    out.push_str("\"}");
    out
}

/// Parses a payload made by [`encode`].
///
/// The layout [`encode`] writes is read directly (a subscriber decodes
/// every event, and at a million events a second a general JSON parse was
/// the load generator's largest cost, so the bench measured itself);
/// anything else goes through serde_json.
pub fn decode(data: &str) -> Option<Stamp> {
    decode_fast(data.as_bytes()).or_else(|| serde_json::from_str(data).ok())
}

fn decode_fast(b: &[u8]) -> Option<Stamp> {
    let rest = b.strip_prefix(br#"{"p":"#)?;
    let (p, rest) = number(rest)?;
    let rest = rest.strip_prefix(br#","s":"#)?;
    let (s, rest) = number(rest)?;
    let rest = rest.strip_prefix(br#","t":"#)?;
    let (t, rest) = number(rest)?;
    let pad = rest.strip_prefix(br#","pad":""#)?.strip_suffix(br#""}"#)?;
    // Only a quote or backslash in the padding would need the general parse.
    if needs_unescaping(pad) {
        return None;
    }
    Some(Stamp {
        p: u32::try_from(p).ok()?,
        s,
        t,
        _pad: IgnoredAny,
    })
}

fn needs_unescaping(pad: &[u8]) -> bool {
    pad.iter()
        .fold(false, |seen, &c| seen | (c == b'"') | (c == b'\\'))
}

/// The decimal number at the start of `b`, and what follows it.
fn number(b: &[u8]) -> Option<(u64, &[u8])> {
    let digits = b.iter().take_while(|c| c.is_ascii_digit()).count();
    if digits == 0 || digits > 19 {
        return None;
    }
    let n = b[..digits]
        .iter()
        .fold(0u64, |n, &c| n * 10 + u64::from(c - b'0'));
    Some((n, &b[digits..]))
}

/// Appends one NDJSON batch line, `{"data":"<payload as a JSON string>"}`.
pub fn push_ndjson_line(out: &mut String, payload: &str) {
    out.push_str(r#"{"data":"#);
    out.push_str(&serde_json::Value::from(payload).to_string());
    out.push_str("}\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_at_the_requested_size() {
        let data = encode(3, 42, 1_700_000_000_000_000, 256);
        assert_eq!(data.len(), 256);
        let stamp = decode(&data).unwrap();
        assert_eq!((stamp.p, stamp.s, stamp.t), (3, 42, 1_700_000_000_000_000));
        assert!(encode(1, 1, 1, 0).len() > 10);
    }

    #[test]
    fn the_fast_path_agrees_with_serde_json() {
        for data in [
            encode(3, 42, 1_700_000_000_000_000, 256),
            encode(0, 0, 0, 0),
            r#"{"s":1,"p":2,"t":3}"#.to_string(),
            r#"{"p":1,"s":2,"t":3,"pad":"x\"y"}"#.to_string(),
        ] {
            assert_eq!(decode(&data), serde_json::from_str(&data).ok(), "{data}");
        }
        assert!(decode_fast(encode(1, 2, 3, 64).as_bytes()).is_some());
        assert_eq!(decode(r#"{"p":1,"s":"#), None);
    }

    #[test]
    fn ndjson_line_carries_the_payload_as_a_string() {
        let mut out = String::new();
        push_ndjson_line(&mut out, &encode(1, 2, 3, 64));
        let line: serde_json::Value = serde_json::from_str(out.trim_end()).unwrap();
        assert_eq!(decode(line["data"].as_str().unwrap()).unwrap().s, 2);
    }
}

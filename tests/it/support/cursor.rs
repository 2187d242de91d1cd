//! Cursors (`YYYYMMDDTHHMMSS.mmmZ-<16 hex>-<epoch>`) and the fields of
//! events as history and SSE give them.

use serde_json::Value;

use super::Message;

/// `YYYYMMDDTHHMMSS.mmmZ-<16 lowercase hex>-<[a-z0-9]{1,16}>`
pub fn is_cursor(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() < 20 + 1 + 16 + 2 || b.len() > 64 {
        return false;
    }
    let time_ok = b[..20].iter().enumerate().all(|(i, &c)| match i {
        8 => c == b'T',
        15 => c == b'.',
        19 => c == b'Z',
        _ => c.is_ascii_digit(),
    });
    let seq_ok = b[21..37]
        .iter()
        .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c));
    let epoch = &b[38..];
    time_ok
        && b[20] == b'-'
        && seq_ok
        && b[37] == b'-'
        && !epoch.is_empty()
        && epoch.len() <= 16
        && epoch
            .iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
}

pub fn assert_cursor(s: &str) {
    assert!(is_cursor(s), "not a cursor of the documented form: {s:?}");
}

pub fn cursor_seq(c: &str) -> u64 {
    assert_cursor(c);
    u64::from_str_radix(&c[21..37], 16).unwrap()
}

pub fn cursor_epoch(c: &str) -> &str {
    assert_cursor(c);
    &c[38..]
}

/// The same cursor with another sequence number.
pub fn with_seq(c: &str, seq: u64) -> String {
    assert_cursor(c);
    format!("{}-{seq:016x}-{}", &c[..20], &c[38..])
}

/// The same cursor with a different (valid) epoch token.
pub fn with_other_epoch(c: &str) -> String {
    let epoch = cursor_epoch(c);
    let other = if epoch == "zzzzzzzz" {
        "yyyyyyyy"
    } else {
        "zzzzzzzz"
    };
    format!("{}-{other}", &c[..37])
}

/// `cursor` of a history event (panics when it is not a string).
pub fn cursor_of(ev: &Value) -> String {
    ev["cursor"]
        .as_str()
        .unwrap_or_else(|| panic!("event cursor is not a string: {ev}"))
        .to_string()
}

/// `data` of a history event (panics when it is not a string).
pub fn data_of(ev: &Value) -> &str {
    ev["data"]
        .as_str()
        .unwrap_or_else(|| panic!("event data is not a string: {ev}"))
}

/// `id` of an SSE message (panics when it has none).
pub fn msg_id(m: &Message) -> String {
    m.id.as_deref()
        .unwrap_or_else(|| panic!("SSE message without id: {m:?}"))
        .to_string()
}

/// Parses a `{"seq":i}` payload.
pub fn seq_of(data: &str) -> u64 {
    let v: Value = serde_json::from_str(data).unwrap_or_else(|e| panic!("{data:?}: {e}"));
    v["seq"]
        .as_u64()
        .unwrap_or_else(|| panic!("no seq in {data:?}"))
}

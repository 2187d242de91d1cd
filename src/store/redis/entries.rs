//! Parsing Redis replies into stored events.

use super::*;

/// Parses `XRANGE`/`XREAD` entries: `[[id, [field, value, ...]], ...]`.
pub(super) fn parse_entries(v: &Value) -> Result<Vec<StoredEvent>, StoreError> {
    let bad = || unavailable("unexpected stream entry");
    let Value::Array(entries) = v else {
        return if matches!(v, Value::Nil) {
            Ok(Vec::new())
        } else {
            Err(bad())
        };
    };
    let mut out = Vec::with_capacity(entries.len());
    for e in entries {
        let Value::Array(parts) = e else {
            return Err(bad());
        };
        let [id, Value::Array(fields)] = parts.as_slice() else {
            return Err(bad());
        };
        let id = text(id).ok_or_else(bad)?;
        let seq: u64 = id
            .split('-')
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(bad)?;
        let mut ev = StoredEvent {
            seq,
            time_ms: 0,
            event_type: None,
            data: Bytes::new(),
        };
        for pair in fields.chunks_exact(2) {
            let Value::BulkString(val) = &pair[1] else {
                return Err(bad());
            };
            match text(&pair[0]).as_deref() {
                Some("d") => ev.data = Bytes::copy_from_slice(val),
                Some("t") => {
                    ev.time_ms = std::str::from_utf8(val)
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .ok_or_else(bad)?
                }
                Some("y") => ev.event_type = Some(String::from_utf8_lossy(val).into_owned()),
                _ => {}
            }
        }
        out.push(ev);
    }
    Ok(out)
}

pub(super) fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

//! One line of an NDJSON batch that is not the plain `{"data":"<string>"}`
//! the fast path in `ndjson` decodes: its members read one by one, so that
//! every complaint is in Sluice's words.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

/// One NDJSON line of a batch that is not a plain `{"data":"<string>"}`.
pub(super) struct BatchLine<'a> {
    /// The value's text as sent (a `RawValue` keeps it: serde's own types
    /// would reorder keys and respell numbers).
    pub data: &'a RawValue,
    /// The event type, checked as the `Event-Type` header is.
    pub event_type: Option<Cow<'a, str>>,
    /// Checked as the `Idempotency-Key` header is.
    pub idempotency_key: Option<Cow<'a, str>>,
}

/// A line's members in order, duplicates included; what they mean is read
/// by [`parse_line`], so that every complaint is in Sluice's words (a
/// derived `Deserialize` says `expected struct BatchLine`).
struct Members<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut members = Vec::with_capacity(3);
                while let Some(name) = map.next_key::<Cow<'de, str>>()? {
                    members.push((name, map.next_value::<&'de RawValue>()?));
                }
                Ok(Members(members))
            }
        }
        d.deserialize_map(Visit)
    }
}

/// A JSON string member's text, borrowed when it has no escapes.
fn string_member<'a>(name: &str, raw: &'a RawValue) -> Result<Option<Cow<'a, str>>, String> {
    let text = raw.get();
    if text == "null" {
        return Ok(None);
    }
    if !text.starts_with('"') {
        return Err(format!("\"{name}\" must be a string"));
    }
    match serde_json::from_str::<&'a str>(text) {
        Ok(s) => Ok(Some(Cow::Borrowed(s))),
        // Escapes: decoded into a string of its own.
        Err(_) => serde_json::from_str::<String>(text)
            .map(|s| Some(Cow::Owned(s)))
            .map_err(|_| format!("\"{name}\" is not a valid JSON string")),
    }
}

/// Reads a line that is not a plain `{"data":"<string>"}`; the problem, in
/// Sluice's words, when it is not a valid batch line.
pub(super) fn parse_line(line: &str) -> Result<BatchLine<'_>, String> {
    if !line.trim_start().starts_with('{') {
        return Err(r#"each line must be a JSON object such as {"data": "..."}"#.to_owned());
    }
    let Members(members) = serde_json::from_str(line).map_err(|e| match e.classify() {
        serde_json::error::Category::Eof => {
            "not valid JSON: the line ends before its object does".to_owned()
        }
        _ => format!("not valid JSON (at column {})", e.column()),
    })?;
    let (mut data, mut event_type, mut key) = (None, None, None);
    for (name, raw) in members {
        let slot = match &*name {
            "data" => {
                if data.replace(raw).is_some() {
                    return Err(r#""data" is given more than once"#.to_owned());
                }
                continue;
            }
            "type" => &mut event_type,
            "idempotency_key" => &mut key,
            other => {
                let shown: String = other.chars().take(64).collect();
                return Err(format!(
                    r#"unknown member {shown:?}: a line has "data", and optionally "type" and "idempotency_key""#
                ));
            }
        };
        if slot.replace(string_member(&name, raw)?).is_some() {
            return Err(format!("\"{name}\" is given more than once"));
        }
    }
    Ok(BatchLine {
        data: data.ok_or(r#""data" is missing"#)?,
        event_type: event_type.flatten(),
        idempotency_key: key.flatten(),
    })
}

//! The body of `POST /v1/topics/{topic}/batch`: NDJSON, one event a line,
//! `{"data": <value>, "type": "...", "idempotency_key": "..."}`.
//!
//! What an event's data is, from its line's `data`:
//!
//! - a string: the string's content (escapes decoded), as a single publish
//!   of that text would store it;
//! - any other JSON value (object, array, number, `true`, `false`, `null`):
//!   the value's own JSON text as sent, compacted: the whitespace between
//!   its tokens goes, but key order, duplicate keys, number spelling (`1.10`,
//!   `1e3`, integers past 64 bits) and string escapes stay as sent. So
//!   `{"b": 1, "a": [1, 2]}` is stored as `{"b":1,"a":[1,2]}`, `null` as
//!   `null`. A subscriber gets back what the publisher wrote, not what a
//!   JSON library made of it.
//!
//! The only entry point is [`parse_batch`]. Most lines are
//! `{"data":"<string>"}`, which a hand-written decoder handles in one pass;
//! every other line goes through serde.

use std::borrow::Cow;

use bytes::{Bytes, BytesMut};
use serde_json::{json, value::RawValue, Map};
use sluice_actors::event::NewEvent;

use super::{batch_line::parse_line, error::ApiError, validate};
use crate::config::Limits;

/// Parses and validates every line of a batch body: its events in line
/// order, or the first bad line's `400` (with `line`, 1-based, in the
/// problem body). Blank lines (spaces, tabs) are skipped and a line may
/// end in `\r\n`. Event
/// data shares `body`'s memory where it can.
pub fn parse_batch(body: &Bytes, limits: &Limits) -> Result<Vec<NewEvent>, ApiError> {
    let text = std::str::from_utf8(body).map_err(|_| ApiError::bad("body is not valid UTF-8"))?;
    // The data that cannot be a slice of the body (decoded strings,
    // compacted values), back to back in one buffer, each event's data a
    // shared slice of it: a batch costs one allocation instead of one per
    // event (and one more per event when its data is first cloned). Stored
    // data is at most as long as its JSON text, so the buffer never grows.
    let mut decoded = BytesMut::with_capacity(body.len());
    let mut events = Vec::with_capacity(16);
    for (i, line) in text.split('\n').enumerate() {
        let n = i + 1;
        let line = line.strip_suffix('\r').unwrap_or(line);
        // Blank means JSON's whitespace only: a line of U+00A0 or U+2028
        // is no more blank than it is JSON (str::trim would skip it).
        if line.bytes().all(|b| matches!(b, b' ' | b'\t' | b'\r')) {
            continue;
        }
        if events.len() == limits.max_batch_events {
            return Err(bad_line(
                n,
                format!("a batch holds at most {} events", limits.max_batch_events),
            ));
        }
        let event = match plain_line(line.as_bytes(), body, &mut decoded) {
            Some(data) => NewEvent::data(data),
            None => {
                let parsed = parse_line(line).map_err(|e| bad_line(n, e))?;
                if let Some(t) = &parsed.event_type {
                    validate::event_type("type", t).map_err(|e| bad_line(n, e))?;
                }
                if let Some(k) = &parsed.idempotency_key {
                    validate::idempotency_key(k).map_err(|e| bad_line(n, e))?;
                }
                NewEvent {
                    data: data_of(parsed.data, body, &mut decoded)
                        .map_err(|_| bad_line(n, "\"data\" is not a valid JSON string"))?,
                    event_type: parsed.event_type.map(Cow::into_owned),
                    idempotency_key: parsed.idempotency_key.map(Cow::into_owned),
                    producer: None,
                }
            }
        };
        if event.data.len() > limits.max_event_bytes {
            return Err(bad_line(
                n,
                format!("data exceeds {} bytes", limits.max_event_bytes),
            ));
        }
        events.push(event);
    }
    if events.is_empty() {
        return Err(ApiError::bad("batch has no events"));
    }
    Ok(events)
}

/// A `400` naming the bad line (1-based), also as the problem's `line`.
fn bad_line(line: usize, detail: impl std::fmt::Display) -> ApiError {
    let mut extra = Map::new();
    extra.insert("line".into(), json!(line));
    ApiError::BadRequest {
        detail: format!("line {line}: {detail}"),
        extra,
    }
}

/// The payload of the commonest line, `{"data":"<string>"}` (blanks after
/// it allowed), in one pass: a slice of `body` when the string has no
/// escape (no copy at all), else decoded onto `out` (empty). Several times
/// cheaper than serde, whose string decoding goes through a scratch
/// buffer. `None` for any other line, including one whose string has a
/// `\u` escape or a control character: serde parses those (and names what
/// is wrong).
fn plain_line(line: &[u8], body: &Bytes, out: &mut BytesMut) -> Option<Bytes> {
    let rest = line.strip_prefix(br#"{"data":""#)?;
    // Every line leaves the buffer empty (its data split off).
    debug_assert!(out.is_empty());
    let closes = |tail: &[u8]| {
        tail.strip_prefix(b"}")
            .is_some_and(|t| t.iter().all(|b| b" \t\r".contains(b)))
    };
    let first = find_special(rest)?;
    if rest[first] == b'"' {
        return closes(&rest[first + 1..]).then(|| body.slice_ref(&rest[..first]));
    }
    if unescape(rest, out).is_some_and(|end| closes(&rest[end..])) {
        Some(out.split().freeze())
    } else {
        out.clear();
        None
    }
}

/// What a line's `data` stores (see the module documentation): a slice of
/// `body`, or its decoded or compacted text split off `out` (empty). `raw`
/// was checked by serde: it is one valid JSON value, borrowed from `body`.
fn data_of(raw: &RawValue, body: &Bytes, out: &mut BytesMut) -> Result<Bytes, serde_json::Error> {
    let text = raw.get().as_bytes();
    let Some(inner) = text.strip_prefix(b"\"") else {
        compact(text, out);
        return Ok(out.split().freeze());
    };
    // A string whose first special byte is its closing quote has nothing
    // to decode: share the body.
    if find_special(inner) == Some(inner.len() - 1) {
        return Ok(body.slice_ref(&inner[..inner.len() - 1]));
    }
    if unescape(inner, out).is_none() {
        // A `\u` escape: serde decodes it (surrogate pairs and all).
        out.clear();
        out.extend_from_slice(serde_json::from_slice::<String>(text)?.as_bytes());
    }
    Ok(out.split().freeze())
}

/// Appends the JSON text `json` to `out` without the whitespace between its
/// tokens; everything else, strings included, is copied as is. `json` must
/// be valid JSON (serde checked it): then a `"` outside a string opens
/// one, and inside a string only an unescaped `"` closes it.
fn compact(json: &[u8], out: &mut BytesMut) {
    let mut in_string = false;
    let mut escaped = false;
    // Start of the run of bytes not yet copied.
    let mut run = 0;
    for (i, &c) in json.iter().enumerate() {
        if in_string {
            match c {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
        } else if c == b'"' {
            in_string = true;
        } else if matches!(c, b' ' | b'\t' | b'\n' | b'\r') {
            out.extend_from_slice(&json[run..i]);
            run = i + 1;
        }
    }
    out.extend_from_slice(&json[run..]);
}

/// Decodes the JSON string whose text (after its opening quote) starts `s`
/// onto `out`; the length of `s` up to and including the closing quote.
/// `None` for a `\u` escape, a control character, an unknown escape or no
/// closing quote, with part of the string possibly appended: the caller
/// clears `out` and leaves those to serde.
fn unescape(s: &[u8], out: &mut BytesMut) -> Option<usize> {
    let mut at = 0;
    loop {
        let i = at + find_special(&s[at..])?;
        out.extend_from_slice(&s[at..i]);
        let unescaped = match (s[i], s.get(i + 1)) {
            (b'"', _) => return Some(i + 1),
            (b'\\', Some(b'"')) => b'"',
            (b'\\', Some(b'\\')) => b'\\',
            (b'\\', Some(b'/')) => b'/',
            (b'\\', Some(b'b')) => 0x08,
            (b'\\', Some(b'f')) => 0x0c,
            (b'\\', Some(b'n')) => b'\n',
            (b'\\', Some(b'r')) => b'\r',
            (b'\\', Some(b't')) => b'\t',
            _ => return None,
        };
        out.extend_from_slice(&[unescaped]);
        at = i + 2;
    }
}

/// Index of the first `"`, `\` or control character: the quote or
/// backslash by memchr's SIMD search, then a control character before it
/// (they must be escaped in JSON, so one is rare) 32 bytes at a time, in a
/// loop the compiler vectorizes. A payload is mostly plain text, so this
/// runs over nearly every byte of every batch.
fn find_special(b: &[u8]) -> Option<usize> {
    let end = memchr::memchr2(b'"', b'\\', b);
    let span = &b[..end.unwrap_or(b.len())];
    let mut at = 0;
    for chunk in span.chunks(32) {
        if chunk.iter().fold(false, |any, &c| any | (c < 0x20)) {
            return chunk.iter().position(|&c| c < 0x20).map(|i| at + i);
        }
        at += chunk.len();
    }
    end
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    fn limits() -> Limits {
        let defaults = crate::config::Settings::load_with_env(
            &crate::config::Overrides::default(),
            Some(Vec::new()),
        );
        Limits {
            max_event_bytes: 100,
            max_batch_events: 4,
            max_batch_bytes: 1 << 20,
            ..defaults.expect("the defaults load").limits
        }
    }

    fn parse(body: &str) -> Result<Vec<NewEvent>, ApiError> {
        parse_batch(&Bytes::copy_from_slice(body.as_bytes()), &limits())
    }

    /// The data of a one-line batch.
    fn data(line: &str) -> String {
        let evs = parse(line).unwrap_or_else(|e| panic!("{line}: {e}"));
        String::from_utf8(evs[0].data.to_vec()).expect("UTF-8")
    }

    fn bad_line_of(body: &str) -> u64 {
        match parse(body) {
            Err(ApiError::BadRequest { extra, .. }) => extra["line"].as_u64().expect("line"),
            Err(e) => panic!("{body:?}: {e}"),
            Ok(_) => panic!("{body:?} was accepted"),
        }
    }

    #[test]
    fn lines_blank_lines_crlf_and_data_forms() {
        let evs = parse(concat!(
            "\r\n",
            "  {\"data\":\"plain\"}  \r\n",
            "\n",
            "{\"data\":\"esc\\\"aped\\n\",\"type\":\"t\",\"idempotency_key\":\"k\"}\n",
            "{\"data\":{\"b\": [1, 2.5, null], \"a\": true}}\n",
            "{\"data\":-7}",
        ))
        .unwrap();
        let data: Vec<&[u8]> = evs.iter().map(|e| &e.data[..]).collect();
        assert_eq!(
            data,
            [
                &b"plain"[..],
                b"esc\"aped\n",
                br#"{"b":[1,2.5,null],"a":true}"#,
                b"-7"
            ]
        );
        assert_eq!(evs[1].event_type.as_deref(), Some("t"));
        assert_eq!(evs[1].idempotency_key.as_deref(), Some("k"));
    }

    #[test]
    fn non_string_data_is_its_own_text_compacted() {
        for (value, stored) in [
            // What a round trip through serde_json::Value made of these:
            // keys sorted, numbers respelled.
            (r#"{"b":1,"a":[1, 2]}"#, r#"{"b":1,"a":[1,2]}"#),
            ("1.10", "1.10"),
            ("1e3", "1e3"),
            ("18446744073709551616", "18446744073709551616"),
            ("-0", "-0"),
            ("1E+3", "1E+3"),
            ("0.30000000000000000001", "0.30000000000000000001"),
            // Whitespace goes only between tokens; strings keep their
            // escapes and blanks.
            (
                "{ \"k\\\" 1\" :\t[ \"a \\\\\" , \"\\u00e9 \\n\" ] , \"k\\\" 1\" : { } }",
                r#"{"k\" 1":["a \\","\u00e9 \n"],"k\" 1":{}}"#,
            ),
            ("[ ]", "[]"),
            ("null", "null"),
            ("true", "true"),
            ("false", "false"),
        ] {
            for line in [
                format!(r#"{{"data":{value}}}"#),
                format!(r#"{{ "type" : "t", "data" :  {value}  }}"#),
            ] {
                assert_eq!(data(&line), stored, "{line}");
            }
        }
    }

    #[test]
    fn compact_keeps_strings_whole() {
        for (json, want) in [
            (r#""a b""#, r#""a b""#),
            (r#"[ "\\", "x" ]"#, r#"["\\","x"]"#),
            (r#"[ "\\\"  ", 1 ]"#, r#"["\\\"  ",1]"#),
            ("{\"\":\r\n\t \"\"}", r#"{"":""}"#),
            ("[\"é ☃\" , 2]", "[\"é ☃\",2]"),
        ] {
            let mut out = BytesMut::new();
            compact(json.as_bytes(), &mut out);
            assert_eq!(&out[..], want.as_bytes(), "{json}");
        }
    }

    #[test]
    fn string_data_in_other_lines_is_decoded() {
        for (line, want) in [
            (r#"{"type":"t","data":"shared"}"#, "shared"),
            (r#"{"type":"t","data":""}"#, ""),
            (r#"{"type":"t","data":"q\"b\\n\nt\t"}"#, "q\"b\\n\nt\t"),
            (r#"{"type":"t","data":"\u00e9\ud83d\ude00\n"}"#, "é😀\n"),
            (r#"{"data": "spaced" }"#, "spaced"),
        ] {
            assert_eq!(data(line), want, "{line}");
        }
        // An unescaped string is a slice of the body, not a copy.
        let body = Bytes::from_static(br#"{"type":"t","data":"shared"}"#);
        let evs = parse_batch(&body, &limits()).unwrap();
        assert_eq!(evs[0].data.as_ptr(), body[20..].as_ptr());
    }

    #[test]
    fn finds_the_first_special_byte() {
        let mut line = vec![b'x'; 40];
        assert_eq!(find_special(&line), None);
        for special in [b'"', b'\\', 0x00, 0x1f, b'\n'] {
            for at in 0..40 {
                line[at] = special;
                assert_eq!(find_special(&line), Some(at), "{special} at {at}");
                line[at] = b'x';
            }
        }
        // Bytes that are not special, next to ones that are.
        let s = "é ☃ !#[]^_`{|}~\x7f \"".as_bytes();
        assert_eq!(find_special(s), Some(s.len() - 1));
    }

    #[test]
    fn plain_lines_decode_as_serde_does() {
        for line in [
            r#"{"data":""}"#,
            r#"{"data":"abc"}"#,
            r#"{"data":"q\"b\\s\/l\bb\ff\nn\rr\tt"}  "#,
            r#"{"data":"{\"p\":1,\"pad\":\"xx\"}"}"#,
            r#"{"data":"é ☃ \\"}"#,
        ] {
            let want: String = serde_json::from_str::<Value>(line).unwrap()["data"]
                .as_str()
                .unwrap()
                .to_owned();
            let body = Bytes::copy_from_slice(line.as_bytes());
            let got = plain_line(&body, &body, &mut BytesMut::new()).expect(line);
            assert_eq!(&got[..], want.as_bytes(), "{line}");
            assert_eq!(&parse(line).unwrap()[0].data[..], want.as_bytes());
        }
        // Anything else goes to serde.
        for line in [
            r#"{"data":"\u0041"}"#,
            r#"{"data":"a\x"}"#,
            "{\"data\":\"tab\there\"}",
            r#"{"data":"a"}x"#,
            r#"{"data":"a","type":"t"}"#,
            r#"{"data":"a"#,
            r#"{"data":"a\"#,
            r#" {"data":"a"}"#,
        ] {
            let mut out = BytesMut::new();
            let body = Bytes::copy_from_slice(line.as_bytes());
            assert!(plain_line(&body, &body, &mut out).is_none(), "{line}");
            assert!(out.is_empty(), "{line}");
        }
        assert_eq!(&parse(r#"{"data":"\u0041"}"#).unwrap()[0].data[..], b"A");
        assert_eq!(bad_line_of("{\"data\":\"tab\there\"}"), 1);
        assert_eq!(bad_line_of("{\"data\":\"a\"}x"), 1);
    }

    #[test]
    fn only_json_whitespace_makes_a_line_blank() {
        // Unicode blanks (no-break space, line separator, vertical tab) are
        // not JSON whitespace: such a line is a bad line, not skipped.
        for blank in ["\u{a0}", "\u{2028}", "\u{b}", "\u{c}", " \u{3000} "] {
            assert_eq!(
                bad_line_of(&format!("{{\"data\":1}}\n{blank}\n")),
                2,
                "{blank:?}"
            );
            assert_eq!(bad_line_of(blank), 1, "{blank:?}");
        }
        assert_eq!(parse(" \t\r\n{\"data\":1}\n\t\n").unwrap().len(), 1);
    }

    #[test]
    fn one_event_per_line_and_the_bad_line_is_named() {
        assert_eq!(bad_line_of("{\"data\":1} {\"data\":2}\n"), 1);
        assert_eq!(bad_line_of("{\"data\":1}\n{\"data\":\n2}\n"), 2);
        assert_eq!(bad_line_of("{\"data\":1}\n\n{\"data\":2}x\n"), 3);
        assert_eq!(bad_line_of("{\"data\":1}\n\nnot json\n"), 3);
        assert_eq!(bad_line_of("{\"data\":1}\n{\"data\":2,\"extra\":3}\n"), 2);
        assert_eq!(
            bad_line_of("{\"data\":1}\n{\"data\":2,\"type\":\"gap\"}\n"),
            2
        );
        assert_eq!(bad_line_of("{\"data\":1,\"type\":\"auth-expired\"}\n"), 1);
        assert_eq!(bad_line_of("{\"data\":1}\n{\"type\":\"t\"}\n"), 2);
        assert_eq!(bad_line_of("{\"data\":1}\n{\"data\":\"a\""), 2);
        assert_eq!(bad_line_of("{\"data\":1}\n{\"data\":[1,]}"), 2);
        assert_eq!(bad_line_of("{\"data\":1}\n{\"data\":01}"), 2);
        assert_eq!(
            bad_line_of(&format!("\n{{\"data\":\"{}\"}}", "x".repeat(101))),
            2
        );
        // The limit counts the stored (compacted) text.
        let spaced = format!("{{\"data\":[{}1]}}", " ".repeat(200));
        assert_eq!(data(&spaced), "[1]");
        let long = format!("{{\"data\":[{}1]}}", "1,".repeat(50));
        assert_eq!(bad_line_of(&long), 1);
        assert_eq!(bad_line_of(&"{\"data\":1}\n".repeat(5)), 5);
        assert!(matches!(parse(" \n\r\n"), Err(ApiError::BadRequest { .. })));
    }
}

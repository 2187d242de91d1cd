//! The NDJSON batch parser (`ndjson`, `batch_line`): raw bodies, and
//! bodies written from known events.
//!
//! Oracles: an accepted body has one event per non-blank line, each the
//! line's own `data`, `type` and `idempotency_key` as a JSON library reads
//! them; a refused body names its first bad line (every line before it is
//! valid alone, and it is not); a body written from valid events gives
//! them back, in any member order, spacing, line ending and blank lines.

use bytes::Bytes;
use serde_json::{Map, Value};
use sluice_actors::event::NewEvent;

use super::super::{error::ApiError, ndjson::parse_batch};
use crate::{config::Limits, fuzzing::Choices};

/// Limits small enough for a fuzzer to reach.
fn small_limits() -> Limits {
    Limits {
        max_event_bytes: 64,
        max_batch_events: 8,
        max_batch_bytes: 1 << 20,
        ..default_limits()
    }
}

/// The limits of the default configuration, read once.
fn default_limits() -> Limits {
    static DEFAULTS: std::sync::OnceLock<Limits> = std::sync::OnceLock::new();
    DEFAULTS
        .get_or_init(|| {
            crate::config::Settings::load_with_env(&Default::default(), Some(Vec::new()))
                .expect("the default configuration loads")
                .limits
        })
        .clone()
}

/// Reads `data` as a fuzz input: a raw body, or events written as lines.
pub fn run(data: &[u8]) {
    match data.split_first() {
        Some((k, rest)) if k % 2 == 0 => raw(rest),
        Some((_, rest)) => {
            let mut c = Choices::new(rest);
            let mut lines = Vec::new();
            while lines.len() < 8 && c.flag() {
                lines.push(Line {
                    data: value(&mut c, 2),
                    // The broker's own notice types are refused: the
                    // well-formed lines never carry them.
                    event_type: c.flag().then(|| c.word(TYPE_CHARS, 64)).filter(|t| {
                        !sluice_actors::sse::RESERVED_EVENT_TYPES.contains(&t.as_str())
                    }),
                    idempotency_key: c.flag().then(|| c.word(KEY_CHARS, 255)),
                });
            }
            let bad = c
                .flag()
                .then(|| (c.below(lines.len() + 1), c.below(BAD_LINES.len())));
            round_trip(&lines, c.u64(), bad);
        }
        None => raw(b""),
    }
}

/// The first line number of a `400`, if it names one.
fn line_of(e: &ApiError) -> Option<usize> {
    match e {
        ApiError::BadRequest { extra, .. } => extra
            .get("line")
            .and_then(Value::as_u64)
            .map(|n| n as usize),
        other => panic!("a batch is refused with a 400, not {other:?}"),
    }
}

/// The lines as the parser splits them: on LF, without a CR before it.
fn split_lines(text: &str) -> Vec<&str> {
    text.split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .collect()
}

/// Any body, with small limits.
pub fn raw(body: &[u8]) {
    let limits = small_limits();
    let result = parse_batch(&Bytes::copy_from_slice(body), &limits);
    let Ok(text) = std::str::from_utf8(body) else {
        let e = result.expect_err("a body that is not UTF-8 is refused");
        assert_eq!(line_of(&e), None);
        return;
    };
    let lines = split_lines(text);
    let filled: Vec<(usize, &str)> = lines
        .iter()
        .enumerate()
        // Blank: JSON's whitespace only (a line of U+00A0 or U+2028 is
        // not blank, and not JSON either).
        .filter(|(_, l)| !l.bytes().all(|b| b" \t\r".contains(&b)))
        .map(|(i, l)| (i + 1, *l))
        .collect();
    match result {
        Ok(events) => {
            assert_eq!(events.len(), filled.len(), "one event per non-blank line");
            assert!(events.len() <= limits.max_batch_events);
            for (ev, (_, line)) in events.iter().zip(&filled) {
                assert!(ev.data.len() <= limits.max_event_bytes);
                same_as_json(ev, line);
            }
        }
        Err(e) => {
            let Some(n) = line_of(&e) else {
                assert!(filled.is_empty(), "a refusal without a line: {e}");
                return;
            };
            let before = filled.iter().take_while(|(i, _)| *i < n).count();
            assert!(
                filled.get(before).is_some_and(|(i, _)| *i == n),
                "line {n} named, which is blank or absent"
            );
            for (i, line) in &filled[..before] {
                let alone = parse_batch(&Bytes::copy_from_slice(line.as_bytes()), &limits);
                assert!(
                    alone.is_ok(),
                    "line {i} is valid alone, yet line {n} was named after it"
                );
            }
            let line = filled[before].1;
            let alone = parse_batch(&Bytes::copy_from_slice(line.as_bytes()), &limits);
            assert!(
                alone.is_err() || before == limits.max_batch_events,
                "line {n} is named, but is valid alone and within the limit"
            );
        }
    }
}

/// An accepted line's event is what serde_json reads from the line.
fn same_as_json(ev: &NewEvent, line: &str) {
    let v: Value = match serde_json::from_str(line) {
        Ok(v) => v,
        // Numbers beyond f64: the parser keeps their text, which
        // serde_json's Value cannot hold.
        Err(e) if e.to_string().contains("out of range") => return,
        Err(e) => panic!("accepted line is not JSON: {e}: {line:?}"),
    };
    let obj = v.as_object().expect("an accepted line is an object");
    assert!(obj
        .keys()
        .all(|k| ["data", "type", "idempotency_key"].contains(&k.as_str())));
    match &obj["data"] {
        Value::String(s) => assert_eq!(&ev.data[..], s.as_bytes(), "{line:?}"),
        other => {
            let stored: Value =
                serde_json::from_slice(&ev.data).expect("stored non-string data is JSON");
            assert_eq!(&stored, other, "{line:?}");
        }
    }
    let string = |name| obj.get(name).and_then(Value::as_str).map(str::to_owned);
    assert_eq!(ev.event_type, string("type"));
    assert_eq!(ev.idempotency_key, string("idempotency_key"));
    if let Some(t) = &ev.event_type {
        assert!(!t.is_empty() && t.len() <= 64 && t.bytes().all(|b| TYPE_CHARS.contains(&b)));
        assert!(
            !sluice_actors::sse::RESERVED_EVENT_TYPES.contains(&t.as_str()),
            "{t:?}"
        );
    }
    if let Some(k) = &ev.idempotency_key {
        assert!(!k.is_empty() && k.len() <= 255 && k.bytes().all(|b| (0x20..0x7f).contains(&b)));
    }
}

const TYPE_CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-";
const KEY_CHARS: &[u8] = b" !\"#$%&'()*+,-./0123456789:;<=>?@AZaz[\\]^_`{|}~";

/// One event of a batch, as a publisher means it.
#[derive(Clone, Debug)]
pub struct Line {
    /// `data`: a string is stored as its content, anything else as JSON.
    pub data: Value,
    /// `type`.
    pub event_type: Option<String>,
    /// `idempotency_key`.
    pub idempotency_key: Option<String>,
}

/// Lines that are never a valid batch line, each for another reason.
pub const BAD_LINES: &[&str] = &[
    "not json",
    "[1, 2]",
    "\"data\"",
    "{\"data\": 1",
    "{\"data\": \"a\"} x",
    "{\"type\": \"t\"}",
    "{\"data\": 1, \"data\": 2}",
    "{\"data\": 1, \"extra\": 3}",
    "{\"data\": 1, \"type\": \"a b\"}",
    "{\"data\": 1, \"type\": 5}",
    "{\"data\": 1, \"idempotency_key\": \"\"}",
    "{\"data\": 1, \"idempotency_key\": \"\\u00e9\"}",
    "{\"data\": \"tab\there\"}",
    "{\"data\": 01}",
    "{\"data\": [1,]}",
    "{\"data\": \"\\ud800\"}",
    "{\"data\": 1}{\"data\": 2}",
];

/// A JSON value for `data`: strings with escapes and line ends, numbers,
/// nested arrays and objects.
fn value(c: &mut Choices, depth: usize) -> Value {
    const STRINGS: &[&str] = &[
        "",
        "a",
        "é ☃ 😀",
        "\n",
        "\r\n",
        "\"q\"",
        "\\",
        "\u{0}",
        "\t",
        "{\"data\":1}",
        " ",
    ];
    match c.below(if depth == 0 { 5 } else { 7 }) {
        0 => Value::Null,
        1 => Value::Bool(c.flag()),
        2 => Value::from(c.u64() as i64),
        3 => {
            serde_json::Number::from_f64(f64::from_bits(c.u64())).map_or(Value::Null, Value::Number)
        }
        4 => Value::String((0..c.below(4)).map(|_| *c.pick(STRINGS)).collect()),
        5 => Value::Array((0..c.below(3)).map(|_| value(c, depth - 1)).collect()),
        _ => Value::Object(
            (0..c.below(3))
                .map(|_| (c.pick(STRINGS).to_string(), value(c, depth - 1)))
                .collect::<Map<_, _>>(),
        ),
    }
}

/// `lines` written as a body (member order, blanks, CRLF, blank lines
/// between, as `style`'s bits say), with `bad.1` of [`BAD_LINES`] put
/// before line index `bad.0`: parsed, the events come back, or the bad
/// line is named by its line number.
pub fn round_trip(lines: &[Line], style: u64, bad: Option<(usize, usize)>) {
    let mut body = String::new();
    let mut line_no = 0;
    let mut bad_line_no = None;
    let mut bits = style;
    let mut bit = || {
        let b = bits & 1 == 1;
        bits = bits.rotate_right(1);
        b
    };
    for i in 0..=lines.len() {
        if bit() && bit() {
            body.push_str(if bit() { "\r\n" } else { "  \n" });
            line_no += 1;
        }
        if let Some((at, which)) = bad {
            if at == i {
                body.push_str(BAD_LINES[which % BAD_LINES.len()]);
                body.push('\n');
                line_no += 1;
                bad_line_no = Some(line_no);
            }
        }
        let Some(line) = lines.get(i) else { break };
        let mut members = vec![format!("\"data\":{}", line.data)];
        if let Some(t) = &line.event_type {
            members.push(format!("\"type\":{}", Value::from(t.as_str())));
        }
        if let Some(k) = &line.idempotency_key {
            members.push(format!("\"idempotency_key\":{}", Value::from(k.as_str())));
        }
        if bit() {
            members.reverse();
        }
        let sep = if bit() { " , " } else { "," };
        body.push_str(&format!("{{{}}}", members.join(sep)));
        line_no += 1;
        let last = i + 1 == lines.len() && bad.is_none_or(|(at, _)| at <= i);
        if !last || bit() {
            body.push_str(if bit() { "\r\n" } else { "\n" });
        }
    }
    let result = parse_batch(&Bytes::from(body.clone()), &default_limits());
    if let Some(n) = bad_line_no {
        let e = result.expect_err("a batch with a bad line is refused");
        assert_eq!(line_of(&e), Some(n), "{body:?}");
        return;
    }
    if lines.is_empty() {
        assert!(result.is_err(), "an empty batch is refused");
        return;
    }
    let events = result.unwrap_or_else(|e| panic!("{body:?}: {e}"));
    assert_eq!(events.len(), lines.len());
    for (ev, line) in events.iter().zip(lines) {
        match &line.data {
            Value::String(s) => assert_eq!(&ev.data[..], s.as_bytes()),
            // The value's compact text, as written (compared as text:
            // serde_json reads some floats one unit in the last place
            // off, so a Value read back can differ where Sluice did not).
            v => assert_eq!(&ev.data[..], v.to_string().as_bytes(), "compact text"),
        }
        assert_eq!(ev.event_type, line.event_type);
        assert_eq!(ev.idempotency_key, line.idempotency_key);
    }
}

//! `POST /v1/topics/{topic}/events` and `POST /v1/topics/{topic}/batch`.

use std::{borrow::Cow, cell::RefCell};

use actix_web::{
    http::{
        header::{HeaderName, HeaderValue},
        StatusCode,
    },
    mime, web, HttpRequest, HttpResponse,
};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use serde::{
    de::{self, Visitor},
    Deserialize,
};
use serde_json::{json, Map, Value};
use sluice_actors::{
    cursor::{write_cursor, Epoch},
    event::{AppendOutcome, NewEvent},
    topic::PublishReply,
};

use sluice_actors::metrics::metrics;

use super::{error::ApiError, rate_limit::Kind, validate, AppState};
use crate::config::Limits;

/// Reads a request body, refusing it past `limit` bytes without buffering more.
async fn read_body(
    mut payload: web::Payload,
    req: &HttpRequest,
    limit: usize,
) -> Result<Bytes, ApiError> {
    let too_large = || ApiError::PayloadTooLarge(format!("body exceeds {limit} bytes"));
    let declared = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(too_large());
    }
    // A body that arrives in one chunk (the common case) is kept as is: no
    // copy, and batch lines can share it.
    let Some(first) = payload.next().await else {
        return Ok(Bytes::new());
    };
    let first = first.map_err(|e| ApiError::bad(format!("cannot read body: {e}")))?;
    if first.len() > limit {
        return Err(too_large());
    }
    let Some(second) = payload.next().await else {
        return Ok(first);
    };
    let mut body = BytesMut::with_capacity(declared.unwrap_or(0).max(2 * first.len()));
    body.extend_from_slice(&first);
    let mut next = Some(second);
    while let Some(chunk) = next {
        let chunk = chunk.map_err(|e| ApiError::bad(format!("cannot read body: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
        next = payload.next().await;
    }
    Ok(body.freeze())
}

/// The validated topic name and a body of at most `limit` bytes.
async fn topic_and_body(
    state: &AppState,
    path: web::Path<String>,
    payload: web::Payload,
    req: &HttpRequest,
    limit: usize,
) -> Result<(String, Bytes), ApiError> {
    let topic = path.into_inner();
    validate::topic(&topic)?;
    state.limits.check(Kind::Publish, req)?;
    let body = read_body(payload, req, limit).await?;
    Ok((topic, body))
}

/// Hands events to the topic actor and waits until they are durable.
async fn store(
    state: &AppState,
    topic: &str,
    events: Vec<NewEvent>,
) -> Result<PublishReply, ApiError> {
    let started = std::time::Instant::now();
    let reply = state.broker.publish(topic, events).await?;
    metrics()
        .publish_seconds
        .observe(started.elapsed().as_secs_f64());
    Ok(reply)
}

/// The error an outcome stands for, if it is not a success.
fn outcome_error(outcome: &AppendOutcome) -> Option<ApiError> {
    match outcome {
        AppendOutcome::Stored(_) | AppendOutcome::Duplicate(_) => None,
        AppendOutcome::KeyConflict => Some(ApiError::KeyConflict),
        AppendOutcome::SequenceGap { expected } => Some(ApiError::SequenceGap {
            expected: *expected,
        }),
    }
}

/// Appends `{"cursor":...,"duplicate":...}` for one outcome to `out`, with
/// `error` and `status` for an event the store refused. Written directly:
/// a batch answer has one per event.
fn write_result(out: &mut Vec<u8>, outcome: &AppendOutcome, epoch: &Epoch) {
    match outcome {
        AppendOutcome::Stored(ev) => {
            out.extend_from_slice(b"{\"cursor\":\"");
            write_cursor(out, ev.time_ms, ev.seq, epoch);
            out.extend_from_slice(b"\",\"duplicate\":false}");
        }
        AppendOutcome::Duplicate(Some(c)) => {
            out.extend_from_slice(b"{\"cursor\":\"");
            c.write_to(out);
            out.extend_from_slice(b"\",\"duplicate\":true}");
        }
        AppendOutcome::Duplicate(None) => {
            out.extend_from_slice(b"{\"cursor\":null,\"duplicate\":true}");
        }
        AppendOutcome::KeyConflict | AppendOutcome::SequenceGap { .. } => {
            let e = outcome_error(outcome).expect("an error outcome");
            out.extend_from_slice(b"{\"cursor\":null,\"duplicate\":false,\"error\":");
            serde_json::to_writer(&mut *out, &e.to_string()).expect("writing to a Vec");
            out.extend_from_slice(b",\"status\":");
            out.extend_from_slice(
                actix_web::ResponseError::status_code(&e)
                    .as_u16()
                    .to_string()
                    .as_bytes(),
            );
            out.push(b'}');
        }
    }
}

fn event_from_headers(req: &HttpRequest, data: Bytes) -> Result<NewEvent, ApiError> {
    let event_type = validate::header(req, "Event-Type")?
        .map(|t| validate::token("Event-Type", t, 64).map(|()| t.to_owned()))
        .transpose()?;
    let idempotency_key = validate::header(req, "Idempotency-Key")?
        .map(|k| validate::idempotency_key(k).map(|()| k.to_owned()))
        .transpose()?;
    let producer = match (
        validate::header(req, "Producer-Id")?,
        validate::header(req, "Producer-Seq")?,
    ) {
        (None, None) => None,
        (Some(id), Some(seq)) => {
            validate::token("Producer-Id", id, 64)?;
            let seq = seq
                .parse::<u64>()
                .map_err(|_| ApiError::bad("Producer-Seq must be an unsigned 64-bit integer"))?;
            Some((id.to_owned(), seq))
        }
        _ => {
            return Err(ApiError::bad(
                "Producer-Id and Producer-Seq go together: send both or neither",
            ))
        }
    };
    Ok(NewEvent {
        data,
        event_type,
        idempotency_key,
        producer,
    })
}

/// Publishes one event.
pub async fn publish(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (topic, body) = topic_and_body(
        &state,
        path,
        payload,
        &req,
        state.settings.limits.max_event_bytes,
    )
    .await?;
    std::str::from_utf8(&body).map_err(|_| ApiError::bad("body is not valid UTF-8"))?;
    let event = event_from_headers(&req, body)?;
    let reply = store(&state, &topic, vec![event]).await?;
    let outcome = &reply.outcomes[0];
    if let Some(e) = outcome_error(outcome) {
        return Err(e);
    }
    let duplicate = matches!(outcome, AppendOutcome::Duplicate(_));
    let mut json = Vec::with_capacity(96 + topic.len());
    json.extend_from_slice(b"{\"topic\":\"");
    // Validated topic names need no escaping.
    json.extend_from_slice(topic.as_bytes());
    json.extend_from_slice(b"\",");
    let result_at = json.len();
    write_result(&mut json, outcome, &reply.epoch);
    // The result object's fields continue the outer object.
    json.remove(result_at);
    let mut resp = HttpResponse::build(if duplicate {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    });
    let cursor = match outcome {
        AppendOutcome::Stored(ev) => Some(ev.cursor(&reply.epoch)),
        AppendOutcome::Duplicate(c) => c.clone(),
        _ => None,
    };
    if let Some(c) = cursor {
        let mut text = Vec::with_capacity(64);
        c.write_to(&mut text);
        resp.insert_header((
            HeaderName::from_static("event-cursor"),
            HeaderValue::from_bytes(&text).expect("cursors are visible ASCII"),
        ));
    }
    if duplicate {
        resp.insert_header(("Idempotent-Replayed", "true"));
    }
    Ok(resp.content_type(mime::APPLICATION_JSON).body(json))
}

/// One NDJSON line of a batch; strings borrow from the body when unescaped.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchLine<'a> {
    #[serde(borrow)]
    data: Data<'a>,
    #[serde(rename = "type", borrow)]
    event_type: Option<Cow<'a, str>>,
    #[serde(borrow)]
    idempotency_key: Option<Cow<'a, str>>,
}

/// A line's `data`: a string is the payload as is; any other JSON value is
/// stored as its compact JSON text.
enum Data<'a> {
    /// A string without escapes, straight from the body.
    Borrowed(&'a str),
    /// Appended to [`DECODED`]: an unescaped string or a value's compact text.
    Decoded,
}

thread_local! {
    /// The decoded payloads of the batch being parsed on this thread, back to
    /// back in one buffer, each event's data a shared slice of it: a batch
    /// costs one allocation instead of one per event (and one more per event
    /// when its data is first cloned). A thread-local because serde gives a
    /// visitor no state; parsing never yields, so one batch has it at a time.
    static DECODED: RefCell<BytesMut> = RefCell::new(BytesMut::new());
}

fn decoded<'a, E>(text: &[u8]) -> Result<Data<'a>, E> {
    DECODED.with(|d| d.borrow_mut().extend_from_slice(text));
    Ok(Data::Decoded)
}

impl<'de: 'a, 'a> Deserialize<'de> for Data<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Data<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Data<'a>, E> {
                Ok(Data::Borrowed(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Data<'a>, E> {
                decoded(v.as_bytes())
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Data<'a>, E> {
                decoded(Value::from(v).to_string().as_bytes())
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Data<'a>, E> {
                decoded(Value::from(v).to_string().as_bytes())
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Data<'a>, E> {
                decoded(Value::from(v).to_string().as_bytes())
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Data<'a>, E> {
                decoded(Value::from(v).to_string().as_bytes())
            }
            fn visit_unit<E: de::Error>(self) -> Result<Data<'a>, E> {
                decoded(b"null")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Data<'a>, A::Error> {
                let v = Value::deserialize(de::value::MapAccessDeserializer::new(map))?;
                decoded(v.to_string().as_bytes())
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<Data<'a>, A::Error> {
                let v = Value::deserialize(de::value::SeqAccessDeserializer::new(seq))?;
                decoded(v.to_string().as_bytes())
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

fn bad_line(line: usize, detail: impl std::fmt::Display) -> ApiError {
    let mut extra = Map::new();
    extra.insert("line".into(), json!(line));
    ApiError::BadRequest {
        detail: format!("line {line}: {detail}"),
        extra,
    }
}

/// Parses and validates every line of a batch.
fn parse_batch(body: &Bytes, limits: &Limits) -> Result<Vec<NewEvent>, ApiError> {
    // Decoded payloads are at most as long as their JSON text, give or take
    // a few number spellings: one buffer for the whole batch, then released.
    DECODED.with(|d| *d.borrow_mut() = BytesMut::with_capacity(body.len()));
    let res = parse_lines(body, limits);
    DECODED.with(|d| drop(std::mem::take(&mut *d.borrow_mut())));
    res
}

fn parse_lines(body: &Bytes, limits: &Limits) -> Result<Vec<NewEvent>, ApiError> {
    let text = std::str::from_utf8(body).map_err(|_| ApiError::bad("body is not valid UTF-8"))?;
    let mut events = Vec::with_capacity(16);
    for (i, line) in text.split('\n').enumerate() {
        let n = i + 1;
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            continue;
        }
        if events.len() == limits.max_batch_events {
            return Err(bad_line(
                n,
                format!("a batch holds at most {} events", limits.max_batch_events),
            ));
        }
        let event = match plain_line(line.as_bytes()) {
            Some(data) => NewEvent::data(data),
            None => {
                let parsed: BatchLine = serde_json::from_str(line).map_err(|e| bad_line(n, e))?;
                if let Some(t) = &parsed.event_type {
                    validate::token("type", t, 64).map_err(|e| bad_line(n, e))?;
                }
                if let Some(k) = &parsed.idempotency_key {
                    validate::idempotency_key(k).map_err(|e| bad_line(n, e))?;
                }
                let data = match parsed.data {
                    Data::Borrowed(s) => body.slice_ref(s.as_bytes()),
                    Data::Decoded => DECODED.with(|d| d.borrow_mut().split().freeze()),
                };
                NewEvent {
                    data,
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

/// Index of the first `"`, `\` or control character, eight bytes at a time
/// until a word has one (the bit tricks of "Bit Twiddling Hacks": a byte
/// below `n` sets its high bit in `(w - n*0x01..) & !w & 0x80..`).
fn find_special(b: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    let below = |w: u64, n: u8| w.wrapping_sub(ONES * u64::from(n)) & !w & HIGH;
    let mut at = 0;
    for word in b.chunks_exact(8) {
        let w = u64::from_ne_bytes(word.try_into().expect("8 bytes"));
        if below(w ^ (ONES * u64::from(b'"')), 1)
            | below(w ^ (ONES * u64::from(b'\\')), 1)
            | below(w, 0x20)
            != 0
        {
            break;
        }
        at += 8;
    }
    b[at..]
        .iter()
        .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
        .map(|i| at + i)
}

/// The payload of the commonest line, `{"data":"<string>"}` (blanks after
/// it allowed), decoded straight into [`DECODED`] in one pass: several
/// times cheaper than serde, whose string decoding goes through a scratch
/// buffer. `None` for any other line, including one whose string has a
/// `\u` escape or a control character: serde parses those (and names what
/// is wrong).
fn plain_line(line: &[u8]) -> Option<Bytes> {
    let mut rest = line.strip_prefix(br#"{"data":""#)?;
    DECODED.with(|d| {
        let mut out = d.borrow_mut();
        let start = out.len();
        let end = loop {
            let Some(i) = find_special(rest) else {
                break None;
            };
            out.extend_from_slice(&rest[..i]);
            let unescaped = match (rest[i], rest.get(i + 1)) {
                (b'"', _) => break Some(i + 1),
                (b'\\', Some(b'"')) => b'"',
                (b'\\', Some(b'\\')) => b'\\',
                (b'\\', Some(b'/')) => b'/',
                (b'\\', Some(b'b')) => 0x08,
                (b'\\', Some(b'f')) => 0x0c,
                (b'\\', Some(b'n')) => b'\n',
                (b'\\', Some(b'r')) => b'\r',
                (b'\\', Some(b't')) => b'\t',
                _ => break None,
            };
            out.extend_from_slice(&[unescaped]);
            rest = &rest[i + 2..];
        };
        let closed = end.and_then(|e| rest[e..].strip_prefix(b"}"));
        if closed.is_some_and(|tail| tail.iter().all(|b| b" \t\r".contains(b))) {
            // Every line leaves the buffer empty (its data split off).
            debug_assert_eq!(start, 0);
            Some(out.split().freeze())
        } else {
            out.truncate(start);
            None
        }
    })
}

/// Publishes an NDJSON batch, all lines validated before any is stored.
pub async fn publish_batch(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (topic, body) = topic_and_body(
        &state,
        path,
        payload,
        &req,
        state.settings.limits.max_batch_bytes,
    )
    .await?;
    let events = parse_batch(&body, &state.settings.limits)?;
    let reply = store(&state, &topic, events).await?;
    // A conflict inside a batch fails just that line: the others are stored
    // (the store checks every event on its own), so report per line.
    let mut json = Vec::with_capacity(32 + topic.len() + reply.outcomes.len() * 72);
    json.extend_from_slice(b"{\"topic\":\"");
    json.extend_from_slice(topic.as_bytes());
    json.extend_from_slice(b"\",\"results\":[");
    for (i, o) in reply.outcomes.iter().enumerate() {
        if i > 0 {
            json.push(b',');
        }
        write_result(&mut json, o, &reply.epoch);
    }
    json.extend_from_slice(b"]}");
    Ok(HttpResponse::Ok()
        .content_type(mime::APPLICATION_JSON)
        .body(json))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_event_bytes: 100,
            max_batch_events: 4,
            max_batch_bytes: 1 << 20,
            dedup_window_secs: 300,
        }
    }

    fn parse(body: &str) -> Result<Vec<NewEvent>, ApiError> {
        parse_batch(&Bytes::copy_from_slice(body.as_bytes()), &limits())
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
                br#"{"a":true,"b":[1,2.5,null]}"#,
                b"-7"
            ]
        );
        assert_eq!(evs[1].event_type.as_deref(), Some("t"));
        assert_eq!(evs[1].idempotency_key.as_deref(), Some("k"));
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
            let got = plain_line(line.as_bytes()).expect(line);
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
            assert!(plain_line(line.as_bytes()).is_none(), "{line}");
            DECODED.with(|d| assert!(d.borrow().is_empty(), "{line}"));
        }
        assert_eq!(&parse(r#"{"data":"\u0041"}"#).unwrap()[0].data[..], b"A");
        assert_eq!(bad_line_of("{\"data\":\"tab\there\"}"), 1);
        assert_eq!(bad_line_of("{\"data\":\"a\"}x"), 1);
    }

    #[test]
    fn one_event_per_line_and_the_bad_line_is_named() {
        assert_eq!(bad_line_of("{\"data\":1} {\"data\":2}\n"), 1);
        assert_eq!(bad_line_of("{\"data\":1}\n{\"data\":\n2}\n"), 2);
        assert_eq!(bad_line_of("{\"data\":1}\n\n{\"data\":2}x\n"), 3);
        assert_eq!(bad_line_of("{\"data\":1}\n\nnot json\n"), 3);
        assert_eq!(bad_line_of("{\"data\":1}\n{\"data\":2,\"extra\":3}\n"), 2);
        assert_eq!(bad_line_of("{\"data\":1}\n{\"type\":\"t\"}\n"), 2);
        assert_eq!(bad_line_of("{\"data\":1}\n{\"data\":\"a\""), 2);
        assert_eq!(
            bad_line_of(&format!("\n{{\"data\":\"{}\"}}", "x".repeat(101))),
            2
        );
        assert_eq!(bad_line_of(&"{\"data\":1}\n".repeat(5)), 5);
        assert!(matches!(parse(" \n\r\n"), Err(ApiError::BadRequest { .. })));
    }
}

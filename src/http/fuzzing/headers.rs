//! What each route reads from a request's head: the publish headers
//! (`Idempotency-Key`, `Event-Type`, `Producer-Id`/`Producer-Seq`), the
//! stream and history position (`Last-Event-ID`, `X-Resume-Cursor`,
//! `cursor`, `from`), `Accept`, `stream`, `on_gap`, `limit`,
//! `Content-Encoding`, repeated single-value headers, query strings.
//!
//! Oracles: each reader accepts exactly what API.md's rule (written out
//! again here, plainly) accepts, and what it accepts it reads as sent: a
//! number re-formats to the text it came from (`+5`, `0005` refused), a
//! cursor to its header's text, the first position present wins.

use actix_web::{
    http::header::{HeaderName, HeaderValue},
    test::TestRequest,
    HttpRequest,
};
use bytes::Bytes;
use sluice_actors::{cursor::Cursor, topic::Start};

use super::super::{
    body::{coding, Coding},
    history,
    publish::event_from_headers,
    strict::{self, SINGLE_VALUE_HEADERS},
    subscribe::{resume_on_gap, start_position, wants_sse, EventsQuery},
};
use crate::fuzzing::Choices;

/// Header names a route reads (and a few it must leave alone).
const NAMES: &[&str] = &[
    "idempotency-key",
    "event-type",
    "producer-id",
    "producer-seq",
    "last-event-id",
    "x-resume-cursor",
    "accept",
    "content-encoding",
    "content-type",
    "origin",
    "x-other",
];

/// Values worth trying: numbers in every spelling, cursors, media types,
/// codings, blanks and bytes that are not visible ASCII.
const VALUES: &[&[u8]] = &[
    b"",
    b"0",
    b"5",
    b"+5",
    b"-5",
    b"0005",
    b"00",
    b" 5",
    b"5 ",
    b"5.0",
    b"1e3",
    b"0x5",
    b"18446744073709551615",
    b"18446744073709551616",
    b"orders.created",
    b"a b",
    b"\t",
    "é".as_bytes(),
    b"\xff",
    b"\x7f",
    b"20240520T103022.123Z-000000000000002a-k3f9",
    b"20240520T103022.123Z-000000000000002A-k3f9",
    b"20240230T103022.123Z-000000000000002a-k3f9",
    b"text/event-stream",
    b"text/event-stream;q=0",
    b"application/json, text/event-stream",
    b"*/*",
    b"gzip",
    b"x-gzip",
    b"GZIP",
    b"identity",
    b"gzip, gzip",
    b"identity, gzip",
    b"br",
    b",",
];

/// Query pieces: the known parameters with good and bad values, repeats,
/// percent-encoded names, unknown parameters.
const QUERY: &[&str] = &[
    "from=earliest",
    "from=latest",
    "from=EARLIEST",
    "from=",
    "cursor=20240520T103022.123Z-000000000000002a-k3f9",
    "cursor=20240520T103022.123Z-000000000000002a-k3f9%20",
    "cursor",
    "stream=sse",
    "stream=SSE",
    "on_gap=resume",
    "on_gap=error",
    "on_gap=x",
    "limit=1",
    "limit=1000",
    "limit=1001",
    "limit=0",
    "limit=+5",
    "limit=%2B5",
    "limit=05",
    "lim%69t=7",
    "x=1",
    "%ff=%fe",
    "=",
    "&",
];

/// Reads `data` as choices: headers (some repeated), a query string.
pub fn run(data: &[u8]) {
    let mut c = Choices::new(data);
    let mut headers: Vec<(&'static str, Vec<u8>)> = Vec::new();
    while headers.len() < 12 && c.flag() {
        let name = *c.pick(NAMES);
        let value = if c.below(4) == 0 {
            c.bytes(24)
        } else {
            c.pick(VALUES).to_vec()
        };
        headers.push((name, value));
    }
    let query: Vec<&str> = (0..c.below(6)).map(|_| *c.pick(QUERY)).collect();
    check(&headers, &query.join("&"));
}

/// Every reader on one request with `headers` (in order, repeats kept)
/// and `query`.
pub fn check(headers: &[(&'static str, Vec<u8>)], query: &str) {
    let uri = format!("/v1/topics/t/events?{query}");
    if uri.parse::<actix_web::http::Uri>().is_err() {
        return;
    }
    let mut test = TestRequest::default().uri(&uri);
    let mut sent: Vec<(&str, Vec<u8>)> = Vec::new();
    for (name, value) in headers {
        // What cannot be a header value never reaches a handler.
        let Ok(v) = HeaderValue::from_bytes(value) else {
            continue;
        };
        test = test.append_header((HeaderName::from_static(name), v));
        sent.push((name, value.clone()));
    }
    let req = test.to_http_request();

    // A single-value header sent twice is found.
    let repeated = SINGLE_VALUE_HEADERS
        .into_iter()
        .find(|h| sent.iter().filter(|(n, _)| n == h).count() > 1);
    assert_eq!(strict::repeated_header(req.headers()), repeated);

    publish_headers(&req, &sent);
    content_encoding(&req, &sent);
    position(&req, &sent, query);
}

/// The first value of header `name` sent.
fn first<'a>(sent: &'a [(&str, Vec<u8>)], name: &str) -> Option<&'a [u8]> {
    sent.iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.as_slice())
}

/// The text of a header value a handler may read: visible ASCII (blanks
/// and tabs inside).
fn text(v: &[u8]) -> Option<&str> {
    v.iter()
        .all(|b| *b == b'\t' || (0x20..0x7f).contains(b))
        .then(|| std::str::from_utf8(v).expect("ASCII"))
}

fn is_token(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// The one spelling of a u64: digits, no sign, no leading zero.
fn canonical_u64(s: &str) -> Option<u64> {
    let n: u64 = s.parse().ok()?;
    (n.to_string() == s).then_some(n)
}

fn publish_headers(req: &HttpRequest, sent: &[(&str, Vec<u8>)]) {
    let got = event_from_headers(req, Bytes::new());
    // The rules of API.md, in order of the fields.
    let read = |name| first(sent, name).map(|v| text(v).ok_or(()));
    let want = (|| -> Result<_, ()> {
        let event_type = read("event-type").transpose()?;
        let key = read("idempotency-key").transpose()?;
        let id = read("producer-id").transpose()?;
        let seq = read("producer-seq").transpose()?;
        if event_type.is_some_and(|t| {
            !is_token(t, 64) || sluice_actors::sse::RESERVED_EVENT_TYPES.contains(&t)
        }) {
            return Err(());
        }
        if key.is_some_and(|k| k.is_empty() || k.len() > 255 || k.contains('\t')) {
            return Err(());
        }
        let producer = match (id, seq) {
            (None, None) => None,
            (Some(id), Some(seq)) if is_token(id, 64) => {
                Some((id.to_owned(), canonical_u64(seq).ok_or(())?))
            }
            _ => return Err(()),
        };
        Ok((
            event_type.map(str::to_owned),
            key.map(str::to_owned),
            producer,
        ))
    })();
    match (got, want) {
        (Ok(ev), Ok((event_type, key, producer))) => {
            assert_eq!(ev.event_type, event_type);
            assert_eq!(ev.idempotency_key, key);
            assert_eq!(ev.producer, producer);
        }
        (Err(_), Err(())) => {}
        (got, _) => panic!(
            "publish headers read as {:?}, against the rules",
            got.map(|e| e.producer)
        ),
    }
    for seq in ["producer-seq", "idempotency-key"]
        .into_iter()
        .filter_map(|n| first(sent, n))
    {
        if let Some(s) = text(seq) {
            assert_eq!(strict::parse_u64(s), canonical_u64(s), "{s:?}");
        }
    }
}

fn content_encoding(req: &HttpRequest, sent: &[(&str, Vec<u8>)]) {
    let mut gzips = 0;
    let mut other = false;
    for (_, v) in sent.iter().filter(|(n, _)| *n == "content-encoding") {
        let Some(t) = text(v) else {
            other = true;
            continue;
        };
        for token in t.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            match token.to_ascii_lowercase().as_str() {
                "identity" => {}
                "gzip" | "x-gzip" => gzips += 1,
                _ => other = true,
            }
        }
    }
    let want = match (other, gzips) {
        (false, 0) => Some(Coding::Identity),
        (false, 1) => Some(Coding::Gzip),
        _ => None,
    };
    assert_eq!(coding(req).ok(), want);
}

/// The stream's and history's reading of the query and position headers.
fn position(req: &HttpRequest, sent: &[(&str, Vec<u8>)], query: &str) {
    let known = ["stream", "cursor", "from", "on_gap", "limit"];
    let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let value = |name: &str| {
        pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let repeated = known
        .iter()
        .any(|k| pairs.iter().filter(|(n, _)| n == k).count() > 1);
    let q = match EventsQuery::parse(query) {
        Ok(q) => {
            assert!(!repeated, "{query:?}: a repeated parameter was accepted");
            q
        }
        Err(_) => {
            assert!(repeated, "{query:?} refused");
            return;
        }
    };
    // `stream=sse`, else an Accept element naming text/event-stream.
    let sse = wants_sse(req, &q);
    match value("stream") {
        Some("sse") => assert!(sse.unwrap()),
        Some(_) => assert!(sse.is_err()),
        None => {
            let accept = req
                .headers()
                .get_all("accept")
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .any(|m| m.trim().starts_with("text/event-stream"));
            assert_eq!(sse.unwrap(), accept);
        }
    }
    assert_eq!(
        resume_on_gap(&q).ok(),
        match value("on_gap") {
            None | Some("error") => Some(false),
            Some("resume") => Some(true),
            Some(_) => None,
        }
    );
    assert_eq!(
        history::limit_of(q.limit.as_deref()).ok(),
        match value("limit") {
            None => Some(100),
            Some(l) => canonical_u64(l)
                .filter(|n| (1..=1000).contains(n))
                .map(|n| n as usize),
        }
    );
    // Every position sent must be well-formed; then the first present
    // wins: Last-Event-ID, X-Resume-Cursor (an empty one counts as
    // absent), cursor, from.
    let got = start_position(req, &q, Start::Latest);
    let from_text = |s: &str| {
        let c = Cursor::parse(s).ok()?;
        assert_eq!(c.to_string(), s, "a cursor read in another spelling");
        Some(c)
    };
    let mut sources: Vec<Option<Start>> = ["last-event-id", "x-resume-cursor"]
        .into_iter()
        .filter_map(|n| first(sent, n))
        .filter(|v| !v.is_empty())
        .map(|h| text(h).and_then(from_text).map(Start::After))
        .collect();
    if let Some(c) = value("cursor") {
        sources.push(from_text(c).map(Start::After));
    }
    match value("from") {
        None => {}
        Some("earliest") => sources.push(Some(Start::Earliest)),
        Some("latest") => sources.push(Some(Start::Latest)),
        Some(_) => sources.push(None),
    }
    let want = if sources.iter().any(Option::is_none) {
        None
    } else {
        Some(
            sources
                .into_iter()
                .flatten()
                .next()
                .unwrap_or(Start::Latest),
        )
    };
    match (got, want) {
        (Ok(Start::After(a)), Some(Start::After(b))) => assert_eq!(a, b),
        (Ok(Start::Earliest), Some(Start::Earliest))
        | (Ok(Start::Latest), Some(Start::Latest))
        | (Err(_), None) => {}
        (got, want) => panic!("start read as {:?}, want {want:?}", got.ok()),
    }
}

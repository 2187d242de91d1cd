//! Strict, quiet request handling (issue 14, item 5), one test per finding
//! of the hostile-input probe: request body codings, `Expect:
//! 100-continue`, repeated single-value headers and query parameters,
//! numbers in one spelling, problem details in Sluice's own words, CORS
//! headers on every error and preflights per route, quiet logs, and `h2c`
//! upgrade requests.

use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

mod body;
mod cors;
mod heads;
mod quiet;

const T: Duration = Duration::from_secs(10);

/// Sends `raw` on a new connection and reads until the server closes it,
/// `idle` passes without a byte, or the answers hold `answers` complete
/// bodies (by `content-length`). Returns the text received.
async fn raw_exchange(port: u16, raw: &[u8], answers: usize, idle: Duration) -> String {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    // The server may answer and close before it has read everything sent.
    let _ = s.write_all(raw).await;
    read_answers(&mut s, answers, idle).await
}

/// Reads from `s` as [`raw_exchange`] does.
async fn read_answers(s: &mut tokio::net::TcpStream, answers: usize, idle: Duration) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&out).into_owned();
        if complete_answers(&text) >= answers {
            return text;
        }
        match tokio::time::timeout(idle, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return text,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// How many complete final answers (heads with their `content-length`
/// bodies; `100 Continue` not counted) `text` holds.
fn complete_answers(mut text: &str) -> usize {
    let mut n = 0;
    while let Some((head, rest)) = text.split_once("\r\n\r\n") {
        if head.starts_with("HTTP/1.1 100 ") {
            text = rest;
            continue;
        }
        let len = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .and_then(|v| v.trim().parse::<usize>().ok())
            })
            .unwrap_or(0);
        if rest.len() < len {
            break;
        }
        n += 1;
        text = &rest[len..];
    }
    n
}

/// The value of header `name` in a raw response head (lowercase match).
fn raw_header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Wording of the libraries under Sluice; a problem `detail` says none of it.
const LIBRARY_WORDS: [&str; 12] = [
    "expected struct",
    "BatchLine",
    "deserialize",
    "duplicate field",
    "payload reached EOF",
    "None",
    "at line",
    "invalid type",
    "unknown field",
    "missing field",
    "Origin is not allowed",
    "Requested method",
];

/// Asserts a problem `detail` is in Sluice's own words.
fn assert_own_words(detail: &str) {
    for w in LIBRARY_WORDS {
        assert!(!detail.contains(w), "{detail:?} has library wording {w:?}");
    }
}

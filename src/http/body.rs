//! Request bodies: read up to a limit, decompressed when sent with
//! `Content-Encoding: gzip`, refused with any other coding.
//!
//! The limit holds twice: for the bytes as sent and for the bytes once
//! decompressed. A gzip bomb (a few KiB that inflate to gigabytes) is a
//! `413` as soon as its output passes the limit, having cost no more than
//! the limit in memory.

use std::{
    io::{self, Write},
    time::Duration,
};

use actix_web::{error::PayloadError, http::header, web, HttpRequest};
use bytes::{Bytes, BytesMut};
use flate2::write::MultiGzDecoder;
use futures_util::StreamExt;

use super::error::ApiError;

/// How the body was encoded by the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Coding {
    Identity,
    Gzip,
}

/// The body's coding from `Content-Encoding` (a list, possibly over several
/// fields). `identity` is no coding; `gzip` (or its old alias `x-gzip`) once
/// is what Sluice decodes; anything else, or gzip twice, is a `415`.
pub(super) fn coding(req: &HttpRequest) -> Result<Coding, ApiError> {
    let mut found = Coding::Identity;
    for field in req.headers().get_all(header::CONTENT_ENCODING) {
        let text = field.to_str().map_err(|_| {
            ApiError::UnsupportedEncoding("Content-Encoding is not printable ASCII".into())
        })?;
        for token in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            if token.eq_ignore_ascii_case("identity") {
                continue;
            }
            let gzip = token.eq_ignore_ascii_case("gzip") || token.eq_ignore_ascii_case("x-gzip");
            if !gzip || found == Coding::Gzip {
                return Err(ApiError::UnsupportedEncoding(format!(
                    "Content-Encoding {token:?} is not supported: send the body as is \
                     (identity) or gzip-compressed once"
                )));
            }
            found = Coding::Gzip;
        }
    }
    Ok(found)
}

/// A chunk of the body that could not be read, in Sluice's words (the
/// library's say `payload reached EOF before completing: None`).
fn read_error(e: PayloadError) -> ApiError {
    match e {
        PayloadError::Incomplete(_) => ApiError::bad(
            "the body ended before it was complete \
             (the connection closed early, or the chunked encoding is malformed)",
        ),
        PayloadError::Overflow => {
            ApiError::PayloadTooLarge("the body is larger than this server accepts".into())
        }
        PayloadError::EncodingCorrupted => ApiError::bad("the body's encoding is corrupt"),
        _ => ApiError::bad("the body could not be read"),
    }
}

/// Reads the body, refusing it past `limit` bytes (as sent, and once
/// decompressed) without buffering more than that.
///
/// The whole body must arrive within `deadline` of the first read: a body
/// trickled a byte at a time is a `408` (and its connection closes), not a
/// connection and a buffer held for as long as the client likes.
pub async fn read(
    payload: web::Payload,
    req: &HttpRequest,
    limit: usize,
    deadline: Duration,
) -> Result<Bytes, ApiError> {
    tokio::time::timeout(deadline, read_within(payload, req, limit))
        .await
        .unwrap_or_else(|_| {
            Err(ApiError::RequestTimeout(format!(
                "the request body did not arrive within {} s",
                deadline.as_secs()
            )))
        })
}

async fn read_within(
    payload: web::Payload,
    req: &HttpRequest,
    limit: usize,
) -> Result<Bytes, ApiError> {
    // Checked before a byte is read: with `Expect: 100-continue` a refusal
    // here goes out instead of the invitation to send the body.
    let coding = coding(req)?;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(too_large(limit, ""));
    }
    match coding {
        Coding::Identity => read_plain(payload, declared, limit).await,
        Coding::Gzip => read_gzip(payload, limit).await,
    }
}

fn too_large(limit: usize, how: &str) -> ApiError {
    ApiError::PayloadTooLarge(format!("body exceeds {limit} bytes{how}"))
}

async fn read_plain(
    mut payload: web::Payload,
    declared: Option<usize>,
    limit: usize,
) -> Result<Bytes, ApiError> {
    // A body that arrives in one chunk (the common case) is kept as is: no
    // copy, and batch lines can share it.
    let Some(first) = payload.next().await else {
        return Ok(Bytes::new());
    };
    let first = first.map_err(read_error)?;
    if first.len() > limit {
        return Err(too_large(limit, ""));
    }
    let Some(second) = payload.next().await else {
        return Ok(first);
    };
    let mut body = BytesMut::with_capacity(declared.unwrap_or(0).max(2 * first.len()));
    body.extend_from_slice(&first);
    let mut next = Some(second);
    while let Some(chunk) = next {
        let chunk = chunk.map_err(read_error)?;
        if body.len() + chunk.len() > limit {
            return Err(too_large(limit, ""));
        }
        body.extend_from_slice(&chunk);
        next = payload.next().await;
    }
    Ok(body.freeze())
}

async fn read_gzip(mut payload: web::Payload, limit: usize) -> Result<Bytes, ApiError> {
    let mut decoder = MultiGzDecoder::new(Bounded::new(limit));
    let mut sent = 0usize;
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(read_error)?;
        sent += chunk.len();
        if sent > limit {
            return Err(too_large(limit, " as sent"));
        }
        decoder
            .write_all(&chunk)
            .map_err(|e| gzip_error(&e, limit))?;
    }
    let out = decoder.finish().map_err(|e| gzip_error(&e, limit))?;
    Ok(out.buf.freeze())
}

/// What a failed decompression means: past the limit (`413`), or not gzip.
fn gzip_error(e: &io::Error, limit: usize) -> ApiError {
    if e.get_ref().is_some_and(|inner| inner.is::<OverLimit>()) {
        too_large(limit, " once decompressed")
    } else {
        ApiError::bad("the body is not valid gzip (Content-Encoding: gzip)")
    }
}

/// The decompressed body, refusing to grow past its limit.
struct Bounded {
    buf: BytesMut,
    limit: usize,
}

impl Bounded {
    fn new(limit: usize) -> Self {
        Bounded {
            buf: BytesMut::new(),
            limit,
        }
    }
}

/// The error [`Bounded`] fails a write with.
#[derive(Debug, thiserror::Error)]
#[error("decompressed body over the limit")]
struct OverLimit;

impl Write for Bounded {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.len() + data.len() > self.limit {
            return Err(io::Error::other(OverLimit));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn inflate(body: &[u8], limit: usize) -> Result<Bytes, ApiError> {
        let mut d = MultiGzDecoder::new(Bounded::new(limit));
        // Fed in small pieces, as a body arrives.
        for piece in body.chunks(7) {
            d.write_all(piece).map_err(|e| gzip_error(&e, limit))?;
        }
        Ok(d.finish().map_err(|e| gzip_error(&e, limit))?.buf.freeze())
    }

    #[test]
    fn gzip_bodies_inflate_within_the_limit() {
        assert_eq!(&inflate(&gzip(b"hello"), 5).unwrap()[..], b"hello");
        // Two members one after the other are one body (RFC 1952).
        let two = [gzip(b"ab"), gzip(b"cd")].concat();
        assert_eq!(&inflate(&two, 10).unwrap()[..], b"abcd");
        let bomb = gzip(&vec![0u8; 1 << 20]);
        assert!(bomb.len() < 2048);
        match inflate(&bomb, 4096) {
            Err(ApiError::PayloadTooLarge(d)) => assert!(d.contains("decompressed"), "{d}"),
            other => panic!("{other:?}"),
        }
        let mut cut = gzip(b"hello world");
        cut.truncate(cut.len() - 3);
        assert!(matches!(
            inflate(&cut, 100),
            Err(ApiError::BadRequest { .. })
        ));
        assert!(matches!(
            inflate(b"plain text", 100),
            Err(ApiError::BadRequest { .. })
        ));
    }
}

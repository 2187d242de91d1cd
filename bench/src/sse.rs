//! Server-Sent Events on the client side: the crate's one SSE parser.
//!
//! [`SseStream`] feeds any HTTP body through russe's spec-following decoder
//! (`tokio_util::codec::Decoder`) and hands out [`russe::Event`]s;
//! [`subscribe`] opens a stream on a topic and checks the response head.

use bytes::BytesMut;
use http_body_util::BodyExt;
use hyper::{body::Body, header, Method, StatusCode};
use tokio_util::codec::Decoder as _;

use crate::http::{Base, Conn, Error};

/// SSE events decoded from an HTTP response body.
pub struct SseStream<B> {
    body: B,
    buf: BytesMut,
    decoder: russe::Decoder,
}

impl<B> SseStream<B>
where
    B: Body<Data = bytes::Bytes> + Unpin,
    B::Error: Into<Error>,
{
    /// Wraps a response body.
    pub fn new(body: B) -> Self {
        Self {
            body,
            buf: BytesMut::with_capacity(64 * 1024),
            decoder: russe::Decoder::default(),
        }
    }

    /// The next event, or `None` once the body has ended.
    ///
    /// Cancel-safe: dropping the future between polls loses no bytes.
    pub async fn next(&mut self) -> Result<Option<russe::Event>, Error> {
        loop {
            if let Some(event) = self.decoder.decode(&mut self.buf)? {
                return Ok(Some(event));
            }
            match self.body.frame().await {
                None => return Ok(None),
                Some(frame) => {
                    if let Ok(data) = frame.map_err(Into::into)?.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }
}

/// Opens `GET /v1/topics/{topic}/events?{query}` as an SSE stream on its own
/// connection and fails unless the answer is `200 text/event-stream`.
pub async fn subscribe(
    base: &Base,
    topic: &str,
    query: &str,
) -> Result<SseStream<hyper::body::Incoming>, Error> {
    subscribe_from(base, topic, query, None).await
}

/// [`subscribe`] from a given local (source) address.
pub async fn subscribe_from(
    base: &Base,
    topic: &str,
    query: &str,
    source: Option<std::net::IpAddr>,
) -> Result<SseStream<hyper::body::Incoming>, Error> {
    let mut conn = Conn::connect_from(base, source).await?;
    let path = format!("/v1/topics/{topic}/events?{query}");
    let resp = conn
        .send(
            Method::GET,
            &path,
            &[(header::ACCEPT, russe::MEDIA_TYPE_STR)],
            Default::default(),
        )
        .await?;
    let content_type = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if resp.status() != StatusCode::OK || !content_type.starts_with(russe::MEDIA_TYPE_STR) {
        return Err(format!("subscribe {path}: {} {content_type}", resp.status()).into());
    }
    // `conn` may go: its driver task keeps the connection open for the body.
    Ok(SseStream::new(resp.into_body()))
}

#[cfg(test)]
mod tests {
    use super::SseStream;
    use bytes::Bytes;
    use http_body_util::Full;
    use russe::Event;

    #[tokio::test]
    async fn decodes_retry_comment_and_messages() {
        let wire =
            "retry: 1000\n\n: keep-alive\n\nid: c1\ndata: a\ndata: b\n\nid: c2\ndata: {}\n\n";
        let mut stream = SseStream::new(Full::new(Bytes::from(wire)));
        let mut seen = Vec::new();
        while let Some(event) = stream.next().await.unwrap() {
            seen.push(event);
        }
        assert!(matches!(seen[0], Event::Retry(d) if d.as_millis() == 1000));
        assert!(matches!(seen[1], Event::Comment(_)));
        let Event::Message(m) = &seen[2] else {
            panic!("{seen:?}")
        };
        assert_eq!((m.id.as_deref(), &*m.data), (Some("c1"), "a\nb"));
        assert_eq!(seen.len(), 4);
    }
}

//! Server-Sent Events on the client side, through the project's one SSE
//! parser (`sluice_client::sse`, shared with the client crate, the CLI and
//! the tests).
//!
//! [`SseStream`] feeds any HTTP body through that spec-following decoder
//! and hands out its [`Frame`]s;
//! [`subscribe`] opens a stream on a topic and checks the response head.
//! [`decode_parallel`] runs the same decoder over one body on several
//! threads, for a single subscriber faster than one thread can check.

use std::sync::Arc;

use bytes::BytesMut;
use futures_util::FutureExt as _;
use http_body_util::BodyExt;
use hyper::{body::Body, header, Method, StatusCode};
use sluice_client::sse::{Decoder, Frame, MEDIA_TYPE};
use tokio::sync::{mpsc, oneshot};

use crate::http::{Base, Conn, Error};

/// SSE events decoded from an HTTP response body.
pub struct SseStream<B> {
    body: B,
    decoder: Decoder,
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
            decoder: Decoder::new(),
        }
    }

    /// The body, once nothing has been read from it.
    pub fn into_body(self) -> B {
        debug_assert_eq!(self.decoder.buffered(), 0);
        self.body
    }

    /// The next event, or `None` once the body has ended.
    ///
    /// Cancel-safe: dropping the future between polls loses no bytes.
    pub async fn next(&mut self) -> Result<Option<Frame>, Error> {
        loop {
            if let Some(frame) = self.decoder.next_frame() {
                return Ok(Some(frame));
            }
            match self.body.frame().await {
                None => return Ok(None),
                Some(frame) => {
                    if let Ok(data) = frame.map_err(Into::into)?.into_data() {
                        self.decoder.feed(&data);
                    }
                }
            }
        }
    }
}

/// Decodes an SSE body on several tasks at once and hands out,
/// in stream order, batches of what `f` makes of each event (`None` drops
/// it). The body is cut after the last blank line (`LF LF`) of what has
/// arrived, so every piece holds whole events and decodes on its own; a
/// server that ends its events with CR LF never shows that boundary and
/// gets an error after 4 MiB. Events carry their own `id` (no id carried
/// over between events), as Sluice's and the ceiling's do.
pub fn decode_parallel<B, T, F>(mut body: B, f: F) -> mpsc::Receiver<Result<Vec<T>, Error>>
where
    B: Body<Data = bytes::Bytes> + Unpin + Send + 'static,
    B::Error: Into<Error> + Send,
    T: Send + 'static,
    F: Fn(Frame) -> Option<T> + Send + Sync + 'static,
{
    const IN_FLIGHT: usize = 16;
    let (out_tx, out_rx) = mpsc::channel(IN_FLIGHT);
    let (order_tx, mut order_rx) =
        mpsc::channel::<oneshot::Receiver<Result<Vec<T>, Error>>>(IN_FLIGHT);
    let f = Arc::new(f);
    let errors = out_tx.clone();
    tokio::spawn(async move {
        // Pieces of at least this much when the body has it ready: fewer,
        // larger pieces keep the hand-offs between tasks rare.
        const PIECE: usize = 128 * 1024;
        let mut buf = BytesMut::with_capacity(2 * PIECE);
        let mut ended = false;
        while !ended {
            // Wait for one frame, then take what is already there.
            let mut next = body.frame().await;
            loop {
                match next {
                    None => {
                        ended = true;
                        break;
                    }
                    Some(Err(e)) => {
                        let _ = errors.send(Err(e.into())).await;
                        return;
                    }
                    Some(Ok(frame)) => {
                        if let Ok(data) = frame.into_data() {
                            buf.extend_from_slice(&data);
                        }
                    }
                }
                if buf.len() >= PIECE {
                    break;
                }
                match body.frame().now_or_never() {
                    Some(more) => next = more,
                    None => break,
                }
            }
            let Some(end) = buf.windows(2).rposition(|w| w == b"\n\n") else {
                if buf.len() > 4 << 20 {
                    let _ = errors
                        .send(Err("no blank line (LF LF) in 4 MiB of SSE body".into()))
                        .await;
                    return;
                }
                continue;
            };
            let piece = buf.split_to(end + 2);
            let (done, answer) = oneshot::channel();
            let f = f.clone();
            tokio::spawn(async move {
                let mut decoder = Decoder::new();
                decoder.feed(&piece);
                let out: Vec<T> = std::iter::from_fn(|| decoder.next_frame())
                    .filter_map(|frame| f(frame))
                    .collect();
                let _ = done.send(Ok(out));
            });
            if order_tx.send(answer).await.is_err() {
                return;
            }
        }
    });
    tokio::spawn(async move {
        while let Some(answer) = order_rx.recv().await {
            let batch = answer
                .await
                .unwrap_or_else(|_| Err("an SSE decoding task failed".into()));
            if out_tx.send(batch).await.is_err() {
                return;
            }
        }
    });
    out_rx
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
            &[(header::ACCEPT, MEDIA_TYPE)],
            Default::default(),
        )
        .await?;
    let content_type = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if resp.status() != StatusCode::OK || !content_type.starts_with(MEDIA_TYPE) {
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
    use sluice_client::sse::Frame as Event;

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
        assert_eq!((m.id.as_deref(), m.data.as_str()), (Some("c1"), "a\nb"));
        assert_eq!(seen.len(), 4);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn parallel_decoding_keeps_stream_order() {
        use futures_util::stream;
        use http_body_util::StreamBody;
        use hyper::body::Frame;
        // Events cut at arbitrary points across many body frames.
        let wire: String = (0..5000)
            .map(|i| format!("id: {i:06}\ndata: event {i}\n\n: keep-alive\n\n"))
            .collect();
        let frames: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = wire
            .as_bytes()
            .chunks(777)
            .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
            .collect();
        let body = StreamBody::new(stream::iter(frames));
        let mut rx = super::decode_parallel(body, |ev| match ev {
            Event::Message(m) => Some((m.id.unwrap().to_string(), m.data.to_string())),
            _ => None,
        });
        let mut seen = Vec::new();
        while let Some(batch) = rx.recv().await {
            seen.extend(batch.unwrap());
        }
        assert_eq!(seen.len(), 5000);
        for (i, (id, data)) in seen.iter().enumerate() {
            assert_eq!(
                (id.as_str(), data.as_str()),
                (&*format!("{i:06}"), &*format!("event {i}"))
            );
        }
    }
}

//! The accept loop of the bench's own hyper servers (`ceiling`, `grip-origin`).

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::{body::Incoming, server::conn::http1, service::service_fn, Request, Response};
use hyper_util::rt::TokioIo;
use std::{convert::Infallible, future::Future, sync::Arc, time::Duration};
use tokio::net::TcpListener;

use crate::http::Error;

pub type Body = BoxBody<Bytes, Infallible>;

/// A whole body.
pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).boxed()
}

/// A response with a status, a content type and a whole body.
pub fn respond(status: u16, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, content_type)
        .body(full(body))
        .expect("a valid response")
}

/// Binds `listen`, prints `{name} listening on ADDR` and serves HTTP/1.1
/// connections with `handler` until the process ends. An accept error (for
/// instance at the open-file limit) pauses accepting for 100 ms.
pub async fn serve<S, H, F>(
    name: &str,
    listen: &str,
    state: Arc<S>,
    handler: H,
) -> Result<(), Error>
where
    S: Send + Sync + 'static,
    H: Fn(Arc<S>, Request<Incoming>) -> F + Send + Sync + Copy + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let listener = TcpListener::bind(listen).await?;
    println!("{name} listening on {}", listener.local_addr()?);
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("{name}: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let fut = handler(state.clone(), req);
                async move { Ok::<_, Infallible>(fut.await) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}

/// The topic of `/v1/topics/{topic}/{suffix}`, if the path is one.
pub fn topic_of<'a>(path: &'a str, suffix: &str) -> Option<&'a str> {
    let rest = path.strip_prefix("/v1/topics/")?;
    let (topic, tail) = rest.split_once('/')?;
    (tail == suffix && !topic.is_empty()).then_some(topic)
}

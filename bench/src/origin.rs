//! `grip-origin`: the origin server behind Pushpin. Every
//! `GET /v1/topics/{t}/events` is answered with an SSE head, `Grip-Hold:
//! stream` and `Grip-Channel: {t}`, and a `retry:` line as the first body
//! bytes; Pushpin then holds the stream open and appends what is published
//! to channel `{t}` through its control API.

use hyper::{body::Incoming, Method, Request, Response};
use std::sync::Arc;

use crate::{
    http::Error,
    server::{self, Body},
};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: String,
    /// The `retry:` (ms) that opens every stream.
    #[arg(long, default_value_t = 1000)]
    pub retry_ms: u64,
}

pub async fn run(args: Args) -> Result<(), Error> {
    let retry = Arc::new(format!("retry: {}\n\n", args.retry_ms));
    server::serve("grip-origin", &args.listen, retry, handle).await
}

async fn handle(retry: Arc<String>, req: Request<Incoming>) -> Response<Body> {
    match (req.method(), server::topic_of(req.uri().path(), "events")) {
        (&Method::GET, Some(topic)) => Response::builder()
            .header("Content-Type", "text/event-stream")
            .header("Cache-Control", "no-cache")
            .header("Grip-Hold", "stream")
            .header("Grip-Channel", topic)
            .body(server::full(retry.as_bytes().to_vec()))
            .expect("a valid response"),
        _ => server::respond(404, "text/plain", "not found\n"),
    }
}

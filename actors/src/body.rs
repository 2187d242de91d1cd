//! The response body of an SSE stream: its subscription's frames as the
//! socket takes them.
//!
//! The body is the only reader of the subscription's queue. A take that
//! drains a paused subscriber to its low watermark comes back with a
//! resume, which the body forwards to the topic: the only message on the
//! delivery path, and at most one in flight per subscriber.

use std::{
    convert::Infallible,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use futures_util::Stream;
use tokio::sync::oneshot;

use crate::{
    messages::{ToTopic, TopicPort},
    subscription::Subscription,
};

/// The session's notice that its body is gone (resolves when it is dropped).
pub(crate) type BodyGone = oneshot::Receiver<()>;

/// The response body of one SSE stream.
pub struct Body {
    sub: Arc<Subscription>,
    /// Where resumes go: the topic.
    rejoin: TopicPort,
    /// Dropped with the body, which tells the session.
    _gone: oneshot::Sender<()>,
}

impl Body {
    /// The body of `sub` and the notice its session waits on.
    pub(crate) fn new(sub: Arc<Subscription>, rejoin: TopicPort) -> (Body, BodyGone) {
        let (tx, rx) = oneshot::channel();
        (
            Body {
                sub,
                rejoin,
                _gone: tx,
            },
            rx,
        )
    }
}

impl Stream for Body {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        match this.sub.poll_take(cx) {
            Poll::Ready(Some(taken)) => {
                if taken.resume {
                    // A control message: must not be dropped by a full
                    // mailbox, and the flow state allows one at a time.
                    this.rejoin.do_send(ToTopic::Rejoin(this.sub.id));
                }
                Poll::Ready(Some(Ok(taken.bytes)))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for Body {
    fn drop(&mut self) {
        self.sub.close();
    }
}

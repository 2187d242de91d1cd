//! The messages between the actors, named by who sends them to whom. They
//! are crate-private: callers outside use [`crate::handle::Broker`]'s
//! operations. Actors hold each other as `Recipient`s of these, so no actor
//! module names another (no import circle).

use std::sync::Arc;

use actix::{Message, Recipient};

use crate::subscription::Subscription;

/// Why a stream ended, for logs and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndReason {
    /// The client closed the connection or a write failed.
    ClientGone,
    /// The socket made no progress for the stall timeout.
    Stalled,
    /// The broker is shutting down.
    Shutdown,
    /// The events after the stream's position were trimmed by retention, or
    /// the log was reset; the client resumes and gets the 416 treatment.
    Gap,
    /// The store failed while catching up.
    StoreError,
    /// The topic was deleted (on this instance, or on another one sharing
    /// the store, noticed when the topic checks its log); the client's
    /// resume gets the 416 treatment, since the log is gone.
    Deleted,
    /// The token the stream was opened with expired: its last frame is
    /// `event: auth-expired`.
    AuthExpired,
}

impl EndReason {
    /// Every reason, for metrics.
    pub const ALL: [EndReason; 7] = [
        EndReason::ClientGone,
        EndReason::Stalled,
        EndReason::Shutdown,
        EndReason::Gap,
        EndReason::StoreError,
        EndReason::Deleted,
        EndReason::AuthExpired,
    ];

    /// Label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::ClientGone => "client_gone",
            EndReason::Stalled => "stalled",
            EndReason::Shutdown => "shutdown",
            EndReason::Gap => "gap",
            EndReason::StoreError => "store_error",
            EndReason::Deleted => "deleted",
            EndReason::AuthExpired => "auth_expired",
        }
    }
}

/// Body or session → topic.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) enum ToTopic {
    /// Subscriber `id` waits, rejoining, to be fed from its position (it
    /// drained to its low watermark, or finished a catch-up).
    Rejoin(u64),
    /// Subscriber `id` is gone.
    Unsubscribe(u64),
}

/// Topic or broker → session.
#[derive(Message, Clone, Copy)]
#[rtype(result = "()")]
pub(crate) enum ToSession {
    /// Your position is older than the topic's tail: read from the store,
    /// then rejoin.
    CatchUp,
    /// End the stream.
    End(EndReason),
}

/// How a topic or the broker reaches a session, and a session or its body
/// reaches its topic. Shared (`Arc`): each clone of an actor address
/// allocates, and an idle stream must cost little (BENCHMARKS.md, S4).
pub(crate) type SessionPort = Arc<Recipient<ToSession>>;

/// See [`SessionPort`].
pub(crate) type TopicPort = Arc<Recipient<ToTopic>>;

/// Session → broker: a stream opened.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct SessionOpened {
    /// Its delivery state, for health snapshots.
    pub sub: Arc<Subscription>,
    /// To end it at shutdown.
    pub port: SessionPort,
}

/// Session → broker: a stream closed.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct SessionClosed {
    /// Connection id.
    pub id: u64,
    /// Why.
    pub reason: EndReason,
}

#[cfg(test)]
mod tests {
    use super::EndReason;
    use crate::{metrics, subscription::Health};

    #[test]
    fn metric_label_sets_name_every_reason_and_state() {
        let reasons: Vec<&str> = EndReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(reasons, metrics::DISCONNECT_REASONS);
        let states: Vec<&str> = Health::ALL.iter().map(|h| h.as_str()).collect();
        assert_eq!(states, metrics::STREAM_STATES);
    }
}

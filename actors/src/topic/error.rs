//! What a publish or a subscription gets back from a topic.

use crate::{
    cursor::Epoch,
    event::AppendOutcome,
    store::{Gap, StoreError},
};

use super::Full;

/// The result of a publish, in the order of the published events.
#[derive(Debug)]
pub struct PublishReply {
    /// The topic's log epoch, to render cursors.
    pub epoch: Epoch,
    /// One outcome per published event.
    pub outcomes: Vec<AppendOutcome>,
}

/// Why a publish stored nothing.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The topic actor's mailbox is full.
    #[error("topic mailbox is full; retry")]
    MailboxFull,
    /// The topic's queue of publishes waiting for the store is full.
    #[error("{}", match .0 {
        Full::Requests => "too many publishes of this topic wait for the store; retry",
        Full::Events => "too many events of this topic wait for the store; retry",
    })]
    QueueFull(Full),
    /// The topic actor is restarting (after a store error).
    #[error("topic is restarting; retry")]
    Restarting,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a subscription was refused.
#[derive(Debug, Clone)]
pub enum SubscribeError {
    /// The cursor cannot be resumed.
    Gap(Box<Gap>),
    /// The store could not tell the topic's bounds.
    Store(StoreError),
    /// The topic actor is restarting.
    Restarting,
}

/// Why a topic was not deleted.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum DeleteError {
    /// The store holds no such topic.
    #[error("unknown topic")]
    Unknown,
    /// The topic actor could not be reached (it is restarting, or the
    /// broker is shutting down).
    #[error("topic is restarting; retry")]
    Restarting,
    /// The store failed; nothing was deleted.
    #[error(transparent)]
    Store(StoreError),
}

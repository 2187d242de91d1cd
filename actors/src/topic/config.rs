//! A topic's tunables.

use crate::subscription::Watermarks;

/// Tunables of a topic actor.
#[derive(Clone, Debug)]
pub struct TopicConfig {
    /// Most recent events kept framed in memory for fan-out and short catch-ups.
    pub tail_events: usize,
    /// Byte bound of the same tail.
    pub tail_bytes: usize,
    /// Every subscriber's watermarks.
    pub watermarks: Watermarks,
    /// Most events taken from the mailbox into one store append.
    pub max_coalesce_events: usize,
    /// Capacity of the topic mailbox and of its queue of publishes waiting
    /// for the store; past it a publish answers 503.
    pub mailbox_capacity: usize,
    /// Most events waiting for the store; past it a publish answers 503.
    pub max_pending_events: usize,
    /// A topic unused this long releases its actor and memory; `None`:
    /// never.
    pub idle_release: Option<std::time::Duration>,
}

impl Default for TopicConfig {
    fn default() -> Self {
        TopicConfig {
            tail_events: 4096,
            tail_bytes: 8 << 20,
            watermarks: Watermarks {
                high_events: 1024,
                high_bytes: 1 << 20,
                low_events: 256,
                low_bytes: 256 << 10,
            },
            max_coalesce_events: 10_000,
            mailbox_capacity: 1024,
            max_pending_events: 100_000,
            idle_release: None,
        }
    }
}

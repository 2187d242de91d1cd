//! # sluice-actors
//!
//! The actor system of the Sluice broker and the storage contract it relies on.
//!
//! ## Layout
//!
//! - [`handle`]: [`Broker`], the handle the HTTP layer holds: `publish`,
//!   `open_stream`, `delete_topic`, `sessions`, `stream_health`,
//!   `close_all`. Nothing else is needed to run the broker.
//! - [`subscription`]: [`subscription::Subscription`], the one owner of a
//!   subscriber's delivery state (queue, position, watermarks, pause
//!   state); no actor in it.
//! - [`topic`]: `TopicActor`, one per topic, a shell over the append
//!   pipeline, the fan-out and the following of the store; it also
//!   retires its log when the topic is deleted.
//! - `session`: `SessionActor`, one per SSE connection (heartbeats,
//!   stall eviction, catch-ups from the store through `catch_up`).
//! - `broker`: `BrokerActor`, the supervisor of topic actors and the list
//!   of open sessions; `registry`: which actor serves a topic, and how an
//!   idle one leaves without losing a message.
//! - [`body`]: the response body of a stream.
//! - `messages`: the messages between the actors (crate-private).
//! - [`store`]: the [`store::Store`] trait; [`memory_store`] implements it in
//!   memory for tests. The embedded log and Redis live in the server crate.
//! - [`dedup`]: idempotency-key and producer-sequence bookkeeping.
//! - [`cursor`], [`event`], [`sse`]: cursors, events, SSE framing.
//!
//! Dependencies point one way: `handle` → `broker`, `topic`, `session` →
//! `subscription`, `messages` → `sse`, `store`, `cursor`. Actors hold each
//! other as `Recipient`s of `messages`, never by type.

pub mod body;
mod broker;
mod catch_up;
pub mod cursor;
pub mod cursor_check;
pub mod dedup;
pub mod event;
pub mod fault_store;
pub mod handle;
pub mod memory_store;
mod messages;
pub mod metrics;
mod registry;
mod session;
pub mod sse;
pub mod store;
pub mod subscription;
pub mod topic;

pub use broker::StreamHealth;
pub use handle::{Broker, BrokerConfig, OpenStream, StreamRequest};
pub use messages::EndReason;
pub use session::{Expiry, SessionConfig};

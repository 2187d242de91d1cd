//! # sluice-actors
//!
//! The actor system of the Sluice broker and the storage contract it relies on.
//!
//! ## Layout
//!
//! - [`broker`]: `BrokerActor`, the registry and supervisor of topic actors,
//!   and [`broker::Broker`], the handle the HTTP layer holds.
//! - [`topic`]: `TopicActor`, one per topic: coalesced appends, in-memory
//!   tail, fan-out under the high/low watermark handshake.
//! - [`session`]: `SessionActor`, one per SSE connection.
//! - [`link`]: the counters a session shares with its topic and with health
//!   snapshots.
//! - [`store`]: the [`store::Store`] trait; [`memory_store`] implements it in
//!   memory for tests. The embedded log and Redis live in the server crate.
//! - [`dedup`]: idempotency-key and producer-sequence bookkeeping.
//! - [`cursor`], [`event`], [`sse`]: cursors, events, SSE framing.

pub mod body;
pub mod broker;
pub mod cursor;
pub mod dedup;
pub mod event;
pub mod fault_store;
pub mod link;
pub mod memory_store;
pub mod metrics;
pub mod session;
pub mod sse;
pub mod store;
pub mod topic;

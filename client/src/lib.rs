//! # sluice-client
//!
//! A client for Sluice, the pub/sub event broker
//! whose subscribers resume exactly: publish over HTTP, read a topic as a
//! Server-Sent Events stream, and never miss an event.
//!
//! What it adds to plain HTTP calls:
//!
//! - [`Client::subscribe`] gives an async [`Stream`](futures_util::Stream)
//!   of [`Item`]s that reconnects by itself with exponential [`Backoff`]
//!   (base 1 s, cap 30 s, ±15 % jitter, honouring the broker's `retry:`
//!   and `Retry-After`), resumes after the last event it yielded, and
//!   reports a gap (a `416`, or an `event: gap`) as an [`Item::Gap`],
//!   never silently.
//! - A [`CursorStore`] ([`FileCursorStore`], or your own) keeps the
//!   position, so a restarted process resumes where it stopped.
//! - [`Client::publish`] and [`Client::publish_batch`] retry what is safe
//!   to retry; a [`Producer`] numbers its events (`Producer-Id`,
//!   `Producer-Seq`) so that retries are stored once.
//! - A bearer token, or a [`TokenProvider`] asked again when the broker
//!   answers `401` or a stream ends with `event: auth-expired`.
//! - History pages ([`Client::history_pages`]) and topic information
//!   ([`Client::topics`], [`Client::topic`]).
//! - [`sse`]: the spec-following SSE parser all of it rests on.
//!
//! ```no_run
//! use futures_util::StreamExt;
//! use sluice_client::{Client, FileCursorStore, Item, Start, SubscribeOptions};
//!
//! # async fn f() -> sluice_client::Result<()> {
//! let client = Client::new("http://127.0.0.1:8080")?;
//! client.publish("orders", r#"{"id": 42}"#).await?;
//!
//! let options = SubscribeOptions::new()
//!     .start(Start::Earliest)
//!     .cursor_store(FileCursorStore::new("orders.cursor"));
//! let mut events = client.subscribe("orders", options);
//! while let Some(item) = events.next().await {
//!     match item? {
//!         Item::Event(e) => println!("{} {}", e.cursor, e.data),
//!         Item::Gap(gap) => eprintln!("gap: {gap}"),
//!         Item::Connected { .. } | Item::Disconnected { .. } => {}
//!         _ => {}
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! The HTTP API it speaks is described in the broker's `docs/API.md`.

#![warn(missing_docs)]

mod auth;
pub mod backoff;
mod client;
mod cursor;
mod error;
mod producer;
pub mod sse;
mod subscribe;
mod types;

pub use auth::TokenProvider;
pub use backoff::{Backoff, ServerHints};
pub use client::{Client, ClientBuilder, HistoryPages, Page};
pub use cursor::{CursorStore, FileCursorStore, MemoryCursorStore};
pub use error::{BoxError, Error, Problem, Result};
pub use producer::Producer;
pub use subscribe::{Item, SubscribeOptions, Subscription};
pub use types::{
    BatchResult, Event, Gap, HistoryPage, NewEvent, Published, Start, TopicInfo, TopicSummary,
};

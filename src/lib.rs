//! # sluice
//!
//! The Sluice server: a pub/sub event broker with an HTTP publish API and
//! Server-Sent Events subscriptions that resume exactly from a cursor.
//!
//! ## Layout
//!
//! - [`config`]: layered settings (defaults, file, `SLUICE__*`, flags).
//! - [`server`]: builds the broker and HTTP server; `run` takes the shutdown
//!   signal as a future so tests can drive it.
//! - [`http`]: the routes of API.md, one module per route group.
//! - [`console`]: the browser console (`/`) and module (`/sluice.js`).
//! - [`cli`]: the client subcommands (`pub`, `sub`, `topics`, `info`,
//!   `history`) over the `sluice-client` crate.
//! - [`fds`]: the process's open-file limit and open descriptors.
//! - [`probe`]: `sluice health`, a readiness probe for containers.
//! - [`tls`]: TLS with h2 over ALPN, the certificate reloaded in place.
//! - [`store`]: storage backends; [`store::embedded`] is the default on-disk log.
//! - The actors (broker, topic, session), the Store trait, cursors and SSE
//!   framing live in the `sluice-actors` crate (`actors/`).

pub mod cli;
pub mod config;
pub mod console;
// Not part of the API: the fuzz targets' and property tests' scenarios.
pub mod fds;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod probe;
pub mod server;
pub mod store;
#[cfg(feature = "otel")]
pub mod telemetry;
pub mod tls;

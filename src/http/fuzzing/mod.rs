//! Not part of Sluice's API (hidden; tests and the `fuzzing` feature
//! only): the fuzz scenarios of what lives in the HTTP layer's private
//! modules (see `crate::fuzzing` for the rest).
//!
//! - [`batch`]: NDJSON batch bodies, raw and built from events;
//! - [`headers`]: the headers and query strings every route reads.

pub mod batch;
pub mod headers;

#[cfg(test)]
mod proptests;

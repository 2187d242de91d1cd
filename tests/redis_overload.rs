//! The `overload` suite on the Redis store (see tests/common: binaries named
//! `redis_*` start every broker on Redis).
#[path = "overload.rs"]
mod suite;

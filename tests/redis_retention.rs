//! The `retention` suite on the Redis store (see tests/common: binaries named
//! `redis_*` start every broker on Redis).
#[path = "retention.rs"]
mod suite;

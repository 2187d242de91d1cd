//! The `flow_control` suite on the Redis store (see tests/common: binaries
//! named `redis_*` start every broker on Redis).
#[path = "flow_control.rs"]
mod suite;

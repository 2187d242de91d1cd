//! Sluice's integration tests: one test binary (`cargo test --test it`).
//!
//! Each suite talks HTTP to a broker started by [`support`]: in this process
//! on port 0 where it can, the real binary where a test kills, stops or
//! restarts it or reads what only a process has (see `support`). Tests that
//! hold on both stores exist once per store, as `…::embedded::name` and
//! `…::redis::name`; `cargo test --test it redis::` runs the Redis half.

#[macro_use]
mod support;

mod api;
mod auth;
mod browser;
mod clients;
mod cluster;
mod console;
mod crash;
mod delete;
mod deploy;
mod flow_control;
mod hostile;
mod limits;
mod openapi;
mod overload;
mod redis_cluster;
mod resume;
mod retention;
mod strict;
mod tls;

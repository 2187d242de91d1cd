//! Every endpoint and error of API.md (except auth and /metrics), on both
//! stores, against a broker in the test process (the command-line tests in
//! [`cli`] run the binary).

use std::time::Duration;

mod batch;
mod cli;
mod ops;
mod positions;
mod publish;
mod subscribe;
mod window;

const T: Duration = Duration::from_secs(10);
const HB: (&str, &str) = ("SLUICE__STREAM__HEARTBEAT_SECS", "1");

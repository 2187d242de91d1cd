//! Journal bytes (raw, or well-formed records naming any path and epoch,
//! then damaged) verified and replayed into a data directory.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::store::embedded::fuzzing;

mod common;

fuzz_target!(|data: &[u8]| {
    fuzzing::journal(data, common::scratch().path());
});

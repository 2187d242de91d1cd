//! A topic's directory (segments, meta.json) damaged, opened through
//! recovery and read as the store reads it, reopened, appended to, damaged
//! again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::store::embedded::fuzzing;

mod common;

fuzz_target!(|data: &[u8]| {
    fuzzing::topic_dir(data, common::scratch().path());
});

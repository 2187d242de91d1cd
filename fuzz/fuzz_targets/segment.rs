//! The segment record reader on raw bytes, and one segment of known
//! records, damaged, opened, repaired and reopened (sealed or active).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::store::embedded::fuzzing;

mod common;

fuzz_target!(|data: &[u8]| {
    // The first byte picks: raw bytes for the decoder, or a segment.
    match data.split_first() {
        Some((k, rest)) if k % 4 == 0 => fuzzing::record_bytes(rest),
        Some((_, rest)) => fuzzing::segment(rest, common::scratch().path()),
        None => {}
    }
});

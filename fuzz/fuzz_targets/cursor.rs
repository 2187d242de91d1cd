//! The cursor parser: strict (what parses re-formats to its own text),
//! round-trips, and byte order = (time, seq) order within an epoch.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sluice::fuzzing::cursor::run(data));

//! The NDJSON batch parser: raw bodies (each accepted line is what a JSON
//! library reads, a refusal names the first bad line) and bodies written
//! from known events (read back the same).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sluice::http::fuzzing::batch::run(data));

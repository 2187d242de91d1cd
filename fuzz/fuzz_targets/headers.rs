//! The request heads of the routes: publish headers, positions, Accept,
//! Content-Encoding, query strings, repeated headers; each read as
//! API.md's rule says, numbers and cursors in one spelling only.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sluice::http::fuzzing::headers::run(data));

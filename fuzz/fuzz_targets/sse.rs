//! SSE framing read back through `sluice_client::sse`: same id, type and
//! data whatever line breaks, NULs or invalid UTF-8 the data holds and
//! wherever the stream is cut.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sluice::fuzzing::sse::run(data));

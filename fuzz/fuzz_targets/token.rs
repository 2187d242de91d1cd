//! Tokens and the query that carries them: a token not signed with the
//! broker's secret (checked with HMAC directly) is never accepted, a
//! valid one is, and its grant is its claim.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sluice::http::auth::fuzzing::run(data));

//! What verifying one HS256 token costs the broker, alone: the verifier
//! the `authorize` middleware runs once per request (a stream: once, when
//! it opens), timed in a loop so that the figure does not depend on the
//! load of a shared machine as much as an end-to-end run does.
//!
//! `cargo bench --features fuzzing --bench token_verify`

use std::time::Instant;

use serde_json::json;
use sluice::http::auth::fuzzing::{signed, verify};

fn main() {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        + 3600;
    let good = signed(&json!({
        "exp": exp,
        "sluice": {"publish": ["orders.*"], "subscribe": ["orders.*", "billing"], "admin": false}
    }));
    // The same claims, the signature's last character changed.
    let mut bad = good.clone().into_bytes();
    let last = bad.len() - 1;
    bad[last] = if bad[last] == b'A' { b'B' } else { b'A' };
    let bad = String::from_utf8(bad).expect("ASCII");
    assert!(verify(&good).is_ok() && verify(&bad).is_err());
    const N: u32 = 20_000;
    for (name, token, ok) in [("valid token", &good, true), ("bad signature", &bad, false)] {
        for _ in 0..N / 10 {
            assert_eq!(verify(token).is_ok(), ok);
        }
        let mut rounds: Vec<f64> = (0..7)
            .map(|_| {
                let t = Instant::now();
                for _ in 0..N {
                    std::hint::black_box(verify(std::hint::black_box(token)).is_ok());
                }
                t.elapsed().as_nanos() as f64 / f64::from(N)
            })
            .collect();
        rounds.sort_by(f64::total_cmp);
        let shown: Vec<String> = rounds.iter().map(|r| format!("{:.0}", r)).collect();
        println!(
            "{name}: median {:.2} µs per verification ({} rounds of {N}, ns: {})",
            rounds[rounds.len() / 2] / 1000.0,
            rounds.len(),
            shown.join(" ")
        );
    }
}

//! When to try again: the reconnect and retry schedule.
//!
//! Exponential from a base (1 s, or the server's `retry:`), doubling per
//! failed attempt up to a cap (30 s), each delay drawn uniformly within
//! ±15 % of its nominal value so that many clients cut off at once do not
//! come back at once. A `Retry-After` from the server is a floor: the
//! delay is never shorter than it asks.

use std::time::{Duration, SystemTime};

/// The schedule of delays between attempts. See the [module](self).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    jitter: f64,
}

impl Default for Backoff {
    /// Base 1 s, cap 30 s, jitter ±15 %.
    fn default() -> Backoff {
        Backoff {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(30),
            jitter: 0.15,
        }
    }
}

/// What the server said about waiting, for one delay.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerHints {
    /// The stream's last `retry:` value: it replaces the base.
    pub retry: Option<Duration>,
    /// The `Retry-After` of the answer that failed: a floor.
    pub retry_after: Option<Duration>,
}

impl Backoff {
    /// A schedule with this base, cap and jitter (a fraction, clamped to
    /// `0.0..=1.0`; 0.15 is ±15 %).
    pub fn new(base: Duration, cap: Duration, jitter: f64) -> Backoff {
        Backoff {
            base,
            cap,
            jitter: jitter.clamp(0.0, 1.0),
        }
    }

    /// The base delay (before any `retry:` from the server).
    pub fn base(&self) -> Duration {
        self.base
    }

    /// The longest delay the schedule itself chooses. A server's `retry:`
    /// longer than this, or its `Retry-After`, can ask for more.
    pub fn cap(&self) -> Duration {
        self.cap
    }

    /// The nominal (unjittered) delay before attempt `attempt`: zero for
    /// attempt 0 (an immediate retry), then base, 2 × base, 4 × base, …,
    /// at most the cap. The base is the server's `retry:` when it gave one;
    /// a `retry:` above the cap raises the cap to it (the server asked for
    /// at least that long).
    pub fn nominal(&self, attempt: u32, server_retry: Option<Duration>) -> Duration {
        if attempt == 0 {
            return Duration::ZERO;
        }
        let base = server_retry.unwrap_or(self.base);
        let cap = self.cap.max(base);
        let factor = 1u32.checked_shl(attempt - 1).unwrap_or(u32::MAX);
        base.checked_mul(factor).map_or(cap, |d| d.min(cap))
    }

    /// The range `[low, high]` a delay before `attempt` is drawn from:
    /// the nominal delay ±jitter, never above the (raised) cap; with a
    /// `Retry-After`, never below it, and reaching `jitter` above it.
    pub fn bounds(&self, attempt: u32, hints: ServerHints) -> (Duration, Duration) {
        let nominal = self.nominal(attempt, hints.retry);
        let cap = self.cap.max(hints.retry.unwrap_or(self.base));
        let low = nominal.mul_f64(1.0 - self.jitter);
        let high = nominal.mul_f64(1.0 + self.jitter).min(cap).max(low);
        match hints.retry_after {
            // Lifted to start at Retry-After and to reach 15 % (the jitter)
            // above it, so that clients told the same wait spread out.
            Some(ra) => (low.max(ra), high.max(ra.mul_f64(1.0 + self.jitter))),
            None => (low, high),
        }
    }

    /// The delay before `attempt` for a draw `unit` in `0.0..1.0`
    /// (deterministic; [`delay`](Backoff::delay) draws at random).
    pub fn delay_at(&self, attempt: u32, hints: ServerHints, unit: f64) -> Duration {
        let (low, high) = self.bounds(attempt, hints);
        low + (high - low).mul_f64(unit.clamp(0.0, 1.0))
    }

    /// The delay before `attempt`, drawn at random within
    /// [`bounds`](Backoff::bounds).
    pub fn delay(&self, attempt: u32, hints: ServerHints) -> Duration {
        self.delay_at(attempt, hints, rand::random::<f64>())
    }
}

/// Reads a `Retry-After` value: delay seconds, or an HTTP date (the time
/// left until then, zero when it has passed). `None` when malformed.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;
    const MS: fn(u64) -> Duration = Duration::from_millis;

    fn none() -> ServerHints {
        ServerHints::default()
    }

    #[test]
    fn doubles_from_one_second_up_to_the_cap() {
        let b = Backoff::default();
        let nominal: Vec<u64> = (0..9).map(|a| b.nominal(a, None).as_secs()).collect();
        assert_eq!(nominal, [0, 1, 2, 4, 8, 16, 30, 30, 30]);
        // Very large attempt numbers neither overflow nor pass the cap.
        assert_eq!(b.nominal(40, None), S(30));
        assert_eq!(b.nominal(u32::MAX, None), S(30));
    }

    #[test]
    fn jitter_stays_within_fifteen_percent() {
        let b = Backoff::default();
        for attempt in 1..=5 {
            let n = b.nominal(attempt, None);
            let (lo, hi) = b.bounds(attempt, none());
            assert_eq!(
                (lo, hi),
                (n.mul_f64(0.85), n.mul_f64(1.15)),
                "attempt {attempt}"
            );
            assert_eq!(b.delay_at(attempt, none(), 0.0), lo);
            assert_eq!(b.delay_at(attempt, none(), 1.0), hi);
            for _ in 0..1000 {
                let d = b.delay(attempt, none());
                assert!(
                    lo <= d && d <= hi,
                    "attempt {attempt}: {d:?} outside {lo:?}..{hi:?}"
                );
            }
        }
        // The draws really spread over the range (not all at one end).
        let draws: Vec<Duration> = (0..2000).map(|_| b.delay(1, none())).collect();
        let below = draws.iter().filter(|d| **d < S(1)).count();
        assert!(
            (700..1300).contains(&below),
            "{below} of 2000 below the nominal 1 s"
        );
        assert!(draws.iter().any(|d| *d < MS(870)) && draws.iter().any(|d| *d > MS(1130)));
    }

    #[test]
    fn the_cap_is_never_passed() {
        let b = Backoff::default();
        for attempt in 6..50 {
            let (lo, hi) = b.bounds(attempt, none());
            assert_eq!((lo, hi), (S(30).mul_f64(0.85), S(30)), "attempt {attempt}");
        }
        for _ in 0..1000 {
            assert!(b.delay(20, none()) <= S(30));
        }
        // Just below the cap the upper side is cut at the cap: 16 s × 1.15
        // would be 18.4 s, well under; a 4 s base reaches it at attempt 4.
        let b4 = Backoff::new(S(4), S(30), 0.15);
        assert_eq!(b4.bounds(4, none()), (S(30).mul_f64(0.85), S(30)));
        assert_eq!(
            b4.bounds(3, none()),
            (S(16).mul_f64(0.85), S(16).mul_f64(1.15))
        );
    }

    #[test]
    fn server_retry_replaces_the_base() {
        let b = Backoff::default();
        let hints = ServerHints {
            retry: Some(MS(2500)),
            retry_after: None,
        };
        assert_eq!(b.nominal(1, hints.retry), MS(2500));
        assert_eq!(b.nominal(2, hints.retry), MS(5000));
        assert_eq!(b.nominal(5, hints.retry), S(30));
        assert_eq!(b.bounds(1, hints), (MS(2125), MS(2875)));
        // A shorter retry: is honoured too (the server knows its restarts).
        let fast = ServerHints {
            retry: Some(MS(100)),
            retry_after: None,
        };
        assert_eq!(b.nominal(1, fast.retry), MS(100));
        assert_eq!(b.nominal(3, fast.retry), MS(400));
        // A retry: above the cap is what the server asked for: the floor.
        let slow = ServerHints {
            retry: Some(S(45)),
            retry_after: None,
        };
        assert_eq!(b.nominal(1, slow.retry), S(45));
        assert_eq!(b.nominal(9, slow.retry), S(45));
        let (lo, hi) = b.bounds(3, slow);
        assert_eq!((lo, hi), (S(45).mul_f64(0.85), S(45)));
    }

    #[test]
    fn retry_after_is_a_floor() {
        let b = Backoff::default();
        // Longer than the backoff: at least Retry-After, at most 15 % more.
        let h = ServerHints {
            retry: None,
            retry_after: Some(S(5)),
        };
        assert_eq!(b.bounds(1, h), (S(5), S(5).mul_f64(1.15)));
        for _ in 0..1000 {
            let d = b.delay(1, h);
            assert!(d >= S(5) && d <= MS(5750), "{d:?}");
        }
        let h = ServerHints {
            retry: None,
            retry_after: Some(S(20)),
        };
        assert_eq!(b.bounds(3, h), (S(20), S(23)));
        // Beyond the cap: the server asked for it, and gets it.
        let h = ServerHints {
            retry: None,
            retry_after: Some(S(120)),
        };
        assert_eq!(b.bounds(2, h), (S(120), S(138)));
        assert!(b.delay(0, h) >= S(120));
        // Shorter than the backoff: the backoff wins.
        let h = ServerHints {
            retry: None,
            retry_after: Some(S(1)),
        };
        assert_eq!(b.bounds(4, h), (S(8).mul_f64(0.85), S(8).mul_f64(1.15)));
        // An immediate retry still waits for Retry-After.
        let h = ServerHints {
            retry: None,
            retry_after: Some(S(2)),
        };
        assert_eq!(b.bounds(0, h), (S(2), S(2).mul_f64(1.15)));
        // With a server retry: too: the larger floor wins.
        let h = ServerHints {
            retry: Some(S(3)),
            retry_after: Some(S(2)),
        };
        assert_eq!(b.bounds(1, h), (S(3).mul_f64(0.85), S(3).mul_f64(1.15)));
    }

    #[test]
    fn retry_after_within_the_backoff_range_lifts_its_floor() {
        let b = Backoff::default();
        // Nominal 4 s (3.4 s .. 4.6 s); Retry-After 4 s lifts the floor.
        let h = ServerHints {
            retry: None,
            retry_after: Some(S(4)),
        };
        assert_eq!(b.bounds(3, h), (S(4), S(4).mul_f64(1.15)));
    }

    #[test]
    fn attempt_zero_is_immediate() {
        let b = Backoff::default();
        assert_eq!(b.bounds(0, none()), (Duration::ZERO, Duration::ZERO));
        assert_eq!(
            b.delay(
                0,
                ServerHints {
                    retry: Some(S(3)),
                    retry_after: None
                }
            ),
            Duration::ZERO
        );
    }

    #[test]
    fn parses_retry_after_seconds_and_dates() {
        assert_eq!(parse_retry_after("7"), Some(S(7)));
        assert_eq!(parse_retry_after(" 0 "), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon"), None);
        assert_eq!(parse_retry_after("-1"), None);
        let past = httpdate::fmt_http_date(SystemTime::now() - S(60));
        assert_eq!(parse_retry_after(&past), Some(Duration::ZERO));
        let later = httpdate::fmt_http_date(SystemTime::now() + S(90));
        let d = parse_retry_after(&later).unwrap();
        assert!(d > S(85) && d <= S(90), "{d:?}");
    }
}

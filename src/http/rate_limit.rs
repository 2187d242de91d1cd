//! Per-client rate limits (governor), keyed by the client's address: one
//! for publish requests, one for opening streams. Off by default, and
//! loopback clients are exempt unless configured otherwise.

use std::{net::IpAddr, num::NonZeroU32, time::Duration};

use actix_web::HttpRequest;
use governor::{clock::Clock, DefaultKeyedRateLimiter, Quota, RateLimiter};
use sluice_actors::metrics::metrics;

use super::error::ApiError;
use crate::config::RateLimitSettings;

/// What a limit applies to.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    /// Publish and batch requests.
    Publish,
    /// Opening an SSE stream.
    Stream,
}

/// The configured limiters.
pub struct RateLimits {
    publish: Option<DefaultKeyedRateLimiter<IpAddr>>,
    streams: Option<DefaultKeyedRateLimiter<IpAddr>>,
    exempt_loopback: bool,
}

fn limiter(per_sec: u32, burst: u32) -> Option<DefaultKeyedRateLimiter<IpAddr>> {
    let rate = NonZeroU32::new(per_sec)?;
    let burst = NonZeroU32::new(burst).unwrap_or(rate);
    Some(RateLimiter::keyed(
        Quota::per_second(rate).allow_burst(burst),
    ))
}

impl RateLimits {
    /// Limiters from the `[rate_limit]` settings.
    pub fn new(s: &RateLimitSettings) -> Self {
        RateLimits {
            publish: limiter(s.publish_per_sec, s.publish_burst),
            streams: limiter(s.streams_per_sec, s.streams_burst),
            exempt_loopback: s.exempt_loopback,
        }
    }

    /// `Ok` when the request may go on; a 429 with `Retry-After` otherwise.
    pub fn check(&self, kind: Kind, req: &HttpRequest) -> Result<(), ApiError> {
        let limiter = match kind {
            Kind::Publish => &self.publish,
            Kind::Stream => &self.streams,
        };
        let (Some(limiter), Some(peer)) = (limiter, req.peer_addr()) else {
            return Ok(());
        };
        let ip = peer.ip();
        if self.exempt_loopback && ip.is_loopback() {
            return Ok(());
        }
        limiter.check_key(&ip).map_err(|not_until| {
            let wait = not_until.wait_time_from(governor::clock::DefaultClock::default().now());
            metrics()
                .publish_rejected
                .with_label_values(&[match kind {
                    Kind::Publish => "rate_limited",
                    Kind::Stream => "stream_rate_limited",
                }])
                .inc();
            ApiError::RateLimited {
                retry_after_secs: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
            }
        })
    }

    /// Forgets clients idle long enough to be back at full burst, so the
    /// key maps do not grow without bound.
    pub fn forget_idle(&self) {
        for l in [&self.publish, &self.streams].into_iter().flatten() {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }
}

/// How often idle clients are forgotten.
pub const FORGET_IDLE_EVERY: Duration = Duration::from_secs(60);

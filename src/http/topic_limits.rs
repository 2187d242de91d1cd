//! New topics: at most `limits.max_topics` in the store (past it `503`)
//! and `rate_limit.topics_per_minute` created per client address (past it
//! `429`, governor; loopback exempt when `rate_limit.exempt_loopback`).
//!
//! A topic is new when this instance runs no actor for it and the store
//! does not hold it; a publish, a stream or a poll from a cursor would
//! create it. Only that first touch asks the store, so a busy topic costs
//! nothing here.

use std::{
    net::IpAddr,
    num::NonZeroU32,
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use actix_web::HttpRequest;
use governor::{clock::Clock, DefaultKeyedRateLimiter, Quota, RateLimiter};
use sluice_actors::{store::StoreError, Broker};

use super::error::ApiError;

/// How often the count of topics is read from the store again (it moves
/// with deletes, and with other instances sharing a store).
pub const RECOUNT_EVERY: Duration = Duration::from_secs(60);

/// The limits on new topics.
pub struct TopicLimits {
    max: usize,
    /// Topics the store holds, as last counted, plus those created since.
    known: AtomicUsize,
    per_client: Option<DefaultKeyedRateLimiter<IpAddr>>,
    exempt_loopback: bool,
}

impl TopicLimits {
    /// Limits of `max` topics and `per_minute` new ones per client (0: no
    /// such limit).
    pub fn new(max: usize, per_minute: u32, exempt_loopback: bool) -> Self {
        TopicLimits {
            max,
            known: AtomicUsize::new(0),
            per_client: NonZeroU32::new(per_minute)
                .map(|n| RateLimiter::keyed(Quota::per_minute(n))),
            exempt_loopback,
        }
    }

    /// Sets the count of topics from the store's list.
    pub fn set_count(&self, n: usize) {
        self.known.store(n, Ordering::Relaxed);
    }

    /// Forgets clients back at their full quota.
    pub fn forget_idle(&self) {
        if let Some(l) = &self.per_client {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }

    /// `Ok` unless `topic` is new and a limit refuses it.
    pub async fn admit(
        &self,
        broker: &Broker,
        req: &HttpRequest,
        topic: &str,
    ) -> Result<(), ApiError> {
        if broker.is_running(topic) {
            return Ok(());
        }
        match broker.store().bounds(topic).await {
            Err(StoreError::UnknownTopic) => {}
            // Held, or the store cannot tell: the request meets that itself.
            _ => return Ok(()),
        }
        if self.known.load(Ordering::Relaxed) >= self.max {
            return Err(ApiError::AtCapacity {
                detail: format!(
                    "the broker holds {} topics, as many as it takes; a new one can be \
                     created once topics are deleted",
                    self.max
                ),
                retry_after_secs: RECOUNT_EVERY.as_secs(),
                close: false,
            });
        }
        let client = req
            .peer_addr()
            .map(|a| a.ip())
            .filter(|ip| !(self.exempt_loopback && ip.is_loopback()));
        if let (Some(limiter), Some(ip)) = (&self.per_client, client) {
            if let Err(not_until) = limiter.check_key(&ip) {
                let wait = not_until.wait_time_from(governor::clock::DefaultClock::default().now());
                return Err(ApiError::ClientLimit {
                    detail: "this client address created as many new topics as it may per \
                             minute; retry later"
                        .into(),
                    retry_after_secs: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
                });
            }
        }
        self.known.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

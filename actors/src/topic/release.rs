//! An idle topic lets go of everything it holds. A topic with no
//! subscriber, nothing to append and no delete waiting, used by nobody for
//! `idle_release`, leaves the registry (only while no message is on its
//! way to it, see `crate::registry`) and stops: its tail, its view of the
//! log and its actor go. The next publish or subscription starts a new
//! actor, which loads the bounds from the store as after a restart: same
//! log, same epoch, same cursors.
//!
//! A topic whose log cannot be opened and that nobody waits for (no
//! subscriber; the publishes that waited were answered with the error)
//! stops the same way at once, instead of retrying in the background for
//! nobody.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use actix::prelude::*;

use super::TopicActor;
use crate::{
    metrics::metrics,
    registry::{Inbound, Registry},
};

/// Where a topic actor is registered, and the count of messages on their
/// way to it.
pub(crate) type Home = (Arc<Registry<TopicActor>>, Inbound);

/// Idleness and release state of a topic actor.
pub(crate) struct Idle {
    home: Home,
    after: Option<Duration>,
    last_used: Instant,
    /// Out of the registry: the actor only waits to stop.
    pub(super) released: bool,
}

impl Idle {
    pub(crate) fn new(home: Home, after: Option<Duration>) -> Self {
        Idle {
            home,
            after,
            last_used: Instant::now(),
            released: false,
        }
    }

    /// The actor started (its mailbox has its capacity).
    pub(super) fn started(&self) {
        self.home.1.started();
    }

    /// A counted message (publish, subscribe, delete) was handled.
    pub(super) fn arrived(&mut self) {
        self.home.1.arrived();
        self.last_used = Instant::now();
    }

    /// Something happened that is use of the topic.
    pub(super) fn touch(&mut self) {
        self.last_used = Instant::now();
    }

    /// How often idleness is checked.
    pub(super) fn check_every(&self) -> Option<Duration> {
        self.after
            .map(|a| (a / 4).clamp(Duration::from_millis(50), Duration::from_secs(5)))
    }
}

impl TopicActor {
    /// Nothing of the topic is under way or waited for.
    fn unused(&self) -> bool {
        self.fanout.is_empty()
            && !self.appends.has_pending()
            && self.appends.in_flight() == 0
            && self.deletes.is_empty()
    }

    /// Releases the topic if it has been idle long enough.
    pub(super) fn release_if_idle(&mut self, ctx: &mut Context<Self>) {
        let Some(after) = self.idle.after else { return };
        if self.idle.last_used.elapsed() >= after {
            self.release(ctx, "idle");
        }
    }

    /// Leaves the registry and stops, if unused and nothing is on its way.
    pub(super) fn release(&mut self, ctx: &mut Context<Self>, why: &'static str) {
        if self.idle.released || !self.unused() {
            return;
        }
        let (registry, inbound) = &self.idle.home;
        if !registry.release(&self.name, inbound) {
            return;
        }
        self.idle.released = true;
        metrics().active_topics.set(registry.len() as i64);
        tracing::debug!(topic = %self.name, why, "topic released");
        self.fanout.clear_tail();
        self.unwatch_if_idle();
        ctx.stop();
    }

    /// `started` of a released actor the supervisor restarted (someone
    /// still held its address): it stops again soon, serving nothing.
    pub(super) fn stop_released(&mut self, ctx: &mut Context<Self>) {
        ctx.run_later(Duration::from_secs(1), |_, ctx| ctx.stop());
    }
}

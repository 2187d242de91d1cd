//! What other instances sharing the store append to the topic's log: the
//! store's watch (registered only while the topic has subscribers), the
//! appends it reports, and fills from the store of what the topic knows was
//! stored but has not applied (a hole, or appends made while it did not
//! watch).

use actix::prelude::*;

use super::TopicActor;
use crate::{metrics::metrics, store::ExternalAppends};

/// Events read from the store per round when filling a hole.
const FILL_PAGE: usize = 1000;

impl TopicActor {
    /// Follows the appends of other instances (a no-op on a private store).
    pub(super) fn start_watch(&mut self, ctx: &mut Context<Self>) {
        let Some(b) = self.log.bounds() else { return };
        // From what this actor has applied: whatever was stored after it
        // while nobody watched arrives through the watch (or a fill).
        let recipient = ctx.address().recipient();
        self.store
            .watch(&self.name, &b.epoch, b.latest_seq, recipient);
        self.watching = true;
    }

    /// Stops following other instances once no subscriber is left.
    pub(super) fn unwatch_if_idle(&mut self) {
        if self.watching && self.fanout.is_empty() {
            self.store.unwatch(&self.name);
            self.watching = false;
        }
    }

    /// Reads from the store until this actor has applied everything it
    /// knows was stored.
    pub(super) fn fill(&mut self, ctx: &mut Context<Self>) {
        let Some(after) = self.log.start_fill() else {
            return;
        };
        let (store, name) = (self.store.clone(), self.name.clone());
        let (incarnation, epoch) = (self.incarnation, self.log.epoch().cloned());
        ctx.spawn(
            async move { store.read(&name, after, FILL_PAGE).await }
                .into_actor(self)
                .map(move |res, act, ctx| {
                    // The log was let go of meanwhile: the view that asked
                    // for this fill is gone too.
                    if act.incarnation != incarnation {
                        return;
                    }
                    act.log.fill_done();
                    // Reset meanwhile: events of the old log.
                    if act.log.epoch() != epoch.as_ref() {
                        return;
                    }
                    match res {
                        Ok(page) if !page.is_empty() => {
                            act.apply_stored(page, ctx);
                            act.fill(ctx);
                        }
                        Ok(_) => act.log.fill_exhausted(),
                        Err(e) => {
                            metrics().store_errors.inc();
                            tracing::warn!(topic = %act.name, error = %e, "cannot fill from store; restarting");
                            ctx.stop();
                        }
                    }
                }),
        );
    }
}

impl Handler<ExternalAppends> for TopicActor {
    type Result = ();

    fn handle(&mut self, msg: ExternalAppends, ctx: &mut Context<Self>) {
        // Sent before the log changed (deleted and recreated, or reset):
        // they are not events of the log the topic follows now.
        if self.log.epoch() == Some(&msg.epoch) {
            self.apply_stored(msg.events, ctx);
        }
    }
}

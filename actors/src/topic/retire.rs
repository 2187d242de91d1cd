//! When a topic's log goes away: a delete asked of this topic, a log found
//! gone from the store (deleted by another instance sharing it, or wiped),
//! or one found reset (wiped and recreated under another epoch). Each time
//! the topic's streams end, since their positions belong to a log that no
//! longer exists (their resumes get the 416 treatment), and nothing of the
//! old log is ever served as part of the next one: answers of store calls
//! made before are dropped (`incarnation`), and so are other instances'
//! appends to the old epoch.
//!
//! A deleted topic stays dormant: it asks the store for nothing, so it does
//! not create the topic again, until a publish or a subscription comes.

use actix::prelude::*;
use tokio::sync::oneshot;

use super::{
    follow::{Adopted, Follower},
    DeleteError, TopicActor,
};
use crate::{
    messages::{EndReason, ToSession},
    store::{StoreError, TopicBounds},
};

/// How a delete is answered.
pub(crate) type DeleteReplyTx = oneshot::Sender<Result<(), DeleteError>>;

/// Handle → topic: delete the topic's log, then answer on `reply`.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Delete {
    pub reply: DeleteReplyTx,
}

/// What a check of the log in the store found.
enum Checked {
    /// The log the topic follows.
    Same,
    /// Another log (wiped and recreated meanwhile): its bounds.
    Reset(TopicBounds),
    /// The same log gone back under the topic (shorter than what it
    /// applied, or another event where its latest was: a store restored
    /// from an older snapshot, a failover to a lagging replica): its bounds.
    Rewound(TopicBounds),
    /// No log at all.
    Gone,
}

impl Handler<Delete> for TopicActor {
    type Result = ();

    fn handle(&mut self, msg: Delete, ctx: &mut Context<Self>) {
        self.idle.arrived();
        self.deletes.push(msg.reply);
        self.delete_when_idle(ctx);
    }
}

impl TopicActor {
    /// Runs the store's delete once no append is in flight: those are
    /// stored (and acknowledged) before the delete and deleted with it,
    /// while the publishes that come meanwhile wait and go to the next
    /// log. The delete runs in `ctx.wait`, so nothing else of the topic
    /// happens during it.
    pub(super) fn delete_when_idle(&mut self, ctx: &mut Context<Self>) {
        if self.deletes.is_empty() || self.appends.in_flight() > 0 {
            return;
        }
        let replies = std::mem::take(&mut self.deletes);
        let (store, name) = (self.store.clone(), self.name.clone());
        ctx.wait(
            async move { store.delete_topic(&name).await }
                .into_actor(self)
                .map(move |res, act, ctx| {
                    let answer = match res {
                        Ok(()) => Ok(()),
                        Err(StoreError::UnknownTopic) => Err(DeleteError::Unknown),
                        Err(e) => Err(DeleteError::Store(e)),
                    };
                    match &answer {
                        Ok(()) => {
                            tracing::info!(topic = %act.name, "topic deleted; ending its streams");
                            act.retire(EndReason::Deleted, ctx);
                        }
                        // Not in the store (another instance deleted it
                        // first): whatever this topic still follows is gone.
                        Err(DeleteError::Unknown) => act.retire(EndReason::Deleted, ctx),
                        Err(e) => {
                            tracing::warn!(topic = %act.name, error = %e, "delete failed; the topic goes on");
                            // The log is as it was: reload it (a failed
                            // call may have left anything), and the
                            // publishes held for the delete go on.
                            if !act.dormant {
                                act.load_bounds(ctx);
                            }
                        }
                    }
                    for reply in replies {
                        let _ = reply.send(answer.clone());
                    }
                }),
        );
    }

    /// Lets go of the log: its streams end with `reason`, the tail and the
    /// watch go, and answers of store calls made before are dropped. The
    /// publishes that waited go to a new log (opening it creates it), else
    /// the topic sleeps until it is used.
    pub(super) fn retire(&mut self, reason: EndReason, ctx: &mut Context<Self>) {
        self.incarnation += 1;
        self.fanout.clear_tail();
        for (_, port) in self.fanout.drain() {
            port.do_send(ToSession::End(reason));
        }
        self.unwatch_if_idle();
        self.log = Follower::default();
        if self.appends.has_pending() {
            self.load_bounds(ctx);
        } else {
            self.dormant = true;
        }
    }

    /// A publish or a subscription came to a dormant topic: its log is
    /// opened, which creates it under a new epoch.
    pub(super) fn wake(&mut self, ctx: &mut Context<Self>) {
        self.dormant = false;
        self.load_bounds(ctx);
    }

    /// Takes freshly loaded bounds (see [`Adopted`]).
    pub(super) fn adopt(&mut self, b: TopicBounds, ctx: &mut Context<Self>) {
        match self.log.adopt(b) {
            Adopted::Continued => self.fill(ctx),
            Adopted::Fresh => self.fanout.clear_tail(),
            Adopted::Reset => self.end_streams("topic log was reset or went back"),
        }
        if self.fanout.is_empty() {
            self.unwatch_if_idle();
        } else {
            self.start_watch(ctx);
        }
    }

    /// Ends every stream: their positions belong to a log that is gone or
    /// went back; their resumes get the 416 treatment.
    fn end_streams(&mut self, why: &str) {
        tracing::warn!(topic = %self.name, "{why}; ending its streams");
        self.fanout.clear_tail();
        for (_, port) in self.fanout.drain() {
            port.do_send(ToSession::End(EndReason::Gap));
        }
    }

    /// Adopts fresh bounds of a log that was wiped and recreated meanwhile.
    pub(super) fn adopt_if_reset(&mut self, fresh: &TopicBounds, ctx: &mut Context<Self>) {
        if self.log.is_reset(fresh) {
            self.adopt(fresh.clone(), ctx);
        }
    }

    /// Checks the log in the store (with a shared store another instance
    /// can delete it, or a `FLUSHALL` wipe it): a log recreated under
    /// another epoch is adopted and the streams of the old one end; a log
    /// that is gone is let go of, its streams end, and the topic does not
    /// create it again until it is used.
    pub(super) fn check_epoch(&mut self, ctx: &mut Context<Self>) {
        let Some(ours) = self.log.bounds().cloned() else {
            return;
        };
        let epoch = ours.epoch.clone();
        let (store, name) = (self.store.clone(), self.name.clone());
        let incarnation = self.incarnation;
        // Whether the event applied last is still the store's at its
        // position: only worth a read while streams depend on it.
        let watched = !self.fanout.is_empty() && ours.latest_seq > 0;
        ctx.spawn(
            async move {
                match store.bounds(&name).await {
                    Ok(b) if b.epoch == epoch && b.latest_seq < ours.latest_seq => {
                        Checked::Rewound(b)
                    }
                    Ok(b) if b.epoch == epoch && watched => {
                        let at = store.read(&name, ours.latest_seq - 1, 1).await;
                        match at.ok().as_ref().and_then(|a| a.first()) {
                            Some(e)
                                if e.seq == ours.latest_seq && e.time_ms != ours.latest_time_ms =>
                            {
                                Checked::Rewound(b)
                            }
                            _ => Checked::Same,
                        }
                    }
                    Ok(b) if b.epoch == epoch => Checked::Same,
                    // Opened, not just read: a shared store learns the
                    // epoch its appends must name.
                    Ok(_) => match store.open_topic(&name).await {
                        Ok(fresh) => Checked::Reset(fresh),
                        Err(_) => Checked::Same,
                    },
                    Err(StoreError::UnknownTopic) => Checked::Gone,
                    // Store down: nothing to learn now.
                    Err(_) => Checked::Same,
                }
            }
            .into_actor(self)
            .map(move |checked, act, ctx| {
                if act.incarnation != incarnation {
                    return;
                }
                match checked {
                    Checked::Same => {}
                    Checked::Reset(fresh) => act.adopt_if_reset(&fresh, ctx),
                    Checked::Rewound(b) => {
                        act.log.adopt_rewound(b);
                        act.end_streams("stored log went back under this topic");
                        act.unwatch_if_idle();
                    }
                    // With appends in flight (they will fail: the store
                    // refuses a log it does not hold) or a delete waiting,
                    // those retire the log; an append answered meanwhile
                    // needs the log's epoch.
                    Checked::Gone if act.appends.in_flight() > 0 || !act.deletes.is_empty() => {}
                    Checked::Gone => {
                        tracing::info!(
                            topic = %act.name,
                            "topic log is gone from the store (deleted through another instance, \
                             or wiped); ending its streams"
                        );
                        act.retire(EndReason::Deleted, ctx);
                    }
                }
            }),
        );
    }
}

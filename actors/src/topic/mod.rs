//! TopicActor: owns one topic. A thin shell over three plain parts, each
//! with one job:
//!
//! - [`append`]: the append pipeline (bounded queue, coalesced appends,
//!   answers in ticket order);
//! - [`fanout`]: the tail of recent events and the subscribers, under the
//!   high/low watermark handshake each [`Subscription`] keeps;
//! - [`follow`]: the topic's view of its log in the store (bounds, epochs,
//!   other instances' appends).
//!
//! [`external`] holds the actor's side of other instances' appends (the
//! store's watch, fills from the store).
//!
//! The actor performs the store calls and the messages they ask for;
//! [`retire`] holds what it does when its log goes away (a delete, or a log
//! found gone or reset in the store); [`release`], how an idle topic (or
//! one whose log cannot be opened, with nobody waiting) lets go of all it
//! holds.

pub(crate) mod append;
mod config;
mod error;
mod external;
pub(crate) mod fanout;
pub(crate) mod follow;
mod release;
mod retire;

use std::{sync::Arc, time::Duration};

use actix::prelude::*;
use tokio::sync::oneshot;

pub use append::Full;
pub use config::TopicConfig;
pub use error::{DeleteError, PublishError, PublishReply, SubscribeError};
pub use follow::{Start, Subscribed};

use crate::{
    cursor::monotonic_time,
    event::{AppendOutcome, NewEvent, StoredEvent},
    messages::{SessionPort, ToSession, ToTopic},
    metrics::metrics,
    sse::{frame_events, FramedEvent},
    store::SharedStore,
    subscription::Subscription,
};
use append::{AppendLimits, AppendPipeline, Finished, InFlight};
use fanout::{Fanout, FanoutLimits, Order};
use follow::{Apply, BoundsReads, Follower};
pub(crate) use release::Home;
use release::Idle;
pub(crate) use retire::Delete;

/// Pause before reloading a topic whose store did not answer.
const RELOAD_BACKOFF: Duration = Duration::from_millis(500);
/// How often a topic checks that its log was not wiped under it (with a
/// shared store another process can do that, e.g. a Redis `FLUSHALL`).
const EPOCH_CHECK: Duration = Duration::from_secs(5);

/// How a publisher is answered.
pub(crate) type PublishReplyTx = oneshot::Sender<Result<PublishReply, PublishError>>;

/// Publisher → topic: store these events, then answer on `reply`.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Publish {
    pub events: Vec<NewEvent>,
    pub reply: PublishReplyTx,
}

/// Broker → topic: register a subscriber.
#[derive(Message)]
#[rtype(result = "Result<Subscribed, SubscribeError>")]
pub(crate) struct Subscribe {
    pub sub: Arc<Subscription>,
    pub port: SessionPort,
    pub start: Start,
    /// Start from the oldest retained event instead of failing with a gap.
    pub resume_on_gap: bool,
}

/// The actor that owns one topic.
pub struct TopicActor {
    name: Arc<str>,
    store: SharedStore,
    appends: AppendPipeline<PublishReplyTx>,
    fanout: Fanout<SessionPort>,
    log: Follower,
    bounds_reads: BoundsReads,
    /// A flush waits for the mailbox to drain (see `schedule_flush`).
    flush_scheduled: bool,
    /// The store's watch (another instance's appends) is registered; it is
    /// only while there are subscribers, so an instance tails just the
    /// topics its clients read.
    watching: bool,
    mailbox_capacity: usize,
    /// Deletes asked for and not answered yet: no append starts while one
    /// waits, and the store's delete runs once none is in flight.
    deletes: Vec<retire::DeleteReplyTx>,
    /// The log is gone (deleted here or by another instance) and nobody
    /// used the topic since: no bounds, nothing watched, and the store is
    /// not asked to open the topic (which would create it again) until a
    /// publish or a subscription comes.
    dormant: bool,
    /// Bumped whenever the topic lets go of its log, so that the answer of
    /// a store call made before (a bounds read, a fill) is not taken for
    /// one about the log that follows.
    incarnation: u64,
    /// The log could not be opened and nobody waited: opened again by the
    /// next publish or subscription.
    unopened: bool,
    /// When the topic was last used, and its release.
    idle: Idle,
}

impl TopicActor {
    /// A topic actor for `name`; it loads its bounds from the store on start.
    pub(crate) fn new(name: Arc<str>, store: SharedStore, cfg: &TopicConfig, home: Home) -> Self {
        TopicActor {
            name,
            store,
            appends: AppendPipeline::new(AppendLimits {
                max_requests: cfg.mailbox_capacity,
                max_events: cfg.max_pending_events,
                max_coalesce: cfg.max_coalesce_events,
            }),
            fanout: Fanout::new(FanoutLimits {
                tail_events: cfg.tail_events,
                tail_bytes: cfg.tail_bytes,
                chunk_events: cfg.watermarks.high_events as usize,
            }),
            log: Follower::default(),
            bounds_reads: BoundsReads::default(),
            flush_scheduled: false,
            watching: false,
            mailbox_capacity: cfg.mailbox_capacity,
            deletes: Vec::new(),
            dormant: false,
            incarnation: 0,
            unopened: false,
            idle: Idle::new(home, cfg.idle_release),
        }
    }

    /// Sends what the fan-out asked for.
    fn dispatch(&mut self, orders: Vec<Order>) {
        for order in orders {
            match order {
                // At most one catch-up or end is in flight per session (the
                // subscription's flow state): a control message, not dropped.
                Order::CatchUp(id) => {
                    if let Some(p) = self.fanout.port(id) {
                        p.do_send(ToSession::CatchUp);
                    }
                }
                Order::End(id, reason) => {
                    if let Some(p) = self.fanout.port(id) {
                        p.do_send(ToSession::End(reason));
                    }
                }
            }
        }
    }

    fn feed(&mut self, id: u64) {
        let Some(latest) = self.log.latest() else {
            return;
        };
        let order = self.fanout.feed(id, latest);
        self.dispatch(order.into_iter().collect());
    }

    fn load_bounds(&mut self, ctx: &mut Context<Self>) {
        let store = self.store.clone();
        let name = self.name.clone();
        ctx.wait(
            async move { store.open_topic(&name).await }
                .into_actor(self)
                .map(|res, act, ctx| match res {
                    Ok(b) => {
                        act.adopt(b, ctx);
                        let latest = act.log.latest().expect("just adopted");
                        let orders = act.fanout.feed_all(latest);
                        act.dispatch(orders);
                        act.flush(ctx);
                    }
                    Err(e) => {
                        // Nothing of what waits was attempted: say so now
                        // rather than keep the publishers hanging.
                        for reply in act.appends.fail_pending() {
                            let _ = reply.send(Err(PublishError::Store(e.clone())));
                        }
                        if act.fanout.is_empty() {
                            // Nobody waits: no retry for nobody. The next
                            // publish or subscription opens it again.
                            tracing::warn!(topic = %act.name, error = %e, "cannot open topic");
                            act.unopened = true;
                            act.release(ctx, "cannot be opened");
                            return;
                        }
                        // Store down: keep serving the streams (they keep
                        // their heartbeats) and try again soon.
                        tracing::warn!(topic = %act.name, error = %e, "cannot open topic; retrying");
                        ctx.run_later(RELOAD_BACKOFF, |act, ctx| {
                            // A delete may have retired the log meanwhile.
                            if !act.dormant {
                                act.load_bounds(ctx);
                            }
                        });
                    }
                }),
        );
    }

    /// Starts coalesced appends of everything waiting, as many as the
    /// store takes at once.
    fn flush(&mut self, ctx: &mut Context<Self>) {
        // A delete waits for the appends in flight: none starts meanwhile.
        if !self.deletes.is_empty() {
            return;
        }
        let Some(b) = self.log.bounds() else { return };
        let time_ms = monotonic_time(b.latest_time_ms);
        let limit = InFlight {
            max: self.store.max_appends_in_flight(),
            sequenced_alone: self.store.appends_may_reorder(),
        };
        while let Some((ticket, batch)) = self.appends.start(limit) {
            self.start_append(ticket, batch, time_ms, ctx);
        }
    }

    /// Hands one append to the store; its publishers are answered when it
    /// and every append started before it are done.
    fn start_append(
        &mut self,
        ticket: u64,
        batch: Vec<NewEvent>,
        time_ms: i64,
        ctx: &mut Context<Self>,
    ) {
        let append = self
            .store
            .clone()
            .start_append(self.name.clone(), batch, time_ms);
        ctx.spawn(append.into_actor(self).map(move |res, act, ctx| {
            let ok = res.is_ok();
            let finished = act.appends.complete(ticket, res);
            // The next append (publishes that came meanwhile) goes to the
            // store first, so its write and fsync overlap with answering
            // these publishers and fanning their events out. A failed
            // append stops the actor instead.
            if ok {
                act.flush(ctx);
            }
            for f in finished {
                act.finish_append(f, ctx);
            }
            act.delete_when_idle(ctx);
            act.idle.touch();
        }));
    }

    /// Starts an append once the mailbox is drained, so that every publish
    /// already waiting there joins it.
    fn schedule_flush(&mut self, ctx: &mut Context<Self>) {
        if self.flush_scheduled || self.appends.in_flight() >= self.store.max_appends_in_flight() {
            return;
        }
        self.flush_scheduled = true;
        ctx.spawn(ActorFutureExt::map(
            fut::ready(()),
            |(), act: &mut Self, ctx| {
                act.flush_scheduled = false;
                act.flush(ctx);
            },
        ));
    }

    fn finish_append(&mut self, (res, waiters): Finished<PublishReplyTx>, ctx: &mut Context<Self>) {
        let outcomes = match res {
            Ok(o) => o,
            Err(e) => {
                metrics().store_errors.inc();
                tracing::warn!(topic = %self.name, error = %e, "append failed");
                for (_, reply) in waiters {
                    let _ = reply.send(Err(PublishError::Store(e.clone())));
                }
                // Our view of the log may be stale now: let the supervisor
                // restart us, which reloads the bounds from the store.
                ctx.stop();
                return;
            }
        };
        let epoch = self.log.epoch().expect("bounds loaded").clone();
        let duplicates = outcomes
            .iter()
            .filter(|o| matches!(o, AppendOutcome::Duplicate(_)))
            .count();
        metrics().dedup_hits.inc_by(duplicates as u64);
        let stored: Vec<StoredEvent> = outcomes
            .iter()
            .filter_map(|o| match o {
                AppendOutcome::Stored(ev) => Some(ev.clone()),
                _ => None,
            })
            .collect();
        metrics().published.inc_by(stored.len() as u64);
        let mut it = outcomes.into_iter();
        for (n, reply) in waiters {
            let mine: Vec<AppendOutcome> = it.by_ref().take(n).collect();
            let _ = reply.send(Ok(PublishReply {
                epoch: epoch.clone(),
                outcomes: mine,
            }));
        }
        self.apply_stored(stored, ctx);
    }

    /// Makes stored events live, strictly in log order: frames them once
    /// (the tail and every subscriber share the buffer) and fans them out.
    fn apply_stored(&mut self, events: Vec<StoredEvent>, ctx: &mut Context<Self>) {
        match self.log.apply(&events) {
            Apply::Nothing => {}
            Apply::Fill => self.fill(ctx),
            Apply::Fresh { from } => {
                let epoch = self.log.epoch().expect("applied").clone();
                let batch: Arc<[FramedEvent]> = frame_events(&events[from..], &epoch).into();
                let orders = self.fanout.publish(&batch);
                self.dispatch(orders);
            }
        }
    }
}

impl Actor for TopicActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(self.mailbox_capacity);
        self.idle.started();
        if self.idle.released {
            self.stop_released(ctx);
            return;
        }
        // A delete that waited (for appends, one of which failed and
        // restarted the actor) runs now; it retires the log, so loading it
        // first would be for nothing. A dormant topic opens nothing.
        if !self.deletes.is_empty() {
            self.delete_when_idle(ctx);
        } else if !self.dormant {
            self.load_bounds(ctx);
        }
        ctx.run_interval(EPOCH_CHECK, |act, ctx| {
            act.check_epoch(ctx);
            // Subscribers that vanished with a failed delivery leave no
            // Unsubscribe behind.
            act.unwatch_if_idle();
        });
        if let Some(every) = self.idle.check_every() {
            ctx.run_interval(every, |act, ctx| act.release_if_idle(ctx));
        }
    }
}

impl Supervised for TopicActor {
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        metrics().actor_restarts.inc();
        tracing::warn!(topic = %self.name, "topic actor restarting");
        // `started` runs again and reloads the bounds; subscribers stay and
        // are fed from their positions once the bounds are back. Bounds stay
        // until then, so a new epoch is noticed. The appends in flight were
        // dropped with the context: their publishers get an error, and the
        // reloaded bounds say what was stored.
        self.appends.restart();
        self.flush_scheduled = false;
        self.log.restart();
        self.fanout.hold_all();
    }
}

impl Handler<Publish> for TopicActor {
    type Result = ();

    fn handle(&mut self, msg: Publish, ctx: &mut Context<Self>) {
        self.idle.arrived();
        // The mailbox bound alone is not enough: publishes leave it at once
        // for the pipeline's queue, so that is bounded too.
        match self.appends.admit(msg.events, msg.reply) {
            Ok(()) if self.dormant => self.wake(ctx),
            Ok(()) if self.unopened => {
                self.unopened = false;
                self.load_bounds(ctx);
            }
            Ok(()) => self.schedule_flush(ctx),
            Err((full, reply)) => {
                metrics()
                    .publish_rejected
                    .with_label_values(&["overloaded"])
                    .inc();
                let _ = reply.send(Err(PublishError::QueueFull(full)));
            }
        }
    }
}

impl Handler<Subscribe> for TopicActor {
    type Result = ResponseActFuture<Self, Result<Subscribed, SubscribeError>>;

    fn handle(&mut self, msg: Subscribe, ctx: &mut Context<Self>) -> Self::Result {
        self.idle.arrived();
        // A subscription creates a topic whose log is gone, as a publish does.
        if self.dormant {
            self.wake(ctx);
        } else if self.unopened {
            self.unopened = false;
            self.load_bounds(ctx);
        }
        let incarnation = self.incarnation;
        // A live start needs nothing from the store while this actor follows
        // the log. Any other start asks the store: retention moves the start
        // of the log there, so a trimmed cursor is refused here rather than
        // found missing later; and an actor that did not watch may have
        // missed other instances' appends.
        let live =
            self.watching && self.log.bounds().is_some() && matches!(msg.start, Start::Latest);
        let read = (!live).then(|| self.bounds_reads.read(&self.store, &self.name));
        Box::pin(
            async move {
                match read {
                    Some(read) => Some(read.await),
                    None => None,
                }
            }
            .into_actor(self)
            .map(move |res, act, ctx| {
                // The topic let go of its log meanwhile: unless this read
                // names the log followed now, it is about the old one (and a
                // live start has no log to start in). The client retries.
                if act.incarnation != incarnation {
                    let current = matches!((&res, act.log.epoch()),
                        (Some(Ok(fresh)), Some(e)) if fresh.epoch == *e);
                    if !current {
                        return Err(SubscribeError::Restarting);
                    }
                }
                let mut store_latest = None;
                if let Some(res) = res {
                    let fresh = res.map_err(SubscribeError::Store)?;
                    act.adopt_if_reset(&fresh, ctx);
                    if act.log.bounds().is_none() {
                        return Err(SubscribeError::Restarting);
                    }
                    act.log.refresh_first(&fresh);
                    let (_, fill) = act.log.learn_latest(&fresh, act.appends.in_flight());
                    if fill {
                        act.fill(ctx);
                    }
                    // The store's latest in the log followed here, applied
                    // or not yet (another instance's appends on their way).
                    store_latest = (act.log.epoch() == Some(&fresh.epoch))
                        .then_some((fresh.latest_seq, fresh.latest_time_ms));
                }
                let start = act
                    .log
                    .check_start(&msg.start, msg.resume_on_gap, store_latest)
                    .map_err(SubscribeError::Gap)?;
                let id = msg.sub.id;
                msg.sub.start_after(start.after_seq, start.after_time_ms);
                act.fanout.add(msg.sub, msg.port);
                if !act.watching {
                    act.start_watch(ctx);
                }
                act.feed(id);
                Ok(start)
            }),
        )
    }
}

impl Handler<ToTopic> for TopicActor {
    type Result = ();

    fn handle(&mut self, msg: ToTopic, _ctx: &mut Context<Self>) {
        match msg {
            ToTopic::Rejoin(id) => self.feed(id),
            ToTopic::Unsubscribe(id) => {
                self.fanout.remove(id);
                self.unwatch_if_idle();
                // Idle from the last subscriber's leaving on.
                self.idle.touch();
            }
        }
    }
}

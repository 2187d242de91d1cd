//! TopicActor: owns one topic. Appends through the store (coalescing every
//! publish waiting in its mailbox into one append), keeps a bounded tail of
//! recent framed events, and fans each stored batch out to its subscribers
//! under the high/low watermark handshake.

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use actix::prelude::*;
use futures_util::future::{FutureExt, LocalBoxFuture, Shared};
use tokio::sync::oneshot;

pub use crate::store::Gap;
use crate::{
    body::{queue_events, Queued},
    cursor::{monotonic_time, Cursor, Epoch},
    event::{AppendOutcome, NewEvent, StoredEvent},
    link::SessionLink,
    metrics::metrics,
    session::{CatchUp, EndReason, SessionActor, Terminate},
    sse::{frame_events, FramedEvent},
    store::{ExternalAppends, SharedStore, StoreError, TopicBounds},
};

/// Pause before reloading a topic whose store did not answer.
const RELOAD_BACKOFF: Duration = Duration::from_millis(500);
/// How often a topic checks that its log was not wiped under it (with a
/// shared store another process can do that, e.g. a Redis `FLUSHALL`).
const EPOCH_CHECK: Duration = Duration::from_secs(5);
/// Events read from the store per round when filling a hole.
const FILL_PAGE: usize = 1000;

/// A read of the topic's bounds from the store, awaited by many subscribes.
type SharedBounds = Shared<LocalBoxFuture<'static, Result<TopicBounds, StoreError>>>;

/// The next read of the bounds from the store. Every caller is answered by
/// a read that started after it asked (so a log wiped or trimmed just before
/// is seen), yet a burst of thousands of reconnects costs a few store calls,
/// not one each: callers that arrive while a read is in flight share the one
/// queued behind it.
struct BoundsRead {
    started: Arc<AtomicBool>,
    read: SharedBounds,
}

/// Tunables of a topic actor.
#[derive(Clone, Debug)]
pub struct TopicConfig {
    /// Most recent events kept framed in memory for fan-out and short catch-ups.
    pub tail_events: usize,
    /// Byte bound of the same tail.
    pub tail_bytes: usize,
    /// Outstanding events at which a subscriber stops receiving live events.
    pub high_events: u64,
    /// Outstanding bytes at which a subscriber stops receiving live events.
    pub high_bytes: u64,
    /// Outstanding events at or below which a paused subscriber rejoins.
    pub low_events: u64,
    /// Outstanding bytes at or below which a paused subscriber rejoins.
    pub low_bytes: u64,
    /// Most events taken from the mailbox into one store append.
    pub max_coalesce_events: usize,
    /// Capacity of the topic mailbox and of its queue of publishes waiting
    /// for the store; past it a publish answers 503.
    pub mailbox_capacity: usize,
    /// Most events waiting for the store; past it a publish answers 503.
    pub max_pending_events: usize,
}

impl Default for TopicConfig {
    fn default() -> Self {
        TopicConfig {
            tail_events: 4096,
            tail_bytes: 8 << 20,
            high_events: 1024,
            high_bytes: 1 << 20,
            low_events: 256,
            low_bytes: 256 << 10,
            max_coalesce_events: 10_000,
            mailbox_capacity: 1024,
            max_pending_events: 100_000,
        }
    }
}

/// An append's outcome and the publishers waiting for it (with how many
/// events each sent).
type Appended = (
    Result<Vec<AppendOutcome>, StoreError>,
    Vec<(usize, oneshot::Sender<Result<PublishReply, StoreError>>)>,
);

/// The result of a publish, in the order of the published events.
#[derive(Debug)]
pub struct PublishReply {
    /// The topic's log epoch, to render cursors.
    pub epoch: Epoch,
    /// One outcome per published event.
    pub outcomes: Vec<AppendOutcome>,
}

/// Publisher → topic: store these events, then answer on `reply`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Publish {
    /// Events in order.
    pub events: Vec<NewEvent>,
    /// Where the outcome goes once the events are durable (or failed).
    pub reply: oneshot::Sender<Result<PublishReply, StoreError>>,
}

/// Where a subscription starts.
#[derive(Clone, Debug)]
pub enum Start {
    /// After this cursor.
    After(Cursor),
    /// At the oldest retained event.
    Earliest,
    /// At the next event published.
    Latest,
}

/// Why a subscription was refused.
#[derive(Debug, Clone)]
pub enum SubscribeError {
    /// The cursor cannot be resumed.
    Gap(Box<Gap>),
    /// The store could not tell the topic's bounds.
    Store(StoreError),
}

/// Session → topic: register a subscriber.
#[derive(Message)]
#[rtype(result = "Result<Subscribed, SubscribeError>")]
pub struct Subscribe {
    /// The session that will receive `Deliver`/`CatchUp`.
    pub session: Addr<SessionActor>,
    /// Its shared progress counters.
    pub link: Arc<SessionLink>,
    /// Requested start.
    pub start: Start,
    /// Start from the oldest retained event instead of failing with a `Gap`.
    pub resume_on_gap: bool,
}

/// A registered subscription.
#[derive(Debug, Clone)]
pub struct Subscribed {
    /// The log's epoch.
    pub epoch: Epoch,
    /// The stream delivers every event after this sequence.
    pub after_seq: u64,
    /// Set when the requested cursor was not resumable and `resume_on_gap`
    /// made the subscription start at the oldest retained event instead.
    pub gap: Option<Gap>,
}

/// Session → topic: the session is gone.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Unsubscribe {
    /// Connection id.
    pub id: u64,
}

/// Session → topic: resume live delivery. Sent when a paused session drained
/// to its low watermark (`after_seq` = None) or finished a catch-up from the
/// store up to `after_seq`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Ready {
    /// Connection id.
    pub id: u64,
    /// Last sequence written by a store catch-up.
    pub after_seq: Option<u64>,
}

/// Asks for the topic's bounds and subscriber count.
#[derive(Message)]
#[rtype(result = "Result<(TopicBounds, usize), StoreError>")]
pub struct GetInfo;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SubState {
    /// Receives every new batch.
    Live,
    /// Too much outstanding; waits for `Ready`.
    Paused,
    /// Reading from the store; waits for `Ready` with its position.
    CatchingUp,
}

struct Subscriber {
    session: Addr<SessionActor>,
    link: Arc<SessionLink>,
    state: SubState,
}

/// Queues `batch` on a subscriber's outbox; false when the subscriber is
/// gone (or must go: a hole before the batch would break the contract, so
/// its stream ends and the client resumes from its last id).
fn queued(sub: &Subscriber, batch: &Arc<[FramedEvent]>) -> bool {
    match queue_events(&sub.link, batch, true) {
        Queued::Yes | Queued::Busy => true,
        Queued::Closed => false,
        Queued::Gap { expected, got } => {
            tracing::error!(conn = sub.link.id, expected, got, "delivery gap");
            sub.session.do_send(Terminate(EndReason::Gap));
            false
        }
    }
}

/// The actor that owns one topic.
pub struct TopicActor {
    name: Arc<str>,
    store: SharedStore,
    cfg: TopicConfig,
    bounds: Option<TopicBounds>,
    tail: VecDeque<FramedEvent>,
    tail_bytes: usize,
    subscribers: HashMap<u64, Subscriber>,
    pending: VecDeque<Publish>,
    /// Events in `pending`.
    pending_events: usize,
    /// Appends started and not yet answered by the store.
    in_flight: usize,
    /// A flush waits for the mailbox to drain (see `schedule_flush`).
    flush_scheduled: bool,
    /// The outcomes of the appends in flight, oldest first, `None` until
    /// the store answers. They are taken from the front only: publishers are
    /// answered, and events applied, in log order.
    appended: VecDeque<Option<Appended>>,
    /// Number of appends started before `appended[0]`'s.
    appended_base: u64,
    /// Highest sequence known to be stored (by us or another instance).
    known_latest: u64,
    /// A fill from the store is in flight.
    filling: bool,
    /// The latest read of the bounds from the store.
    store_bounds: Option<BoundsRead>,
    /// The store's watch (another instance's appends) is registered; it is
    /// only while there are subscribers, so an instance tails just the
    /// topics its clients read.
    watching: bool,
}

impl TopicActor {
    /// A topic actor for `name`; it loads its bounds from the store on start.
    pub fn new(name: Arc<str>, store: SharedStore, cfg: TopicConfig) -> Self {
        TopicActor {
            name,
            store,
            cfg,
            bounds: None,
            tail: VecDeque::new(),
            tail_bytes: 0,
            subscribers: HashMap::new(),
            pending: VecDeque::new(),
            pending_events: 0,
            in_flight: 0,
            flush_scheduled: false,
            appended: VecDeque::new(),
            appended_base: 0,
            known_latest: 0,
            filling: false,
            store_bounds: None,
            watching: false,
        }
    }

    /// The topic's bounds as the store has them (see `BoundsRead`).
    fn read_store_bounds(&mut self) -> SharedBounds {
        if let Some(next) = &self.store_bounds {
            if !next.started.load(Ordering::Acquire) {
                return next.read.clone();
            }
        }
        let previous = self.store_bounds.take().map(|r| r.read);
        let started = Arc::new(AtomicBool::new(false));
        let (store, name, flag) = (self.store.clone(), self.name.clone(), started.clone());
        let read = async move {
            if let Some(previous) = previous {
                let _ = previous.await;
            }
            flag.store(true, Ordering::Release);
            store.open_topic(&name).await
        }
        .boxed_local()
        .shared();
        self.store_bounds = Some(BoundsRead {
            started,
            read: read.clone(),
        });
        read
    }

    /// Follows the appends of other instances (a no-op on a private store).
    fn start_watch(&mut self, ctx: &mut Context<Self>) {
        let Some(b) = &self.bounds else { return };
        // From what this actor has applied: whatever was stored after it
        // while nobody watched arrives through the watch (or a fill).
        self.store.watch(
            &self.name,
            &b.epoch,
            b.latest_seq,
            ctx.address().recipient(),
        );
        self.watching = true;
    }

    fn unwatch_if_idle(&mut self) {
        if self.watching && self.subscribers.is_empty() {
            self.store.unwatch(&self.name);
            self.watching = false;
        }
    }

    /// Learns of events stored by others while this actor did not watch and
    /// fetches them. Returns the store's latest sequence if it is one this
    /// actor will apply next (same log, no own append in flight whose events
    /// are not ours to show before they are acknowledged).
    fn learn_latest(&mut self, fresh: &TopicBounds, ctx: &mut Context<Self>) -> Option<u64> {
        let b = self.bounds.as_ref()?;
        if self.in_flight > 0 || fresh.epoch != b.epoch {
            return None;
        }
        if fresh.latest_seq > self.known_latest {
            self.known_latest = fresh.latest_seq;
            if !self.filling {
                self.fill(ctx);
            }
        }
        Some(fresh.latest_seq)
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
                        let ids: Vec<u64> = act.subscribers.keys().copied().collect();
                        for id in ids {
                            act.feed(id);
                        }
                        act.flush(ctx);
                    }
                    Err(e) => {
                        // Store down: keep serving (publishes get 503,
                        // streams keep their heartbeats) and try again soon.
                        tracing::warn!(topic = %act.name, error = %e, "cannot open topic; retrying");
                        // Nothing of what waits was attempted: say so now
                        // rather than keep the publishers hanging.
                        for p in act.pending.drain(..) {
                            let _ = p.reply.send(Err(e.clone()));
                        }
                        act.pending_events = 0;
                        ctx.run_later(RELOAD_BACKOFF, |act, ctx| act.load_bounds(ctx));
                    }
                }),
        );
    }

    /// Takes freshly loaded bounds. A new epoch means the log was wiped:
    /// every subscriber's position belongs to the old log, so their streams
    /// end and their resumes get the 416 treatment.
    fn adopt(&mut self, b: TopicBounds, ctx: &mut Context<Self>) {
        if self.bounds.as_ref().is_some_and(|old| old.epoch != b.epoch) {
            tracing::warn!(topic = %self.name, "topic log was reset; ending its streams");
            for sub in self.subscribers.values() {
                sub.session.do_send(Terminate(EndReason::Gap));
            }
            self.subscribers.clear();
        }
        match self.bounds.take() {
            // A restart over the same log (after a store error): what this
            // actor applied stays applied and its tail stays, so subscribers
            // go on from memory instead of all falling back to the store at
            // once (which, with a struggling store, makes the next error more
            // likely). Whatever the store took meanwhile is fetched.
            Some(old)
                if old.epoch == b.epoch
                    && old.latest_seq <= b.latest_seq
                    && b.first_seq <= old.latest_seq + 1 =>
            {
                self.known_latest = self.known_latest.max(b.latest_seq);
                self.bounds = Some(TopicBounds {
                    latest_seq: old.latest_seq,
                    latest_time_ms: old.latest_time_ms,
                    ..b
                });
                self.fill(ctx);
            }
            _ => {
                // The tail restarts empty just past the latest stored event;
                // older positions are served from the store.
                self.tail.clear();
                self.tail_bytes = 0;
                self.known_latest = b.latest_seq;
                self.bounds = Some(b);
            }
        }
        if self.subscribers.is_empty() {
            self.unwatch_if_idle();
        } else {
            self.start_watch(ctx);
        }
    }

    /// Starts one coalesced append of everything waiting, unless as many
    /// as the store takes at once are in flight.
    fn flush(&mut self, ctx: &mut Context<Self>) {
        if self.in_flight >= self.store.max_appends_in_flight() || self.pending.is_empty() {
            return;
        }
        let Some(bounds) = &self.bounds else { return };
        let mut batch = Vec::new();
        let mut waiters = Vec::new();
        while let Some(p) = self.pending.front() {
            if !batch.is_empty() && batch.len() + p.events.len() > self.cfg.max_coalesce_events {
                break;
            }
            let p = self.pending.pop_front().expect("front exists");
            self.pending_events -= p.events.len();
            waiters.push((p.events.len(), p.reply));
            batch.extend(p.events);
        }
        self.in_flight += 1;
        let ticket = self.appended_base + self.appended.len() as u64;
        self.appended.push_back(None);
        let time_ms = monotonic_time(bounds.latest_time_ms);
        let append = self
            .store
            .clone()
            .start_append(self.name.clone(), batch, time_ms);
        ctx.spawn(append.into_actor(self).map(move |res, act, ctx| {
            act.in_flight -= 1;
            let ok = res.is_ok();
            act.appended[(ticket - act.appended_base) as usize] = Some((res, waiters));
            // The next append (publishes that came meanwhile) goes to the
            // store first, so its write and fsync overlap with answering
            // these publishers and fanning their events out. A failed append
            // stops the actor instead.
            if ok {
                act.flush(ctx);
            }
            while let Some(Some(_)) = act.appended.front() {
                let (res, waiters) = act.appended.pop_front().flatten().expect("answered");
                act.appended_base += 1;
                let failed = res.is_err();
                act.finish_append(res, waiters, ctx);
                if failed {
                    break;
                }
            }
        }));
    }

    /// Starts an append once the mailbox is drained, so that every publish
    /// already waiting there joins it.
    fn schedule_flush(&mut self, ctx: &mut Context<Self>) {
        if self.flush_scheduled || self.in_flight >= self.store.max_appends_in_flight() {
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

    fn finish_append(
        &mut self,
        res: Result<Vec<AppendOutcome>, StoreError>,
        waiters: Vec<(usize, oneshot::Sender<Result<PublishReply, StoreError>>)>,
        ctx: &mut Context<Self>,
    ) {
        let outcomes = match res {
            Ok(o) => o,
            Err(e) => {
                metrics().store_errors.inc();
                tracing::warn!(topic = %self.name, error = %e, "append failed");
                for (_, reply) in waiters {
                    let _ = reply.send(Err(e.clone()));
                }
                // Our view of the log may be stale now: let the supervisor
                // restart us, which reloads the bounds from the store.
                ctx.stop();
                return;
            }
        };
        let epoch = self.bounds.as_ref().expect("bounds loaded").epoch.clone();
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

    /// Makes stored events live: frames them, extends the tail and fans them
    /// out, strictly in log order. Events this actor already applied are
    /// skipped (with a shared store, its own appends also come back through
    /// the store's watch); a hole before them (events another instance
    /// stored that have not arrived yet) is filled from the store first.
    fn apply_stored(&mut self, events: Vec<StoredEvent>, ctx: &mut Context<Self>) {
        let Some(last) = events.last() else { return };
        self.known_latest = self.known_latest.max(last.seq);
        if self.filling {
            return;
        }
        let Some(bounds) = self.bounds.as_mut() else {
            return;
        };
        // In log order, so what is new is a suffix.
        let start = events.partition_point(|e| e.seq <= bounds.latest_seq);
        let fresh = &events[start..];
        let Some(first) = fresh.first() else { return };
        if first.seq != bounds.latest_seq + 1 {
            return self.fill(ctx);
        }
        for ev in fresh {
            if bounds.latest_seq + 1 == bounds.first_seq {
                bounds.first_time_ms = ev.time_ms;
            }
            bounds.latest_seq = ev.seq;
            bounds.latest_time_ms = ev.time_ms;
        }
        // One buffer for the batch's frames: the tail and every subscriber
        // share slices of it.
        let batch: Arc<[FramedEvent]> = frame_events(fresh, &bounds.epoch).into();
        self.push_tail(&batch);
        self.fan_out(&batch);
    }

    /// Reads from the store until this actor has applied everything it
    /// knows was stored.
    fn fill(&mut self, ctx: &mut Context<Self>) {
        let Some(bounds) = &self.bounds else { return };
        if bounds.latest_seq >= self.known_latest {
            self.filling = false;
            return;
        }
        self.filling = true;
        let (store, name, after) = (self.store.clone(), self.name.clone(), bounds.latest_seq);
        ctx.spawn(
            async move { store.read(&name, after, FILL_PAGE).await }
                .into_actor(self)
                .map(move |res, act, ctx| {
                    act.filling = false;
                    match res {
                        Ok(page) if !page.is_empty() => {
                            act.apply_stored(page, ctx);
                            act.fill(ctx);
                        }
                        Ok(_) => {
                            // The store has nothing more (trimmed or not yet
                            // visible): what we know of is not readable.
                            let latest = act.bounds.as_ref().map_or(0, |b| b.latest_seq);
                            act.known_latest = latest;
                        }
                        Err(e) => {
                            metrics().store_errors.inc();
                            tracing::warn!(topic = %act.name, error = %e, "cannot fill from store; restarting");
                            ctx.stop();
                        }
                    }
                }),
        );
    }

    fn push_tail(&mut self, batch: &[FramedEvent]) {
        for ev in batch {
            self.tail_bytes += ev.frame.len();
            self.tail.push_back(ev.clone());
        }
        while self.tail.len() > self.cfg.tail_events || self.tail_bytes > self.cfg.tail_bytes {
            let Some(old) = self.tail.pop_front() else {
                break;
            };
            self.tail_bytes -= old.frame.len();
        }
    }

    fn fan_out(&mut self, batch: &Arc<[FramedEvent]>) {
        let first = batch[0].seq;
        let bytes: u64 = batch.iter().map(|e| e.frame.len() as u64).sum();
        let mut lagging = Vec::new();
        let mut gone = Vec::new();
        for (id, sub) in &mut self.subscribers {
            if sub.state != SubState::Live {
                continue;
            }
            let delivered = sub.link.delivered_seq.load(Ordering::SeqCst);
            if delivered + 1 != first {
                // Not contiguous (cannot happen for a live subscriber, but
                // never risk a gap): take the careful path.
                lagging.push(*id);
                continue;
            }
            if sub.link.outstanding_events() >= self.cfg.high_events
                || sub.link.outstanding_bytes() >= self.cfg.high_bytes
            {
                lagging.push(*id);
                continue;
            }
            // Counted before it is queued: the body may take it at once.
            sub.link
                .delivered_seq
                .store(batch[batch.len() - 1].seq, Ordering::SeqCst);
            sub.link.delivered_bytes.fetch_add(bytes, Ordering::SeqCst);
            if !queued(sub, batch) {
                gone.push(*id);
            }
        }
        for id in gone {
            self.subscribers.remove(&id);
        }
        for id in lagging {
            self.pause(id);
        }
    }

    /// Stops live delivery to a subscriber until it reports `Ready`.
    fn pause(&mut self, id: u64) {
        let Some(sub) = self.subscribers.get_mut(&id) else {
            return;
        };
        if sub.state == SubState::Live {
            metrics().subscriber_pauses.inc();
        }
        sub.state = SubState::Paused;
        sub.link.lagging.store(true, Ordering::Relaxed);
        sub.link.paused.store(true, Ordering::SeqCst);
        // The session may have drained between our check and the flag: if so,
        // and it did not see the flag, resume ourselves.
        if self.below_low(&self.subscribers[&id].link)
            && self.subscribers[&id]
                .link
                .paused
                .compare_exchange(true, false, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        {
            self.feed(id);
        }
    }

    fn below_low(&self, link: &SessionLink) -> bool {
        link.outstanding_events() <= self.cfg.low_events
            && link.outstanding_bytes() <= self.cfg.low_bytes
    }

    /// Brings a subscriber from its delivered position up to live: from the
    /// tail when it covers the position, else by a store catch-up.
    fn feed(&mut self, id: u64) {
        let Some(bounds) = &self.bounds else { return };
        let latest = bounds.latest_seq;
        let Some(sub) = self.subscribers.get_mut(&id) else {
            return;
        };
        sub.state = SubState::Live;
        sub.link.lagging.store(false, Ordering::Relaxed);
        let delivered = sub.link.delivered_seq.load(Ordering::SeqCst);
        if delivered >= latest {
            return;
        }
        let tail_first = self.tail.front().map_or(latest + 1, |e| e.seq);
        if delivered + 1 < tail_first {
            sub.state = SubState::CatchingUp;
            sub.link.lagging.store(true, Ordering::Relaxed);
            if sub
                .session
                .try_send(CatchUp {
                    after_seq: delivered,
                })
                .is_err()
            {
                // Mailbox full: the session still has deliveries to write;
                // it will be fed when it reports Ready.
                sub.state = SubState::Paused;
                sub.link.paused.store(true, Ordering::SeqCst);
            }
            return;
        }
        let skip = (delivered + 1 - tail_first) as usize;
        let take = self.cfg.high_events.max(1) as usize;
        let chunk: Arc<[FramedEvent]> = self.tail.iter().skip(skip).take(take).cloned().collect();
        let last = chunk[chunk.len() - 1].seq;
        let bytes: u64 = chunk.iter().map(|e| e.frame.len() as u64).sum();
        sub.link.delivered_seq.store(last, Ordering::SeqCst);
        sub.link.delivered_bytes.fetch_add(bytes, Ordering::SeqCst);
        if !queued(sub, &chunk) {
            self.subscribers.remove(&id);
        } else if last < latest {
            self.pause(id);
        }
    }

    /// Notices a log wiped under this actor: its streams end (their resumes
    /// get the 416 treatment) and it follows the new log.
    fn check_epoch(&mut self, ctx: &mut Context<Self>) {
        let Some(epoch) = self.bounds.as_ref().map(|b| b.epoch.clone()) else {
            return;
        };
        let (store, name) = (self.store.clone(), self.name.clone());
        ctx.spawn(
            async move {
                match store.bounds(&name).await {
                    Ok(b) if b.epoch == epoch => None,
                    Ok(_) | Err(StoreError::UnknownTopic) => Some(store.open_topic(&name).await),
                    // Store down: nothing to learn now.
                    Err(_) => None,
                }
            }
            .into_actor(self)
            .map(|fresh, act, ctx| {
                if let Some(Ok(fresh)) = fresh {
                    act.adopt_if_reset(&fresh, ctx);
                }
            }),
        );
    }

    /// Adopts fresh bounds of a log that was wiped and recreated meanwhile.
    fn adopt_if_reset(&mut self, fresh: &TopicBounds, ctx: &mut Context<Self>) {
        if self.bounds.as_ref().is_some_and(|b| b.epoch != fresh.epoch) {
            self.adopt(fresh.clone(), ctx);
        }
    }

    /// Takes the start of the log from fresh store bounds; the latest
    /// position stays ours, since appends in flight are not ours to show yet.
    fn refresh_first(&mut self, fresh: &TopicBounds) {
        let Some(b) = self.bounds.as_mut() else {
            return;
        };
        if fresh.epoch == b.epoch && fresh.first_seq > b.first_seq {
            b.first_seq = fresh.first_seq.min(b.latest_seq + 1);
            b.first_time_ms = if b.first_seq > b.latest_seq {
                b.latest_time_ms
            } else {
                fresh.first_time_ms
            };
        }
    }

    /// Where a subscription starts; `store_latest` is the store's latest
    /// sequence when freshly known (this actor may not have applied it yet).
    fn check_start(
        &self,
        start: &Start,
        resume_on_gap: bool,
        store_latest: Option<u64>,
    ) -> Result<Subscribed, Box<Gap>> {
        let b = self
            .bounds
            .as_ref()
            .expect("messages wait until bounds load");
        let ok = |after_seq, gap| Subscribed {
            epoch: b.epoch.clone(),
            after_seq,
            gap,
        };
        match start {
            Start::Earliest => Ok(ok(b.first_seq - 1, None)),
            Start::Latest => Ok(ok(b.latest_seq.max(store_latest.unwrap_or(0)), None)),
            Start::After(c) => match b.resume_point(c) {
                Ok(after) => Ok(ok(after, None)),
                Err(gap) if resume_on_gap => Ok(ok(b.first_seq - 1, Some(*gap))),
                Err(gap) => Err(gap),
            },
        }
    }
}

impl Actor for TopicActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(self.cfg.mailbox_capacity);
        self.load_bounds(ctx);
        ctx.run_interval(EPOCH_CHECK, |act, ctx| {
            act.check_epoch(ctx);
            // Subscribers that vanished with a failed delivery leave no
            // Unsubscribe behind.
            act.unwatch_if_idle();
        });
    }
}

impl Supervised for TopicActor {
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        metrics().actor_restarts.inc();
        tracing::warn!(topic = %self.name, "topic actor restarting");
        // `started` runs again and reloads the bounds; subscribers stay and
        // are fed from their delivered positions once the bounds are back.
        // Bounds stay until `started` reloads them, so a new epoch is noticed.
        // The appends in flight were dropped with the context: their
        // publishers get an error, and the reloaded bounds say what was stored.
        self.in_flight = 0;
        self.flush_scheduled = false;
        self.appended_base += self.appended.len() as u64;
        self.appended.clear();
        self.filling = false;
        for sub in self.subscribers.values_mut() {
            sub.state = SubState::Paused;
        }
    }
}

impl Handler<Publish> for TopicActor {
    type Result = ();

    fn handle(&mut self, msg: Publish, ctx: &mut Context<Self>) {
        // The mailbox bound alone is not enough: publishes leave it at once
        // for `pending`, so that queue is bounded too (in requests and events).
        if self.pending.len() >= self.cfg.mailbox_capacity
            || self.pending_events + msg.events.len() > self.cfg.max_pending_events
        {
            metrics()
                .publish_rejected
                .with_label_values(&["overloaded"])
                .inc();
            let _ = msg.reply.send(Err(StoreError::Overloaded));
            return;
        }
        self.pending_events += msg.events.len();
        self.pending.push_back(msg);
        self.schedule_flush(ctx);
    }
}

impl Handler<Subscribe> for TopicActor {
    type Result = ResponseActFuture<Self, Result<Subscribed, SubscribeError>>;

    fn handle(&mut self, msg: Subscribe, _ctx: &mut Context<Self>) -> Self::Result {
        // A live start needs nothing from the store while this actor follows
        // the log. Any other start asks the store: retention moves the start
        // of the log there, so a trimmed cursor is refused here rather than
        // found missing later; and an actor that did not watch may have
        // missed other instances' appends.
        let live = self.watching && self.bounds.is_some() && matches!(msg.start, Start::Latest);
        let read = (!live).then(|| self.read_store_bounds());
        Box::pin(
            async move {
                match read {
                    Some(read) => Some(read.await),
                    None => None,
                }
            }
            .into_actor(self)
            .map(move |res, act, ctx| {
                let mut store_latest = None;
                if let Some(res) = res {
                    let fresh = res.map_err(SubscribeError::Store)?;
                    act.adopt_if_reset(&fresh, ctx);
                    if act.bounds.is_none() {
                        return Err(SubscribeError::Store(StoreError::Unavailable(
                            "topic is restarting".into(),
                        )));
                    }
                    act.refresh_first(&fresh);
                    store_latest = act.learn_latest(&fresh, ctx);
                }
                let sub = act
                    .check_start(&msg.start, msg.resume_on_gap, store_latest)
                    .map_err(SubscribeError::Gap)?;
                let id = msg.link.id;
                msg.link.start_after(sub.after_seq);
                act.subscribers.insert(
                    id,
                    Subscriber {
                        session: msg.session,
                        link: msg.link,
                        state: SubState::Live,
                    },
                );
                if !act.watching {
                    act.start_watch(ctx);
                }
                act.feed(id);
                Ok(sub)
            }),
        )
    }
}

impl Handler<Unsubscribe> for TopicActor {
    type Result = ();

    fn handle(&mut self, msg: Unsubscribe, _ctx: &mut Context<Self>) {
        self.subscribers.remove(&msg.id);
        self.unwatch_if_idle();
    }
}

impl Handler<Ready> for TopicActor {
    type Result = ();

    fn handle(&mut self, msg: Ready, _ctx: &mut Context<Self>) {
        let Some(sub) = self.subscribers.get_mut(&msg.id) else {
            return;
        };
        match (sub.state, msg.after_seq) {
            (SubState::CatchingUp, Some(after)) => {
                sub.link.delivered_seq.fetch_max(after, Ordering::SeqCst);
            }
            (SubState::Paused, None) => {}
            // A stale or duplicate Ready: the subscriber is already handled.
            _ => return,
        }
        self.feed(msg.id);
    }
}

impl Handler<GetInfo> for TopicActor {
    type Result = ResponseActFuture<Self, Result<(TopicBounds, usize), StoreError>>;

    fn handle(&mut self, _: GetInfo, _ctx: &mut Context<Self>) -> Self::Result {
        let read = self.read_store_bounds();
        Box::pin(read.into_actor(self).map(|res, act, ctx| {
            let fresh = res?;
            act.adopt_if_reset(&fresh, ctx);
            act.refresh_first(&fresh);
            let store_latest = act.learn_latest(&fresh, ctx);
            let mut b = act
                .bounds
                .clone()
                .ok_or_else(|| StoreError::Unavailable("topic is loading".into()))?;
            // Another instance's appends not applied here yet still
            // exist: show the store's latest.
            if store_latest.is_some_and(|l| l > b.latest_seq) {
                b.latest_seq = fresh.latest_seq;
                b.latest_time_ms = fresh.latest_time_ms;
            }
            Ok((b, act.subscribers.len()))
        }))
    }
}

impl Handler<ExternalAppends> for TopicActor {
    type Result = ();

    fn handle(&mut self, msg: ExternalAppends, ctx: &mut Context<Self>) {
        self.apply_stored(msg.events, ctx);
    }
}

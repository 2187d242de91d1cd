//! SessionActor: one per SSE connection. Live events do not pass through
//! it (its topic queues them on the [`Subscription`]); it catches up from
//! the store when its topic says it fell behind the tail, keeps an idle
//! stream alive, evicts a stalled one, and stops the moment the client is
//! gone.
//!
//! States: IDLE (created, not yet running) → STREAMING ⇄ RECOVERING
//! (catching up from the store) → TERMINATED.
//!
//! A stream opened with a token that expires ([`Expiry`]) ends then, in
//! either state: its last frame is `event: auth-expired` naming the last
//! event queued, so the client renews its token and resumes from there.

use std::{sync::Arc, time::Duration};

use actix::prelude::*;
use bytes::Bytes;

use crate::{
    body::BodyGone,
    catch_up::{self, CatchUpJob},
    cursor::{now_ms, rfc3339_millis, Cursor, Epoch},
    messages::{EndReason, SessionClosed, ToSession, ToTopic, TopicPort},
    metrics::metrics,
    sse::{notice_frame, AUTH_EXPIRED, KEEP_ALIVE, PROBE},
    store::SharedStore,
    subscription::{Control, Subscription},
};

/// Pause before a catch-up that met a store error tries again.
const CATCH_UP_RETRY: Duration = Duration::from_millis(500);

/// Tunables of a session.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// Idle time after which a `: keep-alive` comment is written.
    pub heartbeat: Duration,
    /// Idle time after which a 3-byte empty comment probes the socket.
    /// actix-web only notices a vanished client when a write fails
    /// (actix-web#1313), so this bounds how long a dead stream lingers.
    /// `None` disables probing.
    pub liveness_probe: Option<Duration>,
    /// Frames waiting this long without the socket taking any end the session.
    pub stall_timeout: Duration,
    /// Mailbox capacity (catch-up requests and termination only: live
    /// events go to the subscription, not through the mailbox).
    pub mailbox_capacity: usize,
}

/// When a stream's authorization ends: the `exp` of the token it was
/// opened with. Checked when the stream opens, never per event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expiry {
    /// The token's `exp` (Unix milliseconds), named in the
    /// `event: auth-expired` frame.
    pub expired_at_ms: i64,
    /// When the stream ends (Unix milliseconds): the `exp` plus the clock
    /// leeway the broker grants, the moment it would refuse the token.
    pub ends_at_ms: i64,
}

impl Expiry {
    /// The `event: auth-expired` frame of a stream whose last queued event
    /// is `(seq, time_ms)` of `epoch`. Its `id:` is that event's cursor, so
    /// a reconnect with `Last-Event-ID` resumes exactly after it (and an
    /// `EventSource` keeps it as its last event id).
    pub fn notice(&self, seq: u64, time_ms: i64, epoch: &Epoch) -> Bytes {
        let id = Cursor::new(time_ms, seq, epoch.clone()).to_string();
        let data = serde_json::json!({ "expired_at": rfc3339_millis(self.expired_at_ms) });
        notice_frame(AUTH_EXPIRED, &id, &data.to_string())
    }
}

/// Where a session's messages go.
pub(crate) struct SessionPeers {
    /// Its topic.
    pub topic: TopicPort,
    /// The broker, told when the stream closes.
    pub closed: Recipient<SessionClosed>,
}

/// Everything a session is made of.
pub(crate) struct SessionSetup {
    /// Its delivery state.
    pub sub: Arc<Subscription>,
    /// Its topic and the broker.
    pub peers: SessionPeers,
    /// Where catch-ups read.
    pub store: SharedStore,
    /// The topic log's epoch at subscription.
    pub epoch: Epoch,
    /// Resolves when the response body is dropped.
    pub gone: BodyGone,
    /// Tunables.
    pub cfg: SessionConfig,
    /// `?on_gap=resume`: a catch-up that finds events trimmed by retention
    /// says so with `event: gap` and goes on, instead of ending the stream.
    pub resume_on_gap: bool,
    /// When the token the stream was opened with expires, if it does.
    pub expiry: Option<Expiry>,
}

/// The actor behind one SSE stream.
pub(crate) struct SessionActor {
    sub: Arc<Subscription>,
    peers: SessionPeers,
    store: SharedStore,
    epoch: Epoch,
    /// Taken on start.
    gone: Option<BodyGone>,
    cfg: SessionConfig,
    resume_on_gap: bool,
    expiry: Option<Expiry>,
    /// `sub.age_ms()` at the last data or keep-alive write (probes excluded).
    last_beat_ms: i64,
    /// Since when frames have waited with the body's take count unchanged.
    stall_mark: Option<(u64, i64)>,
    end_reason: Option<EndReason>,
}

impl SessionActor {
    /// A session on a subscription whose body exists.
    pub(crate) fn new(s: SessionSetup) -> Self {
        SessionActor {
            sub: s.sub,
            peers: s.peers,
            store: s.store,
            epoch: s.epoch,
            gone: Some(s.gone),
            cfg: s.cfg,
            resume_on_gap: s.resume_on_gap,
            expiry: s.expiry,
            last_beat_ms: 0,
            stall_mark: None,
            end_reason: None,
        }
    }

    /// Evicts the session when queued frames have waited the stall timeout
    /// with the socket taking nothing; otherwise, when idle, writes a
    /// keep-alive after the heartbeat or a probe after the probe interval.
    fn idle_tick(&mut self, ctx: &mut Context<Self>) {
        let sub = &self.sub;
        let now = sub.age_ms();
        let b = sub.backlog();
        if b.closed {
            return self.end(EndReason::ClientGone, ctx);
        }
        if b.waiting {
            let since = match self.stall_mark {
                Some((t, since)) if t == b.takes => since,
                _ => {
                    self.stall_mark = Some((b.takes, now));
                    now
                }
            };
            sub.set_waiting_since(Some(since));
            if now - since >= self.cfg.stall_timeout.as_millis() as i64 {
                self.end(EndReason::Stalled, ctx);
            }
            // Queued data is a write already.
            return;
        }
        if self.stall_mark.take().is_some() {
            sub.set_waiting_since(None);
        }
        // A keep-alive is due a heartbeat after the last keep-alive or
        // event; probes, which any write makes unnecessary, do not count
        // (with the 2 s probe under a longer heartbeat, no keep-alive would
        // ever be written).
        let since_beat = now - self.last_beat_ms.max(sub.last_event_write_ms());
        let since_write = now - sub.last_write_ms();
        let (frame, beat): (&'static [u8], bool) =
            if since_beat >= self.cfg.heartbeat.as_millis() as i64 {
                (KEEP_ALIVE, true)
            } else if self
                .cfg
                .liveness_probe
                .is_some_and(|p| since_write >= p.as_millis() as i64)
            {
                (PROBE, false)
            } else {
                return;
            };
        match sub.push_control(Bytes::from_static(frame), true) {
            Control::Queued if beat => self.last_beat_ms = now,
            Control::Queued | Control::Busy => {}
            Control::Gone => self.end(EndReason::ClientGone, ctx),
        }
    }

    fn end(&mut self, reason: EndReason, ctx: &mut Context<Self>) {
        if self.end_reason.is_some() {
            return;
        }
        if reason == EndReason::Stalled {
            metrics().evicted.inc();
            tracing::info!(
                conn = self.sub.id,
                topic = %self.sub.topic,
                "evicted: no write progress for the stall timeout"
            );
        }
        if reason == EndReason::AuthExpired {
            if let Some(expiry) = self.expiry {
                let epoch = &self.epoch;
                self.sub
                    .finish(|seq, time_ms| expiry.notice(seq, time_ms, epoch));
            }
        }
        self.end_reason = Some(reason);
        ctx.stop();
    }
}

impl Actor for SessionActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Learn of a vanished client at once, not at the next write.
        if let Some(gone) = self.gone.take() {
            ctx.spawn(
                async move {
                    let _ = gone.await;
                }
                .into_actor(self)
                .map(|(), act, ctx| act.end(EndReason::ClientGone, ctx)),
            );
        }
        let stall_check = self.cfg.stall_timeout / 4;
        let tick = self
            .cfg
            .liveness_probe
            .map_or(self.cfg.heartbeat, |p| p.min(self.cfg.heartbeat))
            .min(stall_check.max(Duration::from_millis(100)));
        ctx.run_interval(tick, |act, ctx| act.idle_tick(ctx));
        // A catch-up holds the actor (`ctx.wait`), this timer included: it
        // checks the deadline itself (`CatchUpJob::deadline_ms`).
        if let Some(expiry) = self.expiry {
            let wait = u64::try_from(expiry.ends_at_ms - now_ms()).unwrap_or(0);
            ctx.run_later(Duration::from_millis(wait), |act, ctx| {
                act.end(EndReason::AuthExpired, ctx)
            });
        }
    }

    fn stopping(&mut self, _ctx: &mut Context<Self>) -> Running {
        let reason = *self.end_reason.get_or_insert(EndReason::ClientGone);
        // A stalled or vanished client will not read what is queued.
        self.sub
            .end(matches!(reason, EndReason::Stalled | EndReason::ClientGone));
        self.peers.topic.do_send(ToTopic::Unsubscribe(self.sub.id));
        self.peers.closed.do_send(SessionClosed {
            id: self.sub.id,
            reason,
        });
        tracing::debug!(
            conn = self.sub.id,
            topic = %self.sub.topic,
            reason = reason.as_str(),
            "stream closed"
        );
        Running::Stop
    }
}

impl Handler<ToSession> for SessionActor {
    type Result = ();

    fn handle(&mut self, msg: ToSession, ctx: &mut Context<Self>) {
        match msg {
            ToSession::CatchUp => self.catch_up(ctx),
            ToSession::End(reason) => self.end(reason, ctx),
        }
    }
}

impl SessionActor {
    fn catch_up(&mut self, ctx: &mut Context<Self>) {
        let job = CatchUpJob {
            store: self.store.clone(),
            sub: self.sub.clone(),
            epoch: self.epoch.clone(),
            stall: self.cfg.stall_timeout,
            resume_on_gap: self.resume_on_gap,
            deadline_ms: self.expiry.map(|e| e.ends_at_ms),
        };
        ctx.wait(
            catch_up::run(job)
                .into_actor(self)
                .map(|res, act: &mut SessionActor, ctx| match res {
                    Ok(()) => {
                        act.sub.caught_up();
                        act.peers.topic.do_send(ToTopic::Rejoin(act.sub.id));
                    }
                    // The store is away (e.g. Redis down): the stream stays
                    // open with its heartbeats and the catch-up tries again.
                    Err(EndReason::StoreError) => {
                        ctx.run_later(CATCH_UP_RETRY, |_, ctx| ctx.notify(ToSession::CatchUp));
                    }
                    Err(reason) => act.end(reason, ctx),
                }),
        );
    }
}

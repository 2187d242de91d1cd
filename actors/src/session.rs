//! SessionActor: one per SSE connection. Writes framed events to the
//! connection's body (coalesced into bounded chunks, see [`crate::body`]),
//! sends heartbeats while idle, catches up from the store when its topic says
//! it fell behind the in-memory tail, and stops the moment the client is gone.
//!
//! States: IDLE (created, not yet running) → STREAMING ⇄ RECOVERING (catching
//! up from the store) → TERMINATED.

use std::{sync::atomic::Ordering, sync::Arc, time::Duration};

use actix::prelude::*;
use bytes::Bytes;

use crate::{
    body::{self, Acker, BodyGone, Queued},
    broker::{BrokerActor, SessionClosed, SessionOpened},
    cursor::{Cursor, Epoch},
    link::SessionLink,
    metrics::metrics,
    sse::{frame_page, notice_frame, FramedEvent, KEEP_ALIVE, PROBE},
    store::SharedStore,
    topic::{Ready, TopicActor, Unsubscribe},
};

/// Events read from the store per catch-up round, at first; later rounds
/// aim at [`CATCH_UP_PAGE_BYTES`] from the sizes seen.
const CATCH_UP_PAGE: usize = 256;
/// Bytes of frames a catch-up round aims at: large enough that a round's
/// fixed costs (a store call, a wake-up) vanish, small enough that many
/// subscribers catching up at once (after a burst paused them all) hold
/// little: about this plus [`CATCH_UP_AHEAD_BYTES`] each.
const CATCH_UP_PAGE_BYTES: usize = 128 << 10;
/// Most events per catch-up round.
const CATCH_UP_PAGE_MAX: usize = 8192;
/// A catch-up reads its next page once no more than this waits for the
/// socket: more than a page, so the socket has work while the store reads.
const CATCH_UP_AHEAD_BYTES: usize = 192 << 10;
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
    /// Thresholds the session reports `Ready` at (must match the topic's).
    pub low_events: u64,
    /// Byte threshold for `Ready`.
    pub low_bytes: u64,
    /// Mailbox capacity (catch-up requests and termination only: live
    /// events go to the session's outbox, not through its mailbox).
    pub mailbox_capacity: usize,
}

/// Why a session ended, for logs and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndReason {
    /// The client closed the connection or a write failed.
    ClientGone,
    /// The socket made no progress for the stall timeout.
    Stalled,
    /// The broker is shutting down.
    Shutdown,
    /// The events after the session's position were trimmed by retention
    /// while it caught up; the client resumes and gets the 416 treatment.
    Gap,
    /// The store failed while catching up.
    StoreError,
}

impl EndReason {
    /// Label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::ClientGone => "client_gone",
            EndReason::Stalled => "stalled",
            EndReason::Shutdown => "shutdown",
            EndReason::Gap => "gap",
            EndReason::StoreError => "store_error",
        }
    }
}

/// Topic → session: you are behind the tail; read from the store after
/// `after_seq`, then report `Ready`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct CatchUp {
    /// Last sequence the topic delivered to this session.
    pub after_seq: u64,
}

/// Broker → session: end the stream.
#[derive(Message, Clone, Copy)]
#[rtype(result = "()")]
pub struct Terminate(pub EndReason);

/// The actor behind one SSE stream. Live events do not pass through it (the
/// topic queues them on the session's outbox); it catches up from the
/// store, keeps an idle stream alive, and evicts a stalled one.
pub struct SessionActor {
    link: Arc<SessionLink>,
    topic: Addr<TopicActor>,
    broker: Addr<BrokerActor>,
    store: SharedStore,
    epoch: Epoch,
    /// Resolves when the response body is dropped (taken on start).
    gone: Option<BodyGone>,
    cfg: SessionConfig,
    /// `link.age_ms()` at the last data or keep-alive write (probes excluded).
    last_beat_ms: i64,
    /// Since when frames have waited with the body's take count unchanged.
    stall_mark: Option<(u64, i64)>,
    /// `?on_gap=resume`: a catch-up that finds events trimmed by retention
    /// says so with `event: gap` and goes on, instead of ending the stream.
    resume_on_gap: bool,
    end_reason: Option<EndReason>,
}

impl SessionActor {
    /// A session whose outbox and body are set up on `link`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        link: Arc<SessionLink>,
        topic: Addr<TopicActor>,
        broker: Addr<BrokerActor>,
        store: SharedStore,
        epoch: Epoch,
        gone: BodyGone,
        cfg: SessionConfig,
        resume_on_gap: bool,
    ) -> Self {
        SessionActor {
            link,
            topic,
            broker,
            store,
            epoch,
            gone: Some(gone),
            cfg,
            last_beat_ms: 0,
            stall_mark: None,
            resume_on_gap,
            end_reason: None,
        }
    }

    /// The acknowledger the response body of this session must use.
    pub fn acker(topic: &Addr<TopicActor>, cfg: &SessionConfig) -> Acker {
        Acker {
            topic: topic.clone(),
            low_events: cfg.low_events,
            low_bytes: cfg.low_bytes,
        }
    }

    /// Evicts the session when queued frames have waited the stall timeout
    /// with the socket taking nothing; otherwise, when idle, writes a
    /// keep-alive after the heartbeat or a probe after the probe interval.
    fn idle_tick(&mut self, ctx: &mut Context<Self>) {
        let l = &self.link;
        let now = l.age_ms();
        let (_, waiting, takes, closed) = body::backlog(l);
        if closed {
            return self.end(EndReason::ClientGone, ctx);
        }
        if waiting {
            let since = match self.stall_mark {
                Some((t, since)) if t == takes => since,
                _ => {
                    self.stall_mark = Some((takes, now));
                    now
                }
            };
            l.waiting_since_ms.store(since, Ordering::Relaxed);
            if now - since >= self.cfg.stall_timeout.as_millis() as i64 {
                self.end(EndReason::Stalled, ctx);
            }
            // Queued data is a write already.
            return;
        }
        if self.stall_mark.take().is_some() {
            l.waiting_since_ms.store(-1, Ordering::Relaxed);
        }
        let last_write = l.last_write_ms.load(Ordering::Relaxed);
        let since_beat = now - self.last_beat_ms.max(last_write);
        let since_write = now - last_write;
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
        match body::queue_raw(l, Bytes::from_static(frame), true) {
            Queued::Yes if beat => self.last_beat_ms = now,
            Queued::Closed => self.end(EndReason::ClientGone, ctx),
            _ => {}
        }
    }

    fn end(&mut self, reason: EndReason, ctx: &mut Context<Self>) {
        if self.end_reason.is_some() {
            return;
        }
        if reason == EndReason::Stalled {
            metrics().evicted.inc();
            tracing::info!(
                conn = self.link.id,
                topic = %self.link.topic,
                "evicted: no write progress for the stall timeout"
            );
        }
        self.end_reason = Some(reason);
        ctx.stop();
    }
}

impl Actor for SessionActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.broker.do_send(SessionOpened {
            link: self.link.clone(),
            session: ctx.address(),
        });
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
    }

    fn stopping(&mut self, _ctx: &mut Context<Self>) -> Running {
        let reason = *self.end_reason.get_or_insert(EndReason::ClientGone);
        // A stalled or vanished client will not read what is queued.
        body::end(
            &self.link,
            matches!(reason, EndReason::Stalled | EndReason::ClientGone),
        );
        self.topic.do_send(Unsubscribe { id: self.link.id });
        self.broker.do_send(SessionClosed {
            id: self.link.id,
            reason,
        });
        tracing::debug!(
            conn = self.link.id,
            topic = %self.link.topic,
            reason = reason.as_str(),
            "stream closed"
        );
        Running::Stop
    }
}

/// Waits until at most `ahead` bytes wait for the socket; the socket taking
/// nothing for `stall` ends the wait as a stall.
async fn room(link: &SessionLink, ahead: usize, stall: Duration) -> Result<(), EndReason> {
    // The session's tick, which shows waits to health snapshots, does not
    // run during a catch-up: the wait is shown from here.
    let mut mark: Option<u64> = None;
    loop {
        let (queued, _, takes, closed) = body::backlog(link);
        if closed {
            return Err(EndReason::ClientGone);
        }
        if queued <= ahead {
            if mark.is_some() {
                link.waiting_since_ms.store(-1, Ordering::Relaxed);
            }
            return Ok(());
        }
        if mark != Some(takes) {
            mark = Some(takes);
            link.waiting_since_ms
                .store(link.age_ms(), Ordering::Relaxed);
        }
        match tokio::time::timeout(stall, link.room.notified()).await {
            Ok(()) => {}
            // A stale wake-up may have shortened an earlier wait: only a
            // whole timeout with no take at all is a stall.
            Err(_) if body::backlog(link).2 == takes => return Err(EndReason::Stalled),
            Err(_) => {}
        }
    }
}

impl Handler<CatchUp> for SessionActor {
    type Result = ();

    fn handle(&mut self, _msg: CatchUp, ctx: &mut Context<Self>) {
        let store = self.store.clone();
        let link = self.link.clone();
        let epoch = self.epoch.clone();
        let stall = self.cfg.stall_timeout;
        let resume_on_gap = self.resume_on_gap;
        // The outbox holds the position: everything queued there reaches
        // the client unless it goes away.
        let (mut after, mut after_time) = body::position(&link);
        ctx.wait(
            async move {
                let mut page_len = CATCH_UP_PAGE;
                let end = loop {
                    if let Err(reason) = room(&link, CATCH_UP_AHEAD_BYTES, stall).await {
                        break Some(reason);
                    }
                    let page = match store.read(&link.topic, after, page_len).await {
                        Ok(p) => p,
                        Err(_) => {
                            metrics().store_errors.inc();
                            break Some(EndReason::StoreError);
                        }
                    };
                    let Some(first) = page.first() else {
                        break None;
                    };
                    if first.seq != after + 1 {
                        // Retention trimmed events while this subscriber lagged.
                        if !resume_on_gap {
                            break Some(EndReason::Gap);
                        }
                        let requested = Cursor::new(after_time, after, epoch.clone()).to_string();
                        let resumed = Cursor::new(first.time_ms, first.seq - 1, epoch.clone());
                        let notice = gap_notice(
                            &requested,
                            &resumed.to_string(),
                            Some(first.seq - 1 - after),
                        );
                        if body::queue_gap_notice(&link, notice, first.seq - 1) == Queued::Closed {
                            break Some(EndReason::ClientGone);
                        }
                    }
                    let (buf, framed) = frame_page(&page, &epoch);
                    let framed: Arc<[FramedEvent]> = framed.into();
                    let bytes: usize = framed.iter().map(|f| f.frame.len()).sum();
                    let last = &framed[framed.len() - 1];
                    // Events read here count as delivered to this session.
                    link.delivered_bytes
                        .fetch_add(bytes as u64, Ordering::SeqCst);
                    link.delivered_seq.fetch_max(last.seq, Ordering::SeqCst);
                    match body::queue_page(&link, &framed, buf) {
                        Queued::Yes | Queued::Busy => {}
                        Queued::Closed => break Some(EndReason::ClientGone),
                        Queued::Gap { expected, got } => {
                            tracing::error!(conn = link.id, expected, got, "catch-up gap");
                            break Some(EndReason::Gap);
                        }
                    }
                    after = last.seq;
                    after_time = last.time_ms;
                    if page.len() < page_len {
                        break None;
                    }
                    let per_event = bytes.div_ceil(framed.len()).max(1);
                    page_len = (CATCH_UP_PAGE_BYTES / per_event).clamp(16, CATCH_UP_PAGE_MAX);
                };
                (after, end)
            }
            .into_actor(self)
            .map(|(after, end), act: &mut SessionActor, ctx| match end {
                None => act.topic.do_send(Ready {
                    id: act.link.id,
                    after_seq: Some(after),
                }),
                // The store is away (e.g. Redis down): the stream stays
                // open with its heartbeats and the catch-up tries again.
                Some(EndReason::StoreError) => {
                    ctx.run_later(CATCH_UP_RETRY, move |_, ctx| {
                        ctx.notify(CatchUp { after_seq: after });
                    });
                }
                Some(reason) => act.end(reason, ctx),
            }),
        );
    }
}

impl Handler<Terminate> for SessionActor {
    type Result = ();

    fn handle(&mut self, msg: Terminate, ctx: &mut Context<Self>) {
        self.end(msg.0, ctx);
    }
}

/// Frames the `event: gap` notice that opens a stream resumed with
/// `on_gap=resume`. Its id is the boundary cursor, so a reconnect right after
/// it resumes from the oldest retained event.
pub fn gap_notice(requested: &str, resumed_after: &str, lost: Option<u64>) -> Bytes {
    let data = serde_json::json!({
        "requested": requested,
        "resumed_after": resumed_after,
        "lost": lost,
    });
    notice_frame("gap", resumed_after, &data.to_string())
}

//! SessionActor: one per SSE connection. Writes framed events to the
//! connection's body (coalesced into bounded chunks, see [`crate::body`]),
//! sends heartbeats while idle, catches up from the store when its topic says
//! it fell behind the in-memory tail, and stops the moment the client is gone.
//!
//! States: IDLE (created, not yet running) → STREAMING ⇄ RECOVERING (catching
//! up from the store) → TERMINATED.

use std::{
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use actix::prelude::*;
use bytes::Bytes;
use tokio::sync::mpsc;

use crate::{
    body::{pack, send, Ack, Acker, Chunk, ChunkSender, SendFailure},
    broker::{BrokerActor, SessionClosed, SessionOpened},
    cursor::{Cursor, Epoch},
    link::SessionLink,
    metrics::metrics,
    sse::{frame_event, notice_frame, FramedEvent, KEEP_ALIVE, PROBE},
    store::SharedStore,
    topic::{Ready, TopicActor, Unsubscribe},
};

/// Events read from the store per catch-up round.
const CATCH_UP_PAGE: usize = 256;
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
    /// A write that waits this long for the socket ends the session.
    pub stall_timeout: Duration,
    /// Thresholds the session reports `Ready` at (must match the topic's).
    pub low_events: u64,
    /// Byte threshold for `Ready`.
    pub low_bytes: u64,
    /// Mailbox capacity; at least the topic's high watermark in batches.
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

impl From<SendFailure> for EndReason {
    fn from(f: SendFailure) -> Self {
        match f {
            SendFailure::Closed => EndReason::ClientGone,
            SendFailure::Stalled => EndReason::Stalled,
        }
    }
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

/// Topic → session: write these events (some may already be written).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Deliver {
    /// Framed events, shared by every subscriber of the batch.
    pub events: Arc<[FramedEvent]>,
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

/// The actor behind one SSE stream.
pub struct SessionActor {
    link: Arc<SessionLink>,
    topic: Addr<TopicActor>,
    broker: Addr<BrokerActor>,
    store: SharedStore,
    epoch: Epoch,
    tx: ChunkSender,
    acker: Acker,
    cfg: SessionConfig,
    /// Last sequence queued to the body; anything at or below is skipped,
    /// which makes a duplicate impossible whatever the topic sends.
    last_seq: u64,
    /// Time of the event at `last_seq` (0 until the first write), to render
    /// the session's position as a cursor.
    last_time_ms: i64,
    /// `link.age_ms()` at the last data or keep-alive write (probes excluded).
    last_beat_ms: i64,
    /// `?on_gap=resume`: a catch-up that finds events trimmed by retention
    /// says so with `event: gap` and goes on, instead of ending the stream.
    resume_on_gap: bool,
    /// Span with the connection id and topic, for every log line of the session.
    span: tracing::Span,
    end_reason: EndReason,
}

impl SessionActor {
    /// A session that has written everything up to `after_seq` (the body
    /// channel may already hold the opening frames).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        link: Arc<SessionLink>,
        topic: Addr<TopicActor>,
        broker: Addr<BrokerActor>,
        store: SharedStore,
        epoch: Epoch,
        tx: ChunkSender,
        cfg: SessionConfig,
        after_seq: u64,
        resume_on_gap: bool,
    ) -> Self {
        let span = tracing::info_span!("session", conn = link.id, topic = %link.topic);
        let acker = Self::acker(&link, &topic, &cfg);
        SessionActor {
            link,
            topic,
            broker,
            store,
            epoch,
            tx,
            acker,
            cfg,
            last_seq: after_seq,
            last_time_ms: 0,
            last_beat_ms: 0,
            resume_on_gap,
            span,
            end_reason: EndReason::ClientGone,
        }
    }

    /// The acknowledger the response body of this session must use.
    pub fn acker(link: &Arc<SessionLink>, topic: &Addr<TopicActor>, cfg: &SessionConfig) -> Acker {
        Acker {
            link: link.clone(),
            topic: topic.clone(),
            low_events: cfg.low_events,
            low_bytes: cfg.low_bytes,
        }
    }

    /// Writes a keep-alive when idle for the heartbeat, else a probe when
    /// idle for the probe interval.
    fn idle_tick(&mut self, ctx: &mut Context<Self>) {
        let l = &self.link;
        let now = l.age_ms();
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
        let chunk = Chunk {
            bytes: Bytes::from_static(frame),
            ack: None,
        };
        match self.tx.try_send(chunk) {
            Ok(()) if beat => self.last_beat_ms = now,
            Ok(()) => {}
            // Data is queued: that is a write already.
            Err(mpsc::error::TrySendError::Full(_)) => {}
            Err(mpsc::error::TrySendError::Closed(_)) => self.end(EndReason::ClientGone, ctx),
        }
    }

    fn end(&mut self, reason: EndReason, ctx: &mut Context<Self>) {
        if reason == EndReason::Stalled {
            metrics().evicted.inc();
            self.span
                .in_scope(|| tracing::info!("evicted: no write progress for the stall timeout"));
        }
        self.end_reason = reason;
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
        let tx = self.tx.clone();
        ctx.spawn(
            async move { tx.closed().await }
                .into_actor(self)
                .map(|(), act, ctx| act.end(EndReason::ClientGone, ctx)),
        );
        let tick = self
            .cfg
            .liveness_probe
            .map_or(self.cfg.heartbeat, |p| p.min(self.cfg.heartbeat));
        ctx.run_interval(tick, |act, ctx| act.idle_tick(ctx));
    }

    fn stopping(&mut self, _ctx: &mut Context<Self>) -> Running {
        self.topic.do_send(Unsubscribe { id: self.link.id });
        self.broker.do_send(SessionClosed {
            id: self.link.id,
            reason: self.end_reason,
        });
        self.span
            .in_scope(|| tracing::debug!(reason = self.end_reason.as_str(), "stream closed"));
        Running::Stop
    }
}

impl Handler<Deliver> for SessionActor {
    type Result = ();

    fn handle(&mut self, msg: Deliver, ctx: &mut Context<Self>) {
        // The topic counted every byte of the batch as delivered: all of it
        // is acknowledged, the part already written (skipped here) included.
        let batch_bytes: u64 = msg.events.iter().map(|e| e.frame.len() as u64).sum();
        // Batches are in log order: what is not yet written is a suffix.
        let from = msg.events.partition_point(|e| e.seq <= self.last_seq);
        let fresh = &msg.events[from..];
        let (Some(first), Some(last)) = (fresh.first(), fresh.last()) else {
            self.acker.acknowledge(Ack {
                last_seq: self.last_seq,
                events: 0,
                bytes: batch_bytes,
            });
            return;
        };
        if first.seq != self.last_seq + 1 {
            // A hole would break the contract; end the stream so the client
            // resumes from its last id and the store fills the hole.
            let expected = self.last_seq + 1;
            self.span
                .in_scope(|| tracing::error!(expected, got = first.seq, "delivery gap"));
            return self.end(EndReason::Gap, ctx);
        }
        let fresh_bytes: u64 = fresh.iter().map(|e| e.frame.len() as u64).sum();
        let skipped_bytes = batch_bytes - fresh_bytes;
        self.last_seq = last.seq;
        self.last_time_ms = last.time_ms;
        let (tx, link, stall) = (self.tx.clone(), self.link.clone(), self.cfg.stall_timeout);
        let events = msg.events;
        let written = events.clone();
        // Waiting here holds further deliveries in the mailbox: with the
        // small body channel, the socket's pace sets the session's.
        ctx.wait(
            async move {
                let frames = events[from..].iter().map(|e| (e.seq, e.frame.clone()));
                let mut chunks = pack(frames).peekable();
                while let Some(mut c) = chunks.next() {
                    if chunks.peek().is_none() {
                        if let Some(a) = c.ack.as_mut() {
                            a.bytes += skipped_bytes;
                        }
                    }
                    send(&tx, &link, c, stall).await?;
                }
                Ok(())
            }
            .into_actor(self)
            .map(move |res: Result<(), SendFailure>, act, ctx| match res {
                Ok(()) => {
                    let now = crate::cursor::now_ms();
                    let h = &metrics().delivery_seconds;
                    for e in &written[from..] {
                        h.observe((now - e.time_ms).max(0) as f64 / 1000.0);
                    }
                }
                Err(f) => act.end(f.into(), ctx),
            }),
        );
    }
}

impl Handler<CatchUp> for SessionActor {
    type Result = ();

    fn handle(&mut self, msg: CatchUp, ctx: &mut Context<Self>) {
        let store = self.store.clone();
        let tx = self.tx.clone();
        let link = self.link.clone();
        let epoch = self.epoch.clone();
        let stall = self.cfg.stall_timeout;
        let resume_on_gap = self.resume_on_gap;
        let mut after = self.last_seq.max(msg.after_seq);
        let mut after_time = self.last_time_ms;
        ctx.wait(
            async move {
                // Progress survives an early end: what was sent stays sent.
                let end = loop {
                    let page = match store.read(&link.topic, after, CATCH_UP_PAGE).await {
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
                        let notice = Chunk {
                            bytes: gap_notice(
                                &requested,
                                &resumed.to_string(),
                                Some(first.seq - 1 - after),
                            ),
                            ack: None,
                        };
                        if let Err(f) = send(&tx, &link, notice, stall).await {
                            break Some(f.into());
                        }
                    }
                    let framed: Vec<FramedEvent> =
                        page.iter().map(|ev| frame_event(ev, &epoch)).collect();
                    let bytes: u64 = framed.iter().map(|f| f.frame.len() as u64).sum();
                    let last = &page[page.len() - 1];
                    // Events read here count as delivered to this session.
                    link.delivered_bytes.fetch_add(bytes, Ordering::SeqCst);
                    link.delivered_seq.fetch_max(last.seq, Ordering::SeqCst);
                    for c in pack(framed.into_iter().map(|f| (f.seq, f.frame))) {
                        let seq = c.ack.map_or(after, |a| a.last_seq);
                        if let Err(f) = send(&tx, &link, c, stall).await {
                            return (after, after_time, Some(f.into()));
                        }
                        after = seq;
                    }
                    after_time = last.time_ms;
                    if page.len() < CATCH_UP_PAGE {
                        break None;
                    }
                };
                (after, after_time, end)
            }
            .into_actor(self)
            .map(|(after, after_time, end), act: &mut SessionActor, ctx| {
                act.last_seq = after;
                act.last_time_ms = after_time;
                match end {
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
                }
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

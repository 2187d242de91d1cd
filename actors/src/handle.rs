//! [`Broker`]: the handle request handlers hold. It offers operations
//! (publish, open a stream, delete a topic, list sessions, stream health,
//! close all) and
//! keeps the mechanics (topic actors, sessions, subscriptions, messages)
//! to itself.
//!
//! Topic lookups go through a shared read-mostly map, so a publish does not
//! queue behind the broker actor.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use actix::prelude::*;
use tokio::sync::oneshot;

use crate::{
    body::Body,
    broker::{
        BrokerActor, CloseAllSessions, GetStreamHealth, HostTopics, ListSessions, StartTopic,
        StreamHealth, TopicMap,
    },
    catch_up::gap_notice,
    cursor_check,
    event::NewEvent,
    messages::{SessionOpened, SessionPort, TopicPort},
    metrics::metrics,
    session::{Expiry, SessionActor, SessionConfig, SessionPeers, SessionSetup},
    sse::retry_frame,
    store::{SharedStore, StoreError},
    subscription::{SessionInfo, Subscription, Watermarks},
    topic::{
        Delete, DeleteError, Publish, PublishError, PublishReply, Start, Subscribe, SubscribeError,
        Subscribed, TopicActor, TopicConfig,
    },
};

/// How a broker is set up.
#[derive(Clone, Debug)]
pub struct BrokerConfig {
    /// Every topic's tunables.
    pub topic: TopicConfig,
    /// Every stream's tunables.
    pub session: SessionConfig,
    /// Threads of the broker's own for topic actors; 0: topic actors run on
    /// the threads that call [`Broker::host_topics_here`].
    pub arbiters: usize,
}

/// What a stream asks for.
#[derive(Clone, Debug)]
pub struct StreamRequest {
    /// Where it starts.
    pub start: Start,
    /// `?on_gap=resume`: start (and go on) past events lost to retention,
    /// with an `event: gap` notice, instead of refusing.
    pub resume_on_gap: bool,
    /// The reconnection delay the stream opens with (`retry:`).
    pub retry: Duration,
    /// When the token it was opened with expires: the stream ends then,
    /// after an `event: auth-expired` frame. `None`: it does not.
    pub expiry: Option<Expiry>,
}

/// An open stream: its response body and what its headers and logs need.
pub struct OpenStream {
    /// Connection id.
    pub id: u64,
    /// Where it starts, and the gap it skipped, if any.
    pub subscribed: Subscribed,
    /// The response body (SSE frames).
    pub body: Body,
}

/// The handle to the broker.
#[derive(Clone)]
pub struct Broker {
    addr: Addr<BrokerActor>,
    topics: TopicMap,
    store: SharedStore,
    session_cfg: SessionConfig,
    /// Every subscription's watermarks (the topics').
    watermarks: Watermarks,
    next_conn: Arc<AtomicU64>,
}

impl Broker {
    /// Starts the broker actor (and its arbiters) on `store`.
    pub fn start(store: SharedStore, cfg: BrokerConfig) -> Self {
        let topics: TopicMap = Arc::default();
        let arbiters = (0..cfg.arbiters).map(|_| Arbiter::new().handle()).collect();
        let stall_ms = cfg.session.stall_timeout.as_millis() as i64;
        let watermarks = cfg.topic.watermarks;
        let addr =
            BrokerActor::new(store.clone(), cfg.topic, topics.clone(), arbiters, stall_ms).start();
        Broker {
            addr,
            topics,
            store,
            session_cfg: cfg.session,
            watermarks,
            next_conn: Arc::new(AtomicU64::new(1)),
        }
    }

    /// Queues one message for the topic actor of `name` (a valid topic
    /// name), started if needed: `send` queues it (or returns `None`
    /// having queued nothing, e.g. a full mailbox). Through the registry,
    /// so an idle actor cannot stop with the message on its way.
    async fn to_topic<R>(
        &self,
        name: &str,
        send: impl FnOnce(&Addr<TopicActor>, bool) -> Option<R>,
    ) -> Result<Option<R>, MailboxError> {
        let mut send = Some(send);
        // An actor can leave between its start and the delivery (it found
        // itself idle): a new one is started then. Twice is plenty.
        for _ in 0..3 {
            let sent = self.topics.deliver(name, |addr, started| {
                (send.take().expect("called once"))(addr, started)
            });
            if let Some(sent) = sent {
                return Ok(sent);
            }
            self.addr.send(StartTopic(Arc::from(name))).await?;
        }
        Err(MailboxError::Closed)
    }

    /// Whether a topic actor runs for `topic` on this instance (it is in
    /// use, or was recently).
    pub fn is_running(&self, topic: &str) -> bool {
        self.topics.get(topic).is_some()
    }

    /// Stores `events` on `topic` (a valid name) and answers once they are
    /// as durable as the store promises.
    pub async fn publish(
        &self,
        topic: &str,
        events: Vec<NewEvent>,
    ) -> Result<PublishReply, PublishError> {
        let (tx, rx) = oneshot::channel();
        let mut failed = None;
        let msg = Publish { events, reply: tx };
        let sent = self
            .to_topic(topic, |addr, started| match addr.try_send(msg) {
                Ok(()) => Some(None),
                // Not started yet: its mailbox is still actix's default
                // size, not the topic's; wait for room instead.
                Err(SendError::Full(msg)) if !started => Some(Some(addr.send(msg))),
                Err(e) => {
                    failed = Some(e);
                    None
                }
            })
            .await
            .map_err(|_| PublishError::Restarting)?;
        if let Some(Some(queued)) = sent {
            queued.await.map_err(|_| PublishError::Restarting)?;
        } else if sent.is_none() {
            return Err(match failed {
                Some(SendError::Full(_)) => {
                    metrics()
                        .publish_rejected
                        .with_label_values(&["overloaded"])
                        .inc();
                    PublishError::MailboxFull
                }
                _ => PublishError::Restarting,
            });
        }
        // A dropped reply: the topic restarted before storing.
        rx.await.map_err(|_| PublishError::Restarting)?
    }

    /// Opens an SSE stream on `topic` (a valid name): subscribes, starts its
    /// session and returns its body, or says why the start is refused.
    pub async fn open_stream(
        &self,
        topic: &str,
        req: StreamRequest,
    ) -> Result<OpenStream, SubscribeError> {
        let mut req = req;
        // A cursor whose position now holds another event (see
        // `cursor_check`) resumes from the last event both logs share.
        let mut rewound = None;
        if let Start::After(c) = &req.start {
            if let Some(gap) = cursor_check::mismatch(&*self.store, topic, c).await {
                if !req.resume_on_gap {
                    return Err(SubscribeError::Gap(gap));
                }
                req.start = Start::After(gap.next_cursor.clone());
                rewound = Some(*gap);
            }
        }
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let sub = Arc::new(Subscription::new(id, Arc::from(topic), self.watermarks));
        // The session's address exists before it runs, so the topic can
        // queue deliveries while the start is still being decided.
        let mut ctx: Context<SessionActor> = Context::new();
        ctx.set_mailbox_capacity(self.session_cfg.mailbox_capacity);
        let port: SessionPort = Arc::new(ctx.address().recipient());
        let msg = Subscribe {
            sub: sub.clone(),
            port: port.clone(),
            start: req.start,
            resume_on_gap: req.resume_on_gap,
        };
        let (addr, request) = self
            .to_topic(topic, |addr, _| Some((addr.clone(), addr.send(msg))))
            .await
            .map_err(|_| SubscribeError::Restarting)?
            .expect("send queues");
        let subscribed = request.await.map_err(|_| SubscribeError::Restarting)??;
        let mut subscribed = subscribed;
        if subscribed.gap.is_none() {
            subscribed.gap = rewound;
        }
        // The topic may already have queued events from its tail: the
        // opening frames go in front of them.
        let mut opening = vec![retry_frame(req.retry)];
        if let Some(gap) = &subscribed.gap {
            opening.push(gap_notice(
                &gap.requested.to_string(),
                &gap.next_cursor.to_string(),
                gap.lost,
            ));
        }
        sub.open(opening);
        let topic: TopicPort = Arc::new(addr.recipient());
        let (body, gone) = Body::new(sub.clone(), topic.clone());
        self.addr.do_send(SessionOpened {
            sub: sub.clone(),
            port,
        });
        ctx.run(SessionActor::new(SessionSetup {
            sub,
            peers: SessionPeers {
                topic,
                closed: self.addr.clone().recipient(),
            },
            store: self.store.clone(),
            epoch: subscribed.epoch.clone(),
            gone,
            cfg: self.session_cfg.clone(),
            resume_on_gap: req.resume_on_gap,
            expiry: req.expiry,
        }));
        Ok(OpenStream {
            id,
            subscribed,
            body,
        })
    }

    /// Deletes `topic` (a valid name): its log and dedup state in the
    /// store, and its open streams on this instance end (their clients'
    /// resumes get `416`). Publishes acknowledged before are deleted with
    /// it; those still waiting go to the next log, which a later publish
    /// or subscription creates under a new epoch. Instances sharing the
    /// store end their streams of it when they next check its log.
    pub async fn delete_topic(&self, topic: &str) -> Result<(), DeleteError> {
        if !self.is_running(topic) {
            // No actor follows it here: starting one for a name the
            // store does not hold would only open (create) it.
            match self.store.bounds(topic).await {
                Ok(_) => {}
                Err(StoreError::UnknownTopic) => return Err(DeleteError::Unknown),
                Err(e) => return Err(DeleteError::Store(e)),
            }
        }
        // Through the topic's actor, which orders it with the publishes and
        // subscriptions of the topic. `send` waits for room in a full
        // mailbox: a delete is not dropped like a publish would be.
        let (tx, rx) = oneshot::channel();
        let msg = Delete { reply: tx };
        self.to_topic(topic, |addr, _| Some(addr.send(msg)))
            .await
            .map_err(|_| DeleteError::Restarting)?
            .expect("send queues")
            .await
            .map_err(|_| DeleteError::Restarting)?;
        rx.await.map_err(|_| DeleteError::Restarting)??;
        metrics().topics_deleted.inc();
        Ok(())
    }

    /// A snapshot of every open stream.
    pub async fn sessions(&self) -> Result<Vec<SessionInfo>, MailboxError> {
        self.addr.send(ListSessions).await
    }

    /// Open streams and recent disconnects.
    pub async fn stream_health(&self) -> Result<StreamHealth, MailboxError> {
        self.addr.send(GetStreamHealth).await
    }

    /// Ends every open stream (at shutdown); answers with how many were
    /// told to end.
    pub async fn close_all(&self) -> Result<usize, MailboxError> {
        self.addr.send(CloseAllSessions).await
    }

    /// Offers the calling thread's arbiter (an HTTP worker's) to host topic
    /// actors. With one thread per core doing everything, a topic hands
    /// events to the streams on its own thread without a cross-thread
    /// wake-up, and no more threads compete for the cores than there are.
    pub fn host_topics_here(&self) {
        self.addr.do_send(HostTopics(Arbiter::current()));
    }

    /// The store the broker uses (history polls and topic listings read it
    /// directly).
    pub fn store(&self) -> &SharedStore {
        &self.store
    }
}

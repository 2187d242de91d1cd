//! BrokerActor: the registry and supervisor. Starts one supervised topic
//! actor per topic on demand, spread over the HTTP worker threads (or a
//! pool of arbiters of its own), knows every open session for health
//! snapshots, and ends them all at shutdown.
//!
//! Callers use [`crate::handle::Broker`], which wraps this actor.

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
    time::{Duration, Instant},
};

use actix::prelude::*;

use crate::{
    messages::{EndReason, SessionClosed, SessionOpened, SessionPort, ToSession},
    metrics::metrics,
    registry::{Inbound, Registry},
    store::SharedStore,
    subscription::{Health, SessionInfo, Subscription},
    topic::{TopicActor, TopicConfig},
};

/// Window of the disconnect rate in `/healthz?probe=stream`.
const DISCONNECT_WINDOW: Duration = Duration::from_secs(60);
/// Streams that must have closed since the last trim before the next one.
const TRIM_AFTER_CLOSED: usize = 100;
/// Delay of a trim after the closes that call for it.
const TRIM_DELAY: Duration = Duration::from_millis(500);

/// Returns freed heap memory to the OS (glibc keeps it otherwise).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn release_free_memory() {
    extern "C" {
        fn malloc_trim(pad: usize) -> i32;
    }
    // SAFETY: malloc_trim only releases free pages of the allocator's own
    // heaps; it takes no pointers and is thread-safe.
    unsafe {
        malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release_free_memory() {}

/// Period of the stream health snapshot behind the state gauges.
const HEALTH_SNAPSHOT: Duration = Duration::from_secs(5);

pub(crate) type TopicMap = Arc<Registry<TopicActor>>;

/// Handle → broker: the topic actor for a name, started if needed.
#[derive(Message)]
#[rtype(result = "Addr<TopicActor>")]
pub(crate) struct StartTopic(pub Arc<str>);

/// HTTP worker → broker: topic actors may run on this worker's thread.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct HostTopics(pub ArbiterHandle);

/// Asks for a snapshot of every open stream.
#[derive(Message)]
#[rtype(result = "Vec<SessionInfo>")]
pub(crate) struct ListSessions;

/// Stream health figures of `/healthz?probe=stream`.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct StreamHealth {
    /// Open SSE streams.
    pub active_connections: usize,
    /// Streams closed in the last 60 s.
    pub disconnects_1m: usize,
}

/// Asks for stream health figures.
#[derive(Message)]
#[rtype(result = "StreamHealth")]
pub(crate) struct GetStreamHealth;

/// Ends every open stream; answers once all have been told to stop.
#[derive(Message)]
#[rtype(result = "usize")]
pub(crate) struct CloseAllSessions;

/// The registry and supervisor actor.
pub(crate) struct BrokerActor {
    pub(crate) store: SharedStore,
    pub(crate) topic_cfg: TopicConfig,
    pub(crate) topics: TopicMap,
    /// Threads of the broker's own for topic actors: the configured number,
    /// or, when topics share the HTTP workers, one started only if a topic
    /// is needed before any worker offered its thread.
    pub(crate) arbiters: Vec<ArbiterHandle>,
    /// HTTP worker threads that host topic actors (see
    /// [`crate::handle::Broker::host_topics_here`]).
    hosts: Vec<ArbiterHandle>,
    next_arbiter: usize,
    sessions: HashMap<u64, (Arc<Subscription>, SessionPort)>,
    disconnects: VecDeque<Instant>,
    /// Stall timeout in ms, to classify session health.
    pub(crate) stall_ms: i64,
    /// Most sessions open since the last memory trim.
    sessions_at_trim: usize,
    /// A memory trim is scheduled.
    trim_scheduled: bool,
}

impl BrokerActor {
    /// A broker with no topic and no session yet.
    pub(crate) fn new(
        store: SharedStore,
        topic_cfg: TopicConfig,
        topics: TopicMap,
        arbiters: Vec<ArbiterHandle>,
        stall_ms: i64,
    ) -> Self {
        BrokerActor {
            store,
            topic_cfg,
            topics,
            arbiters,
            hosts: Vec::new(),
            next_arbiter: 0,
            sessions: HashMap::new(),
            disconnects: VecDeque::new(),
            stall_ms,
            sessions_at_trim: 0,
            trim_scheduled: false,
        }
    }

    fn start_topic(&mut self, name: Arc<str>) -> Addr<TopicActor> {
        if let Some(addr) = self.topics.get(&name) {
            return addr;
        }
        let arbiter = self.next_home();
        let store = self.store.clone();
        let cfg = self.topic_cfg.clone();
        let n = name.clone();
        let inbound = Inbound::default();
        let home = (self.topics.clone(), inbound.clone());
        let addr =
            Supervisor::start_in_arbiter(&arbiter, move |_| TopicActor::new(n, store, &cfg, home));
        self.topics.insert(name, addr.clone(), inbound);
        metrics().active_topics.set(self.topics.len() as i64);
        addr
    }

    /// The thread the next topic actor runs on, round robin.
    fn next_home(&mut self) -> ArbiterHandle {
        // A worker that stopped (server shutdown, a worker restarted after a
        // panic) takes no more topics; its topics restart elsewhere when
        // next used, since their addresses are then disconnected.
        self.hosts.retain(|h| h.spawn(async {}));
        if self.hosts.is_empty() && self.arbiters.is_empty() {
            self.arbiters.push(Arbiter::new().handle());
        }
        let pool = if self.hosts.is_empty() {
            &self.arbiters
        } else {
            &self.hosts
        };
        self.next_arbiter = self.next_arbiter.wrapping_add(1);
        pool[self.next_arbiter % pool.len()].clone()
    }

    fn trim_disconnects(&mut self) {
        while self
            .disconnects
            .front()
            .is_some_and(|t| t.elapsed() > DISCONNECT_WINDOW)
        {
            self.disconnects.pop_front();
        }
    }
}

impl Actor for BrokerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(HEALTH_SNAPSHOT, |act, _| act.health_snapshot());
    }
}

impl BrokerActor {
    /// Counts sessions per health state and lagging ones into the gauges.
    fn health_snapshot(&mut self) {
        let mut counts = [0i64; 3];
        let mut lagging = 0;
        for (sub, _) in self.sessions.values() {
            let info = sub.info(self.stall_ms);
            let h = info.health;
            counts[Health::ALL.iter().position(|x| *x == h).expect("listed")] += 1;
            lagging += i64::from(info.lagging);
        }
        let m = metrics();
        for (h, n) in Health::ALL.iter().zip(counts) {
            m.streams_by_state.with_label_values(&[h.as_str()]).set(n);
        }
        m.lagging_subscribers.set(lagging);
        self.trim_disconnects();
        self.sessions_at_trim = self.sessions_at_trim.max(self.sessions.len());
    }
}

impl Handler<StartTopic> for BrokerActor {
    type Result = MessageResult<StartTopic>;

    fn handle(&mut self, msg: StartTopic, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(self.start_topic(msg.0))
    }
}

impl Handler<HostTopics> for BrokerActor {
    type Result = ();

    fn handle(&mut self, msg: HostTopics, _ctx: &mut Context<Self>) {
        self.hosts.push(msg.0);
    }
}

impl Handler<SessionOpened> for BrokerActor {
    type Result = ();

    fn handle(&mut self, msg: SessionOpened, _ctx: &mut Context<Self>) {
        self.sessions.insert(msg.sub.id, (msg.sub, msg.port));
        self.sessions_at_trim = self.sessions_at_trim.max(self.sessions.len());
        metrics().active_streams.set(self.sessions.len() as i64);
    }
}

impl Handler<SessionClosed> for BrokerActor {
    type Result = ();

    fn handle(&mut self, msg: SessionClosed, ctx: &mut Context<Self>) {
        if self.sessions.remove(&msg.id).is_some() {
            self.disconnects.push_back(Instant::now());
            self.trim_disconnects();
            metrics()
                .disconnects
                .with_label_values(&[msg.reason.as_str()])
                .inc();
        }
        metrics().active_streams.set(self.sessions.len() as i64);
        tracing::debug!(
            conn = msg.id,
            reason = msg.reason.as_str(),
            "session closed"
        );
        // After many streams closed, hand their buffers back to the OS (the
        // system allocator keeps freed memory otherwise, and RSS would stay
        // at the peak): once, shortly after the wave of closes, not per close.
        if !self.trim_scheduled && self.sessions.len() + TRIM_AFTER_CLOSED <= self.sessions_at_trim
        {
            self.trim_scheduled = true;
            ctx.run_later(TRIM_DELAY, |act, _| {
                release_free_memory();
                act.sessions_at_trim = act.sessions.len();
                act.trim_scheduled = false;
            });
        }
    }
}

impl Handler<ListSessions> for BrokerActor {
    type Result = MessageResult<ListSessions>;

    fn handle(&mut self, _: ListSessions, _ctx: &mut Context<Self>) -> Self::Result {
        let stall_ms = self.stall_ms;
        MessageResult(
            self.sessions
                .values()
                .map(|(sub, _)| sub.info(stall_ms))
                .collect(),
        )
    }
}

impl Handler<GetStreamHealth> for BrokerActor {
    type Result = MessageResult<GetStreamHealth>;

    fn handle(&mut self, _: GetStreamHealth, _ctx: &mut Context<Self>) -> Self::Result {
        self.trim_disconnects();
        MessageResult(StreamHealth {
            active_connections: self.sessions.len(),
            disconnects_1m: self.disconnects.len(),
        })
    }
}

impl Handler<CloseAllSessions> for BrokerActor {
    type Result = usize;

    fn handle(&mut self, _: CloseAllSessions, _ctx: &mut Context<Self>) -> usize {
        for (_, port) in self.sessions.values() {
            port.do_send(ToSession::End(EndReason::Shutdown));
        }
        self.sessions.len()
    }
}

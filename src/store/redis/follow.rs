//! Cross-instance fan-out on a Redis Cluster. A multi-key `XREAD` across
//! slots is refused there (`CROSSSLOT`), so the single-server tailer does
//! not carry over. Instead every append announces its topic's new latest
//! seq on the topic's sharded pub/sub channel (`SPUBLISH` in the append
//! script; the channel is hash-tagged like the topic's keys, so it lives
//! on the topic's slot), and each instance subscribes (`SSUBSCRIBE`) to the
//! channels of the topics it watches on one cluster connection of its own,
//! which holds one connection per master whatever the number of topics. A
//! wake-up is followed by an `XRANGE` from the last seq handed on.
//!
//! Pub/sub is at most once (a message is lost while a node fails over or a
//! slot moves), so every watched topic is also read once per sweep
//! (`redis.follow_sweep_ms`); a new watch is read at once, since an append
//! may come before its subscription does.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, Weak},
    time::Duration,
};

use deadpool_redis::redis::{
    self, cluster_async::ClusterConnection, ProtocolVersion, PushInfo, PushKind, Value,
};
use futures_util::{stream, StreamExt};

use sluice_actors::{
    cursor::Epoch,
    metrics::metrics,
    store::{AppendSink, ExternalAppends},
};

use super::{conn, parse_entries, tailer, text, trouble::Slot, Inner};

/// Entries read per topic per read.
const COUNT: usize = 1000;
/// Reads or subscriptions in flight at once.
const PARALLEL: usize = 64;
/// Pause after a failed connection attempt.
const BACKOFF: Duration = Duration::from_millis(200);

/// Work for the follower, filled by watches, unwatches and wake-ups; and
/// what keeps it from being woken, if anything.
pub struct Inbox {
    todo: Mutex<Todo>,
    wake: tokio::sync::Notify,
    /// What keeps wake-ups from reaching this instance, if anything.
    pub trouble: Slot,
}

#[derive(Default)]
struct Todo {
    subscribe: HashSet<String>,
    unsubscribe: HashSet<String>,
    read: HashSet<String>,
}

impl Default for Inbox {
    fn default() -> Self {
        Inbox {
            todo: Mutex::default(),
            wake: tokio::sync::Notify::new(),
            trouble: Slot::new(
                "cluster follower",
                "other instances' appends reach this one only with the sweep",
            ),
        }
    }
}

impl Inbox {
    fn add(&self, f: impl FnOnce(&mut Todo)) {
        f(&mut self.todo.lock().expect("poisoned"));
        self.wake.notify_one();
    }
}

/// Registers (or re-registers) a topic from `after_seq` on: subscribed to
/// its channel and read at once.
pub fn watch(inner: &Arc<Inner>, topic: &str, epoch: &Epoch, after_seq: u64, sink: AppendSink) {
    tailer::register(inner, topic, epoch, after_seq, sink);
    inner.follow.add(|t| {
        t.unsubscribe.remove(topic);
        t.subscribe.insert(topic.to_owned());
        t.read.insert(topic.to_owned());
    });
}

/// Stops following a topic (already out of the watched set).
pub fn unwatch(inner: &Arc<Inner>, topic: &str) {
    inner.follow.add(|t| {
        t.subscribe.remove(topic);
        t.unsubscribe.insert(topic.to_owned());
    });
}

/// The follower loop; ends when the store is dropped.
pub async fn run(inner: Weak<Inner>) {
    let (tx, mut pushes) = tokio::sync::mpsc::unbounded_channel::<PushInfo>();
    let built = inner.upgrade().map(|i| {
        let client = conn::cluster_builder(&i.cfg)
            .use_protocol(ProtocolVersion::RESP3)
            .push_sender(tx)
            .build();
        client.map(|c| (c, i.cfg.follow_sweep))
    });
    let (client, every) = match built {
        Some(Ok(c)) => c,
        Some(Err(e)) => {
            tracing::error!(error = %e, "cluster follower cannot be built");
            return;
        }
        None => return,
    };
    let mut sub: Option<ClusterConnection> = None;
    // Channel name → topic, of the subscribed channels.
    let mut channels: HashMap<String, String> = HashMap::new();
    let mut sweep = tokio::time::interval(every);
    let mut reads = Reads::default();
    loop {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let wake = async { strong.follow.wake.notified().await };
        tokio::select! {
            push = pushes.recv() => {
                if let Some(p) = push {
                    on_push(&strong, &channels, p);
                }
            }
            () = wake => {}
            _ = sweep.tick() => {
                let all = strong.watched_topics();
                metrics().watched_topics.set(all.len() as i64);
                reads.sweep(all);
            }
            Some(topic) = reads.running.next() => reads.done(topic),
        }
        while let Ok(p) = pushes.try_recv() {
            on_push(&strong, &channels, p);
        }
        if sub.is_none() {
            match client.get_async_connection().await {
                Ok(c) => {
                    // A new connection has no subscriptions: all again.
                    channels.clear();
                    let all = strong.watched_topics();
                    strong.follow.add(|t| {
                        t.subscribe.extend(all.iter().cloned());
                        t.read.extend(all);
                    });
                    sub = Some(c);
                }
                Err(e) => {
                    tracing::debug!(error = %e, "cluster follower cannot connect");
                    strong
                        .follow
                        .trouble
                        .set(Some(format!("cannot connect for wake-ups: {e}")));
                    drop(strong);
                    tokio::time::sleep(BACKOFF).await;
                    continue;
                }
            }
        }
        let todo = std::mem::take(&mut *strong.follow.todo.lock().expect("poisoned"));
        let c = sub.as_ref().expect("connected");
        let refused =
            subscriptions(&strong, c, &mut channels, todo.subscribe, todo.unsubscribe).await;
        match refused {
            Some(refused) => strong.follow.trouble.set(Some(refused)),
            // Only a round that found every channel subscribed clears it.
            None if strong
                .follow
                .todo
                .lock()
                .expect("poisoned")
                .subscribe
                .is_empty() =>
            {
                strong.follow.trouble.clear()
            }
            None => {}
        }
        reads.wanted(todo.read);
        reads.start(&strong);
    }
}

/// The reads of the follower. A wake-up's read starts at once, beside
/// the reads in flight, instead of waiting for a round of them to end: a
/// sweep of thousands of topics would otherwise hold every wake-up behind
/// it (p99 delivery of hundreds of ms). Sweep reads fill what room the
/// wake-ups leave. One read per topic at a time; a topic woken while its
/// read is in flight is read once more after it.
#[derive(Default)]
struct Reads {
    running: futures_util::stream::FuturesUnordered<
        std::pin::Pin<Box<dyn std::future::Future<Output = String> + Send>>,
    >,
    in_flight: HashSet<String>,
    /// Topics to read again once their read in flight ends.
    again: HashSet<String>,
    /// Woken topics waiting for room, first come first read.
    urgent: std::collections::VecDeque<String>,
    /// Swept topics waiting for room.
    swept: std::collections::VecDeque<String>,
}

impl Reads {
    fn wanted(&mut self, topics: HashSet<String>) {
        for topic in topics {
            if self.in_flight.contains(&topic) {
                self.again.insert(topic);
            } else {
                self.urgent.push_back(topic);
            }
        }
    }

    /// Queues every watched topic, unless the last sweep is still going.
    fn sweep(&mut self, all: Vec<String>) {
        if self.swept.is_empty() {
            self.swept.extend(all);
        }
    }

    fn done(&mut self, topic: String) {
        self.in_flight.remove(&topic);
        if self.again.remove(&topic) {
            self.urgent.push_back(topic);
        }
    }

    /// Starts queued reads while there is room: woken topics first, then
    /// swept ones up to half the room.
    fn start(&mut self, inner: &Arc<Inner>) {
        loop {
            let next = if self.running.len() >= PARALLEL {
                None
            } else if let Some(t) = self.urgent.pop_front() {
                Some(t)
            } else if self.running.len() < PARALLEL / 2 {
                self.swept.pop_front()
            } else {
                None
            };
            let Some(topic) = next else { return };
            if !self.in_flight.insert(topic.clone()) {
                // Already being read (a swept topic also woken): once more
                // after it.
                self.again.insert(topic);
                continue;
            }
            let inner = inner.clone();
            self.running.push(Box::pin(async move {
                read(&inner, &topic).await;
                topic
            }));
        }
    }
}

/// Marks the topic of a message for reading; after a lost connection or
/// a subscription the server dropped (its slot moved), everything.
fn on_push(inner: &Inner, channels: &HashMap<String, String>, p: PushInfo) {
    match p.kind {
        PushKind::SMessage => {
            if let Some(topic) = p.data.first().and_then(text).and_then(|c| channels.get(&c)) {
                let topic = topic.clone();
                inner.follow.add(|t| {
                    t.read.insert(topic);
                });
            }
        }
        PushKind::Disconnection | PushKind::SUnsubscribe => {
            let all = inner.watched_topics();
            inner.follow.add(|t| {
                if p.kind == PushKind::SUnsubscribe {
                    // The cluster client subscribes again on its own after a
                    // slot moves; asking once more is harmless.
                    if let Some(topic) =
                        p.data.first().and_then(text).and_then(|c| channels.get(&c))
                    {
                        t.subscribe.insert(topic.clone());
                    }
                }
                t.read.extend(all);
            });
        }
        _ => {}
    }
}

/// Subscribes and unsubscribes channels; a failed subscription is tried
/// again at the next round (the sweep reads its topic meanwhile). Says
/// why, when some were refused.
async fn subscriptions(
    inner: &Inner,
    c: &ClusterConnection,
    channels: &mut HashMap<String, String>,
    subscribe: HashSet<String>,
    unsubscribe: HashSet<String>,
) -> Option<String> {
    let mut first_error = None;
    let mut denied = false;
    let failed: Vec<String> = stream::iter(subscribe)
        .map(|topic| {
            let mut c = c.clone();
            let channel = inner.channel(&topic);
            async move {
                let r = c.ssubscribe(&channel).await;
                (topic, channel, r)
            }
        })
        .buffer_unordered(PARALLEL)
        .filter_map(|(topic, channel, r)| {
            let failed = match r {
                Ok(()) => {
                    channels.insert(channel, topic);
                    None
                }
                Err(e) => {
                    tracing::debug!(topic, error = %e, "cannot subscribe to a topic's channel");
                    first_error.get_or_insert_with(|| e.to_string());
                    denied |= e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoPerm);
                    Some(topic)
                }
            };
            async move { failed }
        })
        .collect()
        .await;
    let refused = (!failed.is_empty()).then(|| {
        // Channel permissions cover announcing as well as subscribing.
        let also = if denied {
            "; nor are this instance's appends announced on them"
        } else {
            ""
        };
        format!(
            "cannot subscribe to the channels of {} watched topics: {}{also}",
            failed.len(),
            first_error.unwrap_or_default()
        )
    });
    if !failed.is_empty() {
        inner
            .follow
            .todo
            .lock()
            .expect("poisoned")
            .subscribe
            .extend(failed);
    }
    for topic in unsubscribe {
        let channel = inner.channel(&topic);
        channels.remove(&channel);
        let _ = c.clone().sunsubscribe(&channel).await;
    }
    refused
}

/// Reads a watched topic's new entries and hands them to its actor.
async fn read(inner: &Inner, topic: &str) {
    let Some((log, last, generation)) = inner
        .watched
        .lock()
        .expect("poisoned")
        .get(topic)
        .map(|w| (inner.log_key(topic, &w.epoch), w.last, w.generation))
    else {
        return;
    };
    let from = format!("{}-0", last + 1);
    let page: Result<Value, _> = inner
        .call(|mut c| async move {
            redis::cmd("XRANGE")
                .arg(&log)
                .arg(&from)
                .arg("+")
                .arg("COUNT")
                .arg(COUNT)
                .query_async(&mut c)
                .await
        })
        .await;
    let Ok(events) = page.and_then(|v| parse_entries(&v)) else {
        // Read again at the next sweep.
        return;
    };
    let Some(newest) = events.last().map(|e| e.seq) else {
        return;
    };
    let full = events.len() == COUNT;
    {
        let mut watched = inner.watched.lock().expect("poisoned");
        // Only the registration this read was for (see tailer::deliver).
        let Some(w) = watched
            .get_mut(topic)
            .filter(|w| w.generation == generation)
        else {
            return;
        };
        if newest <= w.last {
            return;
        }
        let events: Vec<_> = events.into_iter().filter(|e| e.seq > w.last).collect();
        w.last = newest;
        w.sink.do_send(ExternalAppends {
            events,
            epoch: w.epoch.clone(),
        });
    }
    if full {
        inner.follow.add(|t| {
            t.read.insert(topic.to_owned());
        });
    }
}

//! Cross-instance fan-out: one task per broker instance tails every watched
//! topic's stream with a single blocking `XREAD` on a connection of its own,
//! and hands new entries to the topic actors.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicI64, AtomicU64, Ordering},
        Arc, Weak,
    },
    time::Duration,
};

use deadpool_redis::redis::{self, aio::MultiplexedConnection, Value};
use sluice_actors::{
    cursor::Epoch,
    metrics::metrics,
    store::{AppendSink, ExternalAppends},
};

use super::{parse_entries, text, trouble::Slot, Inner};

/// How long one `XREAD` blocks. A new watch does not wait for it to end:
/// the blocked read is interrupted (`CLIENT UNBLOCK`) so the next round
/// includes the new stream at once.
const BLOCK: Duration = Duration::from_millis(250);
/// How often a new watch retries interrupting the blocked read (it may
/// come just before the tailer blocks) until a round includes it.
const UNBLOCK_RETRY: Duration = Duration::from_millis(5);
/// Entries read per stream per round.
const COUNT: usize = 1000;
/// Pause after an error before reconnecting.
const BACKOFF: Duration = Duration::from_millis(200);

/// One watched topic.
pub struct Watch {
    /// Last sequence handed to the sink.
    pub(super) last: u64,
    /// Bumped by every `watch`, so a stale round cannot move `last` of a
    /// newer registration (e.g. after the log was reset).
    pub(super) generation: u64,
    /// The log epoch the sink follows (part of the stream key).
    pub(super) epoch: Epoch,
    pub(super) sink: AppendSink,
}

/// How a new watch reaches the tailer without waiting out a blocked read;
/// and what keeps the tailer from reading, if anything.
pub struct Wakeup {
    /// Bumped after every change of the watched set.
    version: AtomicU64,
    /// The version the tailer's latest round started from.
    seen: AtomicU64,
    /// Redis `CLIENT ID` of the tailer's connection (0: none yet).
    client_id: AtomicI64,
    /// Wakes a tailer that sleeps because nothing is watched.
    idle: tokio::sync::Notify,
    /// Why it cannot read, if it cannot.
    pub trouble: Slot,
}

impl Default for Wakeup {
    fn default() -> Self {
        Wakeup {
            version: AtomicU64::new(0),
            seen: AtomicU64::new(0),
            client_id: AtomicI64::new(0),
            idle: tokio::sync::Notify::new(),
            trouble: Slot::new(
                "tailer",
                "other instances' appends do not reach this instance's live streams \
                 until it reads again (a stream that resumes from its cursor gets them)",
            ),
        }
    }
}

/// Registers (or re-registers) a topic from `after_seq` on, and gets the
/// tailer to read it now rather than after its current blocked read.
pub fn watch(inner: &Arc<Inner>, topic: &str, epoch: &Epoch, after_seq: u64, sink: AppendSink) {
    register(inner, topic, epoch, after_seq, sink);
    // After the insert: a round that sees this version sees the watch.
    let version = inner.wakeup.version.fetch_add(1, Ordering::AcqRel) + 1;
    inner.wakeup.idle.notify_one();
    actix_web::rt::spawn(interrupt(Arc::downgrade(inner), version));
}

/// Puts `topic` in the watched set (a new generation of it).
pub(super) fn register(
    inner: &Inner,
    topic: &str,
    epoch: &Epoch,
    after_seq: u64,
    sink: AppendSink,
) {
    {
        let mut w = inner.watched.lock().expect("poisoned");
        let generation = w.get(topic).map_or(0, |x| x.generation + 1);
        w.insert(
            topic.to_owned(),
            Watch {
                last: after_seq,
                generation,
                epoch: epoch.clone(),
                sink,
            },
        );
    }
}

/// Unblocks the tailer's `XREAD` until a round started from `version`.
async fn interrupt(inner: Weak<Inner>, version: u64) {
    let tries = (BLOCK.as_millis() / UNBLOCK_RETRY.as_millis()) as usize;
    for _ in 0..tries {
        let Some(inner) = inner.upgrade() else { return };
        if inner.wakeup.seen.load(Ordering::Acquire) >= version {
            return;
        }
        let id = inner.wakeup.client_id.load(Ordering::Acquire);
        if id != 0 {
            // 1 if the read was blocked (it returns at once, empty), 0 if
            // the tailer is between reads: then retry shortly.
            let unblocked: Result<i64, _> = inner
                .call(|mut c| async move {
                    redis::cmd("CLIENT")
                        .arg("UNBLOCK")
                        .arg(id)
                        .query_async(&mut c)
                        .await
                })
                .await;
            // Done once the read is interrupted; also when Redis is away,
            // since the reconnecting tailer starts a round from the watched
            // set, this watch included.
            if !matches!(unblocked, Ok(0)) {
                return;
            }
        }
        drop(inner);
        tokio::time::sleep(UNBLOCK_RETRY).await;
    }
}

async fn connect(inner: &Inner) -> redis::RedisResult<MultiplexedConnection> {
    let cfg = redis::AsyncConnectionConfig::new()
        .set_response_timeout(Some(BLOCK + inner.cfg.timeout))
        .set_connection_timeout(Some(inner.cfg.timeout));
    let mut conn = inner.conn.dedicated(&cfg).await?;
    let id: i64 = redis::cmd("CLIENT")
        .arg("ID")
        .query_async(&mut conn)
        .await?;
    inner.wakeup.client_id.store(id, Ordering::Release);
    Ok(conn)
}

/// The tailer loop; ends when the store is dropped.
pub async fn run(inner: Weak<Inner>) {
    let mut conn: Option<MultiplexedConnection> = None;
    loop {
        let Some(inner) = inner.upgrade() else { return };
        // Read before the watched set, so the set holds every watch made
        // up to this version.
        let version = inner.wakeup.version.load(Ordering::Acquire);
        let round: Vec<(String, u64, u64)> = inner
            .watched
            .lock()
            .expect("poisoned")
            .iter()
            .map(|(t, w)| (inner.log_key(t, &w.epoch), w.last, w.generation))
            .collect();
        metrics().watched_topics.set(round.len() as i64);
        inner.wakeup.seen.store(version, Ordering::Release);
        if round.is_empty() {
            let wakeup = inner.clone();
            drop(inner);
            let _ = tokio::time::timeout(BLOCK, wakeup.wakeup.idle.notified()).await;
            continue;
        }
        if conn.is_none() {
            match connect(&inner).await {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    tracing::debug!(error = %e, "tailer cannot connect");
                    inner
                        .wakeup
                        .trouble
                        .set(Some(format!("cannot connect: {e}")));
                    drop(inner);
                    tokio::time::sleep(BACKOFF).await;
                    continue;
                }
            }
        }
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT")
            .arg(COUNT)
            .arg("BLOCK")
            .arg(BLOCK.as_millis() as u64)
            .arg("STREAMS");
        for (key, _, _) in &round {
            cmd.arg(key);
        }
        for (_, last, _) in &round {
            cmd.arg(format!("{last}-0"));
        }
        let c = conn.as_mut().expect("connected");
        let reply: Value = match cmd.query_async(c).await {
            Ok(v) => v,
            Err(e) => {
                tracing::debug!(error = %e, "tailer read failed");
                inner.wakeup.trouble.set(Some(format!("read failed: {e}")));
                inner.wakeup.client_id.store(0, Ordering::Release);
                conn = None;
                drop(inner);
                tokio::time::sleep(BACKOFF).await;
                continue;
            }
        };
        inner.wakeup.trouble.clear();
        deliver(&inner, &round, &reply);
    }
}

/// Hands each stream's new entries to its topic, in order. `round` holds
/// (stream key, last seq, generation) of every watched topic.
fn deliver(inner: &Arc<Inner>, round: &[(String, u64, u64)], reply: &Value) {
    let streams: Vec<(&Value, &Value)> = match reply {
        Value::Array(items) => items
            .iter()
            .filter_map(|s| match s {
                Value::Array(kv) if kv.len() == 2 => Some((&kv[0], &kv[1])),
                _ => None,
            })
            .collect(),
        Value::Map(kv) => kv.iter().map(|(k, v)| (k, v)).collect(),
        _ => return,
    };
    let by_key: HashMap<&str, u64> = round.iter().map(|(k, _, g)| (k.as_str(), *g)).collect();
    for (key, entries) in streams {
        let Some(key) = text(key) else { continue };
        let Some(&generation) = by_key.get(key.as_str()) else {
            continue;
        };
        let Ok(events) = parse_entries(entries) else {
            continue;
        };
        let Some(last) = events.last().map(|e| e.seq) else {
            continue;
        };
        let mut watched = inner.watched.lock().expect("poisoned");
        // Only the registration this round read for: a topic re-watched
        // meanwhile (new epoch, new position) is not moved by stale entries.
        if let Some((_, w)) = watched
            .iter_mut()
            .find(|(t, w)| w.generation == generation && inner.log_key(t, &w.epoch) == key)
        {
            w.last = w.last.max(last);
            w.sink.do_send(ExternalAppends {
                events,
                epoch: w.epoch.clone(),
            });
        }
    }
}

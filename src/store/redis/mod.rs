//! The Redis Streams store (cluster mode): any number of stateless broker
//! instances share one Redis (or Sentinel/Cluster-managed Redis).
//!
//! Key layout, every key of a topic under the `{topic}` hash tag so a
//! topic lives on one Redis Cluster slot (`sluice` is `redis.key_prefix`):
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `sluice:{t}:meta` | hash | `epoch`, `seq` (latest), `last_ms` (its time), `first` (oldest retained seq), `bytes` (data and type bytes appended) |
//! | `sluice:{t}:log:<epoch>` | stream | one entry per event, id `<seq>-0`, fields `d` data, `t` time ms, `o` bytes appended before it, `y` type |
//! | `sluice:{t}:k:<key>` | string, expires after the dedup window | `seq:time:fingerprint:epoch` of an `Idempotency-Key` |
//! | `sluice:{t}:p` | hash | producer id → highest `Producer-Seq` |
//! | `sluice:{t}:ps:<producer>:<seq>` | string, expires after the dedup window | `seq:time:epoch` of that producer sequence |
//! | `sluice:topics` | set | topic names |
//!
//! A cursor maps one to one onto a stream id (`<seq>-0`) plus the epoch kept
//! in `meta`: after a `FLUSHALL` or a lost Redis the next open creates a new
//! epoch, so old cursors get a 416 instead of a wrong position. The epoch is
//! part of the stream's key, so nothing that still holds the old epoch (a
//! tailer, a reader) can ever read the new log's entries as the old one's.
//!
//! Appends run one Lua script (loaded once, called by SHA) that checks
//! idempotency keys and producer sequences, `XADD`s the batch and writes the
//! dedup records, atomically: two instances can never store one key twice.
//! One tailer task per instance multiplexes every watched topic over a
//! single `XREAD BLOCK` connection. Every call has a deadline.
//!
//! A delete (`delete.lua`) removes the meta hash, the log and the producer
//! hash at once; dedup records left behind name their epoch, so the append
//! script ignores them in the log that follows.

mod append;
mod conn;
mod delete;
mod entries;
mod follow;
mod nodes;
mod retention;
mod tailer;
mod trouble;

use entries::{parse_entries, text};

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use bytes::Bytes;
use deadpool_redis::redis::{self, Script, Value};
use sluice_actors::{
    cursor::Epoch,
    event::{AppendOutcome, NewEvent, StoredEvent},
    store::{AppendSink, Store, StoreError, TopicBounds},
};

/// Settings of the Redis store.
#[derive(Clone, Debug)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port[/db]`, or `rediss://` for TLS.
    pub url: String,
    /// Sentinel addresses; when any, the master of `sentinel_master` is
    /// used instead of `url`.
    pub sentinels: Vec<String>,
    /// The service name Sentinel monitors.
    pub sentinel_master: String,
    /// Password of the servers found through Sentinel ("" for none).
    pub master_password: String,
    /// Seed nodes of a Redis Cluster; when any, the store speaks to the
    /// cluster instead of `url` (and `sentinels` must be empty).
    pub cluster_nodes: Vec<String>,
    /// Replicas that must have an append before it is acknowledged (`WAIT`);
    /// 0 acknowledges on the master's word.
    pub wait_replicas: u32,
    /// How long an append waits for `wait_replicas`.
    pub wait_timeout_ms: u64,
    /// Connections for commands, each multiplexed: one per thread that
    /// calls Redis, up to this many (as many again for appends when they
    /// wait for replicas; the tailer has its own).
    pub pool_size: usize,
    /// Appends to one topic in flight at once (see
    /// [`Store::max_appends_in_flight`]).
    pub appends_in_flight: usize,
    /// Deadline of every Redis call.
    pub timeout: Duration,
    /// First part of every key.
    pub key_prefix: String,
    /// Cluster mode: how often every followed topic is read even without a
    /// wake-up (a sharded pub/sub message is lost in a failover or a slot
    /// move).
    pub follow_sweep: Duration,
    /// Retention: most events per topic.
    pub max_events: u64,
    /// Retention: most bytes of event data and type per topic.
    pub max_bytes: u64,
    /// Retention: oldest event age, `None` for no age limit.
    pub max_age_ms: Option<i64>,
    /// How long idempotency keys and producer sequences are remembered.
    pub dedup_window_ms: i64,
}

struct Inner {
    conn: conn::Connector,
    cfg: RedisConfig,
    open: Script,
    append: Script,
    trim: Script,
    delete: Script,
    /// Epoch of each topic this instance opened, passed to the scripts so a
    /// reset log is noticed instead of written into.
    epochs: Mutex<HashMap<String, Epoch>>,
    watched: Mutex<HashMap<String, tailer::Watch>>,
    /// Brings new watches to the tailer at once.
    wakeup: tailer::Wakeup,
    /// Cluster mode: the follower's inbox (subscriptions and reads to do).
    follow: follow::Inbox,
}

/// The Redis Streams store.
pub struct RedisStore {
    inner: Arc<Inner>,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("redis: {e}"))
}

impl RedisStore {
    /// Connects (lazily: Redis may be down at start) and starts the tailer
    /// and the age-retention task on the current actix runtime.
    pub fn open(cfg: RedisConfig) -> Result<Self, String> {
        let inner = Arc::new(Inner {
            conn: conn::Connector::new(&cfg)?,
            cfg,
            open: Script::new(include_str!("open.lua")),
            append: Script::new(include_str!("append.lua")),
            trim: Script::new(include_str!("trim.lua")),
            delete: Script::new(include_str!("delete.lua")),
            epochs: Mutex::new(HashMap::new()),
            watched: Mutex::new(HashMap::new()),
            wakeup: tailer::Wakeup::default(),
            follow: follow::Inbox::default(),
        });
        if inner.conn.is_cluster() {
            actix_web::rt::spawn(follow::run(Arc::downgrade(&inner)));
        } else {
            actix_web::rt::spawn(tailer::run(Arc::downgrade(&inner)));
        }
        actix_web::rt::spawn(retention::run(Arc::downgrade(&inner)));
        Ok(RedisStore { inner })
    }
}

impl Inner {
    fn key(&self, topic: &str, suffix: &str) -> String {
        format!("{}:{{{topic}}}:{suffix}", self.cfg.key_prefix)
    }

    /// The stream of one epoch of a topic's log.
    fn log_key(&self, topic: &str, epoch: &Epoch) -> String {
        self.key(topic, &format!("log:{epoch}"))
    }

    /// The sharded pub/sub channel an append announces the topic's new
    /// latest seq on (cluster mode); hash-tagged like the topic's keys.
    fn channel(&self, topic: &str) -> String {
        self.key(topic, "n")
    }

    /// The topic registry: one set, so in a cluster it lives on one slot
    /// of its own. It is touched when a topic is created or deleted and by
    /// listings, never by appends or reads.
    fn topics_key(&self) -> String {
        format!("{}:topics", self.cfg.key_prefix)
    }

    /// Runs `f` with a connection under the call deadline.
    async fn call<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(conn::Handle) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        self.attempt(conn::Use::Command, f)
            .await
            .map_err(|(e, _)| e)
    }

    /// [`call`](Self::call) for an append: on a lane of its own when
    /// appends wait for replicas.
    async fn call_append<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(conn::Handle) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        self.attempt(conn::Use::Append, f).await.map_err(|(e, _)| e)
    }

    /// [`call`](Self::call) for commands that only read: tried once more
    /// on a fresh connection when the held one turned out to be gone (Redis
    /// restarted, or failed over, while it sat idle). A read can be sent
    /// twice without harm; an append cannot, so appends are not retried.
    async fn read_call<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        F: Fn(conn::Handle) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        match self.attempt(conn::Use::Command, &f).await {
            Err((_, true)) => self
                .attempt(conn::Use::Command, &f)
                .await
                .map_err(|(e, _)| e),
            r => r.map_err(|(e, _)| e),
        }
    }

    /// One call under the deadline; on failure, also whether the held
    /// connections were given up for it.
    async fn attempt<T, F, Fut>(&self, what: conn::Use, f: F) -> Result<T, (StoreError, bool)>
    where
        F: FnOnce(conn::Handle) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let deadline = tokio::time::Instant::now() + self.cfg.timeout;
        let late = || unavailable(format!("no answer within {:?}", self.cfg.timeout));
        let pooled = tokio::time::timeout_at(deadline, self.conn.get_for(what))
            .await
            .map_err(|_| (late(), false))?
            .map_err(|e| (unavailable(e), false))?;
        match tokio::time::timeout_at(deadline, f(pooled.handle())).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                let gone = self.conn.failed(&pooled, Some(&e));
                Err((
                    if e.code() == Some("EPOCH") {
                        StoreError::EpochChanged
                    } else {
                        unavailable(e)
                    },
                    gone,
                ))
            }
            Err(_) => {
                let gone = self.conn.failed(&pooled, None);
                Err((late(), gone))
            }
        }
    }

    async fn open_topic(&self, topic: &str) -> Result<TopicBounds, StoreError> {
        let meta = self.key(topic, "meta");
        let fresh = Epoch::generate();
        let topics = self.topics_key();
        let name = topic.to_owned();
        let open = &self.open;
        let (epoch, seq, last_ms, first): (String, u64, i64, u64) = self
            .call(|mut c| async move {
                let r = open
                    .key(&meta)
                    .arg(fresh.as_str())
                    .invoke_async(&mut c)
                    .await?;
                let _: i64 = redis::cmd("SADD")
                    .arg(&topics)
                    .arg(&name)
                    .query_async(&mut c)
                    .await?;
                Ok(r)
            })
            .await?;
        let epoch = Epoch::parse(&epoch).ok_or_else(|| unavailable("bad epoch in meta"))?;
        self.epochs
            .lock()
            .expect("poisoned")
            .insert(topic.to_owned(), epoch.clone());
        self.bounds_from(topic, epoch, seq, last_ms, first).await
    }

    async fn bounds(&self, topic: &str) -> Result<TopicBounds, StoreError> {
        let meta = &self.key(topic, "meta");
        let (epoch, seq, last_ms, first): (Option<String>, Option<u64>, Option<i64>, Option<u64>) =
            self.read_call(|mut c| async move {
                redis::cmd("HMGET")
                    .arg(meta)
                    .arg(&["epoch", "seq", "last_ms", "first"])
                    .query_async(&mut c)
                    .await
            })
            .await?;
        let (Some(epoch), Some(seq), Some(last_ms), Some(first)) = (epoch, seq, last_ms, first)
        else {
            return Err(StoreError::UnknownTopic);
        };
        let epoch = Epoch::parse(&epoch).ok_or_else(|| unavailable("bad epoch in meta"))?;
        self.bounds_from(topic, epoch, seq, last_ms, first).await
    }

    async fn bounds_from(
        &self,
        topic: &str,
        epoch: Epoch,
        latest_seq: u64,
        latest_time_ms: i64,
        first_seq: u64,
    ) -> Result<TopicBounds, StoreError> {
        let first_seq = first_seq.min(latest_seq + 1);
        let first_time_ms = if first_seq <= latest_seq {
            self.range(topic, &epoch, first_seq, 1)
                .await?
                .first()
                .map_or(latest_time_ms, |e| e.time_ms)
        } else {
            latest_time_ms
        };
        Ok(TopicBounds {
            epoch,
            first_seq,
            first_time_ms,
            latest_seq,
            latest_time_ms,
            forks: Vec::new(),
            lost: Vec::new(),
        })
    }

    /// Up to `count` entries from `from_seq` on.
    async fn range(
        &self,
        topic: &str,
        epoch: &Epoch,
        from_seq: u64,
        count: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let log = &self.log_key(topic, epoch);
        let v: Value = self
            .read_call(|mut c| async move {
                redis::cmd("XRANGE")
                    .arg(log)
                    .arg(format!("{from_seq}-0"))
                    .arg("+")
                    .arg("COUNT")
                    .arg(count)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        parse_entries(&v)
    }

    /// The topics this instance follows now.
    fn watched_topics(&self) -> Vec<String> {
        self.watched
            .lock()
            .expect("poisoned")
            .keys()
            .cloned()
            .collect()
    }

    fn epoch_of(&self, topic: &str) -> Option<Epoch> {
        self.epochs.lock().expect("poisoned").get(topic).cloned()
    }
}

#[async_trait]
impl Store for RedisStore {
    async fn open_topic(&self, topic: &str) -> Result<TopicBounds, StoreError> {
        self.inner.open_topic(topic).await
    }

    async fn bounds(&self, topic: &str) -> Result<TopicBounds, StoreError> {
        self.inner.bounds(topic).await
    }

    async fn append(
        &self,
        topic: &str,
        batch: Vec<NewEvent>,
        time_ms: i64,
    ) -> Result<Vec<AppendOutcome>, StoreError> {
        let inner = &self.inner;
        let epoch = match inner.epoch_of(topic) {
            Some(e) => e,
            None => inner.open_topic(topic).await?.epoch,
        };
        inner.append_batch(topic, &epoch, batch, time_ms).await
    }

    fn max_appends_in_flight(&self) -> usize {
        self.inner.cfg.appends_in_flight
    }

    fn appends_may_reorder(&self) -> bool {
        true
    }

    async fn read(
        &self,
        topic: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let inner = &self.inner;
        let from = after_seq + 1;
        // The common case (a catch-up page, a fill) in one round trip: the
        // log's start and the page, pipelined, under the epoch this instance
        // knows; anything unusual (another epoch, a trimmed position) takes
        // the careful path below.
        if let Some(epoch) = inner.epoch_of(topic) {
            let (meta, log) = (&inner.key(topic, "meta"), &inner.log_key(topic, &epoch));
            let ((cur, first), page): ((Option<String>, Option<u64>), Value) = inner
                .read_call(|mut c| async move {
                    redis::pipe()
                        .cmd("HMGET")
                        .arg(meta)
                        .arg(&["epoch", "first"])
                        .cmd("XRANGE")
                        .arg(log)
                        .arg(format!("{from}-0"))
                        .arg("+")
                        .arg("COUNT")
                        .arg(limit)
                        .query_async(&mut c)
                        .await
                })
                .await?;
            if cur.as_deref() == Some(epoch.as_str()) && first.is_some_and(|f| f <= from) {
                return parse_entries(&page);
            }
        }
        let b = inner.bounds(topic).await?;
        let from = from.max(b.first_seq);
        if from > b.latest_seq {
            return Ok(Vec::new());
        }
        self.inner.range(topic, &b.epoch, from, limit).await
    }

    async fn topics(&self) -> Result<Vec<String>, StoreError> {
        let key = &self.inner.topics_key();
        let mut names: Vec<String> = self
            .inner
            .read_call(
                |mut c| async move { redis::cmd("SMEMBERS").arg(key).query_async(&mut c).await },
            )
            .await?;
        names.sort();
        Ok(names)
    }

    async fn delete_topic(&self, topic: &str) -> Result<(), StoreError> {
        self.inner.delete(topic).await
    }

    async fn ready(&self) -> Result<(), String> {
        if self.inner.conn.is_cluster() {
            return self.inner.cluster_ready().await;
        }
        self.inner
            .read_call(|mut c| async move {
                let _: String = redis::cmd("PING").query_async(&mut c).await?;
                Ok(())
            })
            .await
            .map_err(|e| e.to_string())
    }

    fn degraded(&self) -> Option<String> {
        if self.inner.conn.is_cluster() {
            self.inner.follow.trouble.describe()
        } else {
            self.inner.wakeup.trouble.describe()
        }
    }

    async fn flush(&self) -> Result<(), StoreError> {
        // Durability is Redis's own (AOF, replication); nothing is buffered here.
        Ok(())
    }

    fn watch(&self, topic: &str, epoch: &Epoch, after_seq: u64, sink: AppendSink) {
        if self.inner.conn.is_cluster() {
            follow::watch(&self.inner, topic, epoch, after_seq, sink);
        } else {
            tailer::watch(&self.inner, topic, epoch, after_seq, sink);
        }
    }

    fn unwatch(&self, topic: &str) {
        self.inner.watched.lock().expect("poisoned").remove(topic);
        if self.inner.conn.is_cluster() {
            follow::unwatch(&self.inner, topic);
        }
    }
}

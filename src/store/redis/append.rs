//! Appending a batch (`append.lua`): the script call, the keys it declares,
//! the optional replica acknowledgement (`WAIT`) and its replies.

use deadpool_redis::redis::{self, Value};
use sluice_actors::{
    cursor::{Cursor, Epoch},
    event::{AppendOutcome, NewEvent, StoredEvent},
    store::StoreError,
};

use super::{entries::reply_field, unavailable, Inner};

impl Inner {
    /// Appends `batch` to `topic`'s log of `epoch`, atomically with its
    /// dedup checks and records.
    pub(super) async fn append_batch(
        &self,
        topic: &str,
        epoch: &Epoch,
        batch: Vec<NewEvent>,
        time_ms: i64,
    ) -> Result<Vec<AppendOutcome>, StoreError> {
        let (meta, log) = (self.key(topic, "meta"), self.log_key(topic, epoch));
        let prefix = self.key(topic, "");
        let notify = if self.conn.is_cluster() {
            self.channel(topic)
        } else {
            String::new()
        };
        let cfg = &self.cfg;
        // Every key the script may touch is declared (see append.lua).
        let mut keys = vec![meta, log];
        let mut producers = false;
        for ev in &batch {
            if let Some(k) = &ev.idempotency_key {
                keys.push(format!("{prefix}k:{k}"));
            }
            if let Some((p, s)) = &ev.producer {
                producers = true;
                keys.push(format!("{prefix}ps:{p}:{s}"));
            }
        }
        if producers {
            keys.push(format!("{prefix}p"));
        }
        let mut eval = redis::cmd("EVALSHA");
        eval.arg(self.append.get_hash())
            .arg(keys.len())
            .arg(&keys)
            .arg(epoch.as_str())
            .arg(time_ms)
            .arg(cfg.dedup_window_ms)
            .arg(cfg.max_events)
            .arg(batch.len())
            .arg(&prefix)
            .arg(cfg.max_bytes)
            .arg(&notify);
        for ev in &batch {
            let (producer, pseq) = ev
                .producer
                .as_ref()
                .map_or((String::new(), String::new()), |(p, s)| {
                    (p.clone(), s.to_string())
                });
            eval.arg(&ev.data[..])
                .arg(ev.event_type.as_deref().unwrap_or(""))
                .arg(ev.idempotency_key.as_deref().unwrap_or(""))
                .arg(format!("{:032x}", ev.fingerprint()))
                .arg(producer)
                .arg(pseq);
        }
        let (replicas, wait_ms) = (cfg.wait_replicas, cfg.wait_timeout_ms);
        let mut p = redis::pipe();
        p.add_command(eval);
        if replicas > 0 {
            // WAIT on the connection that wrote (a cluster routes the
            // pipeline by the script's keys), so it counts this write.
            p.cmd("WAIT").arg(replicas).arg(wait_ms);
        }
        let script = &self.append;
        let replies: Vec<Value> = self
            .call(|mut c| async move {
                let first: redis::RedisResult<Vec<Value>> = p.query_async(&mut c).await;
                let mut reply = match first {
                    Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                        script.load_async(&mut c).await?;
                        p.query_async(&mut c).await?
                    }
                    r => r?,
                };
                if replicas > 0 {
                    let acked = match reply.pop() {
                        Some(Value::Int(n)) => n,
                        _ => 0,
                    };
                    if acked < i64::from(replicas) {
                        return Err(redis::RedisError::from((
                            redis::ErrorKind::Server(redis::ServerErrorKind::TryAgain),
                            "append not yet on enough replicas (it may be stored: retry with the same Idempotency-Key)",
                            format!("{acked} of {replicas} within {wait_ms} ms"),
                        )));
                    }
                }
                match reply.pop() {
                    Some(Value::Array(v)) => Ok(v),
                    _ => Err(redis::RedisError::from((
                        redis::ErrorKind::UnexpectedReturnType,
                        "append script reply",
                    ))),
                }
            })
            .await
            .inspect_err(|e| {
                if matches!(e, StoreError::EpochChanged) {
                    self.epochs.lock().expect("poisoned").remove(topic);
                }
            })?;
        if replies.len() != batch.len() {
            return Err(unavailable(
                "append script answered the wrong number of results",
            ));
        }
        let bad = || unavailable("unexpected append reply");
        let mut out = Vec::with_capacity(batch.len());
        for (ev, r) in batch.into_iter().zip(&replies) {
            let num = |i| reply_field(r, i).and_then(|s| s.parse::<i64>().ok());
            out.push(match reply_field(r, 0).as_deref() {
                Some("ok") => AppendOutcome::Stored(StoredEvent {
                    seq: num(1).ok_or_else(bad)? as u64,
                    time_ms: num(2).ok_or_else(bad)?,
                    event_type: ev.event_type,
                    data: ev.data,
                }),
                Some("dup") => AppendOutcome::Duplicate(
                    num(1)
                        .zip(num(2))
                        .map(|(seq, t)| Cursor::new(t, seq as u64, epoch.clone())),
                ),
                Some("conflict") => AppendOutcome::KeyConflict,
                Some("gap") => AppendOutcome::SequenceGap {
                    expected: reply_field(r, 1)
                        .and_then(|s| s.parse().ok())
                        .ok_or_else(bad)?,
                },
                _ => return Err(bad()),
            });
        }
        Ok(out)
    }
}

//! Appending a batch (`append.lua`): the script call, the keys it declares,
//! the optional replica acknowledgement (`WAIT`) and its replies.

use deadpool_redis::redis::{self, Value};
use sluice_actors::{
    cursor::{Cursor, Epoch},
    event::{AppendOutcome, NewEvent, StoredEvent},
    store::StoreError,
};

use super::{unavailable, Inner};

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
        // Two values per event unless some event has a key or a producer
        // sequence (see append.lua).
        let per = if keys.len() > 2 { 6 } else { 2 };
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
            .arg(&notify)
            .arg(per);
        for ev in &batch {
            eval.arg(&ev.data[..])
                .arg(ev.event_type.as_deref().unwrap_or(""));
            if per == 2 {
                continue;
            }
            // The fingerprint tells a retry from a reuse of the key; without
            // a key nothing compares it.
            let fingerprint = ev
                .idempotency_key
                .as_ref()
                .map_or(String::new(), |_| format!("{:032x}", ev.fingerprint()));
            let (producer, pseq) = ev
                .producer
                .as_ref()
                .map_or((String::new(), String::new()), |(p, s)| {
                    (p.clone(), s.to_string())
                });
            eval.arg(ev.idempotency_key.as_deref().unwrap_or(""))
                .arg(fingerprint)
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
            .call_append(|mut c| async move {
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
        verdicts(batch, epoch, &replies)
    }
}

/// The outcome of each event of `batch` from the script's reply (see
/// append.lua): `{time, seq before, verdicts, details...}`.
fn verdicts(
    batch: Vec<NewEvent>,
    epoch: &Epoch,
    reply: &[Value],
) -> Result<Vec<AppendOutcome>, StoreError> {
    let bad = || unavailable("unexpected append reply");
    let field = |i: usize| match reply.get(i) {
        Some(Value::BulkString(b)) => std::str::from_utf8(b).ok(),
        Some(Value::SimpleString(s)) => Some(s.as_str()),
        _ => None,
    };
    let num = |i: usize| field(i).and_then(|s| s.parse::<i64>().ok());
    let (time_ms, mut seq) = num(0).zip(num(1)).ok_or_else(bad)?;
    let codes = field(2).ok_or_else(bad)?.as_bytes();
    if codes.len() != batch.len() {
        return Err(unavailable(
            "append script answered the wrong number of results",
        ));
    }
    let mut detail = 3;
    // The details, in order, of the events not stored.
    let mut next = || {
        detail += 1;
        field(detail - 1)
    };
    let mut out = Vec::with_capacity(batch.len());
    for (ev, code) in batch.into_iter().zip(codes) {
        out.push(match code {
            b'.' => {
                seq += 1;
                AppendOutcome::Stored(StoredEvent {
                    seq: seq as u64,
                    time_ms,
                    event_type: ev.event_type,
                    data: ev.data,
                })
            }
            b'd' => {
                let s = next().and_then(|s| s.parse().ok());
                let t = next().and_then(|t| t.parse().ok());
                let (s, t) = s.zip(t).ok_or_else(bad)?;
                AppendOutcome::Duplicate(Some(Cursor::new(t, s, epoch.clone())))
            }
            b'u' => AppendOutcome::Duplicate(None),
            b'c' => AppendOutcome::KeyConflict,
            b'g' => AppendOutcome::SequenceGap {
                expected: next().and_then(|s| s.parse().ok()).ok_or_else(bad)?,
            },
            _ => return Err(bad()),
        });
    }
    Ok(out)
}

//! A store wrapper that injects faults, for tests of recovery only: it fails
//! every Nth append (before the inner store sees it, so nothing is stored)
//! and can slow appends down. Enabled by the server only through the
//! `SLUICE_TEST_FAULTS` environment variable.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use async_trait::async_trait;

use crate::{
    event::{AppendOutcome, NewEvent, StoredEvent},
    store::{SharedStore, Store, StoreError, TopicBounds},
};

/// What to inject.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    /// Fail every Nth append (0: never).
    pub append_fail_every: u64,
    /// Sleep this long before every append.
    pub append_delay: Duration,
}

impl Faults {
    /// Parses `append_fail_every=N,append_delay_ms=M`.
    pub fn parse(spec: &str) -> Result<Faults, String> {
        let mut f = Faults::default();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or(format!("{part:?}: expected key=value"))?;
            let n: u64 = v
                .parse()
                .map_err(|_| format!("{k}: {v:?} is not a number"))?;
            match k {
                "append_fail_every" => f.append_fail_every = n,
                "append_delay_ms" => f.append_delay = Duration::from_millis(n),
                _ => {
                    return Err(format!(
                        "unknown fault {k:?}: use append_fail_every or append_delay_ms"
                    ))
                }
            }
        }
        Ok(f)
    }
}

/// The fault-injecting wrapper.
pub struct FaultyStore {
    inner: SharedStore,
    faults: Faults,
    appends: AtomicU64,
}

impl FaultyStore {
    /// Wraps `inner`.
    pub fn new(inner: SharedStore, faults: Faults) -> Self {
        FaultyStore {
            inner,
            faults,
            appends: AtomicU64::new(0),
        }
    }
}

#[async_trait]
impl Store for FaultyStore {
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
        if !self.faults.append_delay.is_zero() {
            tokio::time::sleep(self.faults.append_delay).await;
        }
        let n = self.appends.fetch_add(1, Ordering::Relaxed) + 1;
        if self.faults.append_fail_every > 0 && n.is_multiple_of(self.faults.append_fail_every) {
            return Err(StoreError::Unavailable("injected fault".into()));
        }
        self.inner.append(topic, batch, time_ms).await
    }

    async fn read(
        &self,
        topic: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        self.inner.read(topic, after_seq, limit).await
    }

    async fn read_bounded(
        &self,
        topic: &str,
        after_seq: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        self.inner
            .read_bounded(topic, after_seq, limit, max_bytes)
            .await
    }

    async fn topics(&self) -> Result<Vec<String>, StoreError> {
        self.inner.topics().await
    }

    async fn delete_topic(&self, topic: &str) -> Result<(), StoreError> {
        self.inner.delete_topic(topic).await
    }

    async fn ready(&self) -> Result<(), String> {
        self.inner.ready().await
    }

    fn degraded(&self) -> Option<String> {
        self.inner.degraded()
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.inner.flush().await
    }
}

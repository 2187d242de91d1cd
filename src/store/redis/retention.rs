//! Age retention on Redis: a task that moves the logical start of each
//! log this instance opened past its expired events (`trim.lua`).

use std::time::Duration;

use sluice_actors::{cursor::now_ms, store::StoreError};

use super::Inner;

/// Age retention for the topics this instance has opened (published to or
/// read): moves each log's logical start past expired events (idempotent
/// across instances, so several instances doing it is harmless).
pub(super) async fn run(inner: std::sync::Weak<Inner>) {
    const EVERY: Duration = Duration::from_secs(1);
    const PAGE: usize = 1000;
    loop {
        tokio::time::sleep(EVERY).await;
        let Some(inner) = inner.upgrade() else { return };
        let Some(max_age) = inner.cfg.max_age_ms else {
            continue;
        };
        let topics: Vec<String> = inner
            .epochs
            .lock()
            .expect("poisoned")
            .keys()
            .cloned()
            .collect();
        for topic in topics {
            let b = match inner.bounds(&topic).await {
                Ok(b) => b,
                // Deleted (through any instance): forgotten until reopened.
                Err(StoreError::UnknownTopic) => {
                    inner.epochs.lock().expect("poisoned").remove(&topic);
                    continue;
                }
                Err(_) => continue,
            };
            let cutoff = now_ms() - max_age;
            let Ok(page) = inner.range(&topic, &b.epoch, b.first_seq, PAGE).await else {
                continue;
            };
            let Some(last_old) = page.iter().take_while(|e| e.time_ms < cutoff).last() else {
                continue;
            };
            let (meta, log, trim) = (
                inner.key(&topic, "meta"),
                inner.log_key(&topic, &b.epoch),
                &inner.trim,
            );
            let want = last_old.seq + 1;
            let epoch = b.epoch.to_string();
            let res: Result<i64, _> = inner
                .call(|mut c| async move {
                    trim.key(&meta)
                        .key(&log)
                        .arg(&epoch)
                        .arg(want)
                        .invoke_async(&mut c)
                        .await
                })
                .await;
            if let Err(e) = res {
                tracing::warn!(topic, error = %e, "age retention failed");
            }
        }
    }
}

//! Deleting a topic from Redis (`delete.lua`).

use deadpool_redis::redis;
use sluice_actors::store::StoreError;

use super::Inner;

impl Inner {
    /// Deletes `topic`'s log and takes it out of the topic set; see
    /// `delete.lua`.
    pub(super) async fn delete(&self, topic: &str) -> Result<(), StoreError> {
        let (topics, name) = (self.topics_key(), topic.to_owned());
        // Out of the set first: a listed name without a log is skipped by
        // listings, while a log that is not listed would be hidden. (The set
        // and the topic's keys are in different cluster slots: no one
        // script can do both.)
        let unlist = |cmd: &'static str| {
            let (topics, name) = (topics.clone(), name.clone());
            move |mut c: super::conn::Handle| async move {
                redis::cmd(cmd)
                    .arg(&topics)
                    .arg(&name)
                    .query_async::<i64>(&mut c)
                    .await
            }
        };
        self.call(unlist("SREM")).await?;
        let deleted = self.delete_log(topic).await;
        let deleted = match deleted {
            Ok(d) => d,
            Err(e) => {
                // Perhaps not deleted: listed again, in case (a listed name
                // whose log is gone is skipped anyway).
                let _ = self.call(unlist("SADD")).await;
                return Err(e);
            }
        };
        self.epochs.lock().expect("poisoned").remove(topic);
        match deleted {
            Some(_) => Ok(()),
            None => Err(StoreError::UnknownTopic),
        }
    }

    /// Runs `delete.lua` on the log of the epoch read just before; a log
    /// recreated in between is read again (a few times at most).
    async fn delete_log(&self, topic: &str) -> Result<Option<String>, StoreError> {
        let (meta, producers) = (self.key(topic, "meta"), self.key(topic, "p"));
        for _ in 0..3 {
            let m = meta.clone();
            let epoch: Option<String> = self
                .call(|mut c| async move {
                    redis::cmd("HGET")
                        .arg(&m)
                        .arg("epoch")
                        .query_async(&mut c)
                        .await
                })
                .await?;
            let Some(epoch) = epoch else { return Ok(None) };
            let log = self.key(topic, &format!("log:{epoch}"));
            let (m, p, script) = (meta.clone(), producers.clone(), &self.delete);
            match self
                .call(|mut c| async move {
                    script
                        .key(&m)
                        .key(&p)
                        .key(&log)
                        .arg(&epoch)
                        .invoke_async(&mut c)
                        .await
                })
                .await
            {
                Err(StoreError::EpochChanged) => continue,
                r => return r,
            }
        }
        Err(StoreError::EpochChanged)
    }
}

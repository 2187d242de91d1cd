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
            move |mut c: redis::aio::MultiplexedConnection| async move {
                redis::cmd(cmd)
                    .arg(&topics)
                    .arg(&name)
                    .query_async::<i64>(&mut c)
                    .await
            }
        };
        self.call(unlist("SREM")).await?;
        let (meta, producers, prefix) = (
            self.key(topic, "meta"),
            self.key(topic, "p"),
            self.key(topic, ""),
        );
        let script = &self.delete;
        let deleted: Result<Option<String>, StoreError> = self
            .call(|mut c| async move {
                script
                    .key(&meta)
                    .key(&producers)
                    .arg(&prefix)
                    .invoke_async(&mut c)
                    .await
            })
            .await;
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
}

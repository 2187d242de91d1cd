//! The embedded store: a delete is durable. After a SIGKILL right after it
//! (the journal still holding the topic's appends) the restarted broker
//! does not have the topic back, and keeps the others whole.

use super::{assert_gone, delete, listed};
use crate::support::*;

on_embedded_store! {
    #[tokio::test]
    deleted_topic_stays_deleted_after_sigkill,
}

async fn deleted_topic_stays_deleted_after_sigkill(store: Store) {
    bounded(90, async {
        let dir = tempfile::tempdir().unwrap();
        let mut b = BrokerProcess::start_in(store, dir.path(), &[]).await;
        let (t, kept) = (topic("gone"), topic("kept"));
        let old = b.publish_numbered(&t, 0..5).await;
        let kept_cursors = b.publish_numbered(&kept, 0..3).await;
        assert_eq!(delete(&b, &t).await.status, 204);
        b.kill9().await;

        let b = BrokerProcess::start_in(store, dir.path(), &[]).await;
        assert_gone(&b, &t, "after a SIGKILL and a restart").await;
        assert_eq!(listed(&b).await, std::slice::from_ref(&kept));
        let ids: Vec<String> = b.all_events(&kept).await.iter().map(cursor_of).collect();
        assert_eq!(ids, kept_cursors, "the other topic is whole");
        let left: Vec<String> = std::fs::read_dir(dir.path().join("topics"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left, std::slice::from_ref(&kept), "files left in topics/");
        let fresh = b.publish_ok(&t, "new").await;
        assert_ne!(cursor_epoch(&fresh), cursor_epoch(&old[0]));
        assert_eq!(b.all_events(&t).await.len(), 1);
    })
    .await;
}

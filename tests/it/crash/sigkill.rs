//! SIGKILL while two publishers and a subscriber are busy, for each fsync
//! policy: every acknowledged event is in the log after a restart.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use serde_json::Value;

use super::{publish_until_error, T};
use crate::support::*;

on_both_stores! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    sigkill_mid_stream_loses_no_acknowledged_event,
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    sigkill_with_fsync_interval_loses_nothing,
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    sigkill_with_fsync_never_loses_nothing,
}

async fn sigkill_mid_stream_loses_no_acknowledged_event(store: Store) {
    bounded(120, sigkill_mid_stream(store, "always")).await;
}

/// A broker crash alone (not the machine) loses nothing whatever the fsync
/// policy: the OS still has every write.
async fn sigkill_with_fsync_interval_loses_nothing(store: Store) {
    bounded(120, sigkill_mid_stream(store, "interval")).await;
}

async fn sigkill_with_fsync_never_loses_nothing(store: Store) {
    bounded(120, sigkill_mid_stream(store, "never")).await;
}

async fn sigkill_mid_stream(store: Store, fsync: &'static str) {
    {
        let dir = tempfile::tempdir().unwrap();
        let env = [("SLUICE__EMBEDDED__FSYNC", fsync)];
        let mut b = BrokerProcess::start_in(store, dir.path(), &env).await;
        let t = "crash";

        let acked_a = Arc::new(Mutex::new(Vec::new()));
        let acked_b = Arc::new(Mutex::new(Vec::new()));
        let count = Arc::new(AtomicUsize::new(0));
        let pa = tokio::spawn(publish_until_error(
            b.base_url(),
            t.into(),
            "a",
            acked_a.clone(),
            count.clone(),
        ));
        let pb = tokio::spawn(publish_until_error(
            b.base_url(),
            t.into(),
            "b",
            acked_b.clone(),
            count.clone(),
        ));

        // A live subscriber reads along.
        let mut s = b.sse(t, "from=earliest", &[]).await;
        s.assert_ok();
        let mut seen: Vec<(String, String)> = Vec::new();
        while seen.len() < 100 {
            let m = s.expect_event(T).await;
            seen.push((msg_id(&m), m.data.to_string()));
        }
        let c2 = count.clone();
        wait_until(T, "500 acknowledged publishes", || {
            let c = c2.clone();
            async move { c.load(Ordering::SeqCst) >= 500 }
        })
        .await;

        b.kill9().await;
        tokio::time::timeout(T, pa)
            .await
            .expect("publisher a stops")
            .unwrap();
        tokio::time::timeout(T, pb)
            .await
            .expect("publisher b stops")
            .unwrap();
        // Drain what the subscriber had received before the crash.
        while let Some(m) = s.next_event(Duration::from_secs(2)).await {
            seen.push((msg_id(&m), m.data.to_string()));
        }
        drop(s);
        let acked_a = acked_a.lock().unwrap().clone();
        let acked_b = acked_b.lock().unwrap().clone();
        assert!(acked_a.len() + acked_b.len() >= 500);

        let b2 = BrokerProcess::start_in(store, dir.path(), &env).await;
        let hist = b2.all_events(t).await;
        let hist_pairs: Vec<(String, String)> = hist
            .iter()
            .map(|e| (cursor_of(e), data_of(e).to_string()))
            .collect();
        eprintln!(
            "sigkill (fsync {fsync}): acked a={} b={}, delivered before the crash={}, in the log after restart={}",
            acked_a.len(),
            acked_b.len(),
            seen.len(),
            hist_pairs.len()
        );
        // Strictly increasing cursors, consecutive sequences from 1.
        for (i, (c, _)) in hist_pairs.iter().enumerate() {
            assert_eq!(
                cursor_seq(c),
                i as u64 + 1,
                "consecutive positions after restart"
            );
            if i > 0 {
                assert!(hist_pairs[i - 1].0 < *c, "cursor order");
            }
        }
        let index: std::collections::HashMap<&str, &str> = hist_pairs
            .iter()
            .map(|(c, d)| (c.as_str(), d.as_str()))
            .collect();
        for (c, d) in acked_a.iter().chain(acked_b.iter()) {
            assert_eq!(
                index.get(c.as_str()).copied(),
                Some(d.as_str()),
                "acknowledged event {c} {d} lost or changed after SIGKILL"
            );
        }
        for (c, d) in &seen {
            assert_eq!(
                index.get(c.as_str()).copied(),
                Some(d.as_str()),
                "event {c} delivered before the crash is not in the log after it"
            );
        }
        // Each publisher's events are in its order, without holes up to the
        // last acknowledged one.
        for (tag, acked) in [("a", &acked_a), ("b", &acked_b)] {
            let seqs: Vec<u64> = hist_pairs
                .iter()
                .filter_map(|(_, d)| {
                    let v: Value = serde_json::from_str(d).ok()?;
                    (v["p"] == tag).then(|| v["seq"].as_u64().unwrap())
                })
                .collect();
            assert!(
                seqs.len() >= acked.len(),
                "{tag}: {} stored < {} acked",
                seqs.len(),
                acked.len()
            );
            assert_eq!(
                seqs,
                (0..seqs.len() as u64).collect::<Vec<_>>(),
                "publisher {tag} order"
            );
        }

        // The subscriber resumes from its last id: exactly the rest.
        let last = seen.last().unwrap().0.clone();
        let pos = hist_pairs.iter().position(|(c, _)| *c == last).unwrap();
        let rest = &hist_pairs[pos + 1..];
        let mut s = b2.sse(t, "", &[("last-event-id", &last)]).await;
        s.assert_ok();
        let got: Vec<(String, String)> = s
            .expect_events(rest.len(), T)
            .await
            .iter()
            .map(|m| (msg_id(m), m.data.to_string()))
            .collect();
        assert_eq!(got, rest, "resume after the crash: no gap, no duplicate");
        // Publishing continues the same log.
        let c = b2.publish_ok(t, "after").await;
        assert_eq!(cursor_seq(&c), hist_pairs.len() as u64 + 1);
        assert_eq!(
            cursor_epoch(&c),
            cursor_epoch(&hist_pairs[0].0),
            "same epoch after restart"
        );
        let m = s.expect_event(T).await;
        assert_eq!(msg_id(&m), c);
    }
}

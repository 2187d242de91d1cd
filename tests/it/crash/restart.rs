//! SIGTERM and restarts: streams end cleanly, the exit is 0, every
//! acknowledged event, cursor, idempotency key and producer sequence
//! survives.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use super::{publish_until_error, T};
use crate::support::*;

on_both_stores! {
    #[tokio::test]
    sigterm_closes_streams_cleanly_and_exits_zero,
    #[tokio::test]
    graceful_restart_keeps_cursors_and_resume,
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    sigterm_during_publishing_keeps_every_acknowledged_event,
}

async fn sigterm_closes_streams_cleanly_and_exits_zero(store: Store) {
    bounded(60, async {
        let mut b = BrokerProcess::start(
            store,
            &[
                ("SLUICE__SHUTDOWN_GRACE_SECS", "5"),
                ("SLUICE__STREAM__HEARTBEAT_SECS", "1"),
            ],
        )
        .await;
        let t = "term";
        let c = b.publish_ok(t, "one").await;
        let mut s1 = b.sse(t, "from=earliest", &[]).await;
        let mut s2 = b.sse("term-idle", "", &[]).await;
        s1.assert_ok();
        s2.assert_ok();
        assert_eq!(msg_id(&s1.expect_event(T).await), c);
        // s2 is started (its retry frame arrived).
        assert!(s2.next_item(T).await.is_some());

        let started = tokio::time::Instant::now();
        b.terminate();
        for (name, s) in [("s1", &mut s1), ("s2", &mut s2)] {
            let end = loop {
                match s.next_item(Duration::from_secs(8)).await {
                    None => panic!("{name}: stream still open 8 s after SIGTERM"),
                    Some(SseItem::Message(m)) => {
                        panic!("{name}: unexpected event during shutdown: {m:?}")
                    }
                    Some(SseItem::Comment(_)) | Some(SseItem::Retry(_)) => continue,
                    Some(end) => break end,
                }
            };
            assert_eq!(
                end,
                SseItem::Eof,
                "{name}: stream must end cleanly, not reset"
            );
        }
        let st = b
            .wait_exit(Duration::from_secs(8))
            .await
            .expect("process exits within shutdown_grace_secs after SIGTERM");
        assert_eq!(st.code(), Some(0), "exit status 0 on SIGTERM: {st:?}");
        assert!(
            started.elapsed() < Duration::from_secs(7),
            "took {:?} for a 5 s grace",
            started.elapsed()
        );
    })
    .await;
}

async fn graceful_restart_keeps_cursors_and_resume(store: Store) {
    bounded(90, async {
        let dir = tempfile::tempdir().unwrap();
        let t = "restart";
        let mut b = BrokerProcess::start_in(store, dir.path(), &[]).await;
        let cs = b.publish_numbered(t, 1..21).await;
        let r = b
            .publish(t, "{\"seq\":21}", &[("idempotency-key", "k21")])
            .await;
        assert_eq!(r.status, 201);
        let c21 = r.cursor();
        let r = b
            .publish(
                t,
                "{\"seq\":22}",
                &[("producer-id", "p"), ("producer-seq", "1")],
            )
            .await;
        assert_eq!(r.status, 201);
        let c22 = r.cursor();
        assert!(b.stop().await.success(), "clean exit on SIGTERM");
        drop(b);

        let b = BrokerProcess::start_in(store, dir.path(), &[]).await;
        let hist = b.all_events(t).await;
        let mut want = cs.clone();
        want.push(c21.clone());
        want.push(c22.clone());
        assert_eq!(hist.iter().map(cursor_of).collect::<Vec<_>>(), want);

        let mut s = b.sse(t, "", &[("last-event-id", &cs[9])]).await;
        s.assert_ok();
        let ms = s.expect_events(12, T).await;
        assert_eq!(seq_of(&ms[0].data), 11);
        assert_eq!(msg_id(&ms[11]), c22);

        // Dedup state survives the restart (within the window).
        let r = b
            .publish(t, "{\"seq\":21}", &[("idempotency-key", "k21")])
            .await;
        assert_eq!(
            r.status, 200,
            "idempotency key remembered across restart: {}",
            r.text
        );
        assert_eq!(r.cursor(), c21);
        let r = b
            .publish(
                t,
                "{\"seq\":22}",
                &[("producer-id", "p"), ("producer-seq", "1")],
            )
            .await;
        assert_eq!(
            r.status, 200,
            "producer sequence remembered across restart: {}",
            r.text
        );
        let r = b
            .publish(
                t,
                "{\"seq\":23}",
                &[("producer-id", "p"), ("producer-seq", "3")],
            )
            .await;
        assert_eq!(
            r.status, 409,
            "producer high-water mark survives restart: {}",
            r.text
        );

        let c23 = b.publish_ok(t, "{\"seq\":23}").await;
        assert_eq!(cursor_seq(&c23), 23);
        assert!(c23 > c22, "cursors keep increasing across a restart");
        assert_eq!(cursor_epoch(&c23), cursor_epoch(&c22));
        assert_eq!(msg_id(&s.expect_event(T).await), c23);
    })
    .await;
}

/// SIGTERM while publishers are busy: every publish that got a 201 before the
/// process went away is in the log after a restart, and the exit is clean.
async fn sigterm_during_publishing_keeps_every_acknowledged_event(store: Store) {
    bounded(120, async {
        let dir = tempfile::tempdir().unwrap();
        let env = [("SLUICE__SHUTDOWN_GRACE_SECS", "5")];
        let mut b = BrokerProcess::start_in(store, dir.path(), &env).await;
        let t = "termpub";
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
        let c2 = count.clone();
        wait_until(T, "300 acknowledged publishes", || {
            let c = c2.clone();
            async move { c.load(Ordering::SeqCst) >= 300 }
        })
        .await;
        b.terminate();
        let st = b
            .wait_exit(Duration::from_secs(10))
            .await
            .expect("exit within the grace period");
        assert_eq!(st.code(), Some(0), "{st:?}");
        tokio::time::timeout(T, pa)
            .await
            .expect("publisher a stops")
            .unwrap();
        tokio::time::timeout(T, pb)
            .await
            .expect("publisher b stops")
            .unwrap();
        drop(b);

        let b = BrokerProcess::start_in(store, dir.path(), &env).await;
        let hist = b.all_events(t).await;
        let index: std::collections::HashMap<String, String> = hist
            .iter()
            .map(|e| (cursor_of(e), data_of(e).to_string()))
            .collect();
        for (c, d) in acked_a
            .lock()
            .unwrap()
            .iter()
            .chain(acked_b.lock().unwrap().iter())
        {
            assert_eq!(
                index.get(c),
                Some(d),
                "acknowledged {c} {d} missing after SIGTERM"
            );
        }
        for (i, e) in hist.iter().enumerate() {
            assert_eq!(cursor_seq(&cursor_of(e)), i as u64 + 1);
        }
    })
    .await;
}

//! The console's live view against the real binary: subscribe, publish
//! from the page, see the event with its cursor, type and time; then the
//! broker is SIGKILLed and restarted on its port, and every event published
//! after the restart, by the API and by the page, appears exactly once, in
//! order, after the ones before, with the stream saying it resumed.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_publishes_and_resumes_after_a_broker_restart() {
    let Some(b) = Browser::start().await else {
        return;
    };
    bounded(150, async {
        let data = tempfile::tempdir().unwrap();
        let setup = Setup::new(Store::Embedded)
            .dir(data.path())
            .listen(free_port());
        let mut broker = BrokerProcess::with(setup.clone()).await;
        let t = "console-live";
        let first = broker.publish_ok(t, "before the page").await;

        b.goto(&broker.url(&format!("/?topic={t}&from=earliest")))
            .await;
        wait_state(&b, "connected", 20).await;
        wait_rows(&b, 1, 20).await;

        // Publish from the page; the event comes back on the stream.
        let from_page = publish_from_page(&b, "{\"from\":\"page\"}", "note").await;
        wait_rows(&b, 2, 20).await;
        let seen = rows(&b).await;
        let Row::Event {
            id,
            kind,
            time,
            data: body,
        } = &seen[1]
        else {
            panic!("{seen:?}")
        };
        assert_eq!(
            (id, kind.as_str(), body.as_str()),
            (&from_page, "note", "{\"from\":\"page\"}")
        );
        // The time column is the cursor's time: 20240520T103022.123Z
        // shows as 2024-05-20 10:30:22.123.
        let c = from_page.as_bytes();
        let want = format!(
            "{}-{}-{} {}:{}:{}.{}",
            &from_page[0..4],
            &from_page[4..6],
            &from_page[6..8],
            &from_page[9..11],
            &from_page[11..13],
            &from_page[13..15],
            &from_page[16..19]
        );
        assert_eq!(c[8], b'T');
        assert_eq!(time, &want);
        assert_eq!(
            broker_ids(&broker, t).await,
            vec![first.clone(), from_page.clone()]
        );
        // The topic list and the connections table show the stream.
        b.wait(
            20,
            "the topic list shows 2 retained, 1 subscriber",
            &format!(
                "const r = document.querySelector('#topics tr[data-topic=\"{t}\"]'); \
                 return r && r.cells[1].textContent === '2' && r.cells[2].textContent === '1';"
            ),
        )
        .await;
        b.wait(
            20,
            "a HEALTHY connection on the topic",
            &format!(
                "return [...document.querySelectorAll('#conns tr')].some(r => \
                   r.cells[1].textContent === '{t}' && r.cells[2].textContent === 'HEALTHY');"
            ),
        )
        .await;

        // SIGKILL; the page notices, the broker comes back on its port.
        broker.kill9().await;
        wait_state(&b, "reconnecting", 20).await;
        let broker = BrokerProcess::restart(&setup).await;
        let mut after = Vec::new();
        for i in 1..=3 {
            after.push(broker.publish_ok(t, &format!("after restart {i}")).await);
        }
        let state = wait_state(&b, "connected", 40).await;
        assert!(state.contains("resumed after"), "{state}");
        after.push(publish_from_page(&b, "from the page again", "").await);
        wait_rows(&b, 6, 30).await;

        let want = broker_ids(&broker, t).await;
        assert_eq!(want.len(), 6);
        assert_eq!(want[..2], [first, from_page]);
        assert_eq!(want[2..], after[..]);
        assert_eq!(
            row_ids(&b).await,
            want,
            "every event exactly once, in order"
        );
        // Nothing arrives late either: one more round trip shows the same.
        let last = broker.publish_ok(t, "last").await;
        wait_rows(&b, 7, 20).await;
        let mut want = want;
        want.push(last);
        assert_eq!(row_ids(&b).await, want);
    })
    .await;
    b.close().await;
}

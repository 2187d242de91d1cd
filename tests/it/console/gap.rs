//! The module's gap notice: a console opened after a cursor that retention
//! dropped shows how many events were lost, then every event still kept.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_shows_the_gap_of_a_cursor_out_of_retention() {
    let Some(b) = Browser::start().await else {
        return;
    };
    bounded(120, async {
        let broker =
            Broker::start(Store::Embedded, &[("SLUICE__RETENTION__MAX_EVENTS", "10")]).await;
        let t = "console-gap";
        let cs = broker.publish_numbered(t, 1..26).await; // cs[i] is event i+1
        let api = &broker;
        wait_until(
            Duration::from_secs(15),
            "retention keeps the last 10",
            || async move { api.count(t).await == 10 },
        )
        .await;

        // After event 3: events 4..=15 are gone.
        b.goto(&broker.url(&format!("/?topic={t}&cursor={}", cs[2])))
            .await;
        wait_rows(&b, 10, 20).await;
        let notice = b.text("notice").await;
        assert!(notice.starts_with("gap of 12 events"), "{notice}");
        assert!(
            notice.contains(&cs[2]),
            "names the requested cursor: {notice}"
        );
        let seen = rows(&b).await;
        assert_eq!(seen[0], Row::Gap("12".into()), "{seen:?}");
        assert_eq!(row_ids(&b).await, cs[15..].to_vec());
        assert_eq!(wait_state(&b, "connected", 5).await, "connected");

        // docs/console.png is this view:
        // SLUICE_CONSOLE_SCREENSHOT=docs/console.png cargo test --test it console::gap
        if let Some(path) = std::env::var_os("SLUICE_CONSOLE_SCREENSHOT") {
            b.wait(
                20,
                "topics and connections listed",
                "return document.querySelectorAll('#topics tr').length > 0 \
                   && document.querySelectorAll('#conns tr').length > 0;",
            )
            .await;
            std::fs::write(path, b.client.screenshot().await.unwrap()).unwrap();
        }
    })
    .await;
    b.close().await;
}

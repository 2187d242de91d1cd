//! The README's "Browser module" example, run as written: the page is
//! served from another origin, imports `/sluice.js` from the broker (so
//! its CORS headers are checked too), subscribes and publishes; run
//! twice, its idempotency key stores the event once.

use super::*;
use crate::browser::serve_page;

const README: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"));
/// The broker address the example is written for.
const EXAMPLE_URL: &str = "http://127.0.0.1:8080";

/// The one fenced block whose info string is `html test`.
fn example() -> String {
    let mut blocks = README.split("```html test\n").skip(1);
    let block = blocks.next().expect("an `html test` block in README.md");
    assert!(
        blocks.next().is_none(),
        "one `html test` block in README.md"
    );
    block.split("\n```").next().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_browser_module_example_runs() {
    let Some(b) = Browser::start().await else {
        return;
    };
    bounded(90, async {
        let broker = Broker::start(Store::Embedded, &[]).await;
        let page = example();
        assert!(
            page.contains(EXAMPLE_URL),
            "the example names {EXAMPLE_URL}"
        );
        let port = serve_page(page.replace(EXAMPLE_URL, &broker.base_url())).await;
        b.goto(&format!("http://127.0.0.1:{port}/")).await;
        let log = b
            .wait(
                30,
                "the example logs its publish and the event",
                "const t = document.getElementById('log').textContent; \
                 return t.includes('published ') && t.includes(' order.created ') ? t : null;",
            )
            .await;
        let log = log.as_str().unwrap();
        let events = broker.all_events("orders").await;
        assert_eq!(events.len(), 1, "{events:?}");
        let cursor = cursor_of(&events[0]);
        assert!(log.contains(&format!("published {cursor}")), "{log}");
        assert!(
            log.contains(&format!("{cursor} order.created {{\"id\": 42}}")),
            "{log}"
        );
        assert!(log.contains("stream connected"), "{log}");

        // Run again, the same idempotency key stores nothing new and
        // answers with the first cursor.
        b.goto(&format!("http://127.0.0.1:{port}/?again")).await;
        let log = b
            .wait(
                30,
                "the second run logs its publish",
                "const t = document.getElementById('log').textContent; \
                 return t.includes('published ') ? t : null;",
            )
            .await;
        assert!(
            log.as_str()
                .unwrap()
                .contains(&format!("published {cursor}")),
            "{log}"
        );
        assert_eq!(broker.all_events("orders").await.len(), 1);
    })
    .await;
    b.close().await;
}

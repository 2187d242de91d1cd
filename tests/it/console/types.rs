//! Event types: an EventSource delivers only the types a page listens for,
//! so the console learns a topic's types from its history, at the start
//! and when the topic's latest event did not come.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_learns_the_event_types_of_its_topic() {
    let Some(b) = Browser::start().await else {
        return;
    };
    bounded(90, async {
        let broker = Broker::start(Store::Embedded, &[]).await;
        let t = "console-types";
        let typed = |kind| [("event-type", kind)];
        let first = broker
            .publish(t, "created", &typed("order.created"))
            .await
            .cursor();
        b.goto(&broker.url(&format!("/?topic={t}&from=earliest")))
            .await;
        wait_rows(&b, 1, 20).await;
        // A type nobody named, published while the page watches.
        let second = broker
            .publish(t, "shipped", &typed("order.shipped"))
            .await
            .cursor();
        wait_rows(&b, 2, 30).await;
        let seen = rows(&b).await;
        let kinds: Vec<(&str, &str)> = seen
            .iter()
            .map(|r| match r {
                Row::Event { id, kind, .. } => (id.as_str(), kind.as_str()),
                Row::Gap(_) => panic!("{seen:?}"),
            })
            .collect();
        assert_eq!(
            kinds,
            [
                (first.as_str(), "order.created"),
                (second.as_str(), "order.shipped")
            ]
        );
        let types: Value = b
            .js("return document.getElementById('types').value;", vec![])
            .await;
        assert_eq!(types, "order.created,order.shipped");
    })
    .await;
    b.close().await;
}

// The README's example (a test checks that the README shows this file
// as it is, and runs it against a broker).

use futures_util::StreamExt;
use sluice_client::{Client, FileCursorStore, Item, NewEvent, Start, SubscribeOptions};

/// Publishes three events, then reads them back as a stream that keeps
/// its position in the file `cursor` (run again, it starts after the last
/// event it printed).
async fn run(url: &str, cursor: &str) -> sluice_client::Result<Vec<String>> {
    let client = Client::new(url)?;

    // Safe to retry: the broker stores an idempotency key once.
    client
        .publish(
            "orders",
            NewEvent::new(r#"{"id": 42}"#)
                .with_type("order.created")
                .with_key("order-42"),
        )
        .await?;
    // A producer numbers its events, so its retries are stored once too.
    let mut producer = client.producer("orders");
    producer.send(r#"{"id": 43}"#).await?;
    producer.send(r#"{"id": 44}"#).await?;

    let options = SubscribeOptions::new()
        .start(Start::Earliest)
        .cursor_store(FileCursorStore::new(cursor));
    let mut events = client.subscribe("orders", options);
    let mut seen = Vec::new();
    while let Some(item) = events.next().await {
        match item? {
            Item::Event(e) => {
                println!("{} {}", e.cursor, e.data);
                seen.push(e.data);
                if seen.len() == 3 {
                    break;
                }
            }
            Item::Gap(gap) => eprintln!("gap: {gap}"),
            Item::Connected { after } => eprintln!("connected, after {after:?}"),
            Item::Disconnected { reason, delay, .. } => {
                eprintln!("{reason}; reconnecting in {delay:?}")
            }
            _ => {}
        }
    }
    events.commit().await?;
    Ok(seen)
}

#[tokio::main]
async fn main() -> sluice_client::Result<()> {
    let url = std::env::var("SLUICE_URL").unwrap_or_else(|_| "http://127.0.0.1:8080".into());
    run(&url, "orders.cursor").await?;
    Ok(())
}

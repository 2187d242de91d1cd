//! The console with auth on: without a token it says what it needs; with
//! one typed into its token field (kept in sessionStorage, never in the
//! URL) it lists topics and connections, streams and publishes.

use super::*;
use crate::auth::{claims, hs256, rights, root_token, As, HS256};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_works_with_a_token() {
    let Some(b) = Browser::start().await else {
        return;
    };
    bounded(120, async {
        let broker = Broker::start(Store::Embedded, &HS256).await;
        let t = "console-auth";
        let root = As {
            api: &broker,
            token: root_token(),
        };
        let first = root.publish(t, "kept").await.cursor();

        b.goto(&broker.url("/")).await;
        b.wait(
            20,
            "the topic list asks for a token",
            "return document.getElementById('topics-error').textContent === 'needs a token (401)';",
        )
        .await;

        // A token that may publish and read this topic, and not list
        // connections.
        let token = hs256(&claims(rights(&[t], &[t], false)));
        b.fill("token", &token).await;
        b.click("save-token").await;
        b.wait(
            20,
            "the topic list with the token",
            &format!("return !!document.querySelector('#topics tr[data-topic=\"{t}\"]');"),
        )
        .await;
        b.wait(
            20,
            "connections need admin",
            "return document.getElementById('conns-error').textContent.includes('403');",
        )
        .await;
        let stored: Value = b
            .js("return sessionStorage.getItem('sluice.token');", vec![])
            .await;
        assert_eq!(stored, json!(token), "the token is kept for the tab");

        // Same tab: the token is still there for the stream.
        b.goto(&broker.url(&format!("/?topic={t}&from=earliest")))
            .await;
        wait_state(&b, "connected", 20).await;
        let from_page = publish_from_page(&b, "with a token", "").await;
        wait_rows(&b, 2, 20).await;
        assert_eq!(row_ids(&b).await, vec![first, from_page]);
        let url = b.client.current_url().await.unwrap();
        assert!(
            !url.as_str().contains(&token),
            "no token in the page's URL: {url}"
        );

        // A topic the token may not read: the page says so.
        b.fill("topic", "other").await;
        b.click("subscribe").await;
        b.wait(
            20,
            "the refusal is shown",
            "return document.getElementById('info').textContent.includes('403');",
        )
        .await;
    })
    .await;
    b.close().await;
}

//! The browser console (`/`) and module (`/sluice.js`), issue 15 items 3
//! and 4: served with their types, validators and policy; driven in a real
//! headless Chromium (WebDriver) to subscribe, publish from the page, live
//! through a broker restart without losing or repeating an event, show a
//! gap, and work with auth on; the module renewing an expired token;
//! and the README's module example, run as written.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::*;

mod auth;
pub mod driver;
mod files;
mod gap;
mod live;
mod readme;
mod renewal;
mod skipped;
mod types;

use driver::Browser;

/// One row of the console's live view.
#[derive(Debug, PartialEq, Eq)]
pub enum Row {
    Event {
        id: String,
        kind: String,
        time: String,
        data: String,
    },
    Gap(String),
}

/// The rows of the live view, oldest first.
pub async fn rows(b: &Browser) -> Vec<Row> {
    let v = b
        .js(
            "return [...document.querySelectorAll('#events tr')].map(r =>
               r.classList.contains('gap') ? {gap: r.dataset.gap}
               : {id: r.dataset.id, cells: [...r.cells].map(c => c.textContent)});",
            vec![],
        )
        .await;
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| match r.get("gap") {
            Some(g) => Row::Gap(g.as_str().unwrap_or_default().to_owned()),
            None => {
                let cells: Vec<String> = r["cells"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| c.as_str().unwrap().to_owned())
                    .collect();
                Row::Event {
                    id: r["id"].as_str().unwrap().to_owned(),
                    kind: cells[1].clone(),
                    time: cells[2].clone(),
                    data: cells[3].clone(),
                }
            }
        })
        .collect()
}

/// The ids of the event rows, oldest first.
pub async fn row_ids(b: &Browser) -> Vec<String> {
    rows(b)
        .await
        .into_iter()
        .filter_map(|r| match r {
            Row::Event { id, .. } => Some(id),
            Row::Gap(_) => None,
        })
        .collect()
}

/// Waits until the live view holds `n` event rows.
pub async fn wait_rows(b: &Browser, n: usize, secs: u64) {
    let script =
        format!("return document.querySelectorAll('#events tr[data-id]').length >= {n} || null;");
    b.wait(secs, &format!("{n} event rows"), &script).await;
}

/// Waits until the stream state starts with `state`; returns its text.
pub async fn wait_state(b: &Browser, state: &str, secs: u64) -> String {
    let script = format!(
        "const s = document.getElementById('state'); \
         return s.dataset.state === {} ? s.textContent : null;",
        json!(state)
    );
    let v: Value = b.wait(secs, &format!("stream {state}"), &script).await;
    v.as_str().unwrap().to_owned()
}

/// Publishes `data` (of `kind`, when given) from the page's form and
/// returns the cursor the page was answered.
pub async fn publish_from_page(b: &Browser, data: &str, kind: &str) -> String {
    // The answer to this publish is a cursor other than the last one shown.
    let before = b
        .js(
            "return document.getElementById('pub-result').dataset.cursor || '';",
            vec![],
        )
        .await;
    b.fill("pub-data", data).await;
    b.fill("pub-type", kind).await;
    b.click("publish").await;
    let script = format!(
        "const r = document.getElementById('pub-result'); \
         if (r.textContent.startsWith('refused')) return 'ERR ' + r.textContent; \
         return r.textContent.startsWith('stored as') && r.dataset.cursor !== {before} \
           ? r.dataset.cursor : null;"
    );
    let v = b.wait(20, "the page's publish answered", &script).await;
    let cursor = v.as_str().unwrap().to_owned();
    assert!(
        !cursor.starts_with("ERR"),
        "publish from the page: {cursor}"
    );
    cursor
}

/// The cursors of every event of `t` the broker holds, oldest first.
pub async fn broker_ids(api: &Api, t: &str) -> Vec<String> {
    api.all_events(t).await.iter().map(cursor_of).collect()
}

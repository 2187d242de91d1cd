//! Events of a type the page does not listen for yet: an `EventSource`
//! drops them unseen, and the module must still deliver them, in order and
//! once. Three new types, each followed at once by an event of a known
//! type (so no "latest event missing" poll can notice), published in one
//! batch and then one by one: the module sees the hole in the positions
//! and reads it from history.

use super::*;
use crate::browser::serve_page;

const PAGE: &str = r#"<!doctype html><meta charset="utf-8"><pre id="log"></pre>
<script type="module">
const p = new URLSearchParams(location.search);
const { Sluice } = await import(p.get('api') + '/sluice.js');
const sub = new Sluice(p.get('api')).subscribe(p.get('t'), { types: ['known'] });
const out = { events: [], state: '' };
const show = () => { document.getElementById('log').textContent = JSON.stringify(out); };
sub.addEventListener('event', (e) => { out.events.push([e.detail.id, e.detail.type, e.detail.data]); show(); });
sub.addEventListener('state', (e) => { out.state = e.detail.state; show(); });
show();
</script>"#;

/// Three new types, each right before a `known` one.
const MIXED: [(&str, &str); 6] = [
    ("new.a", "a"),
    ("known", "k1"),
    ("new.b", "b"),
    ("known", "k2"),
    ("new.c", "c"),
    ("known", "k3"),
];

/// The NDJSON lines of one round: its new types are `new.a.<round>`...
fn batch_of(round: &str) -> String {
    MIXED
        .iter()
        .map(|(kind, data)| {
            let kind = match *kind {
                "known" => "known".to_owned(),
                new => format!("{new}.{round}"),
            };
            format!("{{\"type\":\"{kind}\",\"data\":\"{data}\"}}\n")
        })
        .collect()
}

/// Every event of `t` in the broker, as `[cursor, type, data]` the way the
/// module reports them (an untyped event is a `message`).
async fn broker_events(api: &Api, t: &str) -> Value {
    let evs: Vec<Value> = api
        .all_events(t)
        .await
        .iter()
        .map(|e| {
            json!([
                cursor_of(e),
                e["type"].as_str().unwrap_or("message"),
                e["data"]
            ])
        })
        .collect();
    Value::Array(evs)
}

async fn publish_round(broker: &Broker, t: &str, round: &str, one_by_one: bool) {
    let lines = batch_of(round);
    if one_by_one {
        for line in lines.lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            let kind = v["type"].as_str().unwrap();
            broker
                .publish(t, v["data"].as_str().unwrap(), &[("event-type", kind)])
                .await
                .cursor();
        }
    } else {
        let r = broker.batch(t, &lines).await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn module_delivers_events_of_types_it_did_not_listen_for() {
    let Some(b) = Browser::start().await else {
        return;
    };
    bounded(90, async {
        let broker = Broker::start(Store::Embedded, &[]).await;
        let t = "skipped-types";
        broker
            .publish(t, "before", &[("event-type", "known")])
            .await
            .cursor();
        let port = serve_page(PAGE.to_owned()).await;
        let url = reqwest::Url::parse_with_params(
            &format!("http://127.0.0.1:{port}/"),
            [("api", broker.base_url().as_str()), ("t", t)],
        )
        .unwrap();
        b.goto(url.as_str()).await;
        let log = |cond: &'static str| {
            format!(
                "const t = document.getElementById('log').textContent; \
                 if (!t) return null; const o = JSON.parse(t); return ({cond}) ? o : null;"
            )
        };
        b.wait(30, "the stream open", &log("o.state === 'connected'"))
            .await;
        publish_round(&broker, t, "1", false).await;
        publish_round(&broker, t, "2", true).await;
        // A last known event: once it is shown, anything still to come
        // would be a repeat or out of order.
        broker
            .publish(t, "end", &[("event-type", "known")])
            .await
            .cursor();
        let want = broker_events(&broker, t).await;
        assert_eq!(want.as_array().unwrap().len(), 14, "{want}");
        let o = b
            .wait(
                30,
                "the last event",
                &log("o.events.some((e) => e[2] === 'end')"),
            )
            .await;
        // From `latest`: the event before the subscription is not shown.
        assert_eq!(
            o["events"],
            Value::Array(want.as_array().unwrap()[1..].to_vec()),
            "every event after the start, once, in order"
        );
    })
    .await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_shows_events_of_types_it_did_not_know() {
    let Some(b) = Browser::start().await else {
        return;
    };
    bounded(90, async {
        let broker = Broker::start(Store::Embedded, &[]).await;
        let t = "console-skipped";
        broker
            .publish(t, "seed", &[("event-type", "known")])
            .await
            .cursor();
        b.goto(&broker.url(&format!("/?topic={t}&from=earliest")))
            .await;
        wait_rows(&b, 1, 20).await;
        wait_state(&b, "connected", 20).await;
        publish_round(&broker, t, "1", false).await;
        publish_round(&broker, t, "2", true).await;
        broker
            .publish(t, "end", &[("event-type", "known")])
            .await
            .cursor();
        wait_rows(&b, 14, 30).await;
        let seen: Vec<(String, String, String)> = rows(&b)
            .await
            .into_iter()
            .map(|r| match r {
                Row::Event { id, kind, data, .. } => (id, kind, data),
                Row::Gap(g) => panic!("no gap here: {g}"),
            })
            .collect();
        let want: Vec<(String, String, String)> = broker
            .all_events(t)
            .await
            .iter()
            .map(|e| {
                (
                    cursor_of(e),
                    e["type"].as_str().unwrap_or_default().to_owned(),
                    data_of(e).to_owned(),
                )
            })
            .collect();
        assert_eq!(want.len(), 14);
        assert_eq!(seen, want, "every event, once, in order");
    })
    .await;
    b.close().await;
}

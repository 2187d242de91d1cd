//! The module's token renewal: a page on another origin subscribes through
//! `/sluice.js` with a token provider whose first token expires a few
//! seconds later. The stream ends with `event: auth-expired`; the page
//! gets it as an event, the module asks the provider again and resumes
//! after the last event, so the events published before and after all
//! arrive exactly once, in order.

use super::*;
use crate::{
    auth::{hs256, now_secs, rights, As, HS256},
    browser::serve_page,
};

const PAGE: &str = r#"<!doctype html><meta charset="utf-8"><pre id="log"></pre>
<script type="module">
const p = new URLSearchParams(location.search);
const { Sluice } = await import(p.get('api') + '/sluice.js');
const tokens = JSON.parse(p.get('tokens'));
let calls = 0;
const sluice = new Sluice(p.get('api'), { token: () => tokens[Math.min(calls++, tokens.length - 1)] });
const out = { events: [], expired: [], calls: 0 };
const show = () => { out.calls = calls; document.getElementById('log').textContent = JSON.stringify(out); };
const sub = sluice.subscribe(p.get('t'), { from: 'earliest' });
sub.addEventListener('event', (e) => { out.events.push(e.detail.id); show(); });
sub.addEventListener('auth-expired', (e) => { out.expired.push(e.detail.expired_at); show(); });
show();
</script>"#;

async fn log(b: &Browser, what: &str, cond: &str) -> Value {
    let script = format!(
        "const t = document.getElementById('log').textContent; \
         if (!t) return null; const o = JSON.parse(t); return ({cond}) ? o : null;"
    );
    b.wait(30, what, &script).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn module_renews_an_expired_token_and_resumes() {
    let Some(b) = Browser::start().await else {
        return;
    };
    bounded(90, async {
        let broker = Broker::start(Store::Embedded, &HS256).await;
        let t = "renewal";
        let root = As {
            api: &broker,
            token: crate::auth::root_token(),
        };
        let mut want = vec![
            root.publish(t, "one").await.cursor(),
            root.publish(t, "two").await.cursor(),
        ];
        let reader = |exp: i64| {
            hs256(&json!({"sub": "page", "exp": exp, "sluice": rights(&[], &[t], false)}))
        };
        let tokens = json!([reader(now_secs() + 8), reader(now_secs() + 600)]).to_string();
        let port = serve_page(PAGE.to_owned()).await;
        let url = reqwest::Url::parse_with_params(
            &format!("http://127.0.0.1:{port}/"),
            [
                ("api", broker.base_url().as_str()),
                ("t", t),
                ("tokens", tokens.as_str()),
            ],
        )
        .unwrap();
        b.goto(url.as_str()).await;
        log(&b, "the first two events", "o.events.length >= 2").await;
        log(&b, "the token's expiry", "o.expired.length >= 1").await;
        want.push(root.publish(t, "three").await.cursor());
        want.push(root.publish(t, "four").await.cursor());
        let o = log(&b, "the events after the renewal", "o.events.length >= 4").await;
        assert_eq!(o["events"], json!(want), "exactly once, in order: {o}");
        assert_eq!(o["expired"].as_array().unwrap().len(), 1, "{o}");
        assert_eq!(o["calls"], 2, "the provider was asked again, once: {o}");
    })
    .await;
    b.close().await;
}

//! Browsers: credentials (a token cookie) are allowed only for origins
//! listed one by one, never under `*`; a real headless Chromium, when
//! installed, opens an `EventSource` with the token in the query and one
//! with the token in a cookie (`withCredentials`), and one without a token
//! is refused.

use reqwest::Method;

use super::*;
use crate::browser::{run_chromium, serve_page};

on_embedded_store! {
    #[tokio::test]
    credentials_only_for_listed_origins,
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    chromium_event_source_with_query_and_cookie_tokens,
}

async fn credentials_only_for_listed_origins(store: Store) {
    bounded(60, async {
        let listed = Broker::start(
            store,
            &[
                HS256[0],
                HS256[1],
                (
                    "SLUICE__CORS__ALLOWED_ORIGINS",
                    "http://good.test,http://also.test",
                ),
            ],
        )
        .await;
        let token = root_token();
        let cookie = format!("sluice-token={token}");
        let r = listed
            .get_with(
                "/v1/topics",
                &[("origin", "http://good.test"), ("cookie", &cookie)],
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(
            r.header("access-control-allow-origin").as_deref(),
            Some("http://good.test")
        );
        assert_eq!(
            r.header("access-control-allow-credentials").as_deref(),
            Some("true")
        );
        // A refusal is readable by the page too, challenge included.
        let r = listed
            .get_with("/v1/topics", &[("origin", "http://good.test")])
            .await;
        assert_401(&r, false, "no cookie");
        assert_eq!(
            r.header("access-control-allow-origin").as_deref(),
            Some("http://good.test")
        );
        let exposed = r
            .header("access-control-expose-headers")
            .unwrap_or_default();
        assert!(exposed.contains("www-authenticate"), "{exposed}");
        let r = listed
            .request(
                Method::OPTIONS,
                "/v1/topics/a/events",
                &[
                    ("origin", "http://also.test"),
                    ("access-control-request-method", "GET"),
                    (
                        "access-control-request-headers",
                        "authorization,last-event-id",
                    ),
                ],
                None,
            )
            .await;
        assert!(r.status.is_success(), "{} {}", r.status, r.text);
        assert_eq!(
            r.header("access-control-allow-credentials").as_deref(),
            Some("true")
        );
        let r = listed
            .get_with("/healthz", &[("origin", "http://evil.test")])
            .await;
        // Without Access-Control-Allow-Origin the browser shows the page
        // nothing, credentials or not.
        assert_eq!(r.header("access-control-allow-origin"), None);
        drop(listed);

        // "*": any origin may call, none with credentials.
        let any = Broker::start(store, &HS256).await;
        let r = any
            .get_with(
                "/v1/topics",
                &[("origin", "http://evil.test"), ("cookie", &cookie)],
            )
            .await;
        assert_eq!(r.status, 200);
        assert!(r.header("access-control-allow-origin").is_some());
        assert_eq!(r.header("access-control-allow-credentials"), None);
    })
    .await;
}

async fn chromium_event_source_with_query_and_cookie_tokens(store: Store) {
    // Skipped without Chromium, except in CI (`CI` set), where it fails.
    if !crate::console::driver::chromium_available(false) {
        return;
    }
    bounded(150, async {
        // The page reads the broker's address and its tokens from its URL.
        let html = r#"<!doctype html><html><body><pre id="out">waiting</pre><script>
const p = new URLSearchParams(location.search);
const api = p.get('api'), t = p.get('t');
const url = api + '/v1/topics/' + t + '/events?from=earliest';
const out = document.getElementById('out');
const state = {query: [], cookie: [], none: 'pending'};
function show() {
  const done = state.query.length >= 2 && state.cookie.length >= 2 && state.none !== 'pending';
  out.textContent = (done ? 'DONE' : 'PARTIAL') + '\n' + JSON.stringify(state);
}
const q = new EventSource(url + '&access_token=' + encodeURIComponent(p.get('tq')));
q.onmessage = e => { state.query.push(e.lastEventId + ' ' + e.data); if (state.query.length >= 2) q.close(); show(); };
q.onerror = () => { state.query_error = q.readyState; show(); };
document.cookie = 'sluice-token=' + p.get('tc') + '; path=/; SameSite=Lax';
const c = new EventSource(url, {withCredentials: true});
c.onmessage = e => { state.cookie.push(e.lastEventId + ' ' + e.data); if (state.cookie.length >= 2) c.close(); show(); };
c.onerror = () => { state.cookie_error = c.readyState; show(); };
const n = new EventSource(url);
n.onmessage = () => { state.none = 'got an event'; show(); };
n.onerror = () => { state.none = 'refused, readyState ' + n.readyState; n.close(); show(); };
show();
</script></body></html>"#;
        let page_port = serve_page(html.to_owned()).await;
        let origin = format!("http://127.0.0.1:{page_port}");
        let b = Broker::start(
            store,
            &[
                HS256[0],
                HS256[1],
                ("SLUICE__CORS__ALLOWED_ORIGINS", &origin),
                ("SLUICE__STREAM__HEARTBEAT_SECS", "1"),
            ],
        )
        .await;
        let t = "browser-auth";
        let root = As {
            api: &b,
            token: root_token(),
        };
        let cursors = [
            root.publish(t, "one").await.cursor(),
            root.publish(t, "two").await.cursor(),
        ];
        let reader = |_| hs256(&claims(rights(&[], &[t], false)));
        let (tq, tc) = (reader(1), reader(2));
        let url = format!(
            "{origin}/?api={}&t={t}&tq={tq}&tc={tc}",
            b.base_url()
        );
        let profile = tempfile::tempdir().unwrap();
        let dom = run_chromium(&url, profile.path()).await;
        eprintln!("chromium DOM:\n{dom}");
        assert!(dom.contains("DONE"), "the page did not finish:\n{dom}");
        let state: serde_json::Value = {
            let start = dom.find("DONE\n").unwrap() + 5;
            let end = dom[start..].find("</pre>").unwrap() + start;
            serde_json::from_str(&dom[start..end].replace("&quot;", "\"")).unwrap()
        };
        let want = serde_json::json!([
            format!("{} one", cursors[0]),
            format!("{} two", cursors[1])
        ]);
        assert_eq!(state["query"], want, "token in the query:\n{dom}");
        assert_eq!(state["cookie"], want, "token in a cookie:\n{dom}");
        // EventSource gives up on a 401: no token, no stream.
        assert_eq!(state["none"], "refused, readyState 2", "{dom}");
    })
    .await;
}

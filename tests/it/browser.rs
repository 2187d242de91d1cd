//! Browsers: CORS headers on every response, preflights, and (when
//! `/usr/bin/chromium` exists) a real cross-origin `EventSource` + `fetch`.

use std::{path::Path, time::Duration};

use reqwest::Method;

use crate::support::*;

on_both_stores! {
    #[tokio::test]
    cors_preflight_and_headers,
    #[tokio::test]
    cors_allowed_origins_restricts,
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    chromium_event_source_cross_origin,
}

const ORIGIN: &str = "http://app.example.test";

fn list_has(list: &Option<String>, item: &str) -> bool {
    list.as_deref().is_some_and(|l| {
        l.split(',')
            .map(|x| x.trim().to_ascii_lowercase())
            .any(|x| x == item.to_ascii_lowercase() || x == "*")
    })
}

fn assert_allow_origin(r: &Resp, origin: &str, what: &str) {
    let acao = r.header("access-control-allow-origin");
    assert!(
        acao.as_deref() == Some(origin) || acao.as_deref() == Some("*"),
        "{what}: Access-Control-Allow-Origin should allow {origin}, got {acao:?} (status {})",
        r.status
    );
}

async fn preflight(b: &Api, path: &str, method: &str, headers: &str) -> Resp {
    b.request(
        Method::OPTIONS,
        path,
        &[
            ("origin", ORIGIN),
            ("access-control-request-method", method),
            ("access-control-request-headers", headers),
        ],
        None,
    )
    .await
}

async fn cors_preflight_and_headers(store: Store) {
    bounded(60, async {
        let b = Broker::start(store, &[]).await;
        let t = "cors";

        // Preflight for a publish with the headers a page sends.
        let r = preflight(
            &b,
            &format!("/v1/topics/{t}/events"),
            "POST",
            "content-type,idempotency-key,last-event-id",
        )
        .await;
        assert!(
            r.status.is_success(),
            "preflight must succeed: {} {}",
            r.status,
            r.text
        );
        assert_allow_origin(&r, ORIGIN, "preflight");
        let methods = r.header("access-control-allow-methods");
        assert!(
            list_has(&methods, "POST"),
            "Allow-Methods lacks POST: {methods:?}"
        );
        let allowed = r.header("access-control-allow-headers");
        for h in ["content-type", "idempotency-key", "last-event-id"] {
            assert!(
                list_has(&allowed, h),
                "Allow-Headers lacks {h}: {allowed:?}"
            );
        }

        // Preflight for a batch and for a subscribe with resume headers.
        let r = preflight(
            &b,
            &format!("/v1/topics/{t}/batch"),
            "POST",
            "content-type,event-type,producer-id,producer-seq",
        )
        .await;
        assert!(
            r.status.is_success(),
            "batch preflight: {} {}",
            r.status,
            r.text
        );
        assert_allow_origin(&r, ORIGIN, "batch preflight");
        let allowed = r.header("access-control-allow-headers");
        for h in ["content-type", "event-type", "producer-id", "producer-seq"] {
            assert!(
                list_has(&allowed, h),
                "Allow-Headers lacks {h}: {allowed:?}"
            );
        }
        let r = preflight(
            &b,
            &format!("/v1/topics/{t}/events"),
            "GET",
            "last-event-id,x-resume-cursor,cache-control",
        )
        .await;
        assert!(
            r.status.is_success(),
            "GET preflight: {} {}",
            r.status,
            r.text
        );
        assert_allow_origin(&r, ORIGIN, "GET preflight");
        let allowed = r.header("access-control-allow-headers");
        for h in ["last-event-id", "x-resume-cursor"] {
            assert!(
                list_has(&allowed, h),
                "Allow-Headers lacks {h}: {allowed:?}"
            );
        }

        // Simple requests carry the origin and expose Event-Cursor.
        let r = b
            .publish(
                t,
                "{\"x\":1}",
                &[("origin", ORIGIN), ("content-type", "application/json")],
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        assert_allow_origin(&r, ORIGIN, "POST");
        let exposed = r.header("access-control-expose-headers");
        assert!(
            list_has(&exposed, "event-cursor"),
            "Event-Cursor must be exposed to scripts: {exposed:?}"
        );

        let r = b
            .get_with(
                &format!("/v1/topics/{t}/events?from=earliest"),
                &[("origin", ORIGIN), ("accept", "application/json")],
            )
            .await;
        assert_eq!(r.status, 200);
        assert_allow_origin(&r, ORIGIN, "history GET");

        for p in ["/v1/topics", &format!("/v1/topics/{t}"), "/healthz"] {
            let r = b.get_with(p, &[("origin", ORIGIN)]).await;
            assert_eq!(r.status, 200, "{p}");
            assert_allow_origin(&r, ORIGIN, p);
        }

        // The SSE response itself.
        let s = b.sse(t, "from=earliest", &[("origin", ORIGIN)]).await;
        s.assert_ok();
        let acao = s.header("access-control-allow-origin");
        assert!(
            acao.as_deref() == Some(ORIGIN) || acao.as_deref() == Some("*"),
            "SSE response Access-Control-Allow-Origin: {acao:?}"
        );
        drop(s);

        // Errors too (a page must be able to read the problem).
        let r = b.publish("bad%20name", "x", &[("origin", ORIGIN)]).await;
        assert_eq!(r.status, 400);
        assert_allow_origin(&r, ORIGIN, "400 problem");
        let r = b
            .get_with("/v1/topics/nothing-here", &[("origin", ORIGIN)])
            .await;
        assert_eq!(r.status, 404);
        assert_allow_origin(&r, ORIGIN, "404 problem");
    })
    .await;
}

async fn cors_allowed_origins_restricts(store: Store) {
    bounded(60, async {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("cors.toml");
        std::fs::write(&cfg, "[cors]\nallowed_origins = [\"http://good.test\"]\n").unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let b = Broker::with(Setup::new(store).dir(&data).config(&cfg)).await;

        let r = b.publish("c", "x", &[("origin", "http://good.test")]).await;
        assert_eq!(r.status, 201);
        assert_eq!(
            r.header("access-control-allow-origin").as_deref(),
            Some("http://good.test")
        );
        let r = b
            .request(
                Method::OPTIONS,
                "/v1/topics/c/events",
                &[
                    ("origin", "http://good.test"),
                    ("access-control-request-method", "POST"),
                    ("access-control-request-headers", "content-type"),
                ],
                None,
            )
            .await;
        assert!(r.status.is_success(), "{} {}", r.status, r.text);

        // Another origin gets no permission.
        let r = b
            .request(
                Method::OPTIONS,
                "/v1/topics/c/events",
                &[
                    ("origin", "http://evil.test"),
                    ("access-control-request-method", "POST"),
                ],
                None,
            )
            .await;
        let acao = r.header("access-control-allow-origin");
        assert!(
            !r.status.is_success() || (acao.is_none()),
            "a foreign origin must not be allowed: {} {acao:?}",
            r.status
        );
        assert_ne!(acao.as_deref(), Some("*"));
        assert_ne!(acao.as_deref(), Some("http://evil.test"));
    })
    .await;
}

// ---------------------------------------------------------------------------
// Headless Chromium
// ---------------------------------------------------------------------------

pub(crate) const CHROMIUM: &str = "/usr/bin/chromium";

/// Serves `html` for every request on a fresh port; returns the port.
pub(crate) async fn serve_page(html: String) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let html = html.clone();
            tokio::spawn(async move {
                let mut req = Vec::new();
                let mut buf = [0u8; 4096];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
                    html.len()
                );
                let _ = sock.write_all(head.as_bytes()).await;
                let _ = sock.write_all(html.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    port
}

pub(crate) async fn run_chromium(url: &str, profile: &Path) -> String {
    let mut cmd = tokio::process::Command::new(CHROMIUM);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--virtual-time-budget=20000",
        "--dump-dom",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .arg(url)
    .stdin(std::process::Stdio::null())
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .kill_on_drop(true);
    let child = cmd.spawn().expect("spawn chromium");
    let out = tokio::time::timeout(Duration::from_secs(90), child.wait_with_output())
        .await
        .expect("chromium finished within 90 s")
        .expect("chromium output");
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    if !dom.contains("id=\"out\"") {
        panic!(
            "chromium produced no DOM (status {:?}); stderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    dom
}

async fn chromium_event_source_cross_origin(store: Store) {
    // Skipped without Chromium, except in CI (`CI` set), where it fails.
    if !crate::console::driver::chromium_available(false) {
        return;
    }
    bounded(150, async {
        let b = Broker::start(store, &[("SLUICE__STREAM__HEARTBEAT_SECS", "1")]).await;
        let t = "browser";
        let mut cursors = Vec::new();
        for i in 1..=3 {
            let r = b
                .publish(t, &format!("line {i}\nsecond"), &[("event-type", "tick")])
                .await;
            assert_eq!(r.status, 201);
            cursors.push(r.cursor());
        }
        cursors.push(b.publish_ok(t, "plain").await);
        let api = b.base_url();
        // The page subscribes with EventSource from another origin, publishes
        // one event with fetch (preflighted: custom header), and writes what
        // it got into the DOM.
        let html = format!(
            r#"<!doctype html><html><body><pre id="out">waiting</pre><script>
const out = document.getElementById('out');
const lines = [];
let published = 'none';
let done = false;
function show(d) {{
  done = done || d;
  out.textContent = (done ? 'DONE' : 'PARTIAL') + '\npublished ' + published + '\n' + lines.join('\n');
}}
const es = new EventSource('{api}/v1/topics/{t}/events?from=earliest');
function onEv(e) {{
  lines.push('event ' + e.type + ' id ' + e.lastEventId + ' data ' + JSON.stringify(e.data));
  if (lines.length === 5) {{ es.close(); show(true); }} else {{ show(false); }}
}}
es.addEventListener('tick', onEv);
es.onmessage = onEv;
es.onerror = () => {{ lines.push('error readyState ' + es.readyState); show(false); }};
es.onopen = () => {{
  fetch('{api}/v1/topics/{t}/events', {{
    method: 'POST',
    headers: {{ 'Content-Type': 'application/json', 'Idempotency-Key': 'from-page' }},
    body: '{{"from":"page"}}'
  }}).then(r => {{ published = r.status + ' ' + r.headers.get('Event-Cursor'); show(false); }})
    .catch(e => {{ published = 'failed ' + e; show(false); }});
}};
</script></body></html>"#
        );
        let port = serve_page(html).await;
        let profile = tempfile::tempdir().unwrap();
        let dom = run_chromium(&format!("http://127.0.0.1:{port}/"), profile.path()).await;
        eprintln!("chromium DOM:\n{dom}");
        assert!(dom.contains("DONE"), "page did not receive 5 events:\n{dom}");
        for (i, c) in cursors.iter().enumerate().take(3) {
            let want = format!(
                "event tick id {c} data &quot;line {}\\nsecond&quot;",
                i + 1
            );
            let want_raw = format!("event tick id {c} data \"line {}\\nsecond\"", i + 1);
            assert!(
                dom.contains(&want) || dom.contains(&want_raw),
                "missing {want_raw} in:\n{dom}"
            );
        }
        assert!(
            dom.contains(&format!("event message id {}", cursors[3])),
            "untyped event arrives as message:\n{dom}"
        );
        assert!(
            dom.contains("published 201 2"),
            "cross-origin fetch publish with a readable Event-Cursor:\n{dom}"
        );
        let hist = b.all_events(t).await;
        assert_eq!(hist.len(), 5);
        assert_eq!(hist[4]["data"], "{\"from\":\"page\"}");
    })
    .await;
}

//! TLS (`tls.cert_file`, `tls.key_file`): h2 over ALPN and HTTP/1.1 for
//! curl and a Rust client, and a certificate swap (on SIGHUP, and on a file
//! change) that new connections see while an open SSE stream keeps
//! delivering.
//!
//! The broker runs as the real binary (SIGHUP is sent to it); certificates
//! are self-signed for `localhost` and `127.0.0.1`, made with rcgen.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use reqwest::{Client, Version};

use crate::support::{bounded, wait_for, BrokerProcess, Setup, SseStream, Store};

const T: Duration = Duration::from_secs(10);

/// A self-signed certificate: its PEM files' contents and its DER.
struct Cert {
    cert_pem: String,
    key_pem: String,
    der: Vec<u8>,
}

fn self_signed() -> Cert {
    let c = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
        .expect("rcgen");
    Cert {
        cert_pem: c.cert.pem(),
        key_pem: c.key_pair.serialize_pem(),
        der: c.cert.der().to_vec(),
    }
}

/// The broker's certificate files in `dir`, replaced whole (written aside,
/// then renamed) so that a reload never reads half a file.
fn install(dir: &Path, cert: &str, key: &str) -> (PathBuf, PathBuf) {
    let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
    for (path, text) in [(&c, cert), (&k, key)] {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text).expect("write PEM");
        std::fs::rename(&tmp, path).expect("rename PEM");
    }
    (c, k)
}

/// A client that trusts exactly `roots`, reports the server's certificate,
/// and opens a new connection for each client (no pool shared with others).
fn client(roots: &[&Cert], http1_only: bool) -> Client {
    let mut b = Client::builder()
        .no_proxy()
        .tls_built_in_root_certs(false)
        .tls_info(true)
        .connect_timeout(Duration::from_secs(5));
    for r in roots {
        b = b.add_root_certificate(
            reqwest::Certificate::from_pem(r.cert_pem.as_bytes()).expect("PEM"),
        );
    }
    if http1_only {
        b = b.http1_only();
    }
    b.build().expect("TLS client")
}

/// The certificate a fresh connection is shown, by a fresh client.
async fn served_cert(port: u16, roots: &[&Cert]) -> Vec<u8> {
    let r = client(roots, false)
        .get(format!("https://127.0.0.1:{port}/healthz"))
        .timeout(T)
        .send()
        .await
        .expect("TLS request");
    assert_eq!(r.status(), 200);
    r.extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .expect("peer certificate")
        .to_vec()
}

async fn start(dir: &Path, cert: &Cert, watch_secs: &str) -> BrokerProcess {
    let (c, k) = install(dir, &cert.cert_pem, &cert.key_pem);
    BrokerProcess::with(Setup::new(Store::Embedded).env(&[
        ("SLUICE__TLS__CERT_FILE", c.to_str().unwrap()),
        ("SLUICE__TLS__KEY_FILE", k.to_str().unwrap()),
        ("SLUICE__TLS__WATCH_SECS", watch_secs),
        ("SLUICE__STREAM__HEARTBEAT_SECS", "1"),
    ]))
    .await
}

async fn publish(port: u16, roots: &[&Cert], topic: &str, body: &str) {
    let r = client(roots, false)
        .post(format!("https://127.0.0.1:{port}/v1/topics/{topic}/events"))
        .body(body.to_owned())
        .timeout(T)
        .send()
        .await
        .expect("publish over TLS");
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
}

/// Whether this curl speaks HTTP/2 (`curl --version` lists `HTTP2`).
fn curl_with_http2() -> bool {
    std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("HTTP2"))
}

/// `curl` with `args`: the HTTP version it used (`%{http_version}`).
fn curl_version(port: u16, ca: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_version}",
            "--cacert",
        ])
        .arg(ca)
        .args(args)
        .arg(format!("https://127.0.0.1:{port}/healthz"))
        .output()
        .expect("run curl");
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn h2_over_alpn_and_http1_fallback_for_curl_and_a_rust_client() {
    bounded(90, async {
        let dir = tempfile::tempdir().unwrap();
        let cert = self_signed();
        let b = start(dir.path(), &cert, "0").await;
        for (http1_only, want) in [(false, Version::HTTP_2), (true, Version::HTTP_11)] {
            let c = client(&[&cert], http1_only);
            let r = c
                .post(format!("https://127.0.0.1:{}/v1/topics/tls/events", b.port))
                .body("over tls")
                .send()
                .await
                .expect("publish over TLS");
            assert_eq!(r.version(), want);
            assert_eq!(r.status(), 201);
            let r = c
                .get(format!(
                    "https://127.0.0.1:{}/v1/topics/tls/events?from=earliest",
                    b.port
                ))
                .send()
                .await
                .unwrap();
            assert_eq!(r.version(), want);
            let page: serde_json::Value = r.json().await.unwrap();
            assert_eq!(page["events"][0]["data"], "over tls", "{page}");
        }
        // Plain HTTP on the TLS port is not served.
        let plain = reqwest::Client::new()
            .get(format!("http://127.0.0.1:{}/healthz", b.port))
            .timeout(T)
            .send()
            .await;
        assert!(plain.is_err() || plain.unwrap().status() != 200);

        if curl_with_http2() {
            let ca = dir.path().join("cert.pem");
            assert_eq!(curl_version(b.port, &ca, &["--http2"]), "2");
            assert_eq!(curl_version(b.port, &ca, &["--http1.1"]), "1.1");
        } else {
            eprintln!("SKIPPED the curl half: this curl has no HTTP2 (`curl --version`)");
        }
        let log = b.stderr_text();
        assert!(log.contains("tls=true"), "{log}");
        assert!(!log.contains(" ERROR "), "{log}");
    })
    .await;
}

/// Opens an h2 stream on `topic` that trusts every certificate in `roots`.
async fn open_stream(port: u16, roots: &[&Cert], topic: &str) -> SseStream {
    let r = client(roots, false)
        .get(format!("https://127.0.0.1:{port}/v1/topics/{topic}/events"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("stream over TLS");
    assert_eq!(r.version(), Version::HTTP_2);
    SseStream::from_response(r)
}

#[tokio::test]
async fn a_certificate_swap_on_sighup_reaches_new_connections_while_a_stream_keeps_delivering() {
    bounded(120, async {
        let dir = tempfile::tempdir().unwrap();
        let (a, b_cert, c) = (self_signed(), self_signed(), self_signed());
        let all = [&a, &b_cert, &c];
        // watch_secs = 0: only SIGHUP reloads.
        let b = start(dir.path(), &a, "0").await;
        let mut stream = open_stream(b.port, &all, "swap").await;
        publish(b.port, &all, "swap", "before").await;
        assert_eq!(stream.expect_event(T).await.data, "before");
        assert_eq!(served_cert(b.port, &all).await, a.der);

        // New files alone change nothing until SIGHUP.
        install(dir.path(), &b_cert.cert_pem, &b_cert.key_pem);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(served_cert(b.port, &all).await, a.der);
        signal_hup(b.pid);
        let (port, want) = (b.port, &b_cert.der);
        wait_for(
            T,
            "the new certificate on a new connection",
            || async move { (served_cert(port, &all).await == *want).then_some(()) },
        )
        .await;

        // A pair that does not match is refused; the one in force stays.
        install(dir.path(), &c.cert_pem, &a.key_pem);
        signal_hup(b.pid);
        let stderr_has = |what: &str| b.stderr_text().contains(what);
        wait_for(T, "the refused reload logged", || async {
            stderr_has("TLS certificate not reloaded").then_some(())
        })
        .await;
        assert_eq!(served_cert(b.port, &all).await, b_cert.der);

        // The stream opened under the first certificate still delivers.
        publish(b.port, &all, "swap", "after").await;
        assert_eq!(stream.expect_event(T).await.data, "after");
    })
    .await;
}

#[tokio::test]
async fn a_certificate_file_change_is_picked_up_without_a_signal() {
    bounded(120, async {
        let dir = tempfile::tempdir().unwrap();
        let (a, b_cert) = (self_signed(), self_signed());
        let all = [&a, &b_cert];
        let b = start(dir.path(), &a, "1").await;
        let mut stream = open_stream(b.port, &all, "watch").await;
        publish(b.port, &all, "watch", "one").await;
        assert_eq!(stream.expect_event(T).await.data, "one");

        install(dir.path(), &b_cert.cert_pem, &b_cert.key_pem);
        let (port, want) = (b.port, &b_cert.der);
        wait_for(
            T,
            "the changed certificate on a new connection",
            || async move { (served_cert(port, &all).await == *want).then_some(()) },
        )
        .await;
        publish(b.port, &all, "watch", "two").await;
        assert_eq!(stream.expect_event(T).await.data, "two");
        assert!(b.stderr_text().contains("TLS certificate reloaded"));
    })
    .await;
}

#[tokio::test]
async fn start_up_refuses_half_a_tls_configuration_or_a_key_that_does_not_match() {
    bounded(60, async {
        let dir = tempfile::tempdir().unwrap();
        let (a, other) = (self_signed(), self_signed());
        let (c, _) = install(dir.path(), &a.cert_pem, &other.key_pem);
        let k = dir.path().join("key.pem");
        let (st, err) = crate::support::run_expecting_exit(
            Store::Embedded,
            &[("SLUICE__TLS__CERT_FILE", c.to_str().unwrap())],
        )
        .await;
        assert!(!st.success());
        assert!(err.contains("tls.cert_file and tls.key_file"), "{err}");
        let (st, err) = crate::support::run_expecting_exit(
            Store::Embedded,
            &[
                ("SLUICE__TLS__CERT_FILE", c.to_str().unwrap()),
                ("SLUICE__TLS__KEY_FILE", k.to_str().unwrap()),
            ],
        )
        .await;
        assert!(!st.success());
        assert!(err.contains("is not the key of tls.cert_file"), "{err}");
    })
    .await;
}

fn signal_hup(pid: u32) {
    let st = std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(st.success(), "kill -HUP {pid}");
}

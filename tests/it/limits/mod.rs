//! Limits at the front door (issue 14, item 3): every limit is hit and
//! answered as docs/API.md ("Limits") says (status, `Retry-After` where a
//! retry can succeed, problem+json) while other clients go on being
//! served; slow and silent clients; a client after every file descriptor
//! the broker has; history pages nobody reads.

use std::{net::IpAddr, time::Duration};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

mod caps;
mod files;
mod heads;
mod history;
mod slow_loris;

/// A client whose connections come from `ip` (any 127.0.0.0/8 address is
/// this machine's): another client address to the broker.
fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .local_address(ip.parse::<IpAddr>().expect("an address"))
        .timeout(Duration::from_secs(15))
        .build()
        .expect("reqwest client")
}

/// A raw connection to the broker on `port`.
async fn connect(port: u16) -> tokio::net::TcpStream {
    tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect")
}

/// Reads one answer (head and `content-length` body) from `s`, or what
/// came before the connection closed or `within` passed.
async fn read_answer(s: &mut tokio::net::TcpStream, within: Duration) -> String {
    let deadline = tokio::time::Instant::now() + within;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&out).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = header(head, "content-length").and_then(|v| v.parse().ok());
            if len.is_some_and(|n: usize| body.len() >= n) {
                return text;
            }
        }
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return text,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// Whether the peer closed `s` (reads EOF or an error within `within`).
async fn closed(s: &mut tokio::net::TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
            Err(_) => return false,
        }
    }
}

/// Sends `GET /healthz` on `s` and returns the status line's code.
async fn healthz_on(s: &mut tokio::net::TcpStream) -> u16 {
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    status_of(&read_answer(s, Duration::from_secs(10)).await)
}

/// The status code of a raw answer (0 without one).
fn status_of(answer: &str) -> u16 {
    answer
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// A header's value in a raw head.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Asserts a raw answer is a problem+json with `status`; returns its body.
fn raw_problem(answer: &str, status: u16) -> serde_json::Value {
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((answer, ""));
    assert_eq!(status_of(answer), status, "{answer}");
    assert!(
        header(head, "content-type").is_some_and(|c| c.starts_with("application/problem+json")),
        "{head}"
    );
    let p: serde_json::Value = serde_json::from_str(body).expect("a problem body");
    assert_eq!(p["status"], status, "{body}");
    p
}

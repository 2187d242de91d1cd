//! A scripted HTTP/1.1 server on loopback: answers the requests it gets,
//! in order, with the answers a test gave, and records each request, so
//! the tests can make a broker misbehave in ways a real one will not on
//! cue (a 401, a token expiring, a `Retry-After`).

#![allow(dead_code)]

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::Instant,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

/// One scripted answer.
pub enum Answer {
    /// Status, extra headers and a body; the connection closes after it.
    Plain(u16, Vec<(&'static str, String)>, String),
    /// A `200` event stream with this body; `open`: the connection stays
    /// open afterwards (else it closes, ending the stream).
    Stream { body: String, open: bool },
}

/// A recorded request.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub at: Instant,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

pub struct Mock {
    pub url: String,
    pub requests: Arc<Mutex<Vec<Request>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Mock {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn stream(body: &str) -> Answer {
    Answer::Stream {
        body: body.to_owned(),
        open: false,
    }
}

pub fn stream_open(body: &str) -> Answer {
    Answer::Stream {
        body: body.to_owned(),
        open: true,
    }
}

pub fn json(status: u16, body: &str) -> Answer {
    Answer::Plain(status, vec![], body.to_owned())
}

pub fn problem(status: u16, headers: Vec<(&'static str, String)>, body: &str) -> Answer {
    Answer::Plain(status, headers, body.to_owned())
}

impl Mock {
    /// Serves `answers` in order; a request past the last one gets `500`.
    pub async fn start(answers: Vec<Answer>) -> Mock {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests: Arc<Mutex<Vec<Request>>> = Arc::default();
        let script = Arc::new(Mutex::new(VecDeque::from(answers)));
        let rec = requests.clone();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((mut sock, _)) = listener.accept().await {
                let Some(req) = read_request(&mut sock).await else {
                    continue;
                };
                rec.lock().unwrap().push(req);
                let answer = script.lock().unwrap().pop_front();
                match answer {
                    Some(Answer::Plain(status, headers, body)) => {
                        let mut head = format!(
                            "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n",
                            body.len()
                        );
                        let ct = if status >= 400 {
                            "application/problem+json"
                        } else {
                            "application/json"
                        };
                        head.push_str(&format!("content-type: {ct}\r\n"));
                        for (k, v) in headers {
                            head.push_str(&format!("{k}: {v}\r\n"));
                        }
                        head.push_str("\r\n");
                        let _ = sock.write_all(head.as_bytes()).await;
                        let _ = sock.write_all(body.as_bytes()).await;
                    }
                    Some(Answer::Stream { body, open }) => {
                        let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n";
                        let _ = sock.write_all(head.as_bytes()).await;
                        let _ = sock.write_all(body.as_bytes()).await;
                        if open {
                            held.push(sock);
                        }
                    }
                    None => {
                        let _ = sock
                            .write_all(
                                b"HTTP/1.1 500 X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                            )
                            .await;
                    }
                }
            }
        });
        Mock {
            url,
            requests,
            task,
        }
    }

    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

async fn read_request(sock: &mut tokio::net::TcpStream) -> Option<Request> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.lines();
    let mut first = lines.next()?.split_whitespace();
    let (method, target) = (first.next()?.to_owned(), first.next()?.to_owned());
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(Request {
        method,
        target,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
        at: Instant::now(),
    })
}

//! A deliberately small HTTP/1.1 client on hyper's connection API.
//!
//! Every [`Conn`] is exactly one keep-alive TCP connection, so the number of
//! connections a run opens is the number of publishers plus subscribers, and
//! a reconnect is always visible to the caller.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{
    body::Incoming,
    client::conn::http1::{self, SendRequest},
    header, Request, Response, StatusCode,
};
use hyper_util::rt::TokioIo;
use std::net::{IpAddr, SocketAddr};
use tokio::net::{TcpSocket, TcpStream};

/// Error type of the whole crate: runs report failures, they do not match on them.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// The broker's base address, `http://host:port` (no path, no TLS).
#[derive(Clone, Debug)]
pub struct Base {
    pub authority: String,
}

impl Base {
    /// Parses `http://host:port[/]`.
    pub fn parse(url: &str) -> Result<Self, Error> {
        let rest = url
            .strip_prefix("http://")
            .ok_or("only http:// URLs are supported")?;
        let authority = rest.trim_end_matches('/');
        if authority.is_empty() || authority.contains('/') {
            return Err(format!("expected http://host:port, got {url}").into());
        }
        Ok(Self {
            authority: authority.to_owned(),
        })
    }
}

/// `Authorization` of every request when `SLUICE_BENCH_BEARER` is set
/// (a token the target verifies): a client with a token on every publish
/// and stream open, as with `auth` on.
fn authorization() -> Option<&'static str> {
    static VALUE: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    VALUE
        .get_or_init(|| {
            std::env::var("SLUICE_BENCH_BEARER")
                .ok()
                .filter(|t| !t.is_empty())
                .map(|t| format!("Bearer {t}"))
        })
        .as_deref()
}

/// One keep-alive HTTP/1.1 connection (replaced by a new one after the
/// server answered `Connection: close`, as Pushpin's control API does).
pub struct Conn {
    base: Base,
    sender: SendRequest<Full<Bytes>>,
    /// The server said it closes this connection after the last answer.
    closing: bool,
    /// Connections opened after the first one.
    pub reconnects: u64,
}

impl Conn {
    /// Opens a TCP connection (`TCP_NODELAY`) and performs the HTTP/1.1 handshake.
    pub async fn connect(base: &Base) -> Result<Self, Error> {
        Self::connect_from(base, None).await
    }

    /// Like [`Conn::connect`], from a given local (source) address.
    pub async fn connect_from(base: &Base, source: Option<IpAddr>) -> Result<Self, Error> {
        let tcp = match source {
            None => TcpStream::connect(&base.authority).await?,
            Some(ip) => {
                let remote = tokio::net::lookup_host(&base.authority)
                    .await?
                    .next()
                    .ok_or("no address")?;
                let socket = match remote {
                    SocketAddr::V4(_) => TcpSocket::new_v4()?,
                    SocketAddr::V6(_) => TcpSocket::new_v6()?,
                };
                socket.bind(SocketAddr::new(ip, 0))?;
                socket.connect(remote).await?
            }
        };
        tcp.set_nodelay(true)?;
        let (sender, driver) = http1::handshake(TokioIo::new(tcp)).await?;
        // The driver ends when the connection closes; the next request then fails.
        tokio::spawn(driver);
        Ok(Self {
            base: base.clone(),
            sender,
            closing: false,
            reconnects: 0,
        })
    }

    /// Sends a request and returns the response with its body unread.
    pub async fn send(
        &mut self,
        method: hyper::Method,
        path_and_query: &str,
        headers: &[(header::HeaderName, &str)],
        body: Bytes,
    ) -> Result<Response<Incoming>, Error> {
        let mut req = Request::builder()
            .method(method)
            .uri(path_and_query)
            .header(header::HOST, &self.base.authority);
        for (name, value) in headers {
            req = req.header(name, *value);
        }
        if let Some(auth) = authorization() {
            req = req.header(header::AUTHORIZATION, auth);
        }
        if self.closing || self.sender.is_closed() {
            let reconnects = self.reconnects + 1;
            *self = Self::connect(&self.base).await?;
            self.reconnects = reconnects;
        }
        self.sender.ready().await?;
        let resp = self.sender.send_request(req.body(Full::new(body))?).await?;
        self.closing = resp
            .headers()
            .get(header::CONNECTION)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        Ok(resp)
    }

    /// POSTs `body` and reads the whole response, keeping the connection reusable.
    pub async fn post(
        &mut self,
        path: &str,
        content_type: &str,
        body: Bytes,
    ) -> Result<(StatusCode, Bytes), Error> {
        let resp = self
            .send(
                hyper::Method::POST,
                path,
                &[(header::CONTENT_TYPE, content_type)],
                body,
            )
            .await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}

#[cfg(test)]
mod tests {
    use super::Base;

    #[test]
    fn parses_base_urls() {
        assert_eq!(
            Base::parse("http://127.0.0.1:80/").unwrap().authority,
            "127.0.0.1:80"
        );
        assert!(Base::parse("https://x:1").is_err());
        assert!(Base::parse("http://x:1/v1").is_err());
    }
}

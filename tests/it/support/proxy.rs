//! A loopback TCP proxy a test can re-point at another broker and cut:
//! a client behind it sees its connections drop (network loss) and, after
//! a switch, reconnects to another instance (a load balancer moving it).

use std::sync::{
    atomic::{AtomicU16, Ordering},
    Arc, Mutex,
};

use tokio::{
    net::{TcpListener, TcpStream},
    task::{AbortHandle, JoinHandle},
};

/// A proxy on 127.0.0.1:`port` to 127.0.0.1:`target`.
pub struct Proxy {
    pub port: u16,
    target: Arc<AtomicU16>,
    conns: Arc<Mutex<Vec<AbortHandle>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    /// Starts forwarding new connections to `target`.
    pub async fn start(target: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().unwrap().port();
        let target = Arc::new(AtomicU16::new(target));
        let conns: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let (t, c) = (target.clone(), conns.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let to = t.load(Ordering::SeqCst);
                let task = tokio::spawn(async move {
                    // A target that is down: the client sees its connection
                    // closed, as with a load balancer that has no backend.
                    if let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", to)).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                let mut list = c.lock().unwrap();
                list.retain(|h| !h.is_finished());
                list.push(task.abort_handle());
            }
        });
        Proxy {
            port,
            target,
            conns,
            accept,
        }
    }

    /// New connections go to `target` from now on.
    pub fn switch(&self, target: u16) {
        self.target.store(target, Ordering::SeqCst);
    }

    /// Drops every open connection (both sides see them close).
    pub fn cut(&self) {
        for h in self.conns.lock().unwrap().drain(..) {
            h.abort();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}

//! The front door: how many connections are open, and how close the
//! process is to its open-file limit. Both are decided once per connection,
//! when it is accepted ([`Gate::on_connect`]); a connection past either
//! limit has its requests answered at once with a problem+json `503`
//! (`Retry-After`) and is closed after the first ([`refuse_when_full`]).
//!
//! One client address may hold at most a quarter of the connections the
//! open-file limit allows (`429`; loopback exempt with
//! `rate_limit.exempt_loopback`), so no single client can take them all.
//!
//! Why answer instead of not accepting: a listener that stops accepting
//! (or an `accept` that fails with `EMFILE`, which the HTTP server meets by
//! pausing its listener) stalls every new client, the well-behaved ones
//! included, with no word of why. Keeping `limits.reserve_open_files`
//! descriptors free means `accept` itself never fails, and a refused
//! connection gives its descriptor back at once.

use std::{
    any::Any,
    collections::HashMap,
    net::IpAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use actix_web::{
    body::MessageBody,
    dev::{Extensions, ServiceRequest, ServiceResponse},
    middleware::Next,
    ResponseError,
};

use super::error::ApiError;
use crate::fds;

/// How often the open descriptors are counted.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(200);

/// Connection counts and the descriptor budget.
pub struct Gate {
    max_connections: usize,
    /// The open-file limit less the reserve, when the limit is known.
    fd_ceiling: Option<usize>,
    open: AtomicUsize,
    accepted: AtomicUsize,
    /// Descriptors open at the last count, and `accepted` then: every
    /// connection accepted since is counted on top (closes are not
    /// subtracted until the next count, which errs on the safe side).
    fds_counted: AtomicUsize,
    accepted_at_count: AtomicUsize,
    /// Files the store may still open (its budget less what it has open),
    /// as of the last count: kept free for it too.
    store_headroom: Box<dyn Fn() -> usize + Send + Sync>,
    store_headroom_counted: AtomicUsize,
    /// Most connections of one client address (a quarter of the ceiling),
    /// and the open ones per address.
    max_per_client: Option<usize>,
    exempt_loopback: bool,
    per_client: Mutex<HashMap<IpAddr, usize>>,
}

/// Why a connection is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refusal {
    Connections,
    Descriptors,
    Client,
}

/// Kept in each connection's data: counts it open until it closes, and
/// says whether it was refused.
struct Ticket {
    gate: Arc<Gate>,
    refused: Option<Refusal>,
    client: Option<IpAddr>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.gate.open.fetch_sub(1, Ordering::Relaxed);
        if let Some(ip) = self.client {
            let mut per = self.gate.per_client.lock().expect("poisoned");
            if let Some(n) = per.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    per.remove(&ip);
                }
            }
        }
    }
}

impl Gate {
    /// A gate for `max_connections`, keeping `reserve` descriptors free,
    /// and those `store_headroom` says the store may still open.
    pub fn new(
        max_connections: usize,
        reserve: usize,
        exempt_loopback: bool,
        store_headroom: Box<dyn Fn() -> usize + Send + Sync>,
    ) -> Arc<Gate> {
        let fd_ceiling = fds::soft_limit().map(|l| l.saturating_sub(reserve));
        let gate = Gate {
            max_connections,
            fd_ceiling,
            max_per_client: fd_ceiling.map(|c| (c / 4).max(1)),
            exempt_loopback,
            per_client: Mutex::default(),
            open: AtomicUsize::new(0),
            accepted: AtomicUsize::new(0),
            fds_counted: AtomicUsize::new(0),
            accepted_at_count: AtomicUsize::new(0),
            store_headroom,
            store_headroom_counted: AtomicUsize::new(0),
        };
        gate.count_fds();
        Arc::new(gate)
    }

    /// Counts the open descriptors (every [`SAMPLE_EVERY`]).
    pub fn count_fds(&self) {
        if self.fd_ceiling.is_none() {
            return;
        }
        let accepted = self.accepted.load(Ordering::Relaxed);
        if let Some(n) = fds::open_now() {
            self.fds_counted.store(n, Ordering::Relaxed);
            self.accepted_at_count.store(accepted, Ordering::Relaxed);
        }
        self.store_headroom_counted
            .store((self.store_headroom)(), Ordering::Relaxed);
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// The server's `on_connect` hook: counts the connection and decides
    /// whether it is served.
    pub fn on_connect(self: &Arc<Self>, io: &dyn Any, data: &mut Extensions) {
        let open = self.open.fetch_add(1, Ordering::Relaxed) + 1;
        let accepted = self.accepted.fetch_add(1, Ordering::Relaxed) + 1;
        let client = self
            .max_per_client
            .and_then(|_| peer_ip(io))
            .filter(|ip| !(self.exempt_loopback && ip.is_loopback()));
        let of_client = client.map(|ip| {
            let mut per = self.per_client.lock().expect("poisoned");
            let n = per.entry(ip).or_insert(0);
            *n += 1;
            *n
        });
        let refused = if open > self.max_connections {
            Some(Refusal::Connections)
        } else if of_client > self.max_per_client {
            Some(Refusal::Client)
        } else {
            self.fd_ceiling.and_then(|ceiling| {
                let since = accepted.saturating_sub(self.accepted_at_count.load(Ordering::Relaxed));
                let used = self.fds_counted.load(Ordering::Relaxed)
                    + since
                    + self.store_headroom_counted.load(Ordering::Relaxed);
                (used >= ceiling).then_some(Refusal::Descriptors)
            })
        };
        data.insert(Ticket {
            gate: self.clone(),
            refused,
            client,
        });
    }
}

/// The peer address of an accepted plain TCP connection. (A TLS one is
/// not counted per client: the server hands this hook the TLS stream,
/// whose type is not in reach; the caps in all still apply to it.)
fn peer_ip(io: &dyn Any) -> Option<IpAddr> {
    let tcp = io.downcast_ref::<actix_web::rt::net::TcpStream>()?;
    tcp.peer_addr().ok().map(|a| a.ip())
}

/// Answers every request of a refused connection with a `503`, and closes
/// the connection after it.
pub async fn refuse_when_full(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<actix_web::body::BoxBody>, actix_web::Error> {
    let refused = req.conn_data::<Ticket>().and_then(|t| t.refused);
    if let Some(why) = refused {
        let detail = match why {
            Refusal::Connections => "the broker holds as many connections as it takes",
            Refusal::Descriptors => "the broker is close to its open-file limit",
            Refusal::Client => {
                let e = ApiError::ClientLimit {
                    detail: "this client address holds as many connections as one client \
                             may; close one or retry later"
                        .into(),
                    retry_after_secs: 1,
                };
                let mut resp = e.error_response();
                resp.head_mut()
                    .set_connection_type(actix_web::http::ConnectionType::Close);
                return Ok(req.into_response(resp));
            }
        };
        let e = ApiError::AtCapacity {
            detail: format!("{detail}; retry"),
            retry_after_secs: 1,
            close: true,
        };
        return Ok(req.into_response(e.error_response()));
    }
    next.call(req)
        .await
        .map(ServiceResponse::map_into_boxed_body)
}

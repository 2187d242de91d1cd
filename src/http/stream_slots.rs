//! Open SSE streams: at most `limits.max_streams` in all (past it `503`)
//! and `limits.max_streams_per_client` per client address (past it `429`;
//! loopback exempt when `rate_limit.exempt_loopback`). A stream holds its
//! [`Slot`] in its response body, so the slot is free again the moment the
//! body is dropped, however the stream ended.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
};

use actix_web::HttpRequest;

use super::error::ApiError;

/// The stream counts.
pub struct StreamSlots {
    max: usize,
    max_per_client: usize,
    exempt_loopback: bool,
    /// Open streams in all, and per client address with any open.
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// One open stream's place in the counts.
pub struct Slot {
    slots: Arc<StreamSlots>,
    client: Option<IpAddr>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock().expect("poisoned");
        open.0 -= 1;
        if let Some(ip) = self.client {
            if let Some(n) = open.1.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    open.1.remove(&ip);
                }
            }
        }
    }
}

impl StreamSlots {
    /// Counts for the given limits.
    pub fn new(max: usize, max_per_client: usize, exempt_loopback: bool) -> Arc<Self> {
        Arc::new(StreamSlots {
            max,
            max_per_client,
            exempt_loopback,
            open: Mutex::new((0, HashMap::new())),
        })
    }

    /// A slot for a stream `req` opens, or the refusal.
    pub fn take(self: &Arc<Self>, req: &HttpRequest) -> Result<Slot, ApiError> {
        let client = req
            .peer_addr()
            .map(|a| a.ip())
            .filter(|ip| !(self.exempt_loopback && ip.is_loopback()));
        let mut open = self.open.lock().expect("poisoned");
        if open.0 >= self.max {
            return Err(ApiError::AtCapacity {
                detail: format!(
                    "the broker has {} streams open, as many as it takes; retry",
                    self.max
                ),
                retry_after_secs: 1,
                close: false,
            });
        }
        if let Some(ip) = client {
            let n = open.1.entry(ip).or_insert(0);
            if *n >= self.max_per_client {
                return Err(ApiError::ClientLimit {
                    detail: format!(
                        "this client address has {} streams open, as many as one client may; \
                         close one or retry later",
                        self.max_per_client
                    ),
                    retry_after_secs: 1,
                });
            }
            *n += 1;
        }
        open.0 += 1;
        Ok(Slot {
            slots: self.clone(),
            client,
        })
    }
}

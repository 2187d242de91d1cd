//! Quiet logging of malformed requests.
//!
//! Any client can send garbage at will, so a log line per malformed request
//! would let it flood the log (and the disk behind it). A refusal is logged
//! at `WARN`, at most one line per [`WINDOW`]; the next line says how many
//! were refused without a line in between. actix-http's own `ERROR` line
//! for each of them is lowered to `DEBUG` by the vendored patch 0004
//! (`vendor/actix-http/SLUICE-PATCH.md`).

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

/// At most one line per this long.
pub const WINDOW: Duration = Duration::from_secs(10);

struct State {
    last_line: Option<Instant>,
    unlogged: u64,
}

static STATE: Mutex<State> = Mutex::new(State {
    last_line: None,
    unlogged: 0,
});

/// Notes a request refused as malformed with `status` (`what` says why, in
/// a few words); logs it unless a line was written within [`WINDOW`].
pub fn note(status: u16, what: &'static str) {
    let mut s = STATE.lock().unwrap_or_else(|p| p.into_inner());
    let now = Instant::now();
    if s.last_line.is_some_and(|t| now.duration_since(t) < WINDOW) {
        s.unlogged += 1;
        return;
    }
    let unlogged = std::mem::take(&mut s.unlogged);
    s.last_line = Some(now);
    drop(s);
    tracing::warn!(
        status,
        what,
        refused_without_a_line = unlogged,
        "malformed request refused (at most one line per {} s)",
        WINDOW.as_secs()
    );
}

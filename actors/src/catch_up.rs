//! A catch-up: a subscriber whose position is older than its topic's tail
//! reads what it misses from the store, page by page, paced by its socket.

use std::{sync::Arc, time::Duration};

use crate::{
    cursor::{now_ms, Cursor, Epoch},
    messages::EndReason,
    metrics::metrics,
    sse::{frame_page, notice_frame, FramedEvent, GAP},
    store::SharedStore,
    subscription::{Offer, Subscription},
};

/// Events read from the store per catch-up round, at first; later rounds
/// aim at [`PAGE_BYTES`] from the sizes seen.
const FIRST_PAGE: usize = 256;
/// Bytes of frames a round aims at: large enough that a round's fixed costs
/// (a store call, a wake-up) vanish, small enough that many subscribers
/// catching up at once (after a burst paused them all) hold little: about
/// this plus [`AHEAD_BYTES`] each.
const PAGE_BYTES: usize = 128 << 10;
/// Most events per round.
const PAGE_MAX: usize = 8192;
/// A catch-up reads its next page once no more than this waits for the
/// socket: more than a page, so the socket has work while the store reads.
const AHEAD_BYTES: usize = 192 << 10;

/// What a catch-up needs.
pub(crate) struct CatchUpJob {
    /// Where the events are.
    pub store: SharedStore,
    /// Whose position to bring forward.
    pub sub: Arc<Subscription>,
    /// The log's epoch, to render cursors.
    pub epoch: Epoch,
    /// The socket taking nothing this long is a stall.
    pub stall: Duration,
    /// `?on_gap=resume`: events trimmed by retention meanwhile are reported
    /// with `event: gap` and the stream goes on, instead of ending.
    pub resume_on_gap: bool,
    /// When the stream's token expires (Unix ms): the catch-up stops there
    /// with `AuthExpired`, as the session's own timer would (which does not
    /// run while a catch-up holds the session).
    pub deadline_ms: Option<i64>,
}

/// Reads from the store after the subscription's position until the store
/// has nothing more; `Err` says why the stream must end (or, for
/// `StoreError`, try again later).
pub(crate) async fn run(job: CatchUpJob) -> Result<(), EndReason> {
    let sub = &job.sub;
    // The subscription holds the position: everything queued there reaches
    // the client unless it goes away.
    let (mut after, mut after_time) = sub.position();
    let mut page_len = FIRST_PAGE;
    loop {
        room(sub, AHEAD_BYTES, job.stall, job.deadline_ms).await?;
        if job.deadline_ms.is_some_and(|d| now_ms() >= d) {
            return Err(EndReason::AuthExpired);
        }
        let page = job
            .store
            .read(&sub.topic, after, page_len)
            .await
            .map_err(|_| {
                metrics().store_errors.inc();
                EndReason::StoreError
            })?;
        if page.is_empty() {
            return Ok(());
        }
        let mut bytes = 0usize;
        // Runs of consecutive events; between them (and before the first),
        // positions whose events are gone: trimmed by retention while this
        // subscriber lagged, or lost to damage in the stored log.
        let mut rest = &page[..];
        while let Some(first) = rest.first() {
            if first.seq != after + 1 {
                if !job.resume_on_gap {
                    return Err(EndReason::Gap);
                }
                let requested = Cursor::new(after_time, after, job.epoch.clone()).to_string();
                let resumed = Cursor::new(first.time_ms, first.seq - 1, job.epoch.clone());
                let notice = gap_notice(
                    &requested,
                    &resumed.to_string(),
                    Some(first.seq - 1 - after),
                );
                if sub.push_gap_notice(notice, first.seq - 1) == Offer::Gone {
                    return Err(EndReason::ClientGone);
                }
            }
            let run = 1 + rest
                .windows(2)
                .take_while(|w| w[1].seq == w[0].seq + 1)
                .count();
            let (buf, framed) = frame_page(&rest[..run], &job.epoch);
            rest = &rest[run..];
            let framed: Arc<[FramedEvent]> = framed.into();
            bytes += framed.iter().map(|f| f.frame.len()).sum::<usize>();
            let last = &framed[framed.len() - 1];
            match sub.push_page(&framed, buf) {
                Offer::Queued | Offer::Paused => {}
                Offer::Gone => return Err(EndReason::ClientGone),
                Offer::Gap { expected, got } => {
                    tracing::error!(conn = sub.id, expected, got, "catch-up gap");
                    return Err(EndReason::Gap);
                }
            }
            after = last.seq;
            after_time = last.time_ms;
        }
        if page.len() < page_len {
            return Ok(());
        }
        let per_event = bytes.div_ceil(page.len()).max(1);
        page_len = (PAGE_BYTES / per_event).clamp(16, PAGE_MAX);
    }
}

/// Waits until at most `ahead_bytes` and the high watermark's events wait
/// for the socket, so a catch-up never holds more than that plus a page;
/// the socket taking nothing for `stall` is a stall; reaching `deadline_ms`
/// (Unix ms) ends the wait with `AuthExpired`.
async fn room(
    sub: &Subscription,
    ahead_bytes: usize,
    stall: Duration,
    deadline_ms: Option<i64>,
) -> Result<(), EndReason> {
    // The session's tick, which shows waits to health snapshots, does not
    // run during a catch-up: the wait is shown from here.
    let high_events = sub.watermarks().high_events;
    let mut mark: Option<u64> = None;
    loop {
        let b = sub.backlog();
        if b.closed {
            return Err(EndReason::ClientGone);
        }
        if b.bytes <= ahead_bytes && b.events <= high_events {
            if mark.is_some() {
                sub.set_waiting_since(None);
            }
            return Ok(());
        }
        if mark != Some(b.takes) {
            mark = Some(b.takes);
            sub.set_waiting_since(Some(sub.age_ms()));
        }
        let now = now_ms();
        let until_deadline = match deadline_ms {
            Some(d) if d <= now => return Err(EndReason::AuthExpired),
            Some(d) => Duration::from_millis((d - now) as u64),
            None => Duration::MAX,
        };
        if until_deadline < stall {
            // Woken by a take, or at the deadline, which the next turn sees.
            let _ = tokio::time::timeout(until_deadline, sub.taken()).await;
            continue;
        }
        match tokio::time::timeout(stall, sub.taken()).await {
            Ok(()) => {}
            // A stale wake-up may have shortened an earlier wait: only a
            // whole timeout with no take at all is a stall.
            Err(_) if sub.backlog().takes == b.takes => return Err(EndReason::Stalled),
            Err(_) => {}
        }
    }
}

/// Frames the `event: gap` notice of a stream resumed with `on_gap=resume`.
/// Its id is the boundary cursor, so a reconnect right after it resumes from
/// the oldest retained event.
pub fn gap_notice(requested: &str, resumed_after: &str, lost: Option<u64>) -> bytes::Bytes {
    let data = serde_json::json!({
        "requested": requested,
        "resumed_after": resumed_after,
        "lost": lost,
    });
    notice_frame(GAP, resumed_after, &data.to_string())
}

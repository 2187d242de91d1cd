//! The JSON history poll (`GET /v1/topics/{topic}/events` without
//! `text/event-stream`): one page of stored events, bounded in events
//! (`limit`) and in bytes (`limits.max_history_page_bytes`), written as
//! the client reads it.
//!
//! A page of large events is where memory goes: one event of 1 MiB of NUL
//! bytes is 6 MiB of JSON (`\u0000` each). So the store reads at most the
//! byte budget of events, the page's cut is decided from their escaped
//! sizes before a byte is written, and each event's data is escaped in
//! pieces only when the socket has taken the previous one. A client that
//! never reads holds one budget of events and one piece.

use std::{
    collections::VecDeque,
    convert::Infallible,
    pin::Pin,
    task::{Context, Poll},
};

use actix_web::{http::header, web, HttpResponse};
use bytes::Bytes;
use futures_util::Stream;
use sluice_actors::{
    cursor::{rfc3339_millis, Cursor, Epoch},
    cursor_check,
    event::StoredEvent,
    store::StoreError,
    topic::Start,
};

use super::{error::ApiError, strict, AppState};

/// Default and largest `limit`.
const HISTORY_DEFAULT: usize = 100;
const HISTORY_MAX: usize = 1000;
/// Data escaped per chunk written.
const PIECE: usize = 64 << 10;

/// The `limit` of a history poll: events per page.
pub(super) fn limit_of(limit: Option<&str>) -> Result<usize, ApiError> {
    match limit {
        None => Ok(HISTORY_DEFAULT),
        Some(l) => match strict::parse_u64(l) {
            Some(n) if (1..=HISTORY_MAX as u64).contains(&n) => Ok(n as usize),
            _ => Err(ApiError::bad(format!(
                "limit must be an integer from 1 to {HISTORY_MAX} in decimal digits, \
                 without sign, blanks or leading zeros"
            ))),
        },
    }
}

/// Serves one page; `count_resume` counts a resume from a cursor.
pub(super) async fn page(
    state: web::Data<AppState>,
    topic: String,
    start: Start,
    limit: Option<&str>,
    count_resume: impl Fn(&Start, bool),
) -> Result<HttpResponse, ApiError> {
    let limit = limit_of(limit)?;
    let store = state.broker.store();
    let bounds = match &start {
        // A poll from a cursor is a resume: like a stream's, it opens the
        // topic (creating it if needed), so a cursor of a deleted or wiped
        // log gets the same 416 as on the stream, not a 404.
        Start::After(_) => store.open_topic(&topic).await?,
        // Without one there is nothing to resume: a topic that does not
        // exist (never used, or deleted) has no history, and a read does
        // not create it.
        Start::Earliest | Start::Latest => match store.bounds(&topic).await {
            Err(StoreError::UnknownTopic) => return Err(ApiError::unknown_topic(&topic)),
            b => b?,
        },
    };
    let (after, after_cursor) = match start {
        Start::Earliest => (bounds.first_seq - 1, bounds.boundary_cursor()),
        Start::Latest => (bounds.latest_seq, bounds.latest_cursor()),
        Start::After(c) => {
            // A position that holds another event now (or that the log went
            // back past) says more than the bounds alone.
            let resumed = match cursor_check::mismatch(&**store, &topic, &c).await {
                Some(gap) => Err(gap),
                None => bounds.resume_point(&c),
            };
            count_resume(&Start::After(c.clone()), resumed.is_err());
            (resumed.map_err(ApiError::from)?, c)
        }
    };
    let budget = state.settings.limits.max_history_page_bytes;
    let mut events = store.read_bounded(&topic, after, limit, budget).await?;
    // A page ends before positions lost to damage: polling on from its
    // next_cursor gets the 416 that names the loss, never a silent skip.
    let run = 1 + events
        .windows(2)
        .take_while(|w| w[1].seq == w[0].seq + 1)
        .count();
    events.truncate(run);
    // And once its JSON reaches the budget (at least one event).
    let mut size = 0;
    let fit = events
        .iter()
        .take_while(|e| {
            size += row_len(e);
            size <= budget
        })
        .count();
    events.truncate(fit.max(1));
    let next_cursor = events
        .last()
        .map_or(after_cursor, |e| e.cursor(&bounds.epoch));
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "application/json"))
        .streaming(Page::new(events, bounds.epoch, next_cursor)))
}

/// Bytes `s` takes as a JSON string's contents (serde_json's escaping).
fn escaped_len(s: &[u8]) -> usize {
    s.iter()
        .map(|&b| match b {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 2,
            0..=0x1f => 6,
            _ => 1,
        })
        .sum()
}

/// About what one event's row takes (cursor, time and punctuation bound
/// from above).
fn row_len(e: &StoredEvent) -> usize {
    const FIXED: usize = 200;
    FIXED
        + escaped_len(&e.data)
        + e.event_type
            .as_deref()
            .map_or(0, |t| escaped_len(t.as_bytes()))
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

/// The page's JSON body, produced a piece at a time as it is polled.
struct Page {
    events: VecDeque<StoredEvent>,
    epoch: Epoch,
    next_cursor: Cursor,
    /// The event being written and how much of its data is out.
    current: Option<(StoredEvent, usize)>,
    opened: bool,
    done: bool,
}

impl Page {
    fn new(events: Vec<StoredEvent>, epoch: Epoch, next_cursor: Cursor) -> Self {
        Page {
            events: events.into(),
            epoch,
            next_cursor,
            current: None,
            opened: false,
            done: false,
        }
    }

    fn next_chunk(&mut self) -> Option<String> {
        if self.done {
            return None;
        }
        if let Some((e, at)) = &mut self.current {
            let data = e.data_str();
            if *at < data.len() {
                let mut end = (*at + PIECE).min(data.len());
                while !data.is_char_boundary(end) {
                    end -= 1;
                }
                let quoted = json_str(&data[*at..end]);
                *at = end;
                return Some(quoted[1..quoted.len() - 1].to_owned());
            }
            self.current = None;
            return Some("\"}".to_owned());
        }
        let mut out = String::new();
        if !self.opened {
            self.opened = true;
            out.push_str("{\"events\":[");
        }
        match self.events.pop_front() {
            Some(e) => {
                if !out.ends_with('[') {
                    out.push(',');
                }
                let ty = e
                    .event_type
                    .as_deref()
                    .map_or_else(|| "null".to_owned(), json_str);
                out.push_str(&format!(
                    "{{\"cursor\":\"{}\",\"type\":{ty},\"time\":\"{}\",\"data\":\"",
                    e.cursor(&self.epoch),
                    rfc3339_millis(e.time_ms)
                ));
                self.current = Some((e, 0));
            }
            None => {
                self.done = true;
                out.push_str(&format!("],\"next_cursor\":\"{}\"}}", self.next_cursor));
            }
        }
        Some(out)
    }
}

impl Stream for Page {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Poll::Ready(self.get_mut().next_chunk().map(|s| Ok(Bytes::from(s))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: u64, data: &str, ty: Option<&str>) -> StoredEvent {
        StoredEvent {
            seq,
            time_ms: 1_700_000_000_000,
            event_type: ty.map(str::to_owned),
            data: Bytes::copy_from_slice(data.as_bytes()),
        }
    }

    #[test]
    fn a_page_is_the_json_it_always_was_and_rows_are_bounded_from_above() {
        let epoch = Epoch::generate();
        let big = format!("\0\"\\\n{}é", "x".repeat(3 * PIECE));
        let events = vec![event(1, "a", None), event(2, &big, Some("t\"y"))];
        for e in &events {
            let row = serde_json::json!({
                "cursor": e.cursor(&epoch).to_string(), "type": e.event_type,
                "time": rfc3339_millis(e.time_ms), "data": e.data_str(),
            });
            assert!(row.to_string().len() <= row_len(e), "{}", row_len(e));
        }
        let next = events[1].cursor(&epoch);
        let mut page = Page::new(events.clone(), epoch.clone(), next.clone());
        let mut body = String::new();
        while let Some(c) = page.next_chunk() {
            assert!(c.len() <= 6 * PIECE + 300);
            body.push_str(&c);
        }
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["next_cursor"], next.to_string());
        assert_eq!(v["events"][0]["data"], "a");
        assert_eq!(v["events"][0]["type"], serde_json::Value::Null);
        assert_eq!(v["events"][1]["data"], big);
        assert_eq!(v["events"][1]["type"], "t\"y");
        let empty = Page::new(Vec::new(), epoch, next.clone());
        let body: String = std::iter::successors(Some(empty), |_| None)
            .flat_map(|mut p| std::iter::from_fn(move || p.next_chunk()))
            .collect();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["events"], serde_json::json!([]));
    }
}

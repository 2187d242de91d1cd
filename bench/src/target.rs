//! What kind of server a run talks to, and how its publish requests look.
//!
//! Subscribers are the same for every target (`GET /v1/topics/{t}/events`,
//! `text/event-stream`); publishes differ: Sluice, the ceiling and the
//! trivial actix handler take Sluice's API (`/events` with one event,
//! `/batch` with NDJSON), Pushpin takes its HTTP control API (`POST
//! /publish/` with one item per event, a batch being several items).

use bytes::Bytes;
use serde_json::json;

use crate::{
    http::{Base, Error},
    payload, Common,
};

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Sluice (either store).
    Sluice,
    /// `sluice-bench ceiling`: in-memory broadcast SSE server.
    Ceiling,
    /// Pushpin: subscribers through its proxy (`--url`), publishes through
    /// its HTTP control API (`--publish-url`).
    Pushpin,
    /// `sluice-bench trivial`: a trivial actix-web publish handler.
    Trivial,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Sluice => "sluice",
            Kind::Ceiling => "ceiling",
            Kind::Pushpin => "pushpin",
            Kind::Trivial => "trivial",
        }
    }

    /// Whether the server assigns the SSE `id`s (so they must increase).
    /// Through Pushpin the ids are the publishers' own (`p-s`).
    pub fn assigns_ids(self) -> bool {
        self != Kind::Pushpin
    }
}

/// Where publishes and subscriptions go.
#[derive(Clone, Debug)]
pub struct Endpoints {
    pub kind: Kind,
    pub publish: Base,
    pub subscribe: Base,
}

impl Endpoints {
    /// From the common options; `sub_url` overrides the subscribe side.
    pub fn new(common: &Common, sub_url: Option<&str>) -> Result<Self, Error> {
        let url = Base::parse(&common.url)?;
        let publish = match (&common.publish_url, common.target) {
            (Some(u), _) => Base::parse(u)?,
            (None, Kind::Pushpin) => {
                return Err("--target pushpin needs --publish-url (the control API)".into())
            }
            (None, _) => url.clone(),
        };
        let subscribe = match sub_url {
            Some(u) => Base::parse(u)?,
            None => url,
        };
        Ok(Self {
            kind: common.target,
            publish,
            subscribe,
        })
    }
}

/// One publish request.
pub struct PublishRequest {
    pub path: String,
    pub content_type: &'static str,
    pub body: Bytes,
}

/// The request publishing `events` (publisher, sequence, payload) to
/// `topic`: a single-event request when `batch` is false (then `events`
/// holds one), else one batch.
pub fn publish_request(
    kind: Kind,
    topic: &str,
    events: &[(u32, u64, String)],
    batch: bool,
) -> PublishRequest {
    match kind {
        Kind::Pushpin => {
            let items: Vec<_> = events
                .iter()
                .map(|(p, s, data)| {
                    json!({
                        "channel": topic,
                        "id": format!("{p}-{s}"),
                        "formats": {"http-stream": {"content": sse_frame(&format!("{p}-{s}"), data)}},
                    })
                })
                .collect();
            PublishRequest {
                path: "/publish/".into(),
                content_type: "application/json",
                body: Bytes::from(json!({ "items": items }).to_string()),
            }
        }
        _ if !batch => PublishRequest {
            path: format!("/v1/topics/{topic}/events"),
            content_type: "application/json",
            body: Bytes::from(events[0].2.clone()),
        },
        _ => {
            let mut body = String::with_capacity(events.iter().map(|e| e.2.len() + 16).sum());
            for (_, _, data) in events {
                payload::push_ndjson_line(&mut body, data);
            }
            PublishRequest {
                path: format!("/v1/topics/{topic}/batch"),
                content_type: "application/x-ndjson",
                body: Bytes::from(body),
            }
        }
    }
}

/// `id: {id}\ndata: {line}\n...\n\n`, one `data:` line per line of `data`.
pub fn sse_frame(id: &str, data: &str) -> String {
    let mut out = String::with_capacity(data.len() + id.len() + 16);
    out.push_str("id: ");
    out.push_str(id);
    out.push('\n');
    for line in data.split('\n') {
        out.push_str("data: ");
        out.push_str(line.strip_suffix('\r').unwrap_or(line));
        out.push('\n');
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pushpin_batches_are_items_with_sse_content() {
        let events = vec![(1, 7, "a".to_string()), (1, 8, "b\nc".to_string())];
        let req = publish_request(Kind::Pushpin, "t", &events, true);
        assert_eq!(req.path, "/publish/");
        let v: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
        assert_eq!(v["items"][0]["channel"], "t");
        assert_eq!(
            v["items"][1]["formats"]["http-stream"]["content"],
            "id: 1-8\ndata: b\ndata: c\n\n"
        );
    }

    #[test]
    fn sluice_single_and_batch() {
        let events = vec![(0, 0, "{}".to_string())];
        let one = publish_request(Kind::Sluice, "t", &events, false);
        assert_eq!(
            (one.path.as_str(), &one.body[..]),
            ("/v1/topics/t/events", &b"{}"[..])
        );
        let batch = publish_request(Kind::Ceiling, "t", &events, true);
        assert_eq!(batch.path, "/v1/topics/t/batch");
        assert_eq!(
            &batch.body[..],
            br#"{"data":"{}"}
"#
        );
    }
}

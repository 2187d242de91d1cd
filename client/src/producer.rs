//! A producer: publishes one topic's events numbered 1, 2, 3, … with
//! `Producer-Id`/`Producer-Seq`, so the broker stores each exactly once
//! however often it is retried.

use crate::{
    client::Client,
    error::{Error, Result},
    types::{NewEvent, Published},
};

/// Numbers its events and retries them safely: a retry carries the same
/// sequence, and the broker stores a sequence once (a repeat answers the
/// original cursor with `duplicate: true`).
///
/// The broker accepts a producer's first sequence on a topic whatever it
/// is, and afterwards only the next one; a sequence at or below the
/// highest stored one is a duplicate *and is not stored*. So a producer id
/// must not be reused from 1 by a new process: [`Client::producer`] makes
/// a fresh id each time; to keep one id across restarts, save
/// [`next_seq`](Producer::next_seq) and pass it to
/// [`Client::producer_with_id`].
///
/// Calls take `&mut self`: one event at a time, in order (the broker
/// refuses a sequence that skips ahead). Dropping a `send` before it
/// finishes is safe: sending the same event again reuses its sequence, and
/// a different event learns from the broker whether the abandoned one was
/// stored (a `409` names the expected sequence) and is numbered to match.
///
/// ```no_run
/// # async fn f() -> sluice_client::Result<()> {
/// let client = sluice_client::Client::new("http://127.0.0.1:8080")?;
/// let mut producer = client.producer("orders");
/// for i in 0..3 {
///     producer.send(format!("order {i}")).await?;
/// }
/// # Ok(()) }
/// ```
pub struct Producer {
    client: Client,
    topic: String,
    id: String,
    next_seq: u64,
    /// The sequence and event of a send whose outcome is unknown.
    uncertain: Option<(u64, NewEvent)>,
}

impl Client {
    /// A producer on `topic` under a new random id, numbering from 1.
    pub fn producer(&self, topic: &str) -> Producer {
        let id = format!("p-{:016x}", rand::random::<u64>());
        self.producer_with_id(topic, &id, 1)
    }

    /// A producer on `topic` under `id` (1 to 64 of `[A-Za-z0-9._-]`)
    /// whose next event gets sequence `next_seq`.
    pub fn producer_with_id(&self, topic: &str, id: &str, next_seq: u64) -> Producer {
        Producer {
            client: self.clone(),
            topic: topic.to_owned(),
            id: id.to_owned(),
            next_seq,
            uncertain: None,
        }
    }
}

impl Producer {
    /// The producer id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The sequence the next event gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Publishes the next event. Retried (same sequence) while the broker
    /// is unreachable, overloaded or the answer is lost, up to the client's
    /// [`max_attempts`](crate::ClientBuilder::max_attempts). After an error
    /// that leaves it unknown whether the event was stored (a transport
    /// failure, a `5xx` other than `503`, a dropped call), sending the same
    /// event again reuses its sequence, so it is stored once either way.
    pub async fn send(&mut self, event: impl Into<NewEvent>) -> Result<Published> {
        let event = event.into();
        let mut seq = match self.uncertain.take() {
            Some((seq, e)) if e == event => seq,
            _ => self.next_seq,
        };
        // At most one renumbering: a 409 names the sequence the broker
        // expects, lower than ours only when an earlier send was abandoned
        // before it was stored.
        for _ in 0..2 {
            self.next_seq = self.next_seq.max(seq + 1);
            // Kept until the broker answers, so that a call dropped midway
            // leaves its sequence to the same event's next send.
            self.uncertain = Some((seq, event.clone()));
            let r = self
                .client
                .publish_event(&self.topic, &event, Some((&self.id, seq)))
                .await;
            match r {
                Ok(p) => {
                    self.uncertain = None;
                    return Ok(p);
                }
                Err(Error::Api(p)) if p.status == 409 => {
                    self.uncertain = None;
                    match p.body.get("expected_seq").and_then(|v| v.as_u64()) {
                        Some(expected) if expected < seq => {
                            self.next_seq = expected;
                            seq = expected;
                        }
                        _ => return Err(Error::Api(p)),
                    }
                }
                Err(Error::Api(p)) if p.status < 500 || p.status == 503 => {
                    // A refusal: nothing was stored, the sequence is free.
                    self.uncertain = None;
                    if self.next_seq == seq + 1 {
                        self.next_seq = seq;
                    }
                    return Err(Error::Api(p));
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::Protocol(
            "the broker refused the sequence it asked for".into(),
        ))
    }
}

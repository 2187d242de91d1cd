//! The clients of issue 15: `sluice sub` and the `sluice-client` crate
//! deliver every event exactly once across broker kills, moves between
//! instances and their own restarts; the README's examples run.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use sluice_client::{Backoff, Client, NewEvent};

mod cli;
mod commands;
mod readme;
mod stream;

/// Events of the exactly-once runs.
const N: u64 = 10_000;

/// A publisher of the events "0", "1", … in keyed batches, running on its
/// own until all are acknowledged.
struct Numbered {
    published: Arc<AtomicU64>,
    allowed: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Numbered {
    /// Publishes `n` events to `topic` in batches of `batch`, pausing
    /// `pace` between batches, never past what [`allow`](Numbered::allow)
    /// allowed (at first `allowed`): a test gates the publisher so that
    /// events are still flowing at each of its steps however slowly the
    /// machine runs. Each batch goes to the next of `urls` in
    /// turn and, while that fails (a broker killed or restarting), to the
    /// others: every event has an idempotency key, so a batch that was
    /// stored but not acknowledged is stored once however often it is sent.
    fn start(
        urls: &[String],
        topic: &str,
        n: u64,
        batch: u64,
        pace: Duration,
        allowed: u64,
    ) -> Numbered {
        let clients: Vec<Client> = urls
            .iter()
            .map(|u| {
                Client::builder(u.clone())
                    .max_attempts(1)
                    .request_timeout(Duration::from_secs(5))
                    .connect_timeout(Duration::from_secs(1))
                    .backoff(Backoff::new(
                        Duration::from_millis(50),
                        Duration::from_millis(500),
                        0.15,
                    ))
                    .build()
                    .unwrap()
            })
            .collect();
        let published = Arc::new(AtomicU64::new(0));
        let allowed = Arc::new(AtomicU64::new(allowed));
        let (p, gate) = (published.clone(), allowed.clone());
        let topic = topic.to_owned();
        let task = tokio::spawn(async move {
            for (round, first) in (0..n).step_by(batch as usize).enumerate() {
                while first + batch > gate.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                let events: Vec<NewEvent> = (first..(first + batch).min(n))
                    .map(|k| NewEvent::new(k.to_string()).with_key(format!("n-{k}")))
                    .collect();
                let mut tries = 0usize;
                loop {
                    let c = &clients[(round + tries) % clients.len()];
                    match c.publish_batch(&topic, &events).await {
                        Ok(results) => {
                            assert!(results.iter().all(|r| r.cursor.is_some()), "{results:?}");
                            break;
                        }
                        Err(e) => {
                            tries += 1;
                            assert!(
                                tries < 600,
                                "batch at {first} not stored after 600 tries: {e}"
                            );
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
                p.store(first + events.len() as u64, Ordering::SeqCst);
                tokio::time::sleep(pace).await;
            }
        });
        Numbered {
            published,
            allowed,
            task,
        }
    }

    /// Lets the publisher go on up to event `upto`.
    fn allow(&self, upto: u64) {
        self.allowed.fetch_max(upto, Ordering::SeqCst);
    }

    /// Events acknowledged so far.
    fn published(&self) -> u64 {
        self.published.load(Ordering::SeqCst)
    }

    /// Waits for the last acknowledgement (panics on a publisher panic).
    async fn finish(self) {
        self.task.await.expect("publisher");
    }
}

/// Asserts `got` is "0", "1", … "n-1", each once, in order; says what
/// is wrong otherwise (missing, repeated, out of order).
fn assert_exactly_once_in_order(got: &[String], n: u64, what: &str) {
    let expected: Vec<String> = (0..n).map(|i| i.to_string()).collect();
    if got == expected {
        return;
    }
    let mut seen = std::collections::HashMap::new();
    for g in got {
        *seen.entry(g.as_str()).or_insert(0) += 1;
    }
    let repeated: Vec<_> = seen
        .iter()
        .filter(|(_, c)| **c > 1)
        .map(|(k, _)| *k)
        .collect();
    let missing: Vec<_> = expected
        .iter()
        .filter(|e| !seen.contains_key(e.as_str()))
        .collect();
    let first_diff = got.iter().zip(&expected).position(|(a, b)| a != b);
    panic!(
        "{what}: {} lines for {n} events; {} repeated (e.g. {:?}), {} missing (e.g. {:?}), \
         first difference at line {first_diff:?}",
        got.len(),
        repeated.len(),
        &repeated[..repeated.len().min(5)],
        missing.len(),
        &missing[..missing.len().min(5)],
    );
}

//! `sluice sub`: a topic's events on stdout as they come, across broker
//! restarts, network loss and (with `--cursor-file`) its own restarts.
//!
//! The order of each round is what keeps "no gap, no duplicate" across a
//! restart: print the events at hand, flush stdout, then save the last
//! one's cursor. A saved cursor therefore always names an event already
//! written out. SIGINT and SIGTERM are taken between rounds, so a stop
//! by either leaves the file naming exactly the last event printed. Only
//! a SIGKILL landing between a flush and its save can make the restarted
//! process print that round (at most `ROUND`, 1000 events) again; nothing is
//! ever skipped.

use std::{path::PathBuf, process::ExitCode};

use futures_util::{FutureExt as _, StreamExt as _};
use sluice_client::{BoxError, FileCursorStore, Item, Start, SubscribeOptions};
use tokio::signal::unix::{signal, SignalKind};

use super::{
    client,
    output::{reader_gone, Out},
    Conn,
};

/// Arguments of `sluice sub`.
#[derive(clap::Args, Debug)]
pub struct SubArgs {
    /// The topic.
    topic: String,
    /// Where to start without a cursor: `earliest` (the oldest retained
    /// event) or `latest` (the next event published).
    #[arg(long, value_parser = ["earliest", "latest"], default_value = "latest")]
    from: String,
    /// Start after this cursor (wins over --from).
    #[arg(long)]
    cursor: Option<String>,
    /// Keep the position in this file: start after the cursor it holds
    /// (it wins over --cursor and --from), and save each printed event's
    /// cursor (written to a temporary file, then renamed over it).
    #[arg(long)]
    cursor_file: Option<PathBuf>,
    /// One JSON object a line: `{"cursor", "type", "data"}`; a gap is
    /// `{"gap": {"requested", "resumed_after", "lost"}}`.
    #[arg(long)]
    json: bool,
    /// Exit after printing this many events.
    #[arg(long)]
    count: Option<u64>,
    #[command(flatten)]
    conn: Conn,
}

/// At most this many items ready at once are printed before a flush and
/// a save: a burst costs one write and one rename, not one per event.
const ROUND: usize = 1000;

pub(super) async fn run(a: SubArgs) -> Result<ExitCode, BoxError> {
    let client = client(&a.conn)?;
    let start = match &a.cursor {
        Some(c) => Start::After(c.clone()),
        None => Start::parse(&a.from),
    };
    let mut options = SubscribeOptions::new().start(start).auto_commit(false);
    if let Some(f) = &a.cursor_file {
        options = options.cursor_store(FileCursorStore::new(f));
    }
    let mut sub = client.subscribe(&a.topic, options);
    let mut out = Out::new(a.json);
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut printed = 0u64;
    let limit = a.count.unwrap_or(u64::MAX);
    while printed < limit {
        let first = tokio::select! {
            biased;
            _ = int.recv() => break,
            _ = term.recv() => break,
            item = sub.next() => item,
        };
        let Some(first) = first else { break };
        let mut item = Some(first);
        let mut n = 0;
        let mut failed = None;
        // This item, and those already waiting (without blocking).
        while let Some(it) = item.take() {
            match show(&mut out, it, &client) {
                Ok(Shown::Event) => printed += 1,
                Ok(Shown::Other) => {}
                Ok(Shown::ReaderGone) => return Ok(ExitCode::SUCCESS),
                // What was printed before it is still flushed and saved.
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
            n += 1;
            if n < ROUND && printed < limit {
                item = sub.next().now_or_never().flatten();
            }
        }
        match out.flush() {
            Ok(()) => {}
            Err(e) if reader_gone(&e) => return Ok(ExitCode::SUCCESS),
            Err(e) => return Err(e.into()),
        }
        sub.commit().await?;
        if let Some(e) = failed {
            return Err(e);
        }
    }
    Ok(ExitCode::SUCCESS)
}

enum Shown {
    Event,
    Other,
    ReaderGone,
}

/// Writes an item: events and gaps to stdout, the rest to stderr.
fn show(
    out: &mut Out,
    item: sluice_client::Result<Item>,
    client: &sluice_client::Client,
) -> Result<Shown, BoxError> {
    let written = match item? {
        Item::Event(e) => out.event(&e).map(|_| Shown::Event),
        Item::Gap(g) => out.gap("sub", &g).map(|_| Shown::Other),
        Item::Connected { after } => {
            match after {
                Some(c) => eprintln!("sluice sub: connected to {}, after {c}", client.url()),
                None => eprintln!("sluice sub: connected to {}", client.url()),
            }
            Ok(Shown::Other)
        }
        Item::Disconnected { reason, delay, .. } => {
            eprintln!(
                "sluice sub: disconnected ({reason}); reconnecting in {:.1} s",
                delay.as_secs_f64()
            );
            Ok(Shown::Other)
        }
        other => {
            eprintln!("sluice sub: {other:?}");
            Ok(Shown::Other)
        }
    };
    match written {
        Ok(s) => Ok(s),
        Err(e) if reader_gone(&e) => Ok(Shown::ReaderGone),
        Err(e) => Err(Box::new(e) as Box<dyn std::error::Error + Send + Sync>),
    }
}

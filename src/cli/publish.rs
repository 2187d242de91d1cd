//! `sluice pub`: one event from the command line, or one event per line of
//! standard input, sent in batches (or one at a time, numbered, with
//! `--producer`). Each event's cursor is printed on stdout, in order.

use std::{
    io::{self, BufRead, Write},
    process::ExitCode,
};

use sluice_client::{BoxError, Client, NewEvent, Published};

use super::{client, Conn};

/// Arguments of `sluice pub`.
#[derive(clap::Args, Debug)]
pub struct PubArgs {
    /// The topic.
    topic: String,
    /// The event's data; `-` or nothing: each line of standard input is
    /// one event.
    data: Option<String>,
    /// Idempotency-Key: a repeat within the broker's dedup window is
    /// stored once. With standard input, line N gets KEY-N, so running the
    /// same input again with the same key stores nothing twice.
    #[arg(long)]
    key: Option<String>,
    /// Event-Type of every event.
    #[arg(long = "type")]
    event_type: Option<String>,
    /// Producer-Id: number the events with Producer-Seq, from --seq, one
    /// request per event; a sequence the broker already stored is a
    /// duplicate and not stored again.
    #[arg(long)]
    producer: Option<String>,
    /// The first Producer-Seq (with --producer). The next one to use is
    /// printed on stderr at the end.
    #[arg(long, default_value_t = 1, requires = "producer")]
    seq: u64,
    /// Lines per batch request (at most the broker's
    /// `limits.max_batch_events`, 1000 by default).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    batch_size: u64,
    #[command(flatten)]
    conn: Conn,
}

impl PubArgs {
    /// The event for `data`, the `n`th (from 1) of the run.
    fn event(&self, data: String, n: u64, from_stdin: bool) -> NewEvent {
        let mut e = NewEvent::new(data);
        e.event_type.clone_from(&self.event_type);
        e.idempotency_key = self.key.as_ref().map(|k| {
            if from_stdin {
                format!("{k}-{n}")
            } else {
                k.clone()
            }
        });
        e
    }
}

pub(super) async fn run(a: PubArgs) -> Result<ExitCode, BoxError> {
    let client = client(&a.conn)?;
    let mut producer = a
        .producer
        .as_ref()
        .map(|id| client.producer_with_id(&a.topic, id, a.seq));
    let mut stdout = io::stdout().lock();
    let mut ok = true;
    match a.data.as_deref() {
        Some(data) if data != "-" => {
            let e = a.event(data.to_owned(), 1, false);
            let p = match &mut producer {
                Some(p) => p.send(e).await?,
                None => client.publish(&a.topic, e).await?,
            };
            print(&mut stdout, 1, &p)?;
        }
        _ => {
            let mut lines = io::stdin().lock().lines();
            let mut n = 0u64;
            loop {
                let mut chunk = Vec::new();
                for line in lines.by_ref().take(a.batch_size as usize) {
                    let mut line = line?;
                    if line.ends_with('\r') {
                        line.pop();
                    }
                    n += 1;
                    chunk.push(a.event(line, n, true));
                }
                if chunk.is_empty() {
                    break;
                }
                let first = n + 1 - chunk.len() as u64;
                ok &= send(
                    &client,
                    &a.topic,
                    producer.as_mut(),
                    chunk,
                    first,
                    &mut stdout,
                )
                .await?;
            }
        }
    }
    if let Some(p) = &producer {
        eprintln!("sluice pub: next --seq {}", p.next_seq());
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Sends a chunk of lines (the first is line `first`); false when a line
/// was refused on its own.
async fn send(
    client: &Client,
    topic: &str,
    producer: Option<&mut sluice_client::Producer>,
    chunk: Vec<NewEvent>,
    first: u64,
    out: &mut impl Write,
) -> Result<bool, BoxError> {
    if let Some(p) = producer {
        for (i, e) in chunk.into_iter().enumerate() {
            let published = p.send(e).await?;
            print(out, first + i as u64, &published)?;
        }
        return Ok(true);
    }
    let mut ok = true;
    for (i, r) in client
        .publish_batch(topic, &chunk)
        .await?
        .into_iter()
        .enumerate()
    {
        let line = first + i as u64;
        match (&r.cursor, &r.error) {
            (Some(c), None) => {
                writeln!(out, "{c}")?;
                if r.duplicate {
                    eprintln!("sluice pub: line {line}: duplicate, already stored as {c}");
                }
            }
            (_, err) => {
                ok = false;
                writeln!(out)?;
                eprintln!(
                    "sluice pub: line {line}: not stored: {}",
                    err.as_deref().unwrap_or("no cursor")
                );
            }
        }
    }
    out.flush()?;
    Ok(ok)
}

/// Prints a single publish's cursor (an empty line for a duplicate whose
/// original is forgotten) and notes a duplicate on stderr.
fn print(out: &mut impl Write, line: u64, p: &Published) -> io::Result<()> {
    writeln!(out, "{}", p.cursor.as_deref().unwrap_or(""))?;
    if p.duplicate {
        eprintln!("sluice pub: event {line}: duplicate, already stored");
    }
    out.flush()
}

//! `sluice topics`, `sluice info` and `sluice history`: one-shot reads.

use std::{io::Write as _, process::ExitCode};

use sluice_client::{BoxError, Page, Start};

use super::{
    client,
    output::{reader_gone, Out},
    Conn,
};

/// Arguments of `sluice topics`.
#[derive(clap::Args, Debug)]
pub struct TopicsArgs {
    /// The broker's JSON (`{"topics": [...]}`) instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: Conn,
}

/// Arguments of `sluice info`.
#[derive(clap::Args, Debug)]
pub struct InfoArgs {
    /// The topic.
    topic: String,
    /// The broker's JSON instead of `key: value` lines.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: Conn,
}

/// Arguments of `sluice history`.
#[derive(clap::Args, Debug)]
pub struct HistoryArgs {
    /// The topic.
    topic: String,
    /// Where to start without --cursor.
    #[arg(long, value_parser = ["earliest", "latest"], default_value = "earliest")]
    from: String,
    /// Start after this cursor.
    #[arg(long)]
    cursor: Option<String>,
    /// Print at most this many events.
    #[arg(long)]
    limit: Option<u64>,
    /// Events per request (1 to 1000).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
    page_size: u32,
    /// One JSON object a line: `{"cursor", "type", "data", "time"}`.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: Conn,
}

pub(super) async fn topics(a: TopicsArgs) -> Result<ExitCode, BoxError> {
    let topics = client(&a.conn)?.topics().await?;
    let mut out = std::io::stdout().lock();
    if a.json {
        serde_json::to_writer(&mut out, &serde_json::json!({ "topics": topics }))?;
        writeln!(out)?;
        return Ok(ExitCode::SUCCESS);
    }
    let w = topics
        .iter()
        .map(|t| t.topic.len())
        .max()
        .unwrap_or(0)
        .max(5);
    writeln!(
        out,
        "{:<w$}  {:>10}  {:>11}",
        "TOPIC", "RETAINED", "SUBSCRIBERS"
    )?;
    for t in &topics {
        writeln!(
            out,
            "{:<w$}  {:>10}  {:>11}",
            t.topic, t.retained, t.subscribers
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn info(a: InfoArgs) -> Result<ExitCode, BoxError> {
    let Some(t) = client(&a.conn)?.topic(&a.topic).await? else {
        eprintln!("sluice info: no topic {:?}", a.topic);
        return Ok(ExitCode::FAILURE);
    };
    let mut out = std::io::stdout().lock();
    if a.json {
        serde_json::to_writer(&mut out, &t)?;
        writeln!(out)?;
        return Ok(ExitCode::SUCCESS);
    }
    let none = "-".to_owned();
    writeln!(out, "topic: {}", t.topic)?;
    writeln!(out, "retained: {}", t.retained)?;
    writeln!(out, "subscribers: {}", t.subscribers)?;
    writeln!(
        out,
        "oldest_cursor: {}",
        t.oldest_cursor.as_ref().unwrap_or(&none)
    )?;
    writeln!(
        out,
        "latest_cursor: {}",
        t.latest_cursor.as_ref().unwrap_or(&none)
    )?;
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn history(a: HistoryArgs) -> Result<ExitCode, BoxError> {
    let client = client(&a.conn)?;
    let start = match &a.cursor {
        Some(c) => Start::After(c.clone()),
        None => Start::parse(&a.from),
    };
    let mut pages = client.history_pages(&a.topic, start, a.page_size);
    let mut out = Out::new(a.json);
    let mut left = a.limit.unwrap_or(u64::MAX);
    while left > 0 {
        // Never more than asked for, so the next cursor is the last printed.
        pages.set_page_size(a.page_size.min(left.try_into().unwrap_or(u32::MAX)));
        let written = match pages.next_page().await? {
            None => break,
            Some(Page::Gap(g)) => out.gap("history", &g),
            Some(Page::Events(events)) => {
                left -= events.len() as u64;
                events.iter().try_for_each(|e| out.event(e))
            }
        };
        if let Err(e) = written.and_then(|_| out.flush()) {
            return if reader_gone(&e) {
                Ok(ExitCode::SUCCESS)
            } else {
                Err(e.into())
            };
        }
    }
    if let Start::After(c) = pages.position() {
        eprintln!("sluice history: next cursor: {c}");
    }
    Ok(ExitCode::SUCCESS)
}

//! How events and gaps are written: data lines, or JSON lines with
//! `--json`; stdout buffered, flushed by the caller at a point where
//! everything written may be taken as delivered.

use std::io::{self, Write};

use sluice_client::{Event, Gap};

/// Standard output for events.
pub(super) struct Out {
    out: io::BufWriter<io::Stdout>,
    json: bool,
}

impl Out {
    pub(super) fn new(json: bool) -> Out {
        Out {
            out: io::BufWriter::with_capacity(64 << 10, io::stdout()),
            json,
        }
    }

    /// Writes one event: its data (a line per line of data), or with
    /// `--json` one line `{"cursor", "type", "data"}` (and `time` when
    /// known).
    pub(super) fn event(&mut self, e: &Event) -> io::Result<()> {
        if self.json {
            serde_json::to_writer(&mut self.out, e)?;
            self.out.write_all(b"\n")
        } else {
            self.out.write_all(e.data.as_bytes())?;
            self.out.write_all(b"\n")
        }
    }

    /// Reports a gap: always on stderr, and with `--json` also on stdout as
    /// `{"gap": {...}}`, so a program reading the events sees it in place.
    pub(super) fn gap(&mut self, cmd: &str, g: &Gap) -> io::Result<()> {
        eprintln!("sluice {cmd}: gap: {g}");
        if self.json {
            serde_json::to_writer(&mut self.out, &serde_json::json!({ "gap": g }))?;
            self.out.write_all(b"\n")?;
        }
        Ok(())
    }

    pub(super) fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Whether a write failed because the reader went away (`| head`): the
/// end of the command, not an error.
pub(super) fn reader_gone(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::BrokenPipe
}

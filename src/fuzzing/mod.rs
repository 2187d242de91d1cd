//! Not part of Sluice's API (hidden, and compiled only for tests and with
//! the `fuzzing` feature): the scenarios and checks that the fuzz targets
//! of what a client sends (`fuzz/`) and the property tests run.
//!
//! Each entry point takes arbitrary bytes, reads them as choices or as the
//! raw input of a parser, and panics when an expectation fails. Every
//! check is an oracle, not only "no panic":
//!
//! - [`cursor`]: a cursor that parses re-formats to the text it was parsed
//!   from (one spelling only), and cursor byte order is `(time, seq)`
//!   order within one epoch;
//! - [`sse`]: every framed event reads back through the client's
//!   spec-following parser (`sluice_client::sse`) with the same id, type
//!   and data, whatever line breaks, NULs or invalid UTF-8 the data holds
//!   and wherever the stream is cut into reads;
//! - `crate::http::fuzzing` (batch bodies, request headers and query
//!   strings) and `crate::http::auth::fuzzing` (tokens) for what lives in
//!   private modules there.
//!
//! The disk readers have their own in `store::embedded::fuzzing`.

pub mod cursor;
pub mod sse;

#[cfg(test)]
mod proptests;

/// A fuzz input read front to back as choices. Past its end every choice
/// is 0, so every input is a scenario.
pub struct Choices<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Choices<'a> {
    /// Choices read from `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Choices { bytes, at: 0 }
    }

    /// The next byte.
    pub fn byte(&mut self) -> u8 {
        let b = self.bytes.get(self.at).copied().unwrap_or(0);
        self.at += 1;
        b
    }

    /// The next two bytes as a number.
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }

    /// The next eight bytes as a number.
    pub fn u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        for x in &mut b {
            *x = self.byte();
        }
        u64::from_le_bytes(b)
    }

    /// A coin.
    pub fn flag(&mut self) -> bool {
        self.byte() & 1 == 1
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            self.u16() as usize % n
        }
    }

    /// One of `items`.
    pub fn pick<'b, T>(&mut self, items: &'b [T]) -> &'b T {
        &items[self.below(items.len())]
    }

    /// Up to `max` bytes, length first.
    pub fn bytes(&mut self, max: usize) -> Vec<u8> {
        let n = self.below(max + 1);
        (0..n).map(|_| self.byte()).collect()
    }

    /// 1 to `max` characters of `alphabet`.
    pub fn word(&mut self, alphabet: &[u8], max: usize) -> String {
        let n = 1 + self.below(max);
        (0..n).map(|_| *self.pick(alphabet) as char).collect()
    }

    /// What is left of the input.
    pub fn rest(&self) -> &'a [u8] {
        self.bytes.get(self.at..).unwrap_or_default()
    }

    /// Whether input is left.
    pub fn more(&self) -> bool {
        self.at < self.bytes.len()
    }
}

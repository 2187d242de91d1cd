//! Cursors: the parser is strict (a text that parses is the one spelling
//! of its cursor) and the textual form orders as the log does.

use std::cmp::Ordering;

use sluice_actors::cursor::{Cursor, Epoch};

use super::Choices;

/// Earliest and latest times a cursor can spell (years 0000 to 9999).
const MIN_MS: i64 = -62_167_219_200_000;
const MAX_MS: i64 = 253_402_300_799_999;
const EPOCH_CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// Reads `data` as a fuzz input: either text for the parser, or cursors
/// built from choices (formatted, parsed, compared, then mutated and
/// parsed again).
pub fn run(data: &[u8]) {
    match data.split_first() {
        Some((k, rest)) if k % 2 == 0 => text(&String::from_utf8_lossy(rest)),
        Some((_, rest)) => built(&mut Choices::new(rest)),
        None => text(""),
    }
}

/// Any text: when it parses, the cursor formats back to exactly that text
/// and has the properties API.md promises (ASCII, at most 64 bytes, no
/// blank, no comma).
pub fn text(s: &str) {
    let Ok(c) = Cursor::parse(s) else { return };
    assert_eq!(c.to_string(), s, "a parsed cursor has another spelling");
    assert!(s.len() <= 64, "{s:?}: longer than 64 bytes");
    assert!(
        s.bytes().all(|b| b.is_ascii_graphic() && b != b','),
        "{s:?}: not visible ASCII without commas"
    );
    assert!(
        (MIN_MS..=MAX_MS).contains(&c.time_ms),
        "{s:?}: time out of range"
    );
}

/// A cursor of a time a cursor can spell, with an epoch of 1 to 16
/// characters.
fn cursor(c: &mut Choices, epoch: &Epoch) -> Cursor {
    let span = (MAX_MS - MIN_MS + 1) as u64;
    // Mostly near one another, so that order is tested on close pairs.
    let time_ms = if c.flag() {
        1_700_000_000_000 + c.below(5000) as i64
    } else {
        MIN_MS + (c.u64() % span) as i64
    };
    let seq = if c.flag() {
        c.below(40) as u64
    } else {
        c.u64()
    };
    Cursor::new(time_ms, seq, epoch.clone())
}

fn built(c: &mut Choices) {
    let epoch = Epoch::parse(&c.word(EPOCH_CHARS, 16)).expect("a valid epoch");
    let a = cursor(c, &epoch);
    let b = cursor(c, &epoch);
    pair(&a, &b);
    // A mutation of a valid cursor: what still parses is canonical.
    let mut text_a = a.to_string().into_bytes();
    for _ in 0..=c.below(3) {
        let at = c.below(text_a.len() + 1);
        match c.below(3) {
            0 if at < text_a.len() => text_a[at] = c.byte(),
            1 => text_a.insert(at, c.byte()),
            _ if at < text_a.len() => {
                text_a.remove(at);
            }
            _ => {}
        }
    }
    text(&String::from_utf8_lossy(&text_a));
}

/// Two cursors of one epoch: each round-trips, and their texts compare in
/// byte order as `(time, seq)` does.
pub fn pair(a: &Cursor, b: &Cursor) {
    for c in [a, b] {
        let s = c.to_string();
        assert_eq!(Cursor::parse(&s).as_ref(), Ok(c), "{s} does not round-trip");
        text(&s);
    }
    let by_text = a.to_string().cmp(&b.to_string());
    let by_position = (a.time_ms, a.seq).cmp(&(b.time_ms, b.seq));
    assert_eq!(
        by_text, by_position,
        "{a} vs {b}: byte order is not log order"
    );
    if by_text == Ordering::Equal {
        assert_eq!(a, b);
    }
}

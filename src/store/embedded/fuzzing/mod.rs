//! Not part of Sluice's API (hidden, and compiled only for tests and with
//! the `fuzzing` feature): the scenarios and checks that the fuzz targets
//! (`fuzz/`) and the property tests run against what reads the disk.
//!
//! Each entry point takes arbitrary bytes, reads them as choices (events to
//! store, damage to do), builds files under a directory the caller owns,
//! runs the reader on them, and panics when an expectation fails:
//!
//! - [`record_bytes`]: the record decoder and `resync` on raw bytes;
//! - [`segment`]: one segment, damaged, opened, repaired and reopened;
//! - [`topic_dir`]: a topic's directory (several segments, `meta.json`),
//!   damaged (also across files), opened and read as the store reads it,
//!   reopened, appended to, damaged again;
//! - [`journal`]: journal bytes (raw or well-formed records naming any
//!   path and epoch) verified and replayed into a data directory.
//!
//! There is no target for an offset index: index files are no longer read
//! (a segment's index is rebuilt by verifying every record).
//!
//! The expectations, for every damage done:
//! - no wrong event: an event read back is byte for byte the one stored at
//!   its sequence, and sequences strictly increase;
//! - every loss reported: a stored event not read back is in the lost
//!   ranges, or after the kept end with a fork recorded; or nothing on disk
//!   holds it any more and it sat at an end of the log (a truncation at a
//!   record boundary or a deleted end segment is what a crash before the
//!   write or retention leaves too: nothing can tell them apart);
//! - reopening after the repair finds nothing new to repair.

mod journal_case;
mod segment_case;
mod topic_case;

#[cfg(test)]
mod proptests;

pub use journal_case::journal;
pub use segment_case::{record_bytes, segment};
pub use topic_case::topic_dir;

use bytes::Bytes;
use sluice_actors::event::{NewEvent, StoredEvent};

use super::record;

pub use crate::fuzzing::Choices;

/// splitmix64: garbage and payloads come from a generator seeded by a
/// choice, not from the input itself, so the fuzzer cannot forge a frame
/// with a valid CRC (a damage that random corruption makes about once in
/// 2^32 tries, and that no reader can tell from a record).
fn random_bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            (z ^ (z >> 31)) as u8
        })
        .collect()
}

/// An event as the store wrote it: what a reader must give back.
#[derive(Clone, Debug)]
struct Written {
    event: StoredEvent,
    /// The record's bytes on disk.
    bytes: Vec<u8>,
    /// Forks the log had when it was written (its epoch's index).
    epoch_index: usize,
}

impl Written {
    fn new(ev: &NewEvent, seq: u64, time_ms: i64, epoch_index: usize) -> Self {
        let mut bytes = Vec::new();
        record::encode(&mut bytes, ev, seq, time_ms);
        Written {
            event: StoredEvent {
                seq,
                time_ms,
                event_type: ev.event_type.clone(),
                data: ev.data.clone(),
            },
            bytes,
            epoch_index,
        }
    }
}

/// An event to store. Payloads are printable ASCII: a payload could carry
/// a well-formed record frame (valid UTF-8 can), which nothing after damage
/// can tell from a real record; printable bytes cannot make a frame's
/// length field (it would need bytes below 0x20).
fn new_event(c: &mut Choices, i: u64) -> NewEvent {
    let flags = c.byte();
    let mut len = c.byte() as usize % 80;
    if flags & 0x40 != 0 {
        len += 400 * (c.byte() as usize % 8);
    }
    let seed = u64::from(c.byte()) << 32 | i;
    let data: Vec<u8> = random_bytes(seed, len)
        .into_iter()
        .map(|b| 0x20 + b % 0x5f)
        .collect();
    NewEvent {
        data: Bytes::from(data),
        event_type: (flags & 1 != 0).then(|| format!("type-{}", c.byte() % 4)),
        idempotency_key: (flags & 2 != 0).then(|| format!("key-{i}-{}", c.byte())),
        producer: (flags & 4 != 0).then(|| (format!("p{}", c.byte() % 3), i)),
    }
}

/// `n` events from `first_seq` on, at non-decreasing times.
fn written_events(c: &mut Choices, first_seq: u64, n: usize) -> Vec<Written> {
    let mut time_ms = 1_700_000_000_000;
    (0..n as u64)
        .map(|i| {
            time_ms += i64::from(c.byte() % 4);
            Written::new(&new_event(c, i), first_seq + i, time_ms, 0)
        })
        .collect()
}

/// A position in `file`: near a record start of `starts` (where damage is
/// most telling) or anywhere.
fn position(c: &mut Choices, len: usize, starts: &[usize]) -> usize {
    let at = if c.flag() && !starts.is_empty() {
        let s = starts[c.below(starts.len())];
        (s + c.byte() as usize % 32).saturating_sub(8)
    } else {
        c.u16() as usize * (len + 1) / 65536
    };
    at.min(len)
}

/// Damages `file` (record starts `starts`) with one chosen operation;
/// `other` is another file's bytes, for a splice across files. What a disk
/// or a file system does: flipped bits, a block of zeros or garbage, a
/// truncation, a block written twice or in the wrong place, a block gone,
/// a torn append.
fn damage(c: &mut Choices, file: &mut Vec<u8>, starts: &[usize], other: &[u8]) {
    let len = file.len();
    match c.byte() % 9 {
        0 => {
            if len > 0 {
                let at = position(c, len - 1, starts);
                file[at] ^= c.byte().max(1);
            }
        }
        op @ (1 | 2) => {
            let at = position(c, len, starts);
            let n = (1 + c.below(600)).min(len - at);
            let fill = if op == 1 {
                vec![0; n]
            } else {
                random_bytes(u64::from(c.u16()), n)
            };
            file[at..at + n].copy_from_slice(&fill);
        }
        3 => file.truncate(position(c, len, starts)),
        op @ (4 | 5) => {
            let from = position(c, len, starts);
            let n = (1 + c.below(800)).min(len - from);
            let block: Vec<u8> = if op == 4 {
                file[from..from + n].to_vec()
            } else {
                file.drain(from..from + n).collect()
            };
            let to = position(c, file.len(), starts);
            file.splice(to..to, block);
        }
        6 => {
            let from = position(c, len, starts);
            let n = (1 + c.below(800)).min(len - from);
            file.drain(from..from + n);
        }
        7 => {
            // A torn append: the start of a record that never finished.
            // Its payload is random, so no other damage can copy the
            // missing end from elsewhere and make it a whole record: a
            // whole record the store never wrote is a forgery (see
            // `random_bytes`).
            let ev = NewEvent::data(random_bytes(u64::from(c.u16()), 100));
            let mut torn = Vec::new();
            record::encode(&mut torn, &ev, u64::from(c.u16()), 0);
            torn.truncate(c.below(torn.len()));
            file.extend_from_slice(&torn);
        }
        _ => {
            let from = c.below(other.len() + 1);
            let n = (1 + c.below(800)).min(other.len() - from);
            let to = position(c, len, starts);
            file.splice(to..to, other[from..from + n].iter().copied());
        }
    }
}

/// Whether `needle` occurs in any of `files`.
fn present(files: &[Vec<u8>], needle: &[u8]) -> bool {
    files
        .iter()
        .any(|f| f.windows(needle.len()).any(|w| w == needle))
}

/// Whether `seq` lies in one of `ranges` (first, last).
fn in_ranges(seq: u64, ranges: impl IntoIterator<Item = (u64, u64)>) -> bool {
    ranges.into_iter().any(|(a, b)| (a..=b).contains(&seq))
}

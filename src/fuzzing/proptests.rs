//! The cursor and framing scenarios in the normal test suite, on random
//! inputs (a few hundred small cases, well under a second).

use bytes::Bytes;
use proptest::prelude::*;
use sluice_actors::{
    cursor::{Cursor, Epoch},
    event::StoredEvent,
};

/// Earliest and latest times a cursor can spell (years 0000 to 9999).
const MIN_MS: i64 = -62_167_219_200_000;
const MAX_MS: i64 = 253_402_300_799_999;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        // Failures are reported with their input; nothing is written into
        // the source tree.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn epoch() -> impl Strategy<Value = Epoch> {
    "[a-z0-9]{1,16}".prop_map(|s| Epoch::parse(&s).expect("epoch"))
}

/// Times anywhere a cursor can spell, or close together (a few ms apart).
fn time() -> impl Strategy<Value = i64> {
    prop_oneof![MIN_MS..=MAX_MS, 1_700_000_000_000i64..1_700_000_000_010]
}

fn seq() -> impl Strategy<Value = u64> {
    prop_oneof![any::<u64>(), 0u64..8]
}

/// Event data made of line ends, NUL, look-alikes of fields and pieces of
/// UTF-8, valid or not.
fn data() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        prop::sample::select(vec![
            &b"\r"[..],
            b"\n",
            b"\r\n",
            b"\0",
            b" ",
            b":",
            b"data: x",
            b"\xEF\xBB\xBF",
            "é☃😀".as_bytes(),
            b"\xF0\x9F",
            b"\xFF",
            b"abc",
        ])
        .prop_map(<[u8]>::to_vec),
        prop::collection::vec(any::<u8>(), 0..4),
    ];
    prop::collection::vec(piece, 0..10).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(config(256))]

    /// A cursor round-trips through its text, and two cursors of one
    /// epoch compare as text as `(time, seq)` does.
    #[test]
    fn cursors_round_trip_and_order_as_the_log(
        e in epoch(), t1 in time(), s1 in seq(), t2 in time(), s2 in seq(),
    ) {
        super::cursor::pair(&Cursor::new(t1, s1, e.clone()), &Cursor::new(t2, s2, e));
    }

    /// Whatever text parses is the one spelling of its cursor (`2A`,
    /// a blank, a lost digit: refused).
    #[test]
    fn a_parsed_cursor_is_spelled_as_it_was_sent(
        e in epoch(), t in time(), s in seq(), at in any::<prop::sample::Index>(), b in any::<u8>(), how in 0..3u8,
    ) {
        let mut text = Cursor::new(t, s, e).to_string().into_bytes();
        let i = at.index(text.len());
        match how {
            0 => text[i] = b,
            1 => text.insert(i, b),
            _ => { text.remove(i); }
        }
        super::cursor::text(&String::from_utf8_lossy(&text));
    }
}

proptest! {
    #![proptest_config(config(128))]

    /// Framed events read back through `sluice_client::sse` with their
    /// id, type and data (line ends read as LF, invalid UTF-8 as U+FFFD),
    /// the stream cut anywhere.
    #[test]
    fn framing_round_trips_through_the_client_parser(
        e in epoch(),
        events in prop::collection::vec(
            (time(), data(), prop::option::of("[A-Za-z0-9._-]{1,64}")), 0..6),
        first_seq in any::<u64>(),
        layout in any::<u8>(),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        let events: Vec<StoredEvent> = events
            .into_iter()
            .enumerate()
            .map(|(i, (time_ms, data, event_type))| StoredEvent {
                seq: first_seq.wrapping_add(i as u64),
                time_ms,
                event_type,
                data: Bytes::from(data),
            })
            .collect();
        super::sse::stream(&events, &e, layout, &cuts);
    }

    /// The fuzz targets' own input readers, on random bytes.
    #[test]
    fn the_cursor_and_framing_fuzz_scenarios_hold(input in prop::collection::vec(any::<u8>(), 0..300)) {
        super::cursor::run(&input);
        super::sse::run(&input);
    }
}

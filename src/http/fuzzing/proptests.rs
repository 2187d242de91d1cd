//! The batch, header and token scenarios in the normal test suite, on
//! random inputs (a few hundred small cases, about a second).

use proptest::prelude::*;
use serde_json::Value;

use super::batch::{round_trip, Line, BAD_LINES};

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Any JSON value a publisher may put in `data`.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
        "(\\PC|[\r\n\t\"\\\\\u{0}])*".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z\"\\\\ ]{0,4}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn line() -> impl Strategy<Value = Line> {
    (
        json(),
        prop::option::of("[A-Za-z0-9._-]{1,64}"),
        prop::option::of("[ -~]{1,40}"),
    )
        .prop_map(|(data, event_type, idempotency_key)| Line {
            data,
            event_type,
            idempotency_key,
        })
}

proptest! {
    #![proptest_config(config(128))]

    /// Any list of valid lines, however spaced, ordered and ended, gives
    /// back its events in order.
    #[test]
    fn valid_batch_lines_give_back_their_events(
        lines in prop::collection::vec(line(), 1..8), style in any::<u64>(),
    ) {
        round_trip(&lines, style, None);
    }

    /// A bad line among valid ones is reported with its line number.
    #[test]
    fn a_bad_batch_line_is_named_by_its_number(
        lines in prop::collection::vec(line(), 0..6),
        style in any::<u64>(),
        at in any::<prop::sample::Index>(),
        which in 0..BAD_LINES.len(),
    ) {
        let at = at.index(lines.len() + 1);
        round_trip(&lines, style, Some((at, which)));
    }

    /// The raw-body, header and token scenarios of the fuzz targets.
    #[test]
    fn the_http_fuzz_scenarios_hold(input in prop::collection::vec(any::<u8>(), 0..300)) {
        super::batch::run(&input);
        super::headers::run(&input);
        crate::http::auth::fuzzing::run(&input);
    }
}

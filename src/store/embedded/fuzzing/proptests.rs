//! The fuzz targets' scenarios and checks in the normal test suite, on
//! random inputs (a few hundred cases in all, well under a few seconds).

use proptest::prelude::*;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        // Failures are reported with their input; nothing is written into
        // the source tree.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn the_record_reader_survives_any_bytes(input in prop::collection::vec(any::<u8>(), 0..200)) {
        super::record_bytes(&input);
    }
}

proptest! {
    #![proptest_config(config(96))]

    #[test]
    fn a_damaged_segment_gives_back_its_events_or_reports_them(
        input in prop::collection::vec(any::<u8>(), 0..400),
    ) {
        let dir = tempfile::tempdir().unwrap();
        super::segment(&input, dir.path());
    }

    #[test]
    fn a_damaged_topic_directory_gives_back_its_events_or_reports_them(
        input in prop::collection::vec(any::<u8>(), 0..600),
    ) {
        let dir = tempfile::tempdir().unwrap();
        super::topic_dir(&input, dir.path());
    }

    #[test]
    fn journal_replay_writes_only_into_the_topic_and_epoch_it_names(
        input in prop::collection::vec(any::<u8>(), 0..400),
    ) {
        let dir = tempfile::tempdir().unwrap();
        super::journal(&input, dir.path());
    }
}

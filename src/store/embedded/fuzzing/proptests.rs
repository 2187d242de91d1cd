//! The fuzz targets' scenarios and checks in the normal test suite, on
//! random inputs (a few hundred cases in all, about a second).

use proptest::prelude::*;

/// A directory for one case, in memory when /dev/shm is there: the store
/// fsyncs, and on a busy disk that, not the reading, would take the time.
fn scratch() -> tempfile::TempDir {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        tempfile::tempdir_in(shm).unwrap()
    } else {
        tempfile::tempdir().unwrap()
    }
}

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
    #![proptest_config(config(64))]

    #[test]
    fn a_damaged_segment_gives_back_its_events_or_reports_them(
        input in prop::collection::vec(any::<u8>(), 0..400),
    ) {
        let dir = scratch();
        super::segment(&input, dir.path());
    }
}

proptest! {
    // Each case opens the log up to six times.
    #![proptest_config(config(40))]

    #[test]
    fn a_damaged_topic_directory_gives_back_its_events_or_reports_them(
        input in prop::collection::vec(any::<u8>(), 0..600),
    ) {
        let dir = scratch();
        super::topic_dir(&input, dir.path());
    }
}

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn journal_replay_writes_only_into_the_topic_and_epoch_it_names(
        input in prop::collection::vec(any::<u8>(), 0..400),
    ) {
        let dir = scratch();
        super::journal(&input, dir.path());
    }
}

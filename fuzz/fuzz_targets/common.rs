// Shared by the targets (included, not a crate of its own).

/// A fresh directory for one run, in memory when /dev/shm is there: the
/// store fsyncs, which a disk would make the slowest part of a run.
pub fn scratch() -> tempfile::TempDir {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        tempfile::tempdir_in(shm).expect("temp dir")
    } else {
        tempfile::tempdir().expect("temp dir")
    }
}

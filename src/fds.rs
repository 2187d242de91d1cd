//! The process's file descriptors: its open-file limit and how many it has
//! open, read from `/proc` (Linux). Elsewhere neither is known and the
//! limits that depend on them are off.

use std::fs;

/// The soft open-file limit (`ulimit -n`), if known.
pub fn soft_limit() -> Option<usize> {
    let limits = fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    // "Max open files            1024                 524288               files"
    let soft = line["Max open files".len()..].split_whitespace().next()?;
    soft.parse().ok()
}

/// File descriptors open now, if known. Costs a directory read of
/// `/proc/self/fd` (about a microsecond per open descriptor).
pub fn open_now() -> Option<usize> {
    Some(fs::read_dir("/proc/self/fd").ok()?.count())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_limit_and_the_count_are_read() {
        let (Some(limit), Some(open)) = (super::soft_limit(), super::open_now()) else {
            return; // not Linux
        };
        assert!(open >= 3 && open <= limit, "{open} open of {limit}");
    }
}

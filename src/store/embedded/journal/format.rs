//! The journal's record format, and the replay at start that writes every
//! record of the current generation back into its segment.

use std::path::Component;

use super::*;

/// Bytes `entry` takes in the journal.
pub(super) fn encoded_len(e: &Entry) -> usize {
    HEADER_LEN + 8 + 2 + e.topic.len() + 2 + e.epoch.as_str().len() + 8 + 8 + e.bytes.len()
}

pub(super) fn encode(buf: &mut Vec<u8>, e: &Entry, generation: u64) {
    let start = record::open_frame(buf);
    buf.extend_from_slice(&generation.to_le_bytes());
    buf.extend_from_slice(&(e.topic.len() as u16).to_le_bytes());
    buf.extend_from_slice(e.topic.as_bytes());
    let epoch = e.epoch.as_str();
    buf.extend_from_slice(&(epoch.len() as u16).to_le_bytes());
    buf.extend_from_slice(epoch.as_bytes());
    buf.extend_from_slice(&e.base.to_le_bytes());
    buf.extend_from_slice(&e.offset.to_le_bytes());
    buf.extend_from_slice(&e.bytes);
    record::seal_frame(buf, start);
}

/// One decoded record.
pub(super) struct Record<'a> {
    pub(super) generation: u64,
    pub(super) topic: &'a str,
    pub(super) epoch: &'a str,
    pub(super) base: u64,
    pub(super) offset: u64,
    pub(super) bytes: &'a [u8],
}

/// The record at the start of `buf` and its length, or `None` for a torn
/// or corrupt one (or the zeros after the last one).
pub(super) fn decode(buf: &[u8]) -> Option<(Record<'_>, usize)> {
    let body = record::frame_body(buf).ok()?;
    let mut r = record::Reader::new(body);
    let generation = u64::from_le_bytes(r.array()?);
    let topic_len = u16::from_le_bytes(r.array()?) as usize;
    let topic = std::str::from_utf8(r.take(topic_len)?).ok()?;
    let epoch_len = u16::from_le_bytes(r.array()?) as usize;
    let epoch = std::str::from_utf8(r.take(epoch_len)?).ok()?;
    let base = u64::from_le_bytes(r.array()?);
    let offset = u64::from_le_bytes(r.array()?);
    Some((
        Record {
            generation,
            topic,
            epoch,
            base,
            offset,
            bytes: r.rest(),
        },
        HEADER_LEN + body.len(),
    ))
}

/// Writes every record of the journal's current generation at `path` back
/// into its segment under `root` and fdatasyncs those segments. The journal
/// itself is left as it is (the caller starts a new generation).
pub fn replay(path: &Path, root: &Path) -> io::Result<ReplayReport> {
    let data = match fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(ReplayReport::default()),
        Err(e) => return Err(e),
    };
    let mut report = ReplayReport::default();
    let header = data.get(..FILE_HEADER_LEN as usize);
    let Some(generation) = header
        .filter(|h| &h[..4] == MAGIC)
        .map(|h| u64::from_le_bytes(h[4..].try_into().expect("8 bytes")))
    else {
        if data.iter().any(|&b| b != 0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} is not a Sluice journal", path.display()),
            ));
        }
        return Ok(report);
    };
    report.generation = generation;
    let mut epochs: HashMap<String, Option<String>> = HashMap::new();
    let mut files: HashMap<PathBuf, Option<File>> = HashMap::new();
    let mut at = FILE_HEADER_LEN as usize;
    while let Some((r, n)) = decode(&data[at..]).filter(|(r, _)| r.generation == generation) {
        at += n;
        report.records += 1;
        if !plain_name(r.topic) {
            report.skipped += 1;
            continue;
        }
        let dir = root.join(r.topic);
        let epoch = epochs
            .entry(r.topic.to_owned())
            .or_insert_with(|| super::super::layout::read_epoch(&dir));
        if epoch.as_deref() != Some(r.epoch) {
            report.skipped += 1;
            continue;
        }
        let seg_path = dir.join(segment::file_name(r.base));
        let file = match files.entry(seg_path) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                let f = match OpenOptions::new().write(true).open(v.key()) {
                    Ok(f) => Some(f),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                    Err(e) => return Err(e),
                };
                v.insert(f)
            }
        };
        let Some(file) = file else {
            report.skipped += 1;
            continue;
        };
        // Past the end means an earlier write of this segment is missing
        // (it was never acknowledged): a hole would only be cut again.
        if r.offset > file.metadata()?.len() {
            report.skipped += 1;
            continue;
        }
        file.write_all_at(r.bytes, r.offset)?;
        report.applied += 1;
    }
    for file in files.values().flatten() {
        file.sync_data()?;
    }
    Ok(report)
}

/// Whether a record's topic names a directory right under the topics
/// root: the name is read from disk, and one with a separator, `..` or a
/// root (`../../elsewhere/t`, `/elsewhere/t`) would reach outside it.
fn plain_name(topic: &str) -> bool {
    let mut parts = Path::new(topic).components();
    matches!(parts.next(), Some(Component::Normal(n)) if n == topic) && parts.next().is_none()
}

/// What [`verify`] found in a journal file.
#[derive(Debug, Default)]
pub struct JournalCheck {
    /// The generation in its header (0 for no journal).
    pub generation: u64,
    /// Records of that generation, read in order.
    pub records: usize,
    /// Where the records of the current generation end on something that
    /// is neither zeros nor an intact record of an earlier generation: a
    /// round torn by a crash, or damage. Replay stops there; records of the
    /// current generation after it are not replayed (an event's data can
    /// hold a well-formed journal frame, so looking past damage could write
    /// a payload into any topic), and a segment that misses them is cut and
    /// moves to a new epoch.
    pub damaged_at: Option<u64>,
}

/// Reads the journal at `path` without changing anything.
pub fn verify(path: &Path) -> io::Result<JournalCheck> {
    let data = match fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(JournalCheck::default()),
        Err(e) => return Err(e),
    };
    let Some(generation) = data
        .get(..FILE_HEADER_LEN as usize)
        .filter(|h| &h[..4] == MAGIC)
        .map(|h| u64::from_le_bytes(h[4..].try_into().expect("8 bytes")))
    else {
        return Ok(JournalCheck {
            damaged_at: data.iter().any(|&b| b != 0).then_some(0),
            ..Default::default()
        });
    };
    let mut check = JournalCheck {
        generation,
        ..Default::default()
    };
    let mut at = FILE_HEADER_LEN as usize;
    loop {
        match decode(&data[at..]) {
            Some((r, n)) if r.generation == generation => {
                check.records += 1;
                at += n;
            }
            Some((r, _)) if r.generation < generation => break,
            None if data[at..].iter().take(HEADER_LEN).all(|&b| b == 0) => break,
            _ => {
                check.damaged_at = Some(at as u64);
                break;
            }
        }
    }
    Ok(check)
}

/// Where each segment's first record of the current generation starts:
/// what a power cut may leave of a segment that the journal covers.
#[cfg(test)]
pub fn first_offsets(path: &Path) -> HashMap<(String, u64), u64> {
    let data = fs::read(path).unwrap();
    let generation = u64::from_le_bytes(data[4..12].try_into().unwrap());
    let mut out = HashMap::new();
    let mut at = FILE_HEADER_LEN as usize;
    while let Some((r, n)) = decode(&data[at..]).filter(|(r, _)| r.generation == generation) {
        at += n;
        out.entry((r.topic.to_owned(), r.base)).or_insert(r.offset);
    }
    out
}

/// The generation in the journal's header.
#[cfg(test)]
pub fn generation(path: &Path) -> u64 {
    u64::from_le_bytes(fs::read(path).unwrap()[4..12].try_into().unwrap())
}

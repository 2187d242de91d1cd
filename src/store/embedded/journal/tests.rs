//! The journal's tests: rounds, checkpoints, replay after a power cut.

use super::{format::decode, *};

fn entry(topic: &str, offset: u64, bytes: &[u8], file: &Arc<File>) -> Entry {
    Entry {
        topic: topic.into(),
        epoch: Epoch::parse("e1").unwrap(),
        base: 1,
        offset,
        bytes: bytes.to_vec(),
        file: file.clone(),
    }
}

#[test]
fn records_round_trip_and_a_torn_one_ends_the_journal() {
    let file = Arc::new(tempfile::tempfile().unwrap());
    let mut buf = Vec::new();
    encode(&mut buf, &entry("t", 7, b"abc", &file), 3);
    encode(&mut buf, &entry("u", 10, b"defg", &file), 3);
    let (r, n) = decode(&buf).unwrap();
    assert_eq!(
        (r.generation, r.topic, r.epoch, r.base, r.offset, r.bytes),
        (3, "t", "e1", 1, 7, &b"abc"[..])
    );
    let (r, m) = decode(&buf[n..]).unwrap();
    assert_eq!((r.topic, r.offset, r.bytes), ("u", 10, &b"defg"[..]));
    assert_eq!(n + m, buf.len());
    assert_eq!(n, encoded_len(&entry("t", 7, b"abc", &file)));
    assert!(decode(&buf[n..buf.len() - 1]).is_none(), "torn");
    let mut bad = buf.clone();
    *bad.last_mut().unwrap() ^= 1;
    assert!(decode(&bad[n..]).is_none(), "corrupt");
    assert!(decode(&[0u8; 64]).is_none(), "zeros");
}

#[test]
fn replay_stops_at_the_first_record_of_an_older_generation() {
    let dir = tempfile::tempdir().unwrap();
    let topic = dir.path().join("topics/t");
    fs::create_dir_all(&topic).unwrap();
    fs::write(topic.join("meta.json"), br#"{"epoch":"e1","created_ms":0}"#).unwrap();
    let seg = topic.join(segment::file_name(1));
    fs::write(&seg, b"").unwrap();
    let file = Arc::new(File::open(&seg).unwrap());
    let mut j = Vec::new();
    j.extend_from_slice(MAGIC);
    j.extend_from_slice(&2u64.to_le_bytes());
    encode(&mut j, &entry("t", 0, b"abc", &file), 2);
    encode(&mut j, &entry("t", 3, b"old", &file), 1);
    encode(&mut j, &entry("t", 6, b"new", &file), 2);
    j.resize(4096, 0);
    let path = dir.path().join(FILE_NAME);
    fs::write(&path, &j).unwrap();
    let report = replay(&path, &dir.path().join("topics")).unwrap();
    assert_eq!(
        (report.generation, report.records, report.applied),
        (2, 1, 1)
    );
    assert_eq!(fs::read(&seg).unwrap(), b"abc");
}

/// Found by the fuzz target `journal`: a record's topic was joined to the
/// topics directory as read, so `../..` or an absolute path wrote into a
/// log outside the data directory whose epoch the record named.
#[test]
fn replay_writes_into_no_directory_outside_the_topics() {
    let dir = tempfile::tempdir().unwrap();
    let mut segments = Vec::new();
    for topic in ["data/topics/t", "outside/t", "data/x"] {
        let path = dir.path().join(topic);
        fs::create_dir_all(&path).unwrap();
        fs::write(path.join("meta.json"), br#"{"epoch":"e1","created_ms":0}"#).unwrap();
        let seg = path.join(segment::file_name(1));
        fs::write(&seg, b"").unwrap();
        segments.push(seg);
    }
    let file = Arc::new(File::open(&segments[0]).unwrap());
    let absolute = dir.path().join("outside/t").display().to_string();
    let mut j = Vec::new();
    j.extend_from_slice(MAGIC);
    j.extend_from_slice(&1u64.to_le_bytes());
    for topic in ["../../outside/t", &absolute, "../x", "./t", "t/", "t"] {
        encode(&mut j, &entry(topic, 0, b"abc", &file), 1);
    }
    let path = dir.path().join("data").join(FILE_NAME);
    fs::write(&path, &j).unwrap();
    let report = replay(&path, &dir.path().join("data/topics")).unwrap();
    assert_eq!((report.records, report.applied), (6, 1));
    assert_eq!(fs::read(&segments[0]).unwrap(), b"abc");
    assert_eq!(
        fs::read(&segments[1]).unwrap(),
        b"",
        "outside the data directory"
    );
    assert_eq!(fs::read(&segments[2]).unwrap(), b"", "not under topics/");
}

//! The log of one topic: its segments, logical start (retention), dedup
//! state and epoch. Every method is blocking and runs under the topic's lock.

use std::{
    collections::HashMap,
    fs, io,
    path::{Path, PathBuf},
    sync::Arc,
};

use serde::{Deserialize, Serialize};
use sluice_actors::{
    cursor::{now_ms, Epoch},
    dedup::{DedupIndex, Verdict},
    event::{AppendOutcome, NewEvent, StoredEvent},
    store::{Fork, LostRange, TopicBounds},
};

use super::{
    durability::{SegmentWrite, Unsynced, Writes},
    journal::{self, Journal},
    layout::{self, read_meta, write_durably, Meta},
    record::{self, Next},
    recovery::{self, OpenReport},
    segment::{self, ReadPlan, Segment},
    EmbeddedConfig, Fsync,
};

const PRODUCERS: &str = "producers.json";

/// `producers.json`: producer high-water marks through `through_seq`,
/// written when a segment is sealed so that marks outlive retention.
#[derive(Serialize, Deserialize, Default)]
struct ProducerSnapshot {
    through_seq: u64,
    marks: HashMap<String, u64>,
}

/// One topic's log.
pub struct TopicLog {
    dir: PathBuf,
    /// The topic (the directory's name), for journal records.
    name: Arc<str>,
    epoch: Epoch,
    /// Earlier epochs and where each was kept.
    forks: Vec<Fork>,
    /// Positions lost to damage, in order.
    lost: Vec<LostRange>,
    segments: Vec<Segment>,
    /// Oldest retained sequence (events below are logically gone).
    first_seq: u64,
    latest_seq: u64,
    latest_time: i64,
    dedup: DedupIndex,
    /// Time of the event at `first_seq`, once read: retention checks it on
    /// every append and it only changes when `first_seq` moves.
    first_time: Option<i64>,
    /// Appended since the last fsync (for `fsync = "interval"`).
    pub dirty: bool,
    /// Writes of the active segment waiting for their fsync.
    durability: Writes,
}

impl TopicLog {
    /// Whether `w` is a write to this log.
    pub fn wrote(&self, w: &SegmentWrite) -> bool {
        w.of(&self.durability)
    }

    /// Creates a new, empty log with a fresh epoch at `dir`.
    pub fn create(dir: &Path, cfg: &EmbeddedConfig) -> io::Result<TopicLog> {
        let parent = dir.parent().expect("topic dir has a parent");
        let tmp = parent.join(format!(
            ".tmp-{}-{}",
            dir.file_name().and_then(|n| n.to_str()).unwrap_or("topic"),
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir_all(&tmp)?;
        let meta = Meta {
            epoch: Epoch::generate(),
            created_ms: now_ms(),
            forks: Vec::new(),
            lost: Vec::new(),
        };
        layout::write_meta(&tmp, &meta)?;
        Segment::create(&tmp, 1)?;
        // The topic appears whole or not at all.
        fs::rename(&tmp, dir)?;
        segment::sync_dir(parent)?;
        Ok(Self::open(dir, cfg)?.0)
    }

    /// Opens an existing log, cutting a torn tail and rebuilding dedup state.
    pub fn open(dir: &Path, cfg: &EmbeddedConfig) -> io::Result<(TopicLog, OpenReport)> {
        let (segments, meta, report) = recovery::open_segments(dir, read_meta(dir)?, true)?;
        let (latest_seq, latest_time) = recovery::latest(&segments);
        let first_seq = segments[0].base;
        let mut log = TopicLog {
            dir: dir.to_owned(),
            name: dir
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .into(),
            epoch: meta.epoch,
            forks: meta.forks,
            lost: report.lost.clone(),
            segments,
            first_seq,
            latest_seq,
            latest_time,
            dedup: DedupIndex::new(cfg.dedup_window_ms),
            first_time: None,
            dirty: false,
            durability: Writes::default(),
        };
        log.rebuild_dedup(cfg)?;
        log.enforce_retention(cfg)?;
        Ok((log, report))
    }

    /// Rebuilds dedup state: producer marks from the snapshot plus every
    /// record after it, idempotency keys from records inside the window.
    fn rebuild_dedup(&mut self, cfg: &EmbeddedConfig) -> io::Result<()> {
        let snap: ProducerSnapshot = fs::read(self.dir.join(PRODUCERS))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        self.dedup.restore_producers(snap.marks);
        let cutoff = now_ms() - cfg.dedup_window_ms;
        let from = self
            .segments
            .iter()
            .position(|s| s.end_seq() > snap.through_seq + 1 || s.last_time >= cutoff)
            .unwrap_or(self.segments.len());
        for seg in &self.segments[from..] {
            if seg.count() == 0 {
                continue;
            }
            let plan = ReadPlan {
                file: seg.file.clone(),
                start: 0,
                end: seg.len,
            };
            let mut buf = vec![0u8; (plan.end - plan.start) as usize];
            std::os::unix::fs::FileExt::read_exact_at(&*plan.file, &mut buf, 0)?;
            let mut at = 0;
            while let Next::Record(r, n) = record::next(&buf[at..], None) {
                at += n;
                let key = r
                    .key
                    .as_ref()
                    .filter(|_| r.event.time_ms >= cutoff)
                    .map(|(k, _)| k.as_str());
                let fingerprint = r.key.as_ref().map_or(0, |(_, f)| *f);
                self.dedup.record(
                    key,
                    r.producer.as_ref().map(|(p, s)| (p.as_str(), *s)),
                    fingerprint,
                    r.event.seq,
                    r.event.time_ms,
                );
            }
        }
        Ok(())
    }

    /// Time of the oldest retained event (the latest time when none is).
    fn first_time(&mut self) -> io::Result<i64> {
        if self.first_seq > self.latest_seq {
            return Ok(self.latest_time);
        }
        if let Some(t) = self.first_time {
            return Ok(t);
        }
        let (s, i) = self.locate(self.first_seq);
        let t = self.segments[s].time_at(i)?;
        self.first_time = Some(t);
        Ok(t)
    }

    /// The log's bounds.
    pub fn bounds(&mut self) -> TopicBounds {
        let first_time_ms = self.first_time().unwrap_or(self.latest_time);
        TopicBounds {
            epoch: self.epoch.clone(),
            first_seq: self.first_seq,
            first_time_ms,
            latest_seq: self.latest_seq,
            latest_time_ms: self.latest_time,
            forks: self.forks.clone(),
            lost: self.lost.clone(),
        }
    }

    /// Segment index and record index of a retained sequence.
    fn locate(&self, seq: u64) -> (usize, usize) {
        let s = self.segments.partition_point(|seg| seg.base <= seq) - 1;
        (s, (seq - self.segments[s].base) as usize)
    }

    /// Appends a batch: dedup check and one write. With `fsync = "always"`
    /// the write is not durable yet: the caller waits for the returned
    /// [`Unsynced`] (without this log's lock, so the next batches are
    /// written meanwhile) before acknowledging it. Small writes go to the
    /// `journal` when there is one, larger ones fdatasync their segment.
    pub fn write(
        &mut self,
        batch: Vec<NewEvent>,
        time_ms: i64,
        cfg: &EmbeddedConfig,
        journal: Option<&Journal>,
    ) -> io::Result<(Vec<AppendOutcome>, Option<Unsynced>)> {
        if self.durability.failed() {
            return Err(io::Error::other("an fsync of this log failed; reopen it"));
        }
        let time_ms = time_ms.max(self.latest_time);
        let now = now_ms();
        let mut out = Vec::with_capacity(batch.len());
        let mut buf = Vec::with_capacity(batch.iter().map(record::encoded_len).sum());
        let mut starts = Vec::with_capacity(batch.len());
        let mut seq = self.latest_seq;
        // Plain events skip the index entirely; expiry still runs once per
        // append so keys leave memory even if no keyed event follows.
        self.dedup.expire(now);
        for ev in batch {
            let plain = ev.idempotency_key.is_none() && ev.producer.is_none();
            let verdict = if plain {
                Verdict::New
            } else {
                self.dedup.check(&ev, now, &self.epoch)
            };
            match verdict {
                Verdict::Answer(a) => out.push(a),
                Verdict::New => {
                    seq += 1;
                    starts.push(buf.len() as u32);
                    record::encode(&mut buf, &ev, seq, time_ms);
                    // Recorded now so a repeat later in this batch is seen;
                    // if the write fails the caller drops this log and
                    // reopens it from disk.
                    if !plain {
                        self.dedup.record(
                            ev.idempotency_key.as_deref(),
                            ev.producer.as_ref().map(|(p, s)| (p.as_str(), *s)),
                            ev.fingerprint(),
                            seq,
                            time_ms,
                        );
                    }
                    out.push(AppendOutcome::Stored(StoredEvent {
                        seq,
                        time_ms,
                        event_type: ev.event_type,
                        data: ev.data,
                    }));
                }
            }
        }
        if buf.is_empty() {
            return Ok((out, None));
        }
        let seg = self.segments.last_mut().expect("active segment");
        let (old_len, old_count) = (seg.len, seg.offsets.len());
        if let Err(e) = seg.append(&buf, &starts, time_ms) {
            let _ = seg.truncate_to(old_len, old_count);
            return Err(e);
        }
        let unsynced = if cfg.fsync != Fsync::Always {
            self.dirty = true;
            None
        } else if let Some(journal) = journal.filter(|_| buf.len() <= journal::MAX_JOURNALED_WRITE)
        {
            Some(Unsynced::Journaled(journal.submit(journal::Entry {
                topic: self.name.clone(),
                epoch: self.epoch.clone(),
                base: seg.base,
                offset: old_len,
                bytes: buf,
                file: seg.file.clone(),
            })))
        } else {
            Some(Unsynced::Segment(
                self.durability.start(seg.file.clone(), old_len),
            ))
        };
        self.latest_seq = seq;
        self.latest_time = time_ms;
        if seg.len >= cfg.segment_bytes {
            self.roll()?;
            // Sealing fsynced the segment: every write to it is durable.
            self.durability.all_synced();
        }
        self.enforce_retention(cfg)?;
        Ok((out, unsynced))
    }

    /// Seals the active segment and starts a new one.
    fn roll(&mut self) -> io::Result<()> {
        let active = self.segments.last().expect("active segment");
        active.file.sync_data()?;
        let snap = ProducerSnapshot {
            through_seq: self.latest_seq,
            marks: self.dedup.producers().clone(),
        };
        write_durably(&self.dir, PRODUCERS, &serde_json::to_vec(&snap)?)?;
        let next = Segment::create(&self.dir, self.latest_seq + 1)?;
        self.segments.push(next);
        Ok(())
    }

    /// Moves the logical start past events beyond the count, byte and age
    /// limits and deletes sealed segments that hold nothing retained.
    pub fn enforce_retention(&mut self, cfg: &EmbeddedConfig) -> io::Result<()> {
        let latest = self.latest_seq;
        let mut first = self.first_seq;
        if latest + 1 - first > cfg.max_events {
            first = latest + 1 - cfg.max_events;
        }
        let total_end: u64 = self.segments.iter().map(|s| s.len).sum();
        while first <= latest {
            let (s, i) = self.locate(first);
            let before: u64 = self.segments[..s].iter().map(|s| s.len).sum();
            let retained = total_end - before - self.segments[s].offset_of(i);
            if retained <= cfg.max_bytes {
                break;
            }
            first += 1;
        }
        if let Some(max_age) = cfg.max_age_ms {
            let cutoff = now_ms() - max_age;
            // Common case first, without a read: the oldest event is still
            // young enough, so nothing expires.
            let young = first == self.first_seq && first <= latest && self.first_time()? >= cutoff;
            if !young {
                while first <= latest {
                    let (s, i) = self.locate(first);
                    let seg = &self.segments[s];
                    if seg.last_time < cutoff {
                        first = seg.end_seq();
                    } else if seg.time_at(i)? < cutoff {
                        first += 1;
                    } else {
                        break;
                    }
                }
            }
        }
        // The oldest retained position is one that holds an event: lost
        // positions before it are not worth a gap. Ranges can follow each
        // other (one ends a sealed segment, the next starts the next one).
        self.lost.retain(|r| r.last_seq >= first);
        while let Some(r) = self.lost.first().filter(|r| r.first_seq <= first) {
            first = r.last_seq + 1;
            self.lost.remove(0);
        }
        if first != self.first_seq {
            self.first_time = None;
        }
        self.first_seq = first;
        while self.segments.len() > 1 && self.segments[0].end_seq() <= first {
            let gone = self.segments.remove(0);
            gone.remove()?;
        }
        Ok(())
    }

    /// Plans a read of up to `limit` events after `after_seq`, and of at
    /// most `max_bytes` of records (but at least one record); the plan runs
    /// without the lock.
    pub fn plan_read(&self, after_seq: u64, limit: usize, max_bytes: u64) -> Vec<ReadPlan> {
        let mut seq = (after_seq + 1).max(self.first_seq);
        // `limit` counts events: lost positions hold none.
        let mut end = seq + limit as u64;
        for r in &self.lost {
            if r.last_seq >= seq && r.first_seq < end {
                end += r.last_seq + 1 - r.first_seq.max(seq);
            }
        }
        let end = end.min(self.latest_seq + 1);
        let mut plans = Vec::new();
        let mut budget = max_bytes;
        while seq < end {
            let (s, i) = self.locate(seq);
            let seg = &self.segments[s];
            let upto = end.min(seg.end_seq());
            let start = seg.offset_of(i);
            let mut stop = (upto - seg.base) as usize;
            let whole = seg.offset_of(stop) - start;
            let over = whole > budget;
            if over {
                // The most records from `i` that fit: offsets only grow.
                let (mut lo, mut hi) = (i, stop);
                while hi - lo > 1 {
                    let mid = lo + (hi - lo) / 2;
                    if seg.offset_of(mid) - start <= budget {
                        lo = mid;
                    } else {
                        hi = mid;
                    }
                }
                // At least one record per page, however large.
                stop = if lo == i && plans.is_empty() {
                    i + 1
                } else {
                    lo
                };
            }
            if stop > i {
                plans.push(ReadPlan {
                    file: seg.file.clone(),
                    start,
                    end: seg.offset_of(stop),
                });
            }
            if over {
                break;
            }
            budget -= whole;
            seq = upto;
        }
        plans
    }

    /// Files the log holds open (one per segment).
    pub fn open_files(&self) -> usize {
        self.segments.len()
    }

    /// The active segment's file.
    pub fn active_file(&self) -> Option<Arc<fs::File>> {
        self.segments.last().map(|s| s.file.clone())
    }

    /// The active segment's file if anything was appended since the last
    /// fsync, marked clean: the caller fsyncs it (and marks the log dirty
    /// again if that fails). Older segments were fsynced when sealed.
    pub fn take_dirty(&mut self) -> Option<Arc<fs::File>> {
        if !self.dirty {
            return None;
        }
        self.dirty = false;
        Some(self.segments.last().expect("active segment").file.clone())
    }
}

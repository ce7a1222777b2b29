//! A destination's journal: every frame the relay accepted for it, appended
//! to numbered segment files before the relay acknowledges the batch to a
//! graunt sender, read back in order by the destination's sender, and
//! deleted once the destination has acknowledged it. What the destination
//! acknowledged is remembered in a cursor file, so a relay killed at any
//! moment starts again from there: frames sent but not acknowledged are sent
//! again (duplicates are possible and counted), none is lost.
//!
//! ```text
//! push ─append─▶ [segment 7][segment 8 …] ─next─▶ sender ─▶ destination
//!                 ▲ cursor (acknowledged)  ▲ read position
//! ```
//!
//! Each destination has its own journal (a point with two copies is written
//! twice): destinations move at their own pace, a segment is deleted once
//! its one reader is done, and `max_spill_bytes` bounds each on its own.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Deserialize;

/// The largest frame a journal holds (a node refuses larger ones).
const MAX_FRAME: u64 = crate::codec::pickle::DEFAULT_MAX_FRAME as u64;

/// Bytes per segment file before the next one starts.
const SEGMENT_BYTES: u64 = 64 << 20;

/// Bytes between the append-time marks kept for the oldest-age figure.
const MARK_BYTES: u64 = 1 << 20;

/// When appended frames are forced to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JournalSync {
    /// fsync before each batch is acknowledged: survives a power loss, costs
    /// a disk flush per batch.
    Always,
    /// fsync every second: a process crash (`kill -9`) loses nothing, a
    /// power loss up to a second of acknowledged batches.
    #[default]
    Periodic,
    /// Left to the kernel: a process crash loses nothing, a power loss what
    /// the kernel had not written (up to ~30 s).
    Never,
}

/// A place in the journal: a segment and a byte offset in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Position {
    segment: u64,
    offset: u64,
}

/// One destination's journal directory.
pub struct Journal {
    dir: PathBuf,
    sync: JournalSync,
    /// Segment numbers present, oldest first.
    segments: Vec<u64>,
    /// Everything before it was acknowledged by the destination.
    acked: Position,
    /// The next frame to send.
    read: Position,
    /// Frames sent and not yet acknowledged, in order: where each ends
    /// (`true`), or damage skipped behind them (`false`, acknowledged with
    /// what precedes it).
    in_flight: VecDeque<(Position, bool)>,
    /// Bytes on disk not yet acknowledged.
    bytes: u64,
    max_bytes: u64,
    /// The segment being appended to: its number, file and length.
    writer: Option<(u64, File, u64)>,
    /// Whether appends since the last sync are not yet forced to disk.
    dirty: bool,
    /// (position, unix seconds) of appends, about every [`MARK_BYTES`].
    marks: VecDeque<(Position, i64)>,
    /// Frames read again after a reconnect or a restart.
    resent_frames: u64,
}

fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{n:012}.spill"))
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Forces a directory's entries (a created or removed file) to disk.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Journal {
    /// Opens (or creates) `dir`, finding what an earlier run left: frames
    /// after the cursor are sent again (the destination may have taken some
    /// of them before the relay stopped).
    pub fn open(dir: PathBuf, max_bytes: u64, sync: JournalSync) -> io::Result<Journal> {
        fs::create_dir_all(&dir)?;
        let mut segments: Vec<u64> = fs::read_dir(&dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_suffix(".spill")?.parse().ok()
            })
            .collect();
        segments.sort_unstable();
        let first = segments.first().copied().unwrap_or(0);
        let offset = fs::read_to_string(dir.join("cursor"))
            .ok()
            .and_then(|t| {
                let (seg, off) = t.trim().split_once(' ')?;
                Some((seg.parse::<u64>().ok()?, off.parse::<u64>().ok()?))
            })
            .filter(|(seg, _)| *seg == first)
            .map_or(0, |(_, off)| off);
        let acked = Position {
            segment: first,
            offset,
        };
        let mut bytes = 0;
        let mut marks = VecDeque::new();
        for &s in &segments {
            let meta = fs::metadata(segment_path(&dir, s))?;
            bytes += meta.len();
            // An earlier run's appends: the file's time is the best age known.
            let at = meta
                .modified()
                .ok()
                .and_then(|m| m.duration_since(UNIX_EPOCH).ok())
                .map_or_else(unix_now, |d| d.as_secs() as i64);
            marks.push_back((
                Position {
                    segment: s,
                    offset: 0,
                },
                at,
            ));
        }
        bytes = bytes.saturating_sub(offset);
        let resent_frames = 0;
        Ok(Journal {
            dir,
            sync,
            segments,
            acked,
            read: acked,
            in_flight: VecDeque::new(),
            bytes,
            max_bytes,
            writer: None,
            dirty: false,
            marks,
            resent_frames,
        })
    }

    /// Whether every frame was acknowledged.
    pub fn is_empty(&self) -> bool {
        self.bytes == 0
    }

    /// Whether a frame waits to be sent.
    pub fn has_unsent(&self) -> bool {
        match self.segments.last() {
            None => false,
            Some(&last) => {
                let end = self.segment_len(last);
                self.read
                    < Position {
                        segment: last,
                        offset: end,
                    }
            }
        }
    }

    /// Bytes not yet acknowledged.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Segment files on disk.
    pub fn segments(&self) -> usize {
        self.segments.len()
    }

    /// Seconds since the oldest frame not acknowledged was appended (0 when
    /// there is none).
    pub fn oldest_age(&self) -> i64 {
        if self.is_empty() {
            return 0;
        }
        let at = self
            .marks
            .iter()
            .take_while(|(p, _)| *p <= self.acked)
            .last()
            .or(self.marks.front())
            .map_or_else(unix_now, |(_, t)| *t);
        (unix_now() - at).max(0)
    }

    /// Frames read again after a reconnect or a restart (possible duplicates).
    pub fn resent_frames(&self) -> u64 {
        self.resent_frames
    }

    fn segment_len(&self, n: u64) -> u64 {
        match &self.writer {
            Some((w, _, len)) if *w == n => *len,
            _ => fs::metadata(segment_path(&self.dir, n)).map_or(0, |m| m.len()),
        }
    }

    /// Appends frames (already concatenated) in one write: the batch's
    /// group commit. `false`, with nothing written, past the bound. With
    /// `journal_sync = "always"` the frames are on disk when it returns;
    /// otherwise in the kernel's page cache, which a killed process does
    /// not lose.
    pub fn append(&mut self, frames: &[u8]) -> io::Result<bool> {
        if frames.is_empty() {
            return Ok(true);
        }
        if self.bytes + frames.len() as u64 > self.max_bytes {
            return Ok(false);
        }
        let next = match &self.writer {
            Some((n, _, len)) if *len >= SEGMENT_BYTES => Some(n + 1),
            Some(_) => None,
            // A new run never appends to an earlier run's segments: their
            // tails may be torn.
            None => Some(self.segments.last().map_or(0, |l| l + 1)),
        };
        if let Some(n) = next {
            if let Some((_, old, _)) = &self.writer {
                if self.dirty && self.sync == JournalSync::Periodic {
                    // The periodic sync only reaches the current segment:
                    // the one left behind is on disk when this returns.
                    old.sync_data()?;
                }
            }
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(segment_path(&self.dir, n))?;
            if self.sync == JournalSync::Always {
                // The new segment's directory entry is on disk when this
                // returns: a power loss cannot lose the whole file.
                sync_dir(&self.dir)?;
            }
            if !self.segments.contains(&n) {
                self.segments.push(n);
            }
            if self.segments.len() == 1 {
                self.acked = Position {
                    segment: n,
                    offset: 0,
                };
                self.read = self.acked;
            }
            self.writer = Some((n, file, 0));
        }
        let (n, file, len) = self.writer.as_mut().expect("opened above");
        let at = Position {
            segment: *n,
            offset: *len,
        };
        if let Err(e) = file.write_all(frames) {
            // Disk full and the like: cut the partial write off, or every
            // frame after it would be read out of step.
            let _ = file.set_len(*len);
            return Err(e);
        }
        if self.sync == JournalSync::Always {
            // The frames are on disk when this returns, before the batch is
            // acknowledged.
            file.sync_data()?;
        } else {
            self.dirty = true;
        }
        *len += frames.len() as u64;
        self.bytes += frames.len() as u64;
        if self
            .marks
            .back()
            .is_none_or(|(p, _)| p.segment != at.segment || at.offset >= p.offset + MARK_BYTES)
        {
            self.marks.push_back((at, unix_now()));
        }
        Ok(true)
    }

    /// Forces appended frames to disk (the periodic sync).
    pub fn sync(&mut self) -> io::Result<()> {
        if !self.dirty {
            return Ok(());
        }
        if let Some((_, file, _)) = &self.writer {
            // Every frame appended so far is on disk when this returns.
            file.sync_data()?;
        }
        // The directory entries of segments created since the last sync are
        // on disk when this returns, so their files are found after a
        // power loss.
        sync_dir(&self.dir)?;
        self.dirty = false;
        Ok(())
    }

    /// The next frame to send, if any; the read position moves past it.
    pub fn next_frame(&mut self) -> io::Result<Option<Vec<u8>>> {
        loop {
            let Some(idx) = self.segments.iter().position(|&s| s == self.read.segment) else {
                // The read position's segment is gone (acknowledged and
                // deleted); start at the oldest one.
                let Some(&first) = self.segments.first() else {
                    return Ok(None);
                };
                self.read = Position {
                    segment: first,
                    offset: 0,
                };
                continue;
            };
            let seg = self.read.segment;
            let len = self.segment_len(seg);
            if self.read.offset >= len {
                if idx + 1 == self.segments.len() {
                    return Ok(None);
                }
                self.read = Position {
                    segment: self.segments[idx + 1],
                    offset: 0,
                };
                continue;
            }
            let path = segment_path(&self.dir, seg);
            let mut file = File::open(&path)?;
            file.seek(SeekFrom::Start(self.read.offset))?;
            let mut head = [0u8; 4];
            let left = len - self.read.offset;
            let size = match file.read_exact(&mut head) {
                Ok(()) => u64::from(u32::from_be_bytes(head)),
                Err(_) => u64::MAX,
            };
            if size > MAX_FRAME || 4 + size > left {
                // A torn tail (killed mid-append) or damage: what follows
                // cannot be framed. Skip it, say so, and go on with the next
                // segment rather than block the destination for good.
                tracing::error!(segment = %path.display(), offset = self.read.offset, lost_bytes = left, "damaged frame in the journal; skipping the rest of this segment");
                self.read.offset = len;
                // Nothing to wait for there: acknowledged as soon as what
                // was sent before it is.
                self.in_flight.push_back((self.read, false));
                self.note_acked(0);
                // The cursor moves past the damage on disk too: a segment
                // deleted here must not leave a cursor naming its number,
                // which a later segment could take.
                self.save_cursor()?;
                continue;
            }
            let mut frame = vec![0u8; 4 + size as usize];
            frame[..4].copy_from_slice(&head);
            file.read_exact(&mut frame[4..])?;
            self.read.offset += frame.len() as u64;
            self.in_flight.push_back((self.read, true));
            return Ok(Some(frame));
        }
    }

    /// The destination acknowledged the oldest `frames` frames sent: the
    /// cursor moves past them and fully acknowledged segments are deleted.
    pub fn acknowledge(&mut self, frames: u64) -> io::Result<()> {
        self.note_acked(frames);
        self.save_cursor()
    }

    /// Moves `acked` past `frames` sent frames (and past skipped damage
    /// directly behind them).
    fn note_acked(&mut self, frames: u64) {
        let mut left = frames;
        while let Some(&(end, is_frame)) = self.in_flight.front() {
            if is_frame {
                if left == 0 {
                    break;
                }
                left -= 1;
            }
            self.in_flight.pop_front();
            self.advance_to(end);
        }
    }

    fn advance_to(&mut self, end: Position) {
        // Bytes between the old cursor and `end`.
        let mut freed = 0u64;
        let mut at = self.acked;
        while at.segment < end.segment {
            freed += self.segment_len(at.segment).saturating_sub(at.offset);
            let next = self
                .segments
                .iter()
                .copied()
                .find(|&s| s > at.segment)
                .unwrap_or(end.segment);
            at = Position {
                segment: next,
                offset: 0,
            };
        }
        freed += end.offset.saturating_sub(at.offset);
        self.bytes = self.bytes.saturating_sub(freed);
        self.acked = end;
        // Segments wholly before the cursor, and the cursor's own once it
        // is fully acknowledged and no longer written, are deleted.
        let writing = self.writer.as_ref().map(|w| w.0);
        while let Some(&first) = self.segments.first() {
            let done = first < self.acked.segment
                || (first == self.acked.segment
                    && Some(first) != writing
                    && self.acked.offset >= self.segment_len(first));
            if !done {
                break;
            }
            let _ = fs::remove_file(segment_path(&self.dir, first));
            self.segments.remove(0);
            if let Some(&next) = self.segments.first() {
                if self.acked.segment <= first {
                    self.acked = Position {
                        segment: next,
                        offset: 0,
                    };
                }
            }
        }
        while self.marks.len() > 1 && self.marks.get(1).is_some_and(|(p, _)| *p <= self.acked) {
            self.marks.pop_front();
        }
        if self.bytes == 0 {
            // Nothing waits: the next append starts the age afresh.
            self.marks.clear();
        }
    }

    /// The destination's connection ended: frames sent and not acknowledged
    /// are read (and sent) again.
    pub fn rewind(&mut self) {
        self.resent_frames += self.in_flight.iter().filter(|(_, f)| *f).count() as u64;
        self.in_flight.clear();
        self.read = self.acked;
    }

    fn save_cursor(&self) -> io::Result<()> {
        if self.segments.is_empty() {
            let _ = fs::remove_file(self.dir.join("cursor"));
            return Ok(());
        }
        let tmp = self.dir.join("cursor.tmp");
        fs::write(
            &tmp,
            format!("{} {}\n", self.acked.segment, self.acked.offset),
        )?;
        // No fsync: a cursor lost in a power loss only means frames the
        // destination already has are sent again; the rename itself is
        // atomic, so the cursor is the old one or the new one, never torn.
        fs::rename(tmp, self.dir.join("cursor"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 3-byte frame of `i`s.
    fn frame(i: u8) -> Vec<u8> {
        let mut f = 3u32.to_be_bytes().to_vec();
        f.extend_from_slice(&[i, i, i]);
        f
    }

    fn open(path: &Path, max: u64) -> Journal {
        Journal::open(path.to_path_buf(), max, JournalSync::Never).unwrap()
    }

    #[test]
    fn frames_come_back_in_order_and_unacknowledged_ones_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d");
        let mut j = open(&path, 1 << 20);
        let batch: Vec<u8> = (0..5).flat_map(frame).collect();
        assert!(j.append(&batch).unwrap());
        for i in 0..3 {
            assert_eq!(j.next_frame().unwrap().unwrap(), frame(i));
        }
        // Two acknowledged, the third sent but not: a crash here.
        j.acknowledge(2).unwrap();
        drop(j);
        let mut j = open(&path, 1 << 20);
        assert_eq!(j.bytes(), 3 * 7);
        for i in 2..5 {
            assert_eq!(j.next_frame().unwrap().unwrap(), frame(i));
        }
        assert!(j.next_frame().unwrap().is_none());
        j.acknowledge(3).unwrap();
        assert!(j.is_empty());
        assert!(!j.has_unsent());
    }

    #[test]
    fn a_rewind_sends_the_unacknowledged_again_and_counts_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = open(&dir.path().join("d"), 1 << 20);
        assert!(j.append(&[frame(1), frame(2), frame(3)].concat()).unwrap());
        j.next_frame().unwrap();
        j.next_frame().unwrap();
        j.acknowledge(1).unwrap();
        j.rewind();
        assert_eq!(j.resent_frames(), 1);
        assert_eq!(j.next_frame().unwrap().unwrap(), frame(2));
        assert_eq!(j.next_frame().unwrap().unwrap(), frame(3));
        j.acknowledge(2).unwrap();
        assert!(j.is_empty());
    }

    #[test]
    fn acknowledged_segments_are_deleted_and_the_bound_holds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d");
        let mut j = open(&path, 1 << 20);
        assert!(j.append(&frame(1)).unwrap());
        drop(j);
        // A new run writes a new segment; the old one goes once acknowledged.
        let mut j = open(&path, 1 << 20);
        assert!(j.append(&frame(2)).unwrap());
        assert_eq!(j.segments(), 2);
        assert_eq!(j.next_frame().unwrap().unwrap(), frame(1));
        j.acknowledge(1).unwrap();
        assert_eq!(j.segments(), 1, "the first segment is deleted");
        assert_eq!(j.next_frame().unwrap().unwrap(), frame(2));
        j.acknowledge(1).unwrap();
        assert!(j.is_empty());
        let mut tiny = open(&dir.path().join("t"), 10);
        assert!(tiny.append(&frame(1)).unwrap());
        assert!(!tiny.append(&frame(2)).unwrap(), "past the bound");
    }

    #[test]
    fn a_torn_tail_is_skipped_and_what_precedes_it_delivered() {
        for cut in 1..7 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("d");
            let mut j = open(&path, 1 << 20);
            assert!(j.append(&[frame(1), frame(2)].concat()).unwrap());
            drop(j);
            // Killed mid-append: the second frame cut short.
            let seg = segment_path(&path, 0);
            let bytes = fs::read(&seg).unwrap();
            fs::write(&seg, &bytes[..bytes.len() - cut]).unwrap();
            let mut j = open(&path, 1 << 20);
            assert!(j.append(&frame(3)).unwrap(), "a new segment");
            assert_eq!(j.next_frame().unwrap().unwrap(), frame(1));
            assert_eq!(j.next_frame().unwrap().unwrap(), frame(3), "cut {cut}");
            assert!(j.next_frame().unwrap().is_none());
            j.acknowledge(2).unwrap();
            assert!(j.is_empty(), "cut {cut}: {} bytes left", j.bytes());
        }
    }

    #[test]
    fn a_huge_length_is_damage() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = open(&dir.path().join("d"), 1 << 30);
        assert!(j.append(&[0xff, 0xff, 0xff, 0xff, 1, 2]).unwrap());
        assert!(j.next_frame().unwrap().is_none());
        assert!(j.is_empty());
    }
}

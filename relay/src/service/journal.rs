//! A destination's queue on disk: pickle frames appended to numbered
//! segment files, read back oldest first; what was sent is remembered by a
//! cursor file, so a relay restart resumes where it stopped (neither losing
//! nor repeating frames).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The largest frame a spill holds (a node refuses larger ones).
const MAX_FRAME: u64 = crate::codec::pickle::DEFAULT_MAX_FRAME as u64;

/// Bytes per segment file before the next one starts.
const SEGMENT_BYTES: u64 = 64 << 20;

/// One destination's spill directory.
pub struct Spill {
    dir: PathBuf,
    /// Segment numbers present, oldest first.
    segments: Vec<u64>,
    /// Byte offset of the next unsent frame in the oldest segment.
    cursor: u64,
    /// Bytes on disk not yet sent.
    bytes: u64,
    max_bytes: u64,
    writer: Option<(u64, File, u64)>,
}

fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{n:012}.spill"))
}

impl Spill {
    /// Opens (or creates) `dir`, finding what an earlier run left.
    pub fn open(dir: PathBuf, max_bytes: u64) -> io::Result<Spill> {
        fs::create_dir_all(&dir)?;
        let mut segments: Vec<u64> = fs::read_dir(&dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_suffix(".spill")?.parse().ok()
            })
            .collect();
        segments.sort_unstable();
        let cursor = fs::read_to_string(dir.join("cursor"))
            .ok()
            .and_then(|t| {
                let (seg, off) = t.trim().split_once(' ')?;
                Some((seg.parse::<u64>().ok()?, off.parse::<u64>().ok()?))
            })
            .filter(|(seg, _)| segments.first() == Some(seg))
            .map_or(0, |(_, off)| off);
        let mut bytes = 0;
        for &s in &segments {
            bytes += fs::metadata(segment_path(&dir, s)).map_or(0, |m| m.len());
        }
        bytes = bytes.saturating_sub(cursor);
        Ok(Spill {
            dir,
            segments,
            cursor,
            bytes,
            max_bytes,
            writer: None,
        })
    }

    /// Whether anything waits on disk.
    pub fn is_empty(&self) -> bool {
        self.bytes == 0
    }

    /// Bytes waiting.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Appends one frame; `false` (nothing written) past the bound.
    pub fn append(&mut self, frame: &[u8]) -> io::Result<bool> {
        if self.bytes + frame.len() as u64 > self.max_bytes {
            return Ok(false);
        }
        let next = match &self.writer {
            Some((n, _, len)) if *len >= SEGMENT_BYTES => Some(n + 1),
            Some(_) => None,
            // A new run never appends to an earlier run's segments.
            None => Some(self.segments.last().map_or(0, |l| l + 1)),
        };
        if let Some(n) = next {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(segment_path(&self.dir, n))?;
            if !self.segments.contains(&n) {
                self.segments.push(n);
            }
            self.writer = Some((n, file, 0));
        }
        let (_, file, len) = self.writer.as_mut().expect("opened above");
        if let Err(e) = file.write_all(frame) {
            // Disk full and the like: cut the partial frame off, or every
            // frame after it would be read out of step.
            let _ = file.set_len(*len);
            return Err(e);
        }
        *len += frame.len() as u64;
        self.bytes += frame.len() as u64;
        Ok(true)
    }

    /// The oldest unsent frame, if any (not consumed until [`Spill::done`]).
    pub fn peek(&mut self) -> io::Result<Option<Vec<u8>>> {
        loop {
            let Some(&first) = self.segments.first() else {
                return Ok(None);
            };
            let path = segment_path(&self.dir, first);
            let mut file = File::open(&path)?;
            let len = file.metadata()?.len();
            if self.cursor >= len {
                // Fully sent: drop it unless it is the one being written.
                if self.writer.as_ref().is_some_and(|w| w.0 == first) {
                    return Ok(None);
                }
                fs::remove_file(&path)?;
                self.segments.remove(0);
                self.cursor = 0;
                self.save_cursor()?;
                continue;
            }
            file.seek(SeekFrom::Start(self.cursor))?;
            let mut head = [0u8; 4];
            let left = len - self.cursor;
            let size = match file.read_exact(&mut head) {
                Ok(()) => u32::from_be_bytes(head) as u64,
                Err(_) => u64::MAX,
            };
            if size > MAX_FRAME || 4 + size > left {
                // A torn tail (a crash mid-append) or damage: what follows
                // cannot be framed. Skip it, say so, and go on with the
                // next segment rather than block the destination for good.
                tracing::error!(segment = %path.display(), offset = self.cursor, lost_bytes = left, "damaged frame in the spill; skipping the rest of this segment");
                self.bytes = self.bytes.saturating_sub(left);
                self.cursor = len;
                if self.writer.as_ref().is_some_and(|w| w.0 == first) {
                    self.save_cursor()?;
                    return Ok(None);
                }
                continue;
            }
            let mut frame = vec![0u8; 4 + size as usize];
            frame[..4].copy_from_slice(&head);
            file.read_exact(&mut frame[4..])?;
            return Ok(Some(frame));
        }
    }

    /// Marks the frame last peeked as sent.
    pub fn done(&mut self, frame_len: usize) -> io::Result<()> {
        self.cursor += frame_len as u64;
        self.bytes = self.bytes.saturating_sub(frame_len as u64);
        self.save_cursor()
    }

    fn save_cursor(&self) -> io::Result<()> {
        let Some(&first) = self.segments.first() else {
            let _ = fs::remove_file(self.dir.join("cursor"));
            return Ok(());
        };
        let tmp = self.dir.join("cursor.tmp");
        fs::write(&tmp, format!("{first} {}\n", self.cursor))?;
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

    #[test]
    fn frames_come_back_in_order_across_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d");
        let mut s = Spill::open(path.clone(), 1 << 20).unwrap();
        for i in 0..5 {
            assert!(s.append(&frame(i)).unwrap());
        }
        let first = s.peek().unwrap().unwrap();
        assert_eq!(first, frame(0));
        s.done(first.len()).unwrap();
        drop(s);
        let mut s = Spill::open(path, 1 << 20).unwrap();
        for i in 1..5 {
            let f = s.peek().unwrap().unwrap();
            assert_eq!(f, frame(i));
            s.done(f.len()).unwrap();
        }
        assert!(s.peek().unwrap().is_none());
        assert!(s.is_empty());
        let mut tiny = Spill::open(dir.path().join("t"), 10).unwrap();
        assert!(tiny.append(&frame(1)).unwrap());
        assert!(!tiny.append(&frame(2)).unwrap(), "past the bound");
    }

    #[test]
    fn a_torn_tail_is_skipped_not_a_block() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d");
        let mut s = Spill::open(path.clone(), 1 << 20).unwrap();
        assert!(s.append(&frame(1)).unwrap());
        drop(s);
        // A crash mid-append: a length prefix promising more than is there.
        let seg = segment_path(&path, 0);
        let mut bytes = fs::read(&seg).unwrap();
        bytes.extend_from_slice(&[0, 0, 0, 9, 7]);
        fs::write(&seg, bytes).unwrap();
        let mut s = Spill::open(path, 1 << 20).unwrap();
        assert!(s.append(&frame(2)).unwrap(), "a new segment");
        for i in [1, 2] {
            let f = s.peek().unwrap().unwrap();
            assert_eq!(f, frame(i));
            s.done(f.len()).unwrap();
        }
        assert!(s.peek().unwrap().is_none());
        assert!(s.is_empty());
    }

    #[test]
    fn a_huge_length_is_damage() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spill::open(dir.path().join("d"), 1 << 30).unwrap();
        assert!(s.append(&[0xff, 0xff, 0xff, 0xff, 1, 2]).unwrap());
        assert!(s.peek().unwrap().is_none());
        assert!(s.is_empty());
    }
}

//! The write-ahead log: every accepted batch is appended here before it
//! enters the cache, so a node killed at any moment replays what it had
//! accepted when it starts again.
//!
//! The log is a folder of segments `<id>.wal` (16 hex digits, so they sort).
//! A segment is a run of records, each `u32 length | u32 crc32 | payload`
//! (big-endian), the payload a batch of `u16 name length | name | u32
//! timestamp | f64 value`. A torn or corrupt record ends its segment's
//! replay. Segments roll at a size limit and are deleted once no point held
//! by the cache came from them (all their points are in whisper).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::cache::Datapoint;

/// When appended bytes are forced to disk. A write that returned is safe from
/// a process crash (`kill -9`) in every mode; `fsync` also covers power loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPolicy {
    /// `fdatasync` after every append.
    Always,
    /// `fdatasync` when [`Wal::sync`] is called (the node does it every second).
    Periodic,
    /// Never; the OS writes back when it likes.
    Never,
}

struct Current {
    file: File,
    id: u64,
    bytes: u64,
    dirty: bool,
    buf: Vec<u8>,
}

/// The log. Appends are serialized; see [`Wal::append`].
pub struct Wal {
    dir: PathBuf,
    segment_bytes: u64,
    policy: SyncPolicy,
    current: Mutex<Current>,
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:016x}.wal"))
}

/// Segment ids present in `dir`, ascending.
fn segment_ids(dir: &Path) -> io::Result<Vec<u64>> {
    let mut ids: Vec<u64> = fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            u64::from_str_radix(name.strip_suffix(".wal")?, 16).ok()
        })
        .collect();
    ids.sort_unstable();
    Ok(ids)
}

fn encode(points: &[Datapoint], out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; 8]);
    for p in points {
        let name = p.name.as_bytes();
        // Names are at most 1 KiB (metric::MAX_NAME_LEN), so u16 holds them.
        out.extend_from_slice(&(name.len() as u16).to_be_bytes());
        out.extend_from_slice(name);
        out.extend_from_slice(&(p.timestamp as u32).to_be_bytes());
        out.extend_from_slice(&p.value.to_be_bytes());
    }
    let len = (out.len() - start - 8) as u32;
    let crc = crc32fast::hash(&out[start + 8..]);
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_be_bytes());
}

fn decode(mut payload: &[u8]) -> Option<Vec<Datapoint>> {
    let mut points = Vec::new();
    while !payload.is_empty() {
        let len = u16::from_be_bytes(payload.get(..2)?.try_into().ok()?) as usize;
        let name = std::str::from_utf8(payload.get(2..2 + len)?)
            .ok()?
            .to_string();
        let rest = payload.get(2 + len..2 + len + 12)?;
        let timestamp = i64::from(u32::from_be_bytes(rest[..4].try_into().ok()?));
        let value = f64::from_be_bytes(rest[4..].try_into().ok()?);
        points.push(Datapoint {
            name,
            timestamp,
            value,
        });
        payload = &payload[2 + len + 12..];
    }
    Some(points)
}

/// Reads one segment's batches, stopping at the first torn or corrupt record.
fn read_segment(path: &Path) -> io::Result<(Vec<Vec<Datapoint>>, bool)> {
    let mut bytes = Vec::new();
    File::open(path)?.read_to_end(&mut bytes)?;
    let mut batches = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let Some(head) = bytes.get(at..at + 8) else {
            return Ok((batches, false));
        };
        let len = u32::from_be_bytes(head[..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_be_bytes(head[4..].try_into().expect("4 bytes"));
        let Some(payload) = bytes.get(at + 8..at + 8 + len) else {
            return Ok((batches, false));
        };
        if crc32fast::hash(payload) != crc {
            return Ok((batches, false));
        }
        let Some(points) = decode(payload) else {
            return Ok((batches, false));
        };
        batches.push(points);
        at += 8 + len;
    }
    Ok((batches, true))
}

impl Wal {
    /// Opens the log in `dir` (created if missing), calling `replay` with each
    /// stored batch and its segment id in order, then starts a new segment.
    /// Returns the log and how many segments ended in a torn record.
    pub fn open(
        dir: &Path,
        segment_bytes: u64,
        policy: SyncPolicy,
        mut replay: impl FnMut(u64, Vec<Datapoint>),
    ) -> io::Result<(Wal, usize)> {
        fs::create_dir_all(dir)?;
        let ids = segment_ids(dir)?;
        let mut torn = 0;
        for &id in &ids {
            let (batches, clean) = read_segment(&segment_path(dir, id))?;
            torn += usize::from(!clean);
            for batch in batches {
                replay(id, batch);
            }
        }
        let id = ids.last().map_or(1, |last| last + 1);
        let file = Self::create_segment(dir, id)?;
        let current = Current {
            file,
            id,
            bytes: 0,
            dirty: false,
            buf: Vec::new(),
        };
        Ok((
            Wal {
                dir: dir.to_path_buf(),
                segment_bytes,
                policy,
                current: Mutex::new(current),
            },
            torn,
        ))
    }

    fn create_segment(dir: &Path, id: u64) -> io::Result<File> {
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(segment_path(dir, id))?;
        // The new name must survive a crash before any record in it matters.
        File::open(dir)?.sync_all()?;
        Ok(file)
    }

    /// Appends a batch, then runs `accept` with the segment it landed in while
    /// still holding the log: the cache learns of a batch in log order and
    /// before any later segment can be judged free of it.
    pub fn append<T>(&self, points: &[Datapoint], accept: impl FnOnce(u64) -> T) -> io::Result<T> {
        let mut cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if cur.bytes >= self.segment_bytes {
            // Roll: the old segment is complete; sync it so replay sees all of it.
            if self.policy != SyncPolicy::Never {
                cur.file.sync_data()?;
            }
            let id = cur.id + 1;
            cur.file = Self::create_segment(&self.dir, id)?;
            cur.id = id;
            cur.bytes = 0;
            cur.dirty = false;
        }
        let mut buf = std::mem::take(&mut cur.buf);
        buf.clear();
        encode(points, &mut buf);
        // One write per batch; once it returns the bytes survive a process kill.
        if let Err(e) = cur.file.write_all(&buf) {
            // A partial record would end replay of this segment there and hide
            // every later batch: cut it off (or, failing that, roll next time).
            if cur.file.set_len(cur.bytes).is_err() {
                cur.bytes = self.segment_bytes;
            }
            cur.buf = buf;
            return Err(e);
        }
        if self.policy == SyncPolicy::Always {
            cur.file.sync_data()?;
        } else {
            cur.dirty = true;
        }
        cur.bytes += buf.len() as u64;
        cur.buf = buf;
        Ok(accept(cur.id))
    }

    /// Forces appended bytes to disk (the periodic policy's tick).
    pub fn sync(&self) -> io::Result<()> {
        if self.policy == SyncPolicy::Never {
            return Ok(());
        }
        let file = {
            let mut cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
            if !cur.dirty {
                return Ok(());
            }
            cur.dirty = false;
            cur.file.try_clone()?
        };
        // Outside the lock, so appends go on while the disk catches up.
        file.sync_data()
    }

    /// The segment appends go to now.
    pub fn current_id(&self) -> u64 {
        self.current.lock().unwrap_or_else(|e| e.into_inner()).id
    }

    /// Deletes every segment before `keep_from`, never the current one.
    ///
    /// The caller must read [`Wal::current_id`] *before* scanning the cache
    /// for the oldest segment it still needs, and pass the smaller of the two
    /// (see [`crate::writer`]): every batch in a segment older than that id
    /// was already in the cache when it was read, so the scan sees it.
    pub fn release(&self, keep_from: u64) -> io::Result<usize> {
        let current = self.current_id();
        let keep_from = keep_from.min(current);
        let mut removed = 0;
        for id in segment_ids(&self.dir)? {
            if id < keep_from {
                fs::remove_file(segment_path(&self.dir, id))?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// The oldest segment on disk, if any.
    pub fn oldest_id(&self) -> io::Result<Option<u64>> {
        Ok(segment_ids(&self.dir)?.first().copied())
    }

    /// Segments on disk, for self-metrics.
    pub fn segments(&self) -> usize {
        segment_ids(&self.dir).map(|ids| ids.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dp(name: &str, ts: i64, value: f64) -> Datapoint {
        Datapoint {
            name: name.into(),
            timestamp: ts,
            value,
        }
    }

    #[test]
    fn replays_appended_batches_in_order_and_rolls() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) =
            Wal::open(dir.path(), 16, SyncPolicy::Periodic, |_, _| panic!("empty")).unwrap();
        let a = [dp("a.b", 10, 1.5), dp("c", 20, -2.0)];
        let b = [dp("d", 30, 3.0)];
        assert_eq!(wal.append(&a, |s| s).unwrap(), 1);
        assert_eq!(wal.append(&b, |s| s).unwrap(), 2);
        wal.sync().unwrap();
        drop(wal);
        let mut seen = Vec::new();
        let (wal, torn) = Wal::open(dir.path(), 16, SyncPolicy::Periodic, |s, b| {
            seen.push((s, b))
        })
        .unwrap();
        assert_eq!(torn, 0);
        assert_eq!(seen, vec![(1, a.to_vec()), (2, b.to_vec())]);
        assert_eq!(wal.segments(), 3);
        assert_eq!(wal.release(2).unwrap(), 1);
        assert_eq!(wal.release(u64::MAX).unwrap(), 1);
        assert_eq!(wal.segments(), 1);
    }

    #[test]
    fn a_torn_tail_ends_replay_of_its_segment() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(dir.path(), 1 << 20, SyncPolicy::Never, |_, _| {}).unwrap();
        wal.append(&[dp("a", 1, 1.0)], |_| ()).unwrap();
        wal.append(&[dp("b", 2, 2.0)], |_| ()).unwrap();
        drop(wal);
        let path = segment_path(dir.path(), 1);
        let bytes = fs::read(&path).unwrap();
        fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
        let mut seen = Vec::new();
        let (_, torn) = Wal::open(dir.path(), 1 << 20, SyncPolicy::Never, |_, b| {
            seen.extend(b)
        })
        .unwrap();
        assert_eq!(torn, 1);
        assert_eq!(seen, vec![dp("a", 1, 1.0)]);
    }
}

//! Opening and creating whisper files on disk: header reads, advisory locks,
//! and `create` with whisper's layout (allocated, zero-filled or sparse).

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use super::format::{encode_header, ArchiveInfo, Header, POINT_SIZE};
use super::paged::{Paged, Prefetched};
use super::{fetch, update, validate_archive_list, AggregationMethod, Blocks, Retention, Series};
use super::{Result, WhisperError};

/// How a new file is set up; the defaults are whisper's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CreateOptions {
    /// Fraction of known points needed to propagate (default 0.5).
    pub x_files_factor: f64,
    /// Propagation method (default average).
    pub aggregation: AggregationMethod,
    /// Write only the last byte and let the filesystem leave holes.
    pub sparse: bool,
}

impl Default for CreateOptions {
    fn default() -> Self {
        CreateOptions {
            x_files_factor: 0.5,
            aggregation: AggregationMethod::Average,
            sparse: false,
        }
    }
}

/// Checks an xFilesFactor as whisper does before it is stored as an f32.
pub(crate) fn check_x_files_factor(xff: f64) -> Result<f32> {
    if !(0.0..=1.0).contains(&xff) {
        return Err(WhisperError::InvalidXFilesFactor(format!(
            "Invalid xFilesFactor {xff:?}, not between 0 and 1"
        )));
    }
    Ok(xff as f32)
}

/// The header `create` writes for `archives` (validated and sorted first).
pub fn layout(archives: &[Retention], opts: &CreateOptions) -> Result<Header> {
    let mut archives = archives.to_vec();
    validate_archive_list(&mut archives)?;
    let x_files_factor = check_x_files_factor(opts.x_files_factor)?;
    let max_retention = archives.iter().map(Retention::retention).max().unwrap_or(0);
    let max_retention = u32::try_from(max_retention).map_err(|_| {
        WhisperError::InvalidConfiguration(format!(
            "a retention of {max_retention} seconds does not fit whisper's 32-bit header"
        ))
    })?;
    let mut offset = Header::size_for(archives.len());
    let mut infos = Vec::with_capacity(archives.len());
    for a in &archives {
        let start = u32::try_from(offset).map_err(|_| {
            WhisperError::InvalidConfiguration(
                "the archives make a file over 4 GiB, past whisper's 32-bit offsets".into(),
            )
        })?;
        infos.push(ArchiveInfo {
            offset: start,
            seconds_per_point: a.seconds_per_point,
            points: a.points,
        });
        offset += u64::from(a.points) * POINT_SIZE;
    }
    Ok(Header {
        aggregation: opts.aggregation,
        max_retention,
        x_files_factor,
        archives: infos,
    })
}

/// Writes a new file's bytes into `blocks`: the header, then zeroed archives
/// (or only the last byte when sparse). Returns the header written.
pub fn create_in<B: Blocks>(
    blocks: &mut B,
    archives: &[Retention],
    opts: &CreateOptions,
) -> Result<Header> {
    let header = layout(archives, opts)?;
    let end = header
        .archives
        .last()
        .map(ArchiveInfo::end)
        .unwrap_or(header.size());
    let io = |e| WhisperError::io("<buffer>", e);
    blocks.write_at(&encode_header(&header), 0).map_err(io)?;
    if opts.sparse {
        blocks.write_at(&[0], end - 1).map_err(io)?;
    } else {
        let zeroes = [0u8; 16384];
        let mut at = header.size();
        while at < end {
            let n = (end - at).min(zeroes.len() as u64) as usize;
            blocks.write_at(&zeroes[..n], at).map_err(io)?;
            at += n as u64;
        }
    }
    Ok(header)
}

/// Creates a whisper file as `whisper.create` does. Fails if `path` exists;
/// removes the half-written file if a write fails.
pub fn create(path: &Path, archives: &[Retention], opts: &CreateOptions) -> Result<Header> {
    // Validate before touching the disk, so a bad request leaves no file behind
    // (Python whisper leaves an empty one on a bad aggregation method).
    layout(archives, opts)?;
    let mut file = match OpenOptions::new()
        .write(true)
        .read(true)
        .create_new(true)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(WhisperError::AlreadyExists(path.to_path_buf()))
        }
        Err(e) => return Err(WhisperError::io(path, e)),
    };
    // Held until the file is closed, so a reader taking the lock never sees a
    // header without its archives.
    file.lock().map_err(|e| WhisperError::io(path, e))?;
    match fill(&mut file, archives, opts) {
        Ok(header) => Ok(header),
        Err(e) => {
            drop(file);
            let _ = std::fs::remove_file(path);
            Err(match e {
                WhisperError::Io { source, .. } => WhisperError::io(path, source),
                other => other,
            })
        }
    }
}
/// Writes a new file's header and archives: as carbon with
/// WHISPER_FALLOCATE_CREATE (its default), the archives allocated, not
/// written (they read as zeros all the same; no 20 KB of dirty pages per
/// file for the disk to write); zero-filled where the filesystem cannot;
/// sparse when asked.
fn fill(file: &mut File, archives: &[Retention], opts: &CreateOptions) -> Result<Header> {
    if !opts.sparse {
        let header = layout(archives, opts)?;
        let end = header.archives.last().map_or(0, ArchiveInfo::end);
        if allocate(file, header.size(), end) {
            use std::os::unix::fs::FileExt;
            file.write_all_at(&encode_header(&header), 0)
                .map_err(|e| WhisperError::io("<new file>", e))?;
            return Ok(header);
        }
    }
    create_in(file, archives, opts)
}

/// Allocates `[from, to)` of a new file without writing it (`fallocate`);
/// false where the filesystem does not support it.
fn allocate(file: &File, from: u64, to: u64) -> bool {
    use std::os::fd::AsRawFd;
    if to <= from {
        return false;
    }
    let (Ok(offset), Ok(len)) = (
        libc::off_t::try_from(from),
        libc::off_t::try_from(to - from),
    ) else {
        return false;
    };
    // SAFETY: the descriptor is open for writing for the call's duration.
    unsafe { libc::fallocate(file.as_raw_fd(), 0, offset, len) == 0 }
}

/// Bytes read from the start of a file at open: the header, plus whatever
/// else shares its first page (often the first archive's base point).
const HEAD_READ: u64 = 4096;

/// Creates a whisper file so that it appears whole or not at all: written
/// under a temporary name in the same directory, then linked into place
/// (failing if `path` exists, never replacing it). A crash mid-way leaves at
/// most a stray `.tmp` file, never a truncated `.wsp`. (Durability against
/// power loss comes from the writer's `syncfs` before the log is released,
/// not from a per-file fsync, which would cost a disk flush per new metric.)
pub fn create_atomic(path: &Path, archives: &[Retention], opts: &CreateOptions) -> Result<Header> {
    layout(archives, opts)?;
    // Linux: an unnamed file in the directory, linked into place when whole
    // (one directory entry made, none removed). Elsewhere, or where the
    // filesystem has no O_TMPFILE: a temporary name, linked, then removed.
    if let Some(dir) = path.parent() {
        match create_unnamed(dir, path, archives, opts) {
            Err(WhisperError::Io { source, .. })
                if matches!(
                    source.raw_os_error(),
                    Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL | libc::ENOENT)
                ) && source.kind() != std::io::ErrorKind::AlreadyExists => {}
            other => return other,
        }
    }
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("metric.wsp");
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let header = create(&tmp, archives, opts)?;
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(header),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            Err(WhisperError::AlreadyExists(path.to_path_buf()))
        }
        Err(e) => Err(WhisperError::io(path, e)),
    }
}

/// [`create_atomic`] with `O_TMPFILE` and `linkat`.
fn create_unnamed(
    dir: &Path,
    path: &Path,
    archives: &[Retention],
    opts: &CreateOptions,
) -> Result<Header> {
    use std::os::fd::AsRawFd;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_TMPFILE)
        .mode(0o666)
        .open(dir)
        .map_err(|e| WhisperError::io(dir, e))?;
    let header = fill(&mut file, archives, opts)?;
    let from = std::ffi::CString::new(format!("/proc/self/fd/{}", file.as_raw_fd()))
        .map_err(|e| WhisperError::io(path, std::io::Error::other(e)))?;
    let to = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| WhisperError::io(path, std::io::Error::other(e)))?;
    // SAFETY: both are NUL-terminated paths alive for the call.
    let r = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    if r != 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            return Err(WhisperError::AlreadyExists(path.to_path_buf()));
        }
        return Err(WhisperError::io(path, e));
    }
    Ok(header)
}

/// Whether `O_NOATIME` was refused once (files owned by another user):
/// later opens then go without it rather than fail twice.
static NOATIME_REFUSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Opens for reading and writing without updating the access time.
///
/// An update reads the file before writing it, and under `relatime` every
/// such read after a write dirties the inode again: about a tenth of an
/// update's cost went to journaling access times. Without it, a file's
/// access time says when a query last read it, not when the writer did.
fn open_for_update(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    use std::sync::atomic::Ordering;
    let mut options = OpenOptions::new();
    options.read(true).write(true);
    if !NOATIME_REFUSED.load(Ordering::Relaxed) {
        match options.clone().custom_flags(libc::O_NOATIME).open(path) {
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                NOATIME_REFUSED.store(true, Ordering::Relaxed)
            }
            other => return other,
        }
    }
    options.open(path)
}

/// Reads and checks the header of `blocks`, returning it with the bytes read
/// from offset 0 and the file's length.
pub(crate) fn read_header<B: Blocks>(blocks: &B, path: &Path) -> Result<(Header, Vec<u8>, u64)> {
    let io = |e| WhisperError::io(path, e);
    let len = blocks.len().map_err(io)?;
    let mut head = vec![0u8; len.min(HEAD_READ) as usize];
    blocks.read_at(&mut head, 0).map_err(io)?;
    let wanted = Header::declared_size(&head).unwrap_or(0).min(len);
    if wanted > head.len() as u64 {
        // A header longer than a page: thousands of archives, or garbage.
        head = vec![0u8; wanted as usize];
        blocks.read_at(&mut head, 0).map_err(io)?;
    }
    let header = Header::parse(&head, len).map_err(|reason| WhisperError::corrupt(path, reason))?;
    Ok((header, head, len))
}

/// An open whisper file with its parsed header.
///
/// Opened for writing, it holds an exclusive advisory lock (`flock`, as
/// whisper takes with `LOCK = True`) until dropped, so two writers never
/// interleave their read-modify-write of the same archive.
#[derive(Debug)]
pub struct WhisperFile {
    path: PathBuf,
    file: File,
    header: Header,
    /// The file's first bytes as last read or written, for base-point reads.
    head: Vec<u8>,
    len: u64,
}

impl WhisperFile {
    /// Opens for reading.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|e| WhisperError::io(path, e))?;
        let (header, head, len) = read_header(&file, path)?;
        Ok(WhisperFile {
            path: path.to_path_buf(),
            file,
            header,
            head,
            len,
        })
    }

    /// Opens for reading and writing, taking the exclusive lock first.
    pub fn open_rw(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = open_for_update(path).map_err(|e| WhisperError::io(path, e))?;
        // The header is read under the lock: another writer may be resizing.
        file.lock().map_err(|e| WhisperError::io(path, e))?;
        let (header, head, len) = read_header(&file, path)?;
        Ok(WhisperFile {
            path: path.to_path_buf(),
            file,
            header,
            head,
            len,
        })
    }

    /// The parsed header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The path it was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The underlying file, for callers that read raw bytes (whisper dump).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// `whisper.fetch`: see [`fetch`](super::fetch).
    pub fn fetch(
        &self,
        from: i64,
        until: Option<i64>,
        now: i64,
        archive: Option<u32>,
    ) -> Result<Option<Series>> {
        let view = Prefetched {
            inner: &self.file,
            head: &self.head,
        };
        fetch::fetch(&view, &self.header, &self.path, from, until, now, archive)
    }

    /// [`fetch`](Self::fetch) of the whole range without an archive
    /// chosen, reading only the slots that overlap `window`: see
    /// [`fetch_window`](super::fetch::fetch_window).
    pub fn fetch_window(
        &self,
        from: i64,
        until: Option<i64>,
        now: i64,
        window: (i64, i64),
    ) -> Result<Option<Series>> {
        let view = Prefetched {
            inner: &self.file,
            head: &self.head,
        };
        fetch::fetch_window(&view, &self.header, &self.path, (from, until, now), window)
    }

    /// `whisper.update`: see [`update`](super::update).
    pub fn update(&mut self, value: f64, timestamp: Option<i64>, now: i64) -> Result<()> {
        self.paged(|blocks, header, path| {
            update::update(blocks, header, path, value, timestamp, now)
        })
    }

    /// `whisper.update_many`: see [`update_many`](super::update_many).
    pub fn update_many(&mut self, points: &[(i64, f64)], now: i64) -> Result<()> {
        self.paged(|blocks, header, path| update::update_many(blocks, header, path, points, now))
    }

    /// Writes chronological `points` into one archive and propagates (merge).
    pub(crate) fn archive_update_many(
        &mut self,
        archive: &ArchiveInfo,
        points: &[(i64, f64)],
    ) -> Result<()> {
        self.paged(|blocks, header, path| {
            update::archive_update_many(blocks, header, path, archive, points)
        })
    }

    /// Runs a write through a page cache, then flushes it even after an
    /// error: whisper's writes made before an error stay on disk, so ours do.
    fn paged(
        &mut self,
        op: impl FnOnce(&mut Paged<'_, File>, &Header, &Path) -> Result<()>,
    ) -> Result<()> {
        let n = self.head.len();
        let head = std::mem::take(&mut self.head);
        let mut paged = Paged::new(&mut self.file, self.len, Some(head));
        let result = op(&mut paged, &self.header, &self.path);
        let flushed = paged.flush().map_err(|e| WhisperError::io(&self.path, e));
        self.len = paged.len().unwrap_or(self.len);
        // Without page 0 back, reads of the first bytes go to the file.
        self.head = paged.into_first_page(n).unwrap_or_default();
        result.and(flushed)
    }

    /// Rewrites the metadata block (aggregation, xFilesFactor).
    pub(crate) fn write_metadata(
        &mut self,
        aggregation: AggregationMethod,
        xff: f32,
    ) -> Result<()> {
        let meta = super::format::encode_metadata(
            aggregation,
            self.header.max_retention,
            xff,
            self.header.archives.len() as u32,
        );
        Blocks::write_at(&mut self.file, &meta, 0).map_err(|e| WhisperError::io(&self.path, e))?;
        self.head[..meta.len()].copy_from_slice(&meta);
        self.header.aggregation = aggregation;
        self.header.x_files_factor = xff;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An update leaves the access time alone: it says when a query last
    /// read the file. Set two days back, `relatime` would move it on the
    /// update's own read.
    #[test]
    fn an_update_does_not_touch_the_access_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.wsp");
        let archives = [Retention {
            seconds_per_point: 10,
            points: 100,
        }];
        create(&path, &archives, &CreateOptions::default()).unwrap();
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(2 * 86_400);
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_times(
                std::fs::FileTimes::new()
                    .set_accessed(old)
                    .set_modified(old),
            )
            .unwrap();
        let now = 1_700_000_000;
        let mut file = WhisperFile::open_rw(&path).unwrap();
        file.update_many(&[(now - 10, 1.0)], now).unwrap();
        drop(file);
        let accessed = std::fs::metadata(&path).unwrap().accessed().unwrap();
        assert_eq!(accessed, old);
    }
}

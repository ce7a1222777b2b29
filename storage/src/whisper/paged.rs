//! A write-back page cache over [`Blocks`] for one operation on one file.
//!
//! Whisper's algorithms read and write in 12-byte steps (a base point, a
//! slot, the slots behind one coarser slot). Run straight against the file
//! that is one system call each, dozens per batch. Run against this cache
//! they touch each 4 KiB page once: the first access reads it, writes land in
//! memory, and [`Paged::flush`] writes each dirty range back with one
//! `pwrite`. The algorithms are unchanged, so the bytes on disk are too.
//! A page only written to (a coarser archive's slots) is never read: its
//! written bytes stay one contiguous range until a read needs the rest.
//! Page buffers are reused across operations on a thread, so an update
//! neither allocates nor zeroes them.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;

use super::Blocks;

const PAGE: u64 = 4096;

/// Page buffers kept per thread for the next operation: a few updates'
/// worth, so a writer thread holds at most this many idle pages.
const POOLED: usize = 16;

thread_local! {
    static POOL: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
}

/// A page buffer with unspecified contents.
fn take_buffer() -> Box<[u8]> {
    POOL.with(|pool| pool.borrow_mut().pop())
        .unwrap_or_else(|| vec![0u8; PAGE as usize].into_boxed_slice())
}

fn give_back(buffer: Box<[u8]>) {
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        if pool.len() < POOLED && buffer.len() == PAGE as usize {
            pool.push(buffer);
        }
    });
}

struct Page {
    data: Box<[u8]>,
    /// Dirty byte range within the page, `lo..hi`; empty when clean.
    dirty: (usize, usize),
    /// Whether `data` holds the file's bytes outside `dirty`; when not,
    /// only the dirty range is meaningful.
    loaded: bool,
}

impl Page {
    /// A page not read yet: nothing written, nothing loaded (so nothing
    /// in `data` is meaningful).
    fn unread() -> Page {
        Page {
            data: take_buffer(),
            dirty: (0, 0),
            loaded: false,
        }
    }
}

/// Pages of `inner` cached for the duration of one operation.
pub(crate) struct Paged<'a, B: Blocks> {
    inner: &'a mut B,
    len: u64,
    /// The length before this operation's writes: what `inner` can read.
    existed: u64,
    // Reads fill the cache through `&self` (as `Blocks::read_at` takes it).
    pages: RefCell<BTreeMap<u64, Page>>,
}

impl<'a, B: Blocks> Paged<'a, B> {
    /// Wraps `inner`, whose current length is `len`. `first_page` may hand
    /// over bytes already read from offset 0 (the header read), saving a
    /// read; [`Paged::into_first_page`] gives them back as written.
    pub(crate) fn new(inner: &'a mut B, len: u64, first_page: Option<Vec<u8>>) -> Self {
        let paged = Paged {
            inner,
            len,
            existed: len,
            pages: RefCell::new(BTreeMap::new()),
        };
        if let Some(mut bytes) = first_page {
            let valid = len.min(PAGE) as usize;
            if bytes.len() >= valid {
                // Bytes past the file's end read as zeros, as a fresh page's.
                bytes.resize(PAGE as usize, 0);
                bytes[valid..].fill(0);
                paged.pages.borrow_mut().insert(
                    0,
                    Page {
                        data: bytes.into_boxed_slice(),
                        dirty: (0, 0),
                        loaded: true,
                    },
                );
            }
        }
        paged
    }

    /// Runs `f` on page `no` with the file's bytes in it, reading it from
    /// `inner` on first use (keeping whatever was already written there).
    fn with_page<T>(&self, no: u64, f: impl FnOnce(&mut Page) -> T) -> io::Result<T> {
        let mut pages = self.pages.borrow_mut();
        let page = pages.entry(no).or_insert_with(Page::unread);
        if !page.loaded {
            self.load(no, page)?;
        }
        Ok(f(page))
    }

    /// Reads page `no` from `inner` under the bytes written to it so far.
    fn load(&self, no: u64, page: &mut Page) -> io::Result<()> {
        let start = no * PAGE;
        // Bytes past the length before this operation were all written
        // here, or read as zeros as past a file's end.
        let existed = self.existed.saturating_sub(start).min(PAGE) as usize;
        let read = |data: &mut [u8]| -> io::Result<()> {
            if existed > 0 {
                self.inner.read_at(&mut data[..existed], start)?;
            }
            data[existed..].fill(0);
            Ok(())
        };
        let (lo, hi) = page.dirty;
        if lo >= hi {
            read(&mut page.data)?;
        } else {
            // Read apart, then the written bytes laid over what was read.
            let mut data = take_buffer();
            read(&mut data)?;
            data[lo..hi].copy_from_slice(&page.data[lo..hi]);
            give_back(std::mem::replace(&mut page.data, data));
        }
        page.loaded = true;
        Ok(())
    }

    /// The first `n` bytes of page 0 as they are now, if page 0 is cached.
    pub(crate) fn into_first_page(self, n: usize) -> Option<Vec<u8>> {
        let page = self.pages.borrow_mut().remove(&0).filter(|p| p.loaded)?;
        let mut data = page.data.into_vec();
        data.truncate(n);
        Some(data)
    }

    /// Writes every dirty range back to `inner`.
    pub(crate) fn flush(&mut self) -> io::Result<()> {
        for (no, page) in self.pages.get_mut() {
            let (lo, hi) = page.dirty;
            if lo < hi {
                self.inner
                    .write_at(&page.data[lo..hi], no * PAGE + lo as u64)?;
                page.dirty = (0, 0);
            }
        }
        Ok(())
    }
}

impl<B: Blocks> Drop for Paged<'_, B> {
    fn drop(&mut self) {
        for (_, page) in std::mem::take(self.pages.get_mut()) {
            give_back(page.data);
        }
    }
}

impl<B: Blocks> Blocks for Paged<'_, B> {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        if end > self.len {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let mut done = 0;
        while done < buf.len() {
            let at = offset + done as u64;
            let (no, within) = (at / PAGE, (at % PAGE) as usize);
            let n = (PAGE as usize - within).min(buf.len() - done);
            self.with_page(no, |page| {
                buf[done..done + n].copy_from_slice(&page.data[within..within + n])
            })?;
            done += n;
        }
        Ok(())
    }

    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut done = 0;
        while done < buf.len() {
            let at = offset + done as u64;
            let (no, within) = (at / PAGE, (at % PAGE) as usize);
            let n = (PAGE as usize - within).min(buf.len() - done);
            let end = at + n as u64;
            let chunk = &buf[done..done + n];
            let mut pages = self.pages.borrow_mut();
            let page = pages.entry(no).or_insert_with(Page::unread);
            let (lo, hi) = page.dirty;
            // An unread page keeps one contiguous written range: a write
            // apart from it would leave unread bytes inside the range that
            // the flush writes back, so the page is read first.
            if !page.loaded && lo < hi && (within > hi || within + n < lo) {
                self.load(no, page)?;
            }
            page.data[within..within + n].copy_from_slice(chunk);
            page.dirty = if lo < hi {
                (lo.min(within), hi.max(within + n))
            } else {
                (within, within + n)
            };
            drop(pages);
            self.len = self.len.max(end);
            done += n;
        }
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.len)
    }
}

/// Reads served from bytes already read at offset 0 when they fall inside
/// them, from `inner` otherwise: a fetch's base-point read usually lands in
/// the header read, and its data read is one large read either way.
pub(crate) struct Prefetched<'a, B: Blocks> {
    pub(crate) inner: &'a B,
    pub(crate) head: &'a [u8],
}

impl<B: Blocks> Blocks for Prefetched<'_, B> {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let end = offset as usize + buf.len();
        match self.head.get(offset as usize..end) {
            Some(bytes) => {
                buf.copy_from_slice(bytes);
                Ok(())
            }
            None => self.inner.read_at(buf, offset),
        }
    }

    fn write_at(&mut self, _buf: &[u8], _offset: u64) -> io::Result<()> {
        Err(io::Error::new(io::ErrorKind::Unsupported, "read-only view"))
    }

    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_writes_through_pages_then_flushes() {
        let mut file: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        let original = file.clone();
        {
            let mut paged = Paged::new(&mut file, 10_000, None);
            let mut buf = [0u8; 10];
            paged.read_at(&mut buf, 4090).unwrap();
            assert_eq!(&buf[..], &original[4090..4100]);
            paged.write_at(&[1, 2, 3, 4, 5, 6, 7, 8], 4092).unwrap();
            paged.write_at(&[9], 8000).unwrap();
            paged.read_at(&mut buf, 4090).unwrap();
            assert_eq!(
                &buf[..],
                &[original[4090], original[4091], 1, 2, 3, 4, 5, 6, 7, 8]
            );
            assert!(paged.read_at(&mut buf, 9995).is_err());
            paged.flush().unwrap();
        }
        let mut want = original;
        want[4092..4100].copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        want[8000] = 9;
        assert_eq!(file, want);
    }

    #[test]
    fn a_reused_page_buffer_shows_nothing_of_its_last_file() {
        // Fill this thread's pool with buffers holding another file's bytes.
        let mut other = vec![0xAAu8; 5 * PAGE as usize];
        {
            let paged = Paged::new(&mut other, 5 * PAGE, None);
            let mut buf = [0u8; 1];
            for no in 0..5 {
                paged.read_at(&mut buf, no * PAGE).unwrap();
            }
        }
        // A short file grown by a write past its end: the bytes between its
        // old end and the write read as zeros, as from a fresh buffer.
        let mut file = vec![1u8; 100];
        {
            let mut paged = Paged::new(&mut file, 100, None);
            paged.write_at(&[7, 7], 200).unwrap();
            let mut buf = [0xFFu8; 202];
            paged.read_at(&mut buf, 0).unwrap();
            assert!(buf[..100].iter().all(|&b| b == 1));
            assert!(buf[100..200].iter().all(|&b| b == 0));
            assert_eq!(&buf[200..], &[7, 7]);
            paged.flush().unwrap();
        }
        assert_eq!(file.len(), 202);
        assert!(file[100..200].iter().all(|&b| b == 0));
    }

    /// A buffer that counts the reads reaching it.
    struct Counted {
        bytes: Vec<u8>,
        reads: std::cell::Cell<usize>,
    }

    impl Blocks for Counted {
        fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
            self.reads.set(self.reads.get() + 1);
            self.bytes.read_at(buf, offset)
        }
        fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
            self.bytes.write_at(buf, offset)
        }
        fn len(&self) -> io::Result<u64> {
            Blocks::len(&self.bytes)
        }
    }

    #[test]
    fn a_page_only_written_is_never_read_and_apart_writes_keep_the_bytes_between() {
        let original: Vec<u8> = (0..12_288u32).map(|i| (i % 251) as u8).collect();
        let mut file = Counted {
            bytes: original.clone(),
            reads: std::cell::Cell::new(0),
        };
        {
            let mut paged = Paged::new(&mut file, 12_288, None);
            // Touching and overlapping writes on page 1: no read.
            paged.write_at(&[1; 12], 4200).unwrap();
            paged.write_at(&[2; 12], 4212).unwrap();
            paged.write_at(&[3; 4], 4196).unwrap();
            assert_eq!(paged.inner.reads.get(), 0);
            // A write apart from page 2's range reads the page first.
            paged.write_at(&[4; 12], 8200).unwrap();
            paged.write_at(&[5; 12], 9000).unwrap();
            assert_eq!(paged.inner.reads.get(), 1);
            // A read of page 1 sees the file under what was written.
            let mut buf = [0u8; 40];
            paged.read_at(&mut buf, 4180).unwrap();
            assert_eq!(&buf[..16], &original[4180..4196]);
            assert_eq!(&buf[16..20], &[3; 4]);
            assert_eq!(&buf[20..32], &[1; 12]);
            assert_eq!(&buf[32..40], &[2; 8]);
            paged.flush().unwrap();
        }
        let mut want = original;
        want[4196..4200].copy_from_slice(&[3; 4]);
        want[4200..4212].copy_from_slice(&[1; 12]);
        want[4212..4224].copy_from_slice(&[2; 12]);
        want[8200..8212].copy_from_slice(&[4; 12]);
        want[9000..9012].copy_from_slice(&[5; 12]);
        assert_eq!(file.bytes, want);
    }
}

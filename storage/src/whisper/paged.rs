//! A write-back page cache over [`Blocks`] for one operation on one file.
//!
//! Whisper's algorithms read and write in 12-byte steps (a base point, a
//! slot, the slots behind one coarser slot). Run straight against the file
//! that is one system call each, dozens per batch. Run against this cache
//! they touch each 4 KiB page once: the first access reads it, writes land in
//! memory, and [`Paged::flush`] writes each dirty range back with one
//! `pwrite`. The algorithms are unchanged, so the bytes on disk are too.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;

use super::Blocks;

const PAGE: u64 = 4096;

struct Page {
    data: Box<[u8]>,
    /// Dirty byte range within the page, `lo..hi`; empty when clean.
    dirty: (usize, usize),
}

/// Pages of `inner` cached for the duration of one operation.
pub(crate) struct Paged<'a, B: Blocks> {
    inner: &'a mut B,
    len: u64,
    // Reads fill the cache through `&self` (as `Blocks::read_at` takes it).
    pages: RefCell<BTreeMap<u64, Page>>,
}

impl<'a, B: Blocks> Paged<'a, B> {
    /// Wraps `inner`, whose current length is `len`. `first_page` may hand
    /// over bytes already read from offset 0 (the header read), saving a read.
    pub(crate) fn new(inner: &'a mut B, len: u64, first_page: Option<&[u8]>) -> Self {
        let paged = Paged {
            inner,
            len,
            pages: RefCell::new(BTreeMap::new()),
        };
        if let Some(bytes) = first_page {
            let valid = len.min(PAGE) as usize;
            if bytes.len() >= valid {
                let mut data = vec![0u8; PAGE as usize].into_boxed_slice();
                data[..valid].copy_from_slice(&bytes[..valid]);
                paged.pages.borrow_mut().insert(
                    0,
                    Page {
                        data,
                        dirty: (0, 0),
                    },
                );
            }
        }
        paged
    }

    /// Runs `f` on page `no`, reading it from `inner` on first use.
    fn with_page<T>(&self, no: u64, f: impl FnOnce(&mut Page) -> T) -> io::Result<T> {
        let mut pages = self.pages.borrow_mut();
        let page = match pages.entry(no) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => {
                let start = no * PAGE;
                let valid = self.len.saturating_sub(start).min(PAGE) as usize;
                let mut data = vec![0u8; PAGE as usize].into_boxed_slice();
                if valid > 0 {
                    self.inner.read_at(&mut data[..valid], start)?;
                }
                e.insert(Page {
                    data,
                    dirty: (0, 0),
                })
            }
        };
        Ok(f(page))
    }

    /// The first `n` bytes of page 0 as they are now, if page 0 is cached.
    pub(crate) fn first_page(&self, n: usize) -> Option<Vec<u8>> {
        self.pages
            .borrow()
            .get(&0)
            .map(|p| p.data[..n.min(PAGE as usize)].to_vec())
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
            self.with_page(no, |page| {
                page.data[within..within + n].copy_from_slice(chunk);
                page.dirty = if page.dirty.0 < page.dirty.1 {
                    (page.dirty.0.min(within), page.dirty.1.max(within + n))
                } else {
                    (within, within + n)
                };
            })?;
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
}

//! Writing points: `update` (one point) and `update_many` (a batch), each
//! followed by propagation into the coarser archives, step for step as
//! whisper 1.1.10 does it so the bytes on disk come out the same.

use std::path::Path;

use super::format::{
    aggregate, decode_point, encode_point, push_point, ArchiveInfo, Header, POINT_SIZE,
};
use super::pyset::set_iteration_order;
use super::{Blocks, Result, WhisperError};

pub(crate) fn read_point<B: Blocks>(blocks: &B, path: &Path, offset: u64) -> Result<(u32, f64)> {
    let mut buf = [0u8; POINT_SIZE as usize];
    blocks
        .read_at(&mut buf, offset)
        .map_err(|e| WhisperError::io(path, e))?;
    Ok(decode_point(&buf))
}

/// Where `interval` lives in `archive`, counting slots from the base point.
/// Each archive's base timestamp (its first slot's), read once per update:
/// propagation would read it again for every coarser slot it writes. A
/// write into an empty archive sets it, as the file then holds it.
#[derive(Default)]
struct Bases(Vec<(u32, u32)>);

impl Bases {
    fn get<B: Blocks>(&mut self, blocks: &B, path: &Path, archive: &ArchiveInfo) -> Result<u32> {
        if let Some(&(_, base)) = self.0.iter().find(|(o, _)| *o == archive.offset) {
            return Ok(base);
        }
        let (base, _) = read_point(blocks, path, u64::from(archive.offset))?;
        self.0.push((archive.offset, base));
        Ok(base)
    }

    fn set(&mut self, archive: &ArchiveInfo, base: u32) {
        match self.0.iter_mut().find(|(o, _)| *o == archive.offset) {
            Some(slot) => slot.1 = base,
            None => self.0.push((archive.offset, base)),
        }
    }
}

pub(crate) fn slot_offset(archive: &ArchiveInfo, base: u32, interval: i64) -> u64 {
    let step = i64::from(archive.seconds_per_point);
    let byte_distance = (interval - i64::from(base)).div_euclid(step) * POINT_SIZE as i64;
    u64::from(archive.offset) + byte_distance.rem_euclid(archive.size() as i64) as u64
}

/// Reads `[first, last)` of an archive's ring, wrapping past its end when
/// `last <= first` (whisper's two-read case, which covers the whole ring when equal).
pub(crate) fn read_wrapped<B: Blocks>(
    blocks: &B,
    path: &Path,
    archive: &ArchiveInfo,
    first: u64,
    last: u64,
) -> Result<Vec<u8>> {
    let io = |e| WhisperError::io(path, e);
    if first < last {
        let mut buf = vec![0u8; (last - first) as usize];
        blocks.read_at(&mut buf, first).map_err(io)?;
        Ok(buf)
    } else {
        let head = (archive.end() - first) as usize;
        let mut buf = vec![0u8; head + (last - u64::from(archive.offset)) as usize];
        blocks.read_at(&mut buf[..head], first).map_err(io)?;
        blocks
            .read_at(&mut buf[head..], u64::from(archive.offset))
            .map_err(io)?;
        Ok(buf)
    }
}

/// Writes `data` at `offset`, continuing at the archive's start when it runs
/// past the end. Whisper writes an over-long run's tail past the start, into
/// the next archive; graunt wraps again instead so a batch can never damage
/// another archive. Runs no longer than the archive give the same bytes.
fn write_wrapped<B: Blocks>(
    blocks: &mut B,
    path: &Path,
    archive: &ArchiveInfo,
    offset: u64,
    data: &[u8],
) -> Result<()> {
    let (mut at, mut rest) = (offset, data);
    while !rest.is_empty() {
        let n = ((archive.end() - at) as usize).min(rest.len());
        blocks
            .write_at(&rest[..n], at)
            .map_err(|e| WhisperError::io(path, e))?;
        rest = &rest[n..];
        at = u64::from(archive.offset);
    }
    Ok(())
}

/// Writes one point at its slot, making it the base point of an empty archive.
fn write_point<B: Blocks>(
    blocks: &mut B,
    path: &Path,
    archive: &ArchiveInfo,
    interval: i64,
    value: f64,
    bases: &mut Bases,
) -> Result<()> {
    let packed = encode_point(interval, value)?;
    let base = bases.get(blocks, path, archive)?;
    let at = if base == 0 {
        // The archive's first point: its base from now on.
        bases.set(archive, decode_point(&packed).0);
        u64::from(archive.offset)
    } else {
        slot_offset(archive, base, interval)
    };
    blocks
        .write_at(&packed, at)
        .map_err(|e| WhisperError::io(path, e))
}

/// Recomputes the slot of `lower` holding `timestamp` from the points of
/// `higher` it covers; false when too few are known (xFilesFactor), which
/// stops propagation further down.
/// The bytes of a stretch of an archive, read once for the propagations
/// of one update into the next archive (which do not write to it): from
/// the slot of `start` on, in time order.
struct Window {
    start: i64,
    bytes: Vec<u8>,
}

impl Window {
    /// The higher archive's slots under the lower archive's intervals
    /// `starts`, when they span at most the archive and it has a base.
    fn read<B: Blocks>(
        blocks: &B,
        path: &Path,
        higher: &ArchiveInfo,
        lower: &ArchiveInfo,
        starts: &[i64],
        bases: &mut Bases,
    ) -> Result<Option<Window>> {
        let (Some(&first), Some(&last)) = (starts.iter().min(), starts.iter().max()) else {
            return Ok(None);
        };
        let base = bases.get(blocks, path, higher)?;
        let len = (last + i64::from(lower.seconds_per_point) - first)
            / i64::from(higher.seconds_per_point)
            * POINT_SIZE as i64;
        if base == 0 || len <= 0 || len as u64 > higher.size() || starts.len() < 2 {
            return Ok(None);
        }
        let from = slot_offset(higher, base, first);
        let to = (from - u64::from(higher.offset) + len as u64) % higher.size()
            + u64::from(higher.offset);
        let bytes = read_wrapped(blocks, path, higher, from, to)?;
        Ok(Some(Window {
            start: first,
            bytes,
        }))
    }

    /// The bytes of `span` from the slot of `at`, if the window holds them.
    fn slice(&self, at: i64, step: i64, span: u64) -> Option<&[u8]> {
        let skip = usize::try_from((at - self.start) / step).ok()? * POINT_SIZE as usize;
        self.bytes.get(skip..skip + span as usize)
    }
}

/// Buffers one update's propagations reuse, rather than allocating two
/// lists for every coarser slot they recompute.
#[derive(Default)]
struct Scratch {
    neighbors: Vec<Option<f64>>,
    known: Vec<f64>,
}

#[allow(clippy::too_many_arguments)]
fn propagate<B: Blocks>(
    blocks: &mut B,
    header: &Header,
    path: &Path,
    timestamp: i64,
    higher: &ArchiveInfo,
    lower: &ArchiveInfo,
    bases: &mut Bases,
    window: Option<&Window>,
    scratch: &mut Scratch,
) -> Result<bool> {
    let lower_start = timestamp - timestamp.rem_euclid(i64::from(lower.seconds_per_point));
    let span = u64::from(lower.seconds_per_point / higher.seconds_per_point) * POINT_SIZE;
    let prefetched =
        window.and_then(|w| w.slice(lower_start, i64::from(higher.seconds_per_point), span));
    let data: std::borrow::Cow<'_, [u8]> = match prefetched {
        Some(d) => d.into(),
        None => {
            let higher_base = bases.get(blocks, path, higher)?;
            let first = if higher_base == 0 {
                u64::from(higher.offset)
            } else {
                slot_offset(higher, higher_base, lower_start)
            };
            let last = (first - u64::from(higher.offset) + span) % higher.size()
                + u64::from(higher.offset);
            read_wrapped(blocks, path, higher, first, last)?.into()
        }
    };

    let step = i64::from(higher.seconds_per_point);
    let Scratch { neighbors, known } = scratch;
    neighbors.clear();
    neighbors.extend(
        data.chunks_exact(POINT_SIZE as usize)
            .enumerate()
            .map(|(i, chunk)| {
                let (ts, value) = decode_point(chunk);
                (i64::from(ts) == lower_start + i as i64 * step).then_some(value)
            }),
    );
    known.clear();
    known.extend(neighbors.iter().flatten());
    if known.is_empty() {
        return Ok(false);
    }
    if (known.len() as f64 / neighbors.len() as f64) < f64::from(header.x_files_factor) {
        return Ok(false);
    }
    let value = aggregate(header.aggregation, known, neighbors).unwrap_or(f64::NAN);
    write_point(blocks, path, lower, lower_start, value, bases)?;
    Ok(true)
}

/// `whisper.update`: stores one point in the most precise archive that covers
/// it and propagates down while each coarser slot has enough known points.
/// `timestamp` defaults to `now`; a point in the future or older than the
/// file's retention is refused.
pub fn update<B: Blocks>(
    blocks: &mut B,
    header: &Header,
    path: &Path,
    value: f64,
    timestamp: Option<i64>,
    now: i64,
) -> Result<()> {
    let timestamp = timestamp.unwrap_or(now);
    let diff = now - timestamp;
    if !(diff < i64::from(header.max_retention) && diff >= 0) {
        return Err(WhisperError::TimestampNotCovered);
    }
    let Some(index) = header.archives.iter().position(|a| a.retention() >= diff) else {
        return Err(WhisperError::corrupt(
            path,
            format!(
                "maxRetention {} is longer than every archive",
                header.max_retention
            ),
        ));
    };
    let archive = &header.archives[index];
    let interval = timestamp - timestamp.rem_euclid(i64::from(archive.seconds_per_point));
    let mut bases = Bases::default();
    let mut scratch = Scratch::default();
    write_point(blocks, path, archive, interval, value, &mut bases)?;

    let mut higher = archive;
    for lower in &header.archives[index + 1..] {
        if !propagate(
            blocks,
            header,
            path,
            interval,
            higher,
            lower,
            &mut bases,
            None,
            &mut scratch,
        )? {
            break;
        }
        higher = lower;
    }
    Ok(())
}

/// `whisper.update_many`: stores a batch, each point in the most precise
/// archive whose retention covers its age (points older than the file keeps
/// are dropped, future ones go to the first archive), then propagates.
/// Of several points in one slot, the one given first wins, as in whisper.
pub fn update_many<B: Blocks>(
    blocks: &mut B,
    header: &Header,
    path: &Path,
    points: &[(i64, f64)],
    now: i64,
) -> Result<()> {
    if points.is_empty() {
        return Ok(());
    }
    let mut points = points.to_vec();
    // Stable, so equal timestamps keep their given order, as Python's reverse sort.
    points.sort_by_key(|p| std::cmp::Reverse(p.0));

    let mut archives = header.archives.iter();
    let mut current = archives.next();
    let mut batch: Vec<(i64, f64)> = Vec::with_capacity(points.len());
    for point in points {
        let age = now - point.0;
        while let Some(archive) = current.filter(|a| a.retention() < age) {
            if !batch.is_empty() {
                batch.reverse();
                archive_update_many(blocks, header, path, archive, &batch)?;
                batch.clear();
            }
            current = archives.next();
        }
        if current.is_none() {
            break;
        }
        batch.push(point);
    }
    if let Some(archive) = current {
        if !batch.is_empty() {
            batch.reverse();
            archive_update_many(blocks, header, path, archive, &batch)?;
        }
    }
    Ok(())
}

/// Writes chronologically ordered `points` into one archive as contiguous
/// runs, then propagates every touched coarser slot.
pub(crate) fn archive_update_many<B: Blocks>(
    blocks: &mut B,
    header: &Header,
    path: &Path,
    archive: &ArchiveInfo,
    points: &[(i64, f64)],
) -> Result<()> {
    let step = i64::from(archive.seconds_per_point);
    let aligned: Vec<(i64, f64)> = points
        .iter()
        .map(|&(t, v)| (t - t.rem_euclid(step), v))
        .collect();

    let mut runs: Vec<(i64, Vec<u8>)> = Vec::new();
    let mut previous: Option<i64> = None;
    // Most batches are one run: sized for it, it never grows.
    let mut run: Vec<u8> = Vec::with_capacity(points.len() * POINT_SIZE as usize);
    let run_start = |previous: i64, run: &[u8]| previous - step * (run.len() as i64 / 12 - 1);
    for (i, &(interval, value)) in aligned.iter().enumerate() {
        // The last point of a run of equal intervals wins.
        if aligned.get(i + 1).is_some_and(|next| next.0 == interval) {
            continue;
        }
        match previous {
            // Whisper tests `not previousInterval`, so an interval of 0 also
            // continues the current run.
            None | Some(0) => {}
            Some(p) if interval == p + step => {}
            Some(p) => runs.push((run_start(p, &run), std::mem::take(&mut run))),
        }
        push_point(&mut run, interval, value)?;
        previous = Some(interval);
    }
    if let Some(p) = previous.filter(|_| !run.is_empty()) {
        runs.push((run_start(p, &run), run));
    }

    let (mut base, _) = read_point(blocks, path, u64::from(archive.offset))?;
    if base == 0 {
        base =
            u32::try_from(runs[0].0).map_err(|_| WhisperError::TimestampOutOfRange(runs[0].0))?;
    }
    for (interval, packed) in &runs {
        let at = slot_offset(archive, base, *interval);
        write_wrapped(blocks, path, archive, at, packed)?;
    }
    let mut bases = Bases::default();
    bases.set(archive, base);
    let mut scratch = Scratch::default();

    let mut higher = archive;
    for lower in header
        .archives
        .iter()
        .filter(|a| a.seconds_per_point > archive.seconds_per_point)
    {
        let lower_step = i64::from(lower.seconds_per_point);
        let intervals: Vec<i64> = aligned
            .iter()
            .map(|(t, _)| t - t.rem_euclid(lower_step))
            .collect();
        let mut propagated = false;
        let order = set_iteration_order(&intervals);
        let window = Window::read(blocks, path, higher, lower, &order, &mut bases)?;
        for interval in order {
            propagated |= propagate(
                blocks,
                header,
                path,
                interval,
                higher,
                lower,
                &mut bases,
                window.as_ref(),
                &mut scratch,
            )?;
        }
        if !propagated {
            break;
        }
        higher = lower;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::whisper::{create_in, fetch_archive, CreateOptions, Retention};

    /// Whisper writes the tail of a run longer than the archive past the
    /// archive's end, into the next archive; graunt keeps it inside.
    #[test]
    fn run_longer_than_archive_stays_inside() {
        let mut buf = Vec::new();
        let archives = [
            Retention {
                seconds_per_point: 60,
                points: 5,
            },
            Retention {
                seconds_per_point: 300,
                points: 10,
            },
        ];
        let header = create_in(
            &mut buf,
            &archives,
            &CreateOptions {
                x_files_factor: 1.0,
                ..Default::default()
            },
        )
        .unwrap();
        let path = Path::new("mem.wsp");
        let now = 6000;
        // Slot 4 becomes the base, then a 9-point run reaching 4 steps into the future.
        update_many(&mut buf, &header, path, &[(now - 60, 1.0)], now).unwrap();
        let before_next = buf[header.archives[1].offset as usize..].to_vec();
        let run: Vec<(i64, f64)> = (0..9).map(|i| (now - 240 + i * 60, i as f64)).collect();
        let first = &header.archives[0];
        archive_update_many(&mut buf, &header, path, first, &run).unwrap();
        let series = fetch_archive(&buf, path, first, now - 300 + 240, now + 240).unwrap();
        assert_eq!(
            series.values,
            vec![Some(4.0), Some(5.0), Some(6.0), Some(7.0), Some(8.0)]
        );
        // Propagation may have written the 300 s archive, but no 60 s point landed there.
        let next = &buf[header.archives[1].offset as usize..];
        for (chunk, old) in next.chunks(12).zip(before_next.chunks(12)) {
            let (ts, _) = decode_point(chunk);
            assert!(
                ts % 300 == 0 || chunk == old,
                "a 60 s point leaked into the 300 s archive"
            );
        }
    }
}

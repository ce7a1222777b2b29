//! Reading points: `fetch` picks an archive for a time range as whisper does
//! and returns its slots, `None` for slots that hold no point of that time.

use std::path::Path;

use super::format::{decode_point, ArchiveInfo, Header, POINT_SIZE};
use super::update::{read_point, read_wrapped, slot_offset};
use super::{Blocks, Result, WhisperError};

/// Largest all-missing answer given in full; see [`fetch_archive`].
const MAX_EMPTY_STEPS: i64 = 1 << 20;

/// Values of one archive over a range: `values[i]` is the slot at `start + i * step`.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// First slot's timestamp.
    pub start: i64,
    /// One step past the last slot, as whisper reports it.
    pub end: i64,
    /// Seconds per slot.
    pub step: i64,
    /// The slots; `None` where nothing was stored for that time.
    pub values: Vec<Option<f64>>,
}

/// `whisper.fetch`: the values between `from` and `until` (default `now`),
/// from the most precise archive that reaches back to `from`, or from the
/// archive of precision `archive` seconds when given.
///
/// Returns `Ok(None)` where whisper returns `None`: the range is wholly in
/// the future or wholly older than the file's retention.
pub fn fetch<B: Blocks>(
    blocks: &B,
    header: &Header,
    path: &Path,
    from: i64,
    until: Option<i64>,
    now: i64,
    archive: Option<u32>,
) -> Result<Option<Series>> {
    let mut from = from;
    let mut until = until.unwrap_or(now);
    if from > until {
        return Err(WhisperError::InvalidTimeInterval { from, until });
    }
    let oldest = now - i64::from(header.max_retention);
    if from > now || until < oldest {
        return Ok(None);
    }
    from = from.max(oldest);
    until = until.min(now);
    let diff = now - from;

    // Whisper treats a precision of 0 like no selection.
    let chosen = match archive.filter(|s| *s != 0) {
        Some(precision) => header
            .archives
            .iter()
            .find(|a| a.seconds_per_point == precision)
            .ok_or(WhisperError::InvalidGranularity(u64::from(precision)))?,
        // Python's loop leaves the last archive selected when none reaches back.
        None => header
            .archives
            .iter()
            .find(|a| a.retention() >= diff)
            .unwrap_or_else(|| {
                header
                    .archives
                    .last()
                    .expect("a parsed header has at least one archive")
            }),
    };
    fetch_archive(blocks, path, chosen, from, until).map(Some)
}

/// Whisper's `__archive_fetch`: the slots of one archive from `from` to
/// `until`, without retention checks (a range longer than the archive wraps
/// and comes back shorter, as in whisper).
pub fn fetch_archive<B: Blocks>(
    blocks: &B,
    path: &Path,
    archive: &ArchiveInfo,
    from: i64,
    until: i64,
) -> Result<Series> {
    let step = i64::from(archive.seconds_per_point);
    let start = from - from.rem_euclid(step) + step;
    let mut end = until - until.rem_euclid(step) + step;
    if start == end {
        // A zero-length range always includes the next point.
        end += step;
    }
    let (base, _) = read_point(blocks, path, u64::from(archive.offset))?;
    if base == 0 {
        // Whisper returns one None per step of the range. Past a million
        // steps (only reachable with an explicit archive on a crafted or huge
        // file) graunt cuts the answer to the archive's length, as it is when
        // the archive holds data, so one fetch cannot allocate gigabytes.
        let steps = (end - start).div_euclid(step).max(0);
        let count = if steps > MAX_EMPTY_STEPS {
            i64::from(archive.points).min(steps)
        } else {
            steps
        };
        let count = count as usize;
        return Ok(Series {
            start,
            end,
            step,
            values: vec![None; count],
        });
    }
    let first = slot_offset(archive, base, start);
    let last = slot_offset(archive, base, end);
    let data = read_wrapped(blocks, path, archive, first, last)?;
    let values = data
        .chunks_exact(POINT_SIZE as usize)
        .enumerate()
        .map(|(i, chunk)| {
            let (ts, value) = decode_point(chunk);
            (i64::from(ts) == start + i as i64 * step).then_some(value)
        })
        .collect();
    Ok(Series {
        start,
        end,
        step,
        values,
    })
}

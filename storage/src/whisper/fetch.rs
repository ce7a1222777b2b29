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
    match choose(header, from, until, now, archive)? {
        Some((chosen, from, until)) => fetch_archive(blocks, path, chosen, from, until).map(Some),
        None => Ok(None),
    }
}

/// The archive [`fetch`] reads for a range and the range as it reads it;
/// `None` where it answers `None`.
fn choose(
    header: &Header,
    from: i64,
    until: Option<i64>,
    now: i64,
    archive: Option<u32>,
) -> Result<Option<(&ArchiveInfo, i64, i64)>> {
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
    Ok(Some((chosen, from, until)))
}

/// The first slot time and the end [`fetch_archive`] gives a range.
fn slot_times(step: i64, from: i64, until: i64) -> (i64, i64) {
    let start = from - from.rem_euclid(step) + step;
    let mut end = until - until.rem_euclid(step) + step;
    if start == end {
        // A zero-length range always includes the next point.
        end += step;
    }
    (start, end)
}

/// The window of [`fetch_window`] that keeps every slot: the whole fetch.
pub const EVERY_SLOT: (i64, i64) = (i64::MIN, i64::MAX);

/// As [`fetch`] of the whole range, cut to the slots that overlap `window`
/// (`[first, end)` in time), but reading only those: the archive is the one
/// the whole range picks, so the slots line up with the whole answer's, and
/// a member asked for part of a range reads only that part. (The archive
/// is never given: a range whose archive was chosen for it never exceeds
/// it, so no read wraps and the slots line up.)
pub fn fetch_window<B: Blocks>(
    blocks: &B,
    header: &Header,
    path: &Path,
    (from, until, now): (i64, Option<i64>, i64),
    (first, end): (i64, i64),
) -> Result<Option<Series>> {
    let Some((chosen, from, until)) = choose(header, from, until, now, None)? else {
        return Ok(None);
    };
    let step = i64::from(chosen.seconds_per_point);
    let (start, stop) = slot_times(step, from, until);
    let len = (stop - start) / step;
    let slot = |t: i64| t.saturating_sub(start).div_euclid(step);
    let lo = slot(first).clamp(0, len);
    // Round up: a slot that starts before the window's end overlaps it.
    let hi = slot(end.saturating_add(step - 1)).clamp(lo, len);
    let at = |i: i64| start + i * step;
    if lo == hi {
        return Ok(Some(Series {
            start: at(lo),
            end: at(lo),
            step,
            values: Vec::new(),
        }));
    }
    // `fetch_archive` starts and ends a step after the aligned times it
    // is given.
    fetch_archive(blocks, path, chosen, at(lo) - step, at(hi) - step).map(Some)
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
    let (start, end) = slot_times(step, from, until);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::whisper::{create_in, update_many, CreateOptions, Retention};

    /// The slots of `whole` that overlap `[first, end)`, as a member that
    /// read the whole range would cut them.
    fn cut(whole: &Series, (first, end): (i64, i64)) -> Series {
        let step = whole.step;
        let overlaps = |i: usize| {
            let t = whole.start + i as i64 * step;
            t + step > first && t < end
        };
        let kept: Vec<usize> = (0..whole.values.len()).filter(|&i| overlaps(i)).collect();
        let lo = kept.first().copied().unwrap_or_else(|| {
            // No slot overlaps: an empty answer where the window would start.
            (0..whole.values.len())
                .find(|&i| whole.start + i as i64 * step >= first)
                .unwrap_or(whole.values.len())
        });
        let hi = kept.last().map_or(lo, |&i| i + 1);
        Series {
            start: whole.start + lo as i64 * step,
            end: whole.start + hi as i64 * step,
            step,
            values: whole.values[lo..hi].to_vec(),
        }
    }

    #[test]
    fn a_window_reads_the_slots_the_whole_range_has_there() {
        let mut rng = fastrand::Rng::with_seed(19);
        let archives = [
            Retention {
                seconds_per_point: 10,
                points: 360,
            },
            Retention {
                seconds_per_point: 60,
                points: 1440,
            },
        ];
        let now = 1_700_000_000 + rng.i64(0..60);
        let mut file: Vec<u8> = Vec::new();
        let header = create_in(&mut file, &archives, &CreateOptions::default()).unwrap();
        // Points with gaps over the whole retention, some wrapped over.
        let mut points: Vec<(i64, f64)> = Vec::new();
        for i in 0..3000 {
            if rng.u8(..4) != 0 {
                points.push((now - 86_000 + i * 29, rng.f64() * 100.0));
            }
        }
        update_many(&mut file, &header, Path::new("t"), &points, now).unwrap();
        let path = Path::new("t");
        for round in 0..2000 {
            let from = now - rng.i64(0..90_000);
            let until = if rng.bool() {
                None
            } else {
                Some(from + rng.i64(0..90_000))
            };
            let Ok(whole) = fetch(&file, &header, path, from, until, now, None) else {
                continue;
            };
            let first = from + rng.i64(-200..40_000);
            let window = (first, first + rng.i64(0..40_000));
            let every = fetch_window(&file, &header, path, (from, until, now), EVERY_SLOT);
            assert_eq!(
                every.unwrap(),
                whole,
                "round {round}: every slot is the whole fetch"
            );
            let got = fetch_window(&file, &header, path, (from, until, now), window).unwrap();
            assert_eq!(
                got,
                whole.as_ref().map(|w| cut(w, window)),
                "round {round}: {from}..{until:?} at {now}, window {window:?}"
            );
        }
    }
}

//! Whole-file operations behind the `whisper-*` scripts: merge one file into
//! another, fill another's gaps (carbonate's whisper-fill), change aggregation.

use std::path::Path;

use super::fetch::fetch_archive;
use super::file::check_x_files_factor;
use super::{AggregationMethod, Header, Result, WhisperError, WhisperFile};

/// `whisper.merge`: copies every known point of `from` between `time_from`
/// (default 0) and `time_to` (default `now`) into `to`, archive by archive
/// from the shortest retention up. Both files must have the same archives.
pub fn merge(
    from: &Path,
    to: &Path,
    time_from: Option<i64>,
    time_to: Option<i64>,
    now: i64,
) -> Result<()> {
    let source = WhisperFile::open(from)?;
    let mut dest = WhisperFile::open_rw(to)?;
    if source.header().archives != dest.header().archives {
        return Err(WhisperError::ArchivesDiffer {
            from: from.to_path_buf(),
            to: to.to_path_buf(),
        });
    }
    let until = time_to.unwrap_or(now);
    let since = time_from.unwrap_or(0);
    if until < since {
        return Err(WhisperError::InvalidTimeInterval { from: since, until });
    }
    let mut archives = source.header().archives.clone();
    archives.sort_by_key(|a| a.retention());

    for archive in &archives {
        let oldest = now - archive.retention();
        if until < oldest {
            continue;
        }
        let series = fetch_archive(source.file(), from, archive, since.max(oldest), until)?;
        let points: Vec<(i64, f64)> = (series.start..series.end)
            .step_by(series.step as usize)
            .zip(series.values)
            .filter_map(|(t, v)| Some((t, v?)))
            .collect();
        if !points.is_empty() {
            dest.archive_update_many(archive, &points)?;
        }
    }
    Ok(())
}

/// Python truthiness of a fetched value: None and 0.0 are false.
fn truthy(v: Option<f64>) -> bool {
    v.is_some_and(|x| x != 0.0)
}

/// Copies the points of `src` between `start` and `stop` into `dst`, from the
/// most precise archive that still holds them (whisper-fill's `fill`).
fn fill_range(
    src: &WhisperFile,
    dst: &mut WhisperFile,
    start: i64,
    mut stop: i64,
    now: i64,
) -> Result<()> {
    let header: &Header = src.header();
    let src_time = now - i64::from(header.max_retention);
    if start < src_time && stop < src_time {
        return Ok(());
    }
    let mut archives = header.archives.clone();
    archives.sort_by_key(|a| a.retention());
    for archive in &archives {
        let rtime = now - archive.retention();
        if stop <= rtime {
            continue;
        }
        let from = rtime.max(start);
        if let Some(series) = src.fetch(from, Some(stop), now, None)? {
            let mut points: Vec<(i64, f64)> = (series.start..series.end)
                .step_by(series.step as usize)
                .zip(series.values)
                .filter_map(|(t, v)| Some((t, v?)))
                .collect();
            points.reverse();
            dst.update_many(&points, now)?;
        }
        stop = from;
        if start == stop {
            return Ok(());
        }
    }
    Ok(())
}

/// carbonate's `whisper-fill`: fills the gaps of `dst` (runs of missing or
/// zero slots, as the script judges them) with data from `src`, walking
/// `dst`'s archives from the shortest retention back in time.
pub fn fill(src: &Path, dst: &Path, now: i64) -> Result<()> {
    let source = WhisperFile::open(src)?;
    let mut dest = WhisperFile::open_rw(dst)?;
    let mut archives = dest.header().archives.clone();
    archives.sort_by_key(|a| a.retention());
    let mut start_from = now;
    for archive in &archives {
        let from = now - archive.retention();
        if from >= start_from {
            continue;
        }
        let Some(series) = dest.fetch(from, Some(start_from), now, None)? else {
            start_from = from;
            continue;
        };
        let (mut start, end, step) = (series.start, series.end, series.step);
        // `gapstart` is tested for truthiness in the script: 0 counts as none.
        let mut gap_start: Option<i64> = None;
        let spp = i64::from(archive.seconds_per_point);
        for v in series.values {
            let open_gap = gap_start.filter(|g| *g != 0);
            if !truthy(v) && open_gap.is_none() {
                gap_start = Some(start);
            } else if let (true, Some(g)) = (truthy(v), open_gap) {
                if start - g > spp {
                    fill_range(&source, &mut dest, g - step, start, now)?;
                }
                gap_start = None;
            } else if let (Some(g), true) = (open_gap, start == end - step) {
                fill_range(&source, &mut dest, g - step, start, now)?;
            }
            start += step;
        }
        start_from = from;
    }
    Ok(())
}

/// Fills the empty slots of `dst` with `src`'s points, archive by archive,
/// keeping every point `dst` has: what a cluster member does with a copy
/// of a series a peer sends it (rebalance, repair). Unlike carbonate's
/// [`fill`], a single empty slot is filled too and a zero is a value.
/// Files with other archives fall back to [`fill`]. Returns the slots
/// filled.
pub fn fill_missing(src: &Path, dst: &Path, now: i64) -> Result<u64> {
    let source = WhisperFile::open(src)?;
    let mut dest = WhisperFile::open_rw(dst)?;
    if source.header().archives != dest.header().archives {
        fill(src, dst, now)?;
        return Ok(0);
    }
    let archives = dest.header().archives.clone();
    let mut filled = 0;
    for archive in &archives {
        let from = now - archive.retention();
        let theirs = fetch_archive(source.file(), src, archive, from, now)?;
        let ours = fetch_archive(dest.file(), dst, archive, from, now)?;
        let points: Vec<(i64, f64)> = (theirs.start..theirs.end)
            .step_by(theirs.step as usize)
            .zip(theirs.values.iter().zip(&ours.values))
            .filter_map(|(t, (s, d))| match (s, d) {
                (Some(v), None) => Some((t, *v)),
                _ => None,
            })
            .collect();
        if !points.is_empty() {
            filled += points.len() as u64;
            dest.archive_update_many(archive, &points)?;
        }
    }
    Ok(filled)
}

/// whisper-resize's migration (without `--aggregate`) in place: a new file
/// with `archives` and `opts` takes every point of `path`'s archives,
/// coarsest first (finer points then overwrite, propagating with the
/// aggregation method), and replaces `path`. Answers false, touching
/// nothing, when the file already has those archives and settings.
pub fn migrate(
    path: &Path,
    archives: &[super::Retention],
    opts: &super::CreateOptions,
    now: i64,
) -> Result<bool> {
    let old = WhisperFile::open(path)?;
    let header = old.header().clone();
    let wanted = super::layout(archives, opts)?;
    if header.archives == wanted.archives
        && header.aggregation == opts.aggregation
        && (f64::from(header.x_files_factor) - opts.x_files_factor).abs() < 1e-6
    {
        return Ok(false);
    }
    let mut old_archives = header.archives.clone();
    old_archives.sort_by_key(|a| std::cmp::Reverse(a.seconds_per_point));
    let tmp = path.with_extension("wsp.resizing");
    let _ = std::fs::remove_file(&tmp);
    super::create(&tmp, archives, opts)?;
    let migrated = (|| {
        let mut target = WhisperFile::open_rw(&tmp)?;
        for archive in &old_archives {
            let from = now - archive.retention() + i64::from(archive.seconds_per_point);
            let series = fetch_archive(old.file(), path, archive, from, now)?;
            let points: Vec<(i64, f64)> = (series.start..series.end)
                .step_by(series.step as usize)
                .zip(series.values)
                .filter_map(|(t, v)| Some((t, v?)))
                .collect();
            target.update_many(&points, now)?;
        }
        Ok(())
    })();
    if let Err(e) = migrated {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, path).map_err(|source| WhisperError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(true)
}

/// `whisper.setAggregationMethod`: rewrites the aggregation method and, when
/// given, the xFilesFactor. Returns the previous method and xFilesFactor.
pub fn set_aggregation(
    path: &Path,
    method: AggregationMethod,
    x_files_factor: Option<f64>,
) -> Result<(AggregationMethod, f32)> {
    let mut file = WhisperFile::open_rw(path)?;
    let old = (file.header().aggregation, file.header().x_files_factor);
    let xff = match x_files_factor {
        Some(x) => check_x_files_factor(x)?,
        None => old.1,
    };
    file.write_metadata(method, xff)?;
    Ok(old)
}

#[cfg(test)]
mod fill_missing_tests {
    use super::*;
    use crate::whisper::{create, parse_retention, CreateOptions};

    #[test]
    fn migrate_keeps_the_points_the_new_archives_can_hold() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.wsp");
        let old = vec![
            parse_retention("10s:1h").unwrap(),
            parse_retention("60s:1d").unwrap(),
        ];
        create(&path, &old, &CreateOptions::default()).unwrap();
        let now = 1_700_000_000;
        let t = now - 600;
        let points: Vec<(i64, f64)> = (0..6).map(|i| (t + 10 * i, i as f64)).collect();
        WhisperFile::open_rw(&path)
            .unwrap()
            .update_many(&points, now)
            .unwrap();
        let new = vec![
            parse_retention("10s:2h").unwrap(),
            parse_retention("300s:7d").unwrap(),
        ];
        assert!(migrate(&path, &new, &CreateOptions::default(), now).unwrap());
        assert!(!migrate(&path, &new, &CreateOptions::default(), now).unwrap());
        let f = WhisperFile::open(&path).unwrap();
        assert_eq!(f.header().max_retention, 7 * 86400);
        let got = f.fetch(t - 10, Some(t + 50), now, None).unwrap().unwrap();
        assert_eq!(
            got.values[..6],
            [
                Some(0.0),
                Some(1.0),
                Some(2.0),
                Some(3.0),
                Some(4.0),
                Some(5.0)
            ]
        );
    }

    #[test]
    fn fills_every_empty_slot_and_keeps_what_is_there() {
        let dir = tempfile::tempdir().unwrap();
        let archives = vec![
            parse_retention("10s:1h").unwrap(),
            parse_retention("60s:1d").unwrap(),
        ];
        let (src, dst) = (dir.path().join("src.wsp"), dir.path().join("dst.wsp"));
        create(&src, &archives, &CreateOptions::default()).unwrap();
        create(&dst, &archives, &CreateOptions::default()).unwrap();
        let now = 1_700_000_000;
        let t = now - 600;
        // The source has six points; the destination has the last two (one
        // of them different) and a zero, and lacks a single slot between.
        let src_points: Vec<(i64, f64)> = (0..6).map(|i| (t + 10 * i, i as f64 + 1.0)).collect();
        WhisperFile::open_rw(&src)
            .unwrap()
            .update_many(&src_points, now)
            .unwrap();
        WhisperFile::open_rw(&dst)
            .unwrap()
            .update_many(&[(t, 0.0), (t + 40, 40.0), (t + 50, 6.0)], now)
            .unwrap();
        let filled = fill_missing(&src, &dst, now).unwrap();
        assert!(filled >= 3, "{filled}");
        let got = WhisperFile::open(&dst)
            .unwrap()
            .fetch(t - 10, Some(t + 60), now, None)
            .unwrap()
            .unwrap();
        assert_eq!(
            got.values,
            vec![
                Some(0.0),
                Some(2.0),
                Some(3.0),
                Some(4.0),
                Some(40.0),
                Some(6.0),
                None
            ]
        );
    }
}

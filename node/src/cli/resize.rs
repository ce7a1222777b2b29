//! `graunt whisper resize`: whisper-resize.py's migration of a file to new
//! archives, plain (each old archive's points copied, coarsest first) or with
//! `--aggregate` (old points re-aggregated into each new archive's slots).

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;
use graunt_storage::whisper::{
    self, aggregate, parse_retention, AggregationMethod, CreateOptions, WhisperFile,
};

use super::whisper::{now_or_clock, out};

#[derive(Debug, Args)]
pub struct ResizeArgs {
    /// The whisper file.
    path: PathBuf,
    /// The new archives (`60:1440`, `1h:7d`, …).
    #[arg(required = true)]
    retentions: Vec<String>,
    /// Change the xFilesFactor.
    #[arg(long = "xFilesFactor")]
    x_files_factor: Option<f64>,
    /// Change the aggregation method.
    #[arg(long = "aggregationMethod")]
    aggregation_method: Option<String>,
    /// Perform a destructive change (accepted for compatibility).
    #[arg(long)]
    force: bool,
    /// Write the result to this file and leave the original alone.
    #[arg(long)]
    newfile: Option<PathBuf>,
    /// Delete the .bak file afterwards.
    #[arg(long)]
    nobackup: bool,
    /// Re-aggregate old points into the new archives' slots.
    #[arg(long)]
    aggregate: bool,
    /// The reference time, epoch seconds (default: the clock).
    #[arg(long)]
    now: Option<i64>,
}

/// Python's `bisect.bisect_left(a, x, lo)`, verbatim so unsorted input
/// behaves as in the script.
fn bisect_left(a: &[i64], x: i64, mut lo: usize) -> usize {
    let mut hi = a.len();
    while lo < hi {
        let mid = (lo + hi) / 2;
        if a[mid] < x {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

/// Python's repr of `range(start, stop, step)`.
fn range_repr(start: i64, stop: i64, step: i64) -> String {
    if step == 1 {
        format!("range({start}, {stop})")
    } else {
        format!("range({start}, {stop}, {step})")
    }
}

fn list_repr(items: &[i64]) -> String {
    let items: Vec<String> = items.iter().map(i64::to_string).collect();
    format!("[{}]", items.join(", "))
}

pub fn resize(a: ResizeArgs) -> anyhow::Result<()> {
    if !a.path.exists() {
        bail!("File '{}' does not exist!", a.path.display());
    }
    let now = now_or_clock(a.now);
    let old = WhisperFile::open(&a.path)?;
    let header = old.header().clone();
    let new_archives = a
        .retentions
        .iter()
        .map(|d| parse_retention(d))
        .collect::<Result<Vec<_>, _>>()?;
    let mut old_archives = header.archives.clone();
    old_archives.sort_by_key(|a| std::cmp::Reverse(a.seconds_per_point));
    let xff = a.x_files_factor.unwrap_or(f64::from(header.x_files_factor));
    let method: AggregationMethod = match &a.aggregation_method {
        Some(m) => m.parse()?,
        None => header.aggregation,
    };

    out("Retrieving all data from the archives\n");
    let mut data = Vec::new();
    for archive in &old_archives {
        let from = now - archive.retention() + i64::from(archive.seconds_per_point);
        let series = old
            .fetch(from, Some(now), now, None)?
            .context("the file has no data range to retrieve")?;
        data.push((*archive, series));
    }
    drop(old);

    let newfile = match &a.newfile {
        Some(p) => p.clone(),
        None => {
            let tmp = PathBuf::from(format!("{}.tmp", a.path.display()));
            if tmp.exists() {
                out(&format!(
                    "Removing previous temporary database file: {}\n",
                    tmp.display()
                ));
                std::fs::remove_file(&tmp).with_context(|| tmp.display().to_string())?;
            }
            tmp
        }
    };
    out(&format!(
        "Creating new whisper database: {}\n",
        newfile.display()
    ));
    whisper::create(
        &newfile,
        &new_archives,
        &CreateOptions {
            x_files_factor: xff,
            aggregation: method,
            sparse: false,
        },
    )?;
    let size = std::fs::metadata(&newfile)?.len();
    out(&format!("Created: {} ({size} bytes)\n", newfile.display()));

    let mut target = WhisperFile::open_rw(&newfile)?;
    if a.aggregate {
        out("Migrating data with aggregation...\n");
        let mut all: Vec<(i64, Option<f64>)> = Vec::new();
        let mut by_precision = data.clone();
        by_precision.sort_by_key(|(ar, _)| ar.seconds_per_point);
        for (_, series) in &by_precision {
            let mut points: Vec<(i64, Option<f64>)> = (series.start..series.end)
                .step_by(series.step as usize)
                .zip(series.values.iter().copied())
                .collect();
            points.reverse();
            if let Some(&(last_ts, _)) = all.last() {
                let slice_end = points.iter().position(|(t, _)| *t < last_ts).unwrap_or(0);
                all.extend_from_slice(&points[slice_end..]);
            } else {
                all.extend(points);
            }
        }
        all.reverse();
        let old_ts: Vec<i64> = all.iter().map(|p| p.0).collect();
        let old_values: Vec<Option<f64>> = all.iter().map(|p| p.1).collect();
        out(&format!("oldtimestamps: {}\n", list_repr(&old_ts)));
        for archive in target.header().archives.clone() {
            let step = i64::from(archive.seconds_per_point);
            let from = now - archive.retention() + now.rem_euclid(step);
            let until = now + now.rem_euclid(step) + step;
            let mut s = format!("({from},{until},{step})\n");
            let _ = writeln!(s, "timepoints_to_update: {}", range_repr(from, until, step));
            out(&s);
            let slots: Vec<i64> = (from..until).step_by(step as usize).collect();
            let mut points = Vec::new();
            for pair in slots.windows(2) {
                let left = bisect_left(&old_ts, pair[0], 0);
                let right = bisect_left(&old_ts, pair[1], left);
                let values = &old_values[left..right.max(left)];
                let known: Vec<f64> = values.iter().flatten().copied().collect();
                if !known.is_empty() && known.len() as f64 / values.len() as f64 >= xff {
                    if let Some(v) = aggregate(method, &known, values) {
                        points.push((pair[0], v));
                    }
                }
            }
            target.update_many(&points, now)?;
        }
    } else {
        out("Migrating data without aggregation...\n");
        for (_, series) in &data {
            let points: Vec<(i64, f64)> = (series.start..series.end)
                .step_by(series.step as usize)
                .zip(series.values.iter().copied())
                .filter_map(|(t, v)| Some((t, v?)))
                .collect();
            target.update_many(&points, now)?;
        }
    }
    drop(target);

    if a.newfile.is_some() {
        return Ok(());
    }
    let backup = PathBuf::from(format!("{}.bak", a.path.display()));
    out(&format!("Renaming old database to: {}\n", backup.display()));
    std::fs::rename(&a.path, &backup)
        .with_context(|| format!("cannot rename {}", a.path.display()))?;
    out(&format!("Renaming new database to: {}\n", a.path.display()));
    if let Err(e) = std::fs::rename(&newfile, &a.path) {
        out("\nOperation failed, restoring backup\n");
        std::fs::rename(&backup, &a.path)
            .with_context(|| format!("cannot restore {}", backup.display()))?;
        bail!(
            "cannot rename {} to {}: {e}",
            newfile.display(),
            a.path.display()
        );
    }
    if a.nobackup {
        out(&format!("Unlinking backup: {}\n", backup.display()));
        std::fs::remove_file(&backup).with_context(|| backup.display().to_string())?;
    }
    Ok(())
}

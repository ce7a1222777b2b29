//! graphite's aggregation methods (`aggfuncs.py`, `getAggFunc`) and
//! `_getPercentile`: reducing one row of values, or many series into one.

use serde_json::Value as Json;

use super::helpers::path_expressions;
use super::{arg_err, Out};
use crate::eval::EvalError;
use crate::series::{normalize, Series};

/// graphite's aggregation function names (`getAggFunc`).
pub(crate) const AGG_FUNCS: &[&str] = &[
    "average", "avg", "avg_zero", "median", "sum", "total", "min", "max", "diff", "stddev",
    "count", "range", "rangeOf", "multiply", "last", "current",
];

/// `getAggFunc`'s check: the name or an error naming it.
pub(crate) fn check_agg(function: &str, func: &str) -> Result<(), EvalError> {
    if AGG_FUNCS.contains(&func) {
        Ok(())
    } else {
        Err(arg_err(
            function,
            format!("Unsupported aggregation function: {func}"),
        ))
    }
}

/// graphite's `aggregate`: normalizes the series to one step, combines each
/// row, names the result `<func>Series(<path expressions>)`.
pub(crate) fn aggregate(lists: Vec<Vec<Series>>, func: &str, xff: Option<f64>) -> Out {
    let raw = func;
    let func = func.strip_suffix("Series").unwrap_or(func);
    if !AGG_FUNCS.contains(&func) {
        return Err(arg_err(
            "aggregate",
            format!("Unsupported aggregation function: {raw}"),
        ));
    }
    let mut series: Vec<Series> = lists.into_iter().flatten().collect();
    let Some((start, end, step)) = normalize(&mut series) else {
        return Ok(Vec::new());
    };
    let xff = xff.unwrap_or(0.0);
    // Row by row through borrowed columns: a thousand series of a day at
    // 10 s must not be copied into a transposed table first.
    let columns: Vec<std::borrow::Cow<'_, [Option<f64>]>> =
        series.iter().map(Series::points_cow).collect();
    let len = columns.iter().map(|c| c.len()).max().unwrap_or(0);
    let values = match streamed(func, &columns, len, xff) {
        Some(values) => values,
        None => by_rows(func, &columns, len, xff),
    };
    let name = format!("{func}Series({})", path_expressions(&series));
    let mut tags: serde_json::Map<String, Json> = series[0].tags.clone();
    tags.retain(|k, v| series.iter().all(|s| s.tags.get(k) == Some(v)));
    tags.entry("name")
        .or_insert_with(|| Json::from(name.clone()));
    tags.insert("aggregatedBy".into(), Json::from(func));
    let mut out = Series::new(name, start, end, step, values);
    out.tags = tags;
    out.x_files_factor = xff;
    Ok(vec![out])
}

/// graphite's aggregation functions (`aggfuncs.py` over `safe.py`) on one
/// row of values; `None` where graphite's returns `None`.
pub(crate) fn aggregate_row(func: &str, row: &[Option<f64>]) -> Option<f64> {
    let known: Vec<f64> = row.iter().flatten().copied().collect();
    // Python's sum(): left to right from 0.
    let sum = |v: &[f64]| v.iter().fold(0.0, |a, b| a + b);
    let max = |v: &[f64]| v[1..].iter().fold(v[0], |m, &x| if x > m { x } else { m });
    let min = |v: &[f64]| v[1..].iter().fold(v[0], |m, &x| if x < m { x } else { m });
    match func {
        "avg_zero" => (!row.is_empty()).then(|| {
            let zeros: Vec<f64> = row.iter().map(|v| v.unwrap_or(0.0)).collect();
            sum(&zeros) / row.len() as f64
        }),
        // safeMul(*row): any gap makes the product unknown.
        "multiply" => row
            .iter()
            .copied()
            .collect::<Option<Vec<f64>>>()
            .and_then(|v| {
                let first = *v.first()?;
                Some(v[1..].iter().fold(first, |p, &x| p * x))
            }),
        "count" => Some(known.len() as f64),
        _ if known.is_empty() => None,
        "sum" | "total" => Some(sum(&known)),
        "average" | "avg" => Some(sum(&known) / known.len() as f64),
        "max" => Some(max(&known)),
        "min" => Some(min(&known)),
        "last" | "current" => Some(known[known.len() - 1]),
        "range" | "rangeOf" => Some(max(&known) - min(&known)),
        "diff" => {
            let mut terms = vec![known[0]];
            terms.extend(known[1..].iter().map(|x| -x));
            Some(sum(&terms))
        }
        "median" => {
            let mut sorted = known.clone();
            sorted.sort_by(|a, b| super::cmp_f64(*a, *b));
            let mid = sorted.len() / 2;
            Some(if sorted.len().is_multiple_of(2) {
                (sorted[mid - 1] + sorted[mid]) / 2.0
            } else {
                sorted[mid]
            })
        }
        "stddev" => {
            let avg = sum(&known) / known.len() as f64;
            let squares = known.iter().fold(0.0, |a, v| a + (v - avg) * (v - avg));
            Some((squares / known.len() as f64).sqrt())
        }
        _ => None,
    }
}

/// graphite's `_getPercentile`.
pub(crate) fn percentile(points: &[Option<f64>], n: f64, interpolate: bool) -> Option<f64> {
    let mut sorted: Vec<f64> = points.iter().flatten().copied().collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(|a, b| super::cmp_f64(*a, *b));
    let fractional = n / 100.0 * (sorted.len() + 1) as f64;
    if !fractional.is_finite() {
        return None;
    }
    // Far-out ranks clamp (Python would index past the list and fail).
    let fractional = fractional.clamp(-1e15, 1e15);
    let mut rank = fractional.trunc() as i64;
    let fraction = fractional - rank as f64;
    if !interpolate {
        rank = rank.saturating_add(fraction.ceil() as i64);
    }
    let len = sorted.len() as i64;
    let mut value = if rank == 0 {
        sorted[0]
    } else if rank - 1 == len {
        sorted[sorted.len() - 1]
    } else {
        // Python indexing: a negative index counts from the end.
        let i = (rank - 1).rem_euclid(len.max(1)) as usize;
        *sorted.get(i)?
    };
    if interpolate && rank != len {
        let next = sorted.get(rank.rem_euclid(len.max(1)) as usize).copied()?;
        value += fraction * (next - value);
    }
    Some(value)
}

/// The generic row-at-a-time aggregation (median, stddev need whole rows).
fn by_rows(
    func: &str,
    columns: &[std::borrow::Cow<'_, [Option<f64>]>],
    len: usize,
    xff: f64,
) -> Vec<Option<f64>> {
    let mut row: Vec<Option<f64>> = Vec::with_capacity(columns.len());
    (0..len)
        .map(|i| {
            row.clear();
            row.extend(columns.iter().map(|c| c.get(i).copied().flatten()));
            let known = row.iter().filter(|v| v.is_some()).count();
            (known > 0 && known as f64 / row.len() as f64 >= xff)
                .then(|| aggregate_row(func, &row))
                .flatten()
        })
        .collect()
}

/// Column-at-a-time aggregation for the functions that fold left to right
/// (sum, average, min, max, …): each column is read once, in order, with
/// the same arithmetic in the same order as the row-wise Python; row blocks
/// are shared out over a few threads.
fn streamed(
    func: &str,
    columns: &[std::borrow::Cow<'_, [Option<f64>]>],
    len: usize,
    xff: f64,
) -> Option<Vec<Option<f64>>> {
    // Python's sum() adds the first value to 0; the others start from it.
    let folded = match func {
        "sum" | "total" | "average" | "avg" | "avg_zero" => {
            fold_rows(columns, len, true, |a, v| a + v)
        }
        "diff" => fold_rows(columns, len, true, |a, v| a + -v),
        "min" => fold_rows(columns, len, false, |a, v| if v < a { v } else { a }),
        "max" => fold_rows(columns, len, false, |a, v| if v > a { v } else { a }),
        "last" | "current" | "count" => fold_rows(columns, len, false, |_, v| v),
        "multiply" => fold_rows(columns, len, false, |a, v| a * v),
        "range" | "rangeOf" => {
            let max = streamed("max", columns, len, xff)?;
            let min = streamed("min", columns, len, xff)?;
            return Some(
                max.into_iter()
                    .zip(min)
                    .map(|(a, b)| Some(a? - b?))
                    .collect(),
            );
        }
        _ => return None,
    };
    let n = columns.len() as f64;
    Some(
        folded
            .into_iter()
            .map(|(acc, known, gap)| {
                if known == 0 || f64::from(known) / n < xff {
                    return None;
                }
                Some(match func {
                    "average" | "avg" => acc / f64::from(known),
                    "avg_zero" => acc / n,
                    "count" => f64::from(known),
                    "multiply" if gap => return None,
                    _ => acc,
                })
            })
            .collect(),
    )
}

/// Per row: the fold of its known values, how many were known, whether any
/// was missing. Rows go in cache-sized blocks, blocks over a few threads.
fn fold_rows<F: Fn(f64, f64) -> f64 + Sync>(
    columns: &[std::borrow::Cow<'_, [Option<f64>]>],
    len: usize,
    summing: bool,
    fold: F,
) -> Vec<(f64, u32, bool)> {
    let block = |from: usize, to: usize| -> Vec<(f64, u32, bool)> {
        let mut rows = vec![(0.0f64, 0u32, false); to - from];
        for column in columns {
            let values = column.get(from..to.min(column.len())).unwrap_or_default();
            for (row, value) in rows.iter_mut().zip(values) {
                match *value {
                    Some(v) => {
                        row.0 = if row.1 > 0 {
                            fold(row.0, v)
                        } else if summing {
                            0.0 + v
                        } else {
                            v
                        };
                        row.1 += 1;
                    }
                    None => row.2 = true,
                }
            }
            // Past a short column's end its rows are gaps (izip_longest pads).
            for row in rows.iter_mut().skip(values.len()) {
                row.2 = true;
            }
        }
        rows
    };
    use rayon::prelude::*;
    const BLOCK: usize = 1024;
    let blocks: Vec<(usize, usize)> = (0..len)
        .step_by(BLOCK)
        .map(|f| (f, (f + BLOCK).min(len)))
        .collect();
    if columns.len() * len < 1 << 18 {
        return blocks.iter().flat_map(|&(f, t)| block(f, t)).collect();
    }
    blocks
        .par_iter()
        .map(|&(f, t)| block(f, t))
        .collect::<Vec<_>>()
        .into_iter()
        .flatten()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    #[test]
    fn column_folds_equal_row_aggregation() {
        let mut rng = fastrand::Rng::with_seed(7);
        for round in 0..50 {
            let n = 1 + rng.usize(..40);
            let columns: Vec<Vec<Option<f64>>> = (0..n)
                .map(|_| {
                    let len = 1 + rng.usize(..3000);
                    (0..len)
                        .map(|_| match rng.u8(..10) {
                            0..=2 => None,
                            3 => Some(-0.0),
                            _ => Some((rng.f64() - 0.5) * 10f64.powi(rng.i32(-3..6))),
                        })
                        .collect()
                })
                .collect();
            let cows: Vec<Cow<'_, [Option<f64>]>> =
                columns.iter().map(|c| Cow::Borrowed(&c[..])).collect();
            let len = columns.iter().map(Vec::len).max().unwrap();
            let xff = [0.0, 0.3, 1.0][round % 3];
            for func in [
                "sum", "total", "average", "avg", "avg_zero", "min", "max", "last", "current",
                "count", "range", "rangeOf", "diff", "multiply",
            ] {
                let fast = streamed(func, &cows, len, xff).unwrap();
                let slow = by_rows(func, &cows, len, xff);
                for (i, (a, b)) in fast.iter().zip(&slow).enumerate() {
                    assert!(
                        a.map(f64::to_bits) == b.map(f64::to_bits),
                        "{func} row {i}: {a:?} != {b:?}"
                    );
                }
            }
        }
    }
}

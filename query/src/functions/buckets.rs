//! graphite's `_summarizeValues`: the bucketing core of `summarize` and
//! `smartSummarize`, which `compressPeriodicGaps` also resamples with.

use super::aggregate::aggregate_row;
use crate::series::Series;

/// graphite's `_summarizeValues`: buckets of `interval` from `start` to
/// `end`, each the aggregation of the values whose timestamps fall in it
/// (plus the one at or before its start), if enough are known.
pub(crate) fn summarize_values(
    s: &Series,
    func: &str,
    interval: i64,
    start: i64,
    end: i64,
) -> (Vec<Option<f64>>, i64) {
    let step = s.step.max(1);
    let timestamps: Vec<i64> = (s.start..s.end).step_by(step as usize).collect();
    let data = s.points();
    let interval_points = interval as f64 / step as f64;
    let n = timestamps.len().min(data.len());
    let mut out = Vec::new();
    let mut i = 0usize;
    let mut t = start;
    while t < end {
        let mut first = i;
        let mut known = 0usize;
        while i < n && timestamps[i] < t + interval {
            if timestamps[i] <= t {
                first = i;
            }
            if timestamps[i] >= t && data[i].is_some() {
                known += 1;
            }
            i += 1;
        }
        let enough = known > 0
            && interval_points != 0.0
            && known as f64 / interval_points >= s.x_files_factor;
        out.push(if enough {
            aggregate_row(func, &data[first..i])
        } else {
            None
        });
        t += interval;
    }
    (out, t)
}

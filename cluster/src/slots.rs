//! A fold split by time instead of by series, for groups whose values do
//! not fold exactly (fractions: graphite adds a row in name order, and
//! partial sums of interleaved shares can differ in the last digit). Each
//! member folds every series of the group over one part of the range, in
//! the group's order (`/cluster/slots`): it reads the part of what it
//! holds and asks the other holders for the part of the rest, so a series
//! crosses the network only for the parts of the members without a copy,
//! and the asker joins the parts ([`Folded::concat`]).

use graunt_query::eval::{EvalError, Source};
use graunt_query::fold::{Fold, Folded};
use graunt_query::series::Series;

use crate::fold::Answer;
use crate::source::ClusterSource;
use crate::window::Window;

/// The parts of `from..until` for `members` members, in order. The first
/// reaches back and the last forward without end, so each slot a read of
/// the range gives starts in exactly one part.
pub fn parts(from: i64, until: i64, members: usize) -> Vec<Window> {
    let n = members.max(1) as i128;
    let span = i128::from(until) - i128::from(from);
    let cut = |k: i128| (i128::from(from) + span.max(0) * k / n) as i64;
    (0..n)
        .map(|k| {
            let first = if k == 0 { i64::MIN } else { cut(k) };
            let end = if k == n - 1 { i64::MAX } else { cut(k + 1) };
            (first, end)
        })
        .collect()
}

/// Keeps the slots of `series` that start in the part beginning at
/// `first`: a read of the part also gives the slot that starts before it
/// and reaches into it, which is the previous part's.
fn starting_in(series: &mut Series, first: i64) {
    let before = crate::window::first_from(series, first);
    series.values.drain(..before);
    series.start = series
        .start
        .saturating_add((before as i64).saturating_mul(series.step.max(1)));
}

/// This member's part: each group folded over `source`'s part of the range
/// ([`ClusterSource::for_part`]), or [`Answer::Inexact`] for a group that
/// cannot be (a series missing, times that differ, a NaN), and for every
/// group when a holder it asked failed (a copy may lack what that holder
/// had; the asker then reads the series and reports who failed).
pub(crate) fn fold_part(
    source: &ClusterSource,
    fold: Fold,
    groups: &[Vec<String>],
    (from, until, now): (i64, i64, i64),
) -> Result<Vec<Answer>, EvalError> {
    let first = source.part().map_or(i64::MIN, |p| p.0);
    let mut series = source
        .fetch_many(&groups.concat(), from, until, now)?
        .into_iter();
    if source.had_failures() {
        return Ok(groups.iter().map(|_| Answer::Inexact).collect());
    }
    Ok(groups
        .iter()
        .map(|group| {
            let mut part: Vec<Option<Series>> = series.by_ref().take(group.len()).collect();
            part.iter_mut()
                .flatten()
                .for_each(|s| starting_in(s, first));
            match Folded::ordered(fold, &part) {
                Some(f) => Answer::Folded(f),
                None => Answer::Inexact,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_cover_the_range_once_in_order() {
        let p = parts(1000, 1300, 3);
        assert_eq!(p, vec![(i64::MIN, 1100), (1100, 1200), (1200, i64::MAX)]);
        assert_eq!(parts(5, 5, 2), vec![(i64::MIN, 5), (5, i64::MAX)]);
        assert_eq!(parts(i64::MIN, i64::MAX, 1), vec![(i64::MIN, i64::MAX)]);
        let wide = parts(i64::MIN, i64::MAX, 4);
        assert!(wide.windows(2).all(|w| w[0].1 == w[1].0 && w[0].0 < w[0].1));
    }

    #[test]
    fn a_part_keeps_the_slots_that_start_in_it() {
        let s = || Series::new("a", 100, 150, 10, vec![Some(1.0); 5]);
        for (first, start, len) in [(95, 100, 5), (100, 100, 5), (101, 110, 4), (150, 150, 0)] {
            let mut got = s();
            starting_in(&mut got, first);
            assert_eq!((got.start, got.values.len()), (start, len), "from {first}");
            assert_eq!(got.end, 150);
        }
    }
}

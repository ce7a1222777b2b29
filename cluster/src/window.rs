//! The slots a copy of a series lacks, as a window of time, and the fill
//! of those slots from another holder's copy of that window: a read's
//! second round asks the other holders only for what the first copy lacks
//! (a series that stopped reporting lacks its last slots, not its whole
//! range), and they read only that window (`Store::fetch_window`).

use graunt_query::series::Series;

/// A span of slot times, `[first, end)`.
pub type Window = (i64, i64);

/// The span from the first empty slot of `series` to the end of its last
/// one; `None` when no slot is empty.
pub fn missing(series: &Series) -> Option<Window> {
    let step = series.step.max(1);
    let first = series.values.iter().position(Option::is_none)?;
    let last = series.values.iter().rposition(Option::is_none)?;
    let at = |i: usize| series.start.saturating_add(step.saturating_mul(i as i64));
    Some((at(first), at(last + 1)))
}

/// The index of the first slot of `series` that starts at or after `t`
/// (the length when none does): a read of a window also gives the slot
/// that starts before it and reaches into it.
pub fn first_from(series: &Series, t: i64) -> usize {
    let step = series.step.max(1);
    t.saturating_sub(series.start)
        .saturating_add(step - 1)
        .div_euclid(step)
        .clamp(0, series.values.len() as i64) as usize
}

/// The smallest window covering both.
pub fn union(a: Window, b: Window) -> Window {
    (a.0.min(b.0), a.1.max(b.1))
}

/// Fills the empty slots of `base` from `other` where their slots line up
/// (same step, starts a whole number of steps apart).
pub fn fill(base: &mut Series, other: &Series) {
    if other.step != base.step || base.step <= 0 {
        return;
    }
    let offset = other.start.saturating_sub(base.start);
    if offset % base.step != 0 {
        return;
    }
    let shift = offset / base.step;
    for (j, v) in other.values.iter().enumerate() {
        let Some(i) = usize::try_from(shift.saturating_add(j as i64)).ok() else {
            continue;
        };
        match base.values.get_mut(i) {
            Some(slot) if slot.is_none() => *slot = *v,
            Some(_) => {}
            None => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(start: i64, values: &[Option<f64>]) -> Series {
        Series::new(
            "a",
            start,
            start + 10 * values.len() as i64,
            10,
            values.to_vec(),
        )
    }

    #[test]
    fn a_stopped_series_lacks_its_tail_and_gets_only_that() {
        let lacking = series(100, &[Some(1.0), None, Some(3.0), None, None]);
        assert_eq!(missing(&lacking), Some((110, 150)));
        assert_eq!(missing(&series(100, &[Some(1.0)])), None);
        assert_eq!(missing(&series(100, &[None, None])), Some((100, 120)));
        // The other holder's copy of that window.
        let other = series(110, &[Some(2.0), Some(3.0), Some(4.0), None]);
        let mut merged = lacking.clone();
        fill(&mut merged, &other);
        assert_eq!(
            merged.values,
            vec![Some(1.0), Some(2.0), Some(3.0), Some(4.0), None]
        );
    }

    #[test]
    fn fills_stay_inside_the_series() {
        let mut base = series(100, &[None, None]);
        fill(
            &mut base,
            &series(90, &[Some(9.0), Some(1.0), Some(2.0), Some(3.0)]),
        );
        assert_eq!(base.values, vec![Some(1.0), Some(2.0)]);
        let mut base = series(100, &[None, None]);
        fill(&mut base, &series(105, &[Some(9.0)]));
        assert_eq!(base.values, vec![None, None], "slots that do not line up");
        assert_eq!(union((110, 150), (100, 120)), (100, 150));
    }
}

//! Aggregations folded where the data is: `sumSeries`, `averageSeries`,
//! `minSeries`, `maxSeries` and `countSeries` over plain path expressions
//! (alone or as `groupByNode`'s callback) can be answered from per-slot
//! partials ([`Folded`]) that cluster peers compute over their own series,
//! so a peer sends one folded series instead of every member.
//!
//! Only where the answer stays the one graphite-web gives: min and max of
//! any values; counts of any series; sums and averages only of integral
//! values whose magnitudes add up below 2^52 per slot, where float addition
//! is exact and so does not depend on the order (graphite adds in name
//! order, members holding interleaved shares cannot). Sums of anything else
//! fold over parts of the range instead, every series of a group in order
//! ([`Folded::ordered`], joined by [`Folded::concat`]); what cannot is sent
//! as series and aggregated as usual.

use serde_json::Value as Json;

use crate::series::Series;

/// An aggregation that folds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fold {
    /// `sumSeries`, `sum`.
    Sum,
    /// `averageSeries`, `avg`.
    Average,
    /// `minSeries`.
    Min,
    /// `maxSeries`.
    Max,
    /// `countSeries`: how many series, whatever their values.
    Count,
}

/// Sums of integral magnitudes below this are exact in any order.
const EXACT: f64 = (1u64 << 52) as f64;

impl Fold {
    /// The fold a render function name stands for, if it folds.
    pub fn of(function: &str) -> Option<Fold> {
        Some(match function {
            "sumSeries" | "sum" => Fold::Sum,
            "averageSeries" | "avg" => Fold::Average,
            "minSeries" => Fold::Min,
            "maxSeries" => Fold::Max,
            "countSeries" => Fold::Count,
            _ => return None,
        })
    }

    /// The name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Fold::Sum => "sum",
            Fold::Average => "average",
            Fold::Min => "min",
            Fold::Max => "max",
            Fold::Count => "count",
        }
    }

    /// The fold named by [`Fold::as_str`].
    pub fn parse(s: &str) -> Option<Fold> {
        [Fold::Sum, Fold::Average, Fold::Min, Fold::Max, Fold::Count]
            .into_iter()
            .find(|f| f.as_str() == s)
    }

    /// Whether the fold looks at values (a count looks only at which
    /// series there are, so a copy with holes counts as well as a whole one).
    pub fn reads_values(self) -> bool {
        self != Fold::Count
    }

    fn sums(self) -> bool {
        matches!(self, Fold::Sum | Fold::Average)
    }

    fn step(self, acc: f64, v: f64) -> f64 {
        match self {
            Fold::Sum | Fold::Average => acc + v,
            Fold::Min => acc.min(v),
            Fold::Max => acc.max(v),
            Fold::Count => acc,
        }
    }
}

/// Series folded into one per-slot partial.
#[derive(Debug, Clone, PartialEq)]
pub struct Folded {
    /// The series folded.
    pub names: Vec<String>,
    /// First timestamp, shared by every series folded.
    pub start: i64,
    /// Last timestamp plus a step.
    pub end: i64,
    /// Seconds between slots.
    pub step: i64,
    /// Per slot: the sum (sum, average) or extreme (min, max) of the known
    /// values, and how many were known.
    pub slots: Vec<(f64, u32)>,
    /// The largest per-slot sum of magnitudes (sums only): what bounds
    /// exactness when parts are added.
    pub magnitude: f64,
}

impl Folded {
    /// Folds `series` when the result is exact and they share their times
    /// (else `None`: the series must travel). Every series must be present.
    pub fn of(fold: Fold, series: &[Option<Series>]) -> Option<Folded> {
        Folded::of_each(fold, series.iter().map(Option::as_ref))
    }

    /// As [`Folded::of`], over borrowed series.
    pub fn of_each<'a>(
        fold: Fold,
        series: impl IntoIterator<Item = Option<&'a Series>>,
    ) -> Option<Folded> {
        let mut series = series.into_iter().peekable();
        let first = (*series.peek()?)?;
        let (start, end, step) = (first.start, first.end, first.step);
        let len = first.values.len();
        let mut slots = vec![(0.0f64, 0u32); len];
        let mut magnitudes = vec![0.0f64; if fold.sums() { len } else { 0 }];
        let mut names = Vec::with_capacity(series.size_hint().0);
        for s in series {
            let s = s?;
            if (s.start, s.end, s.step, s.values.len()) != (start, end, step, len) {
                return None;
            }
            names.push(s.name.clone());
            if !fold.reads_values() {
                continue;
            }
            for (i, v) in s.values.iter().enumerate() {
                let Some(v) = *v else { continue };
                // Not stored by graunt, but a foreign file may hold one;
                // aggregate's comparisons treat it apart.
                if v.is_nan() {
                    return None;
                }
                // -0.0 ties with 0.0 in min and max, where the first seen
                // wins: the order would matter.
                if v == 0.0 && v.is_sign_negative() {
                    return None;
                }
                if fold.sums() {
                    if v.fract() != 0.0 {
                        return None;
                    }
                    magnitudes[i] += v.abs();
                    if magnitudes[i] >= EXACT {
                        return None;
                    }
                }
                let slot = &mut slots[i];
                slot.0 = if slot.1 == 0 { v } else { fold.step(slot.0, v) };
                slot.1 += 1;
            }
        }
        Some(Folded {
            names,
            start,
            end,
            step,
            slots,
            magnitude: magnitudes.into_iter().fold(0.0, f64::max),
        })
    }

    /// Folds every series of a group over part of its range in the
    /// group's order, with the arithmetic of `aggregate` (a sum starts
    /// from 0 and adds left to right), so the fold is graphite's whatever
    /// the values: a member that holds (or was sent) all of a group's
    /// series for some slots answers those slots exactly. `None` when a
    /// series is missing, the times differ or a value is NaN.
    pub fn ordered(fold: Fold, series: &[Option<Series>]) -> Option<Folded> {
        let first = series.first()?.as_ref()?;
        let (start, end, step, len) = (first.start, first.end, first.step, first.values.len());
        let mut slots = vec![(0.0f64, 0u32); len];
        let mut names = Vec::with_capacity(series.len());
        for s in series {
            let s = s.as_ref()?;
            if (s.start, s.end, s.step, s.values.len()) != (start, end, step, len) {
                return None;
            }
            names.push(s.name.clone());
            if !fold.reads_values() {
                continue;
            }
            // One loop per fold, each tight: a thousand day-long series
            // are millions of values.
            let mut nan = false;
            let pairs = slots.iter_mut().zip(&s.values);
            match fold {
                // The sum starts at 0.0, so the first value is `0.0 + v`,
                // as Python's sum() starting from 0 gives.
                Fold::Sum | Fold::Average => {
                    for (slot, v) in pairs {
                        if let Some(v) = *v {
                            nan |= v.is_nan();
                            slot.0 += v;
                            slot.1 += 1;
                        }
                    }
                }
                Fold::Min | Fold::Max => {
                    let min = fold == Fold::Min;
                    for (slot, v) in pairs {
                        if let Some(v) = *v {
                            nan |= v.is_nan();
                            let better = if min { v < slot.0 } else { v > slot.0 };
                            if slot.1 == 0 || better {
                                slot.0 = v;
                            }
                            slot.1 += 1;
                        }
                    }
                }
                Fold::Count => {}
            }
            if nan {
                return None;
            }
        }
        Some(Folded {
            names,
            start,
            end,
            step,
            slots,
            magnitude: 0.0,
        })
    }

    /// Folds of the same series over consecutive slots ([`Folded::ordered`]
    /// of each part of a range) joined into the fold of the whole range;
    /// `None` unless each part names the same series, the parts share
    /// their step and each begins where the one before it ends (a part
    /// without slots is left out).
    pub fn concat(parts: Vec<Folded>) -> Option<Folded> {
        let mut parts = parts.into_iter().filter(|p| !p.slots.is_empty());
        let mut out = parts.next()?;
        for p in parts {
            if p.names != out.names || p.step != out.step || p.start != out.end {
                return None;
            }
            out.end = p.end;
            out.slots.extend(p.slots);
        }
        out.is_sound().then_some(out)
    }

    /// Whether a part (from a peer, over the network) is one [`Folded::of`]
    /// could have made: its slots fill its times, no slot counts more
    /// series than it names, its magnitude is an exact one.
    pub fn is_sound(&self) -> bool {
        let n = self.names.len() as u64;
        self.step > 0
            && self.end.checked_sub(self.start) == self.step.checked_mul(self.slots.len() as i64)
            && self
                .slots
                .iter()
                .all(|&(v, k)| u64::from(k) <= n && !v.is_nan())
            && self.magnitude.is_finite()
            && self.magnitude >= 0.0
            && self.magnitude < EXACT
    }

    /// Parts over disjoint series combined into one, or `None` when they do
    /// not share their times, their sum could be inexact or a part is not
    /// [sound](Folded::is_sound).
    pub fn combine(fold: Fold, parts: Vec<Folded>) -> Option<Folded> {
        if !parts.iter().all(Folded::is_sound) {
            return None;
        }
        let mut parts = parts.into_iter();
        let mut out = parts.next()?;
        for p in parts {
            if (p.start, p.end, p.step, p.slots.len())
                != (out.start, out.end, out.step, out.slots.len())
            {
                return None;
            }
            out.magnitude += p.magnitude;
            if out.magnitude >= EXACT {
                return None;
            }
            for (slot, (v, n)) in out.slots.iter_mut().zip(p.slots) {
                if n == 0 {
                    continue;
                }
                slot.0 = if slot.1 == 0 { v } else { fold.step(slot.0, v) };
                slot.1 = slot.1.checked_add(n)?;
            }
            out.names.extend(p.names);
        }
        Some(out)
    }

    /// The series graphite's `aggregate` (or `countSeries`) makes of the
    /// series folded, named after `expressions` (the path expressions that
    /// found them, in order).
    pub fn finish(self, fold: Fold, expressions: &str, xff: f64) -> Series {
        self.finish_as(fold, fold.as_str(), expressions, xff)
    }

    /// As [`Folded::finish`], for `aggregate` called with `func`, one of the
    /// names of `fold` (`total` is a sum named `totalSeries(…)`).
    pub fn finish_as(self, fold: Fold, func: &str, expressions: &str, xff: f64) -> Series {
        let n = self.names.len() as f64;
        if fold == Fold::Count {
            let values = vec![Some(n); self.slots.len()];
            let name = format!("countSeries({expressions})");
            let mut out = Series::new(name, self.start, self.end, self.step, values);
            out.x_files_factor = xff;
            return out;
        }
        let values = self
            .slots
            .iter()
            .map(|&(acc, known)| {
                if known == 0 || f64::from(known) / n < xff {
                    return None;
                }
                Some(match fold {
                    Fold::Average => acc / f64::from(known),
                    _ => acc,
                })
            })
            .collect();
        let name = format!("{func}Series({expressions})");
        // As `aggregate`: the tags all members share (of plain names, only
        // `name`, when every member has the same one), then its own.
        let mut tags = serde_json::Map::new();
        if let Some(first) = self.names.first() {
            if self.names.iter().all(|m| m == first) {
                tags.insert("name".into(), Json::from(first.clone()));
            }
        }
        tags.entry("name")
            .or_insert_with(|| Json::from(name.clone()));
        tags.insert("aggregatedBy".into(), Json::from(func));
        let mut out = Series::new(name, self.start, self.end, self.step, values);
        out.tags = tags;
        out.x_files_factor = xff;
        out
    }
}

/// What a source answers for the members of a fold: the series, or the
/// fold of them when it could fold them exactly.
pub enum Fetched {
    /// The series, in the order asked (as [`crate::eval::Source::fetch_many`]).
    Series(Vec<Option<Series>>),
    /// Every series asked for, folded.
    Folded(Folded),
}

impl Fetched {
    /// Series fetched for several groups together (in the groups' order),
    /// split into each group's, by the groups' sizes.
    pub fn per_group(
        series: Vec<Option<Series>>,
        sizes: impl IntoIterator<Item = usize>,
    ) -> Vec<Fetched> {
        let mut series = series.into_iter();
        sizes
            .into_iter()
            .map(|n| Fetched::Series(series.by_ref().take(n).collect()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::functions::aggregate::aggregate;

    fn series(name: &str, values: &[Option<f64>]) -> Option<Series> {
        Some(Series::new(
            name,
            100,
            100 + 10 * values.len() as i64,
            10,
            values.to_vec(),
        ))
    }

    fn aggregated(fold: Fold, all: &[Option<Series>], xff: f64) -> Series {
        let mut list: Vec<Series> = all.iter().flatten().cloned().collect();
        for s in &mut list {
            s.path_expression = "a.*".into();
        }
        aggregate(vec![list], fold.as_str(), Some(xff))
            .unwrap()
            .remove(0)
    }

    #[test]
    fn parts_folded_apart_give_what_aggregate_gives() {
        let all = vec![
            series("a.1", &[Some(1.0), None, Some(-3.0), None]),
            series("a.2", &[Some(4.0), None, Some(7.0), Some(2.0)]),
            series("a.3", &[None, None, Some(5.0), Some(1e6)]),
        ];
        for fold in [Fold::Sum, Fold::Average, Fold::Min, Fold::Max] {
            for xff in [0.0, 0.5, 1.0] {
                let parts = vec![
                    Folded::of(fold, &all[1..2]).unwrap(),
                    Folded::of(fold, &[all[2].clone(), all[0].clone()]).unwrap(),
                ];
                let got = Folded::combine(fold, parts)
                    .unwrap()
                    .finish(fold, "a.*", xff);
                assert_eq!(got, aggregated(fold, &all, xff), "{fold:?} xff {xff}");
            }
        }
        let one = vec![series("a.1", &[Some(1.0), Some(2.0)])];
        assert_eq!(
            Folded::of(Fold::Sum, &one)
                .unwrap()
                .finish(Fold::Sum, "a.*", 0.0),
            aggregated(Fold::Sum, &one, 0.0),
            "one member keeps its name as a tag"
        );
    }

    #[test]
    fn ordered_folds_of_consecutive_slots_give_what_aggregate_gives() {
        let mut rng = fastrand::Rng::with_seed(11);
        for round in 0..200 {
            let len = 1 + rng.usize(..30);
            let all: Vec<Option<Series>> = (0..1 + rng.usize(..12))
                .map(|i| {
                    let values: Vec<Option<f64>> = (0..len)
                        .map(|_| match rng.u8(..5) {
                            0 => None,
                            1 => Some(-0.0),
                            _ => Some((rng.f64() - 0.5) * 10f64.powi(rng.i32(-3..16))),
                        })
                        .collect();
                    series(&format!("a.{i}"), &values)
                })
                .collect();
            let cut = rng.usize(..=len);
            let part = |lo: usize, hi: usize| -> Vec<Option<Series>> {
                all.iter()
                    .map(|s| {
                        let s = s.as_ref()?;
                        let mut p = s.clone();
                        p.values = s.values[lo..hi].to_vec();
                        p.start = s.start + 10 * lo as i64;
                        p.end = s.start + 10 * hi as i64;
                        Some(p)
                    })
                    .collect()
            };
            for fold in [Fold::Sum, Fold::Average, Fold::Min, Fold::Max] {
                let xff = [0.0, 0.5, 1.0][rng.usize(..3)];
                let parts = vec![
                    Folded::ordered(fold, &part(0, cut)).unwrap(),
                    Folded::ordered(fold, &part(cut, len)).unwrap(),
                ];
                let got = Folded::concat(parts).unwrap().finish(fold, "a.*", xff);
                let want = aggregated(fold, &all, xff);
                assert_eq!(
                    format!("{:?}", got.values),
                    format!("{:?}", want.values),
                    "round {round} {fold:?} cut at {cut}"
                );
                assert_eq!(
                    (got.name, got.start, got.end),
                    (want.name, want.start, want.end)
                );
            }
        }
        let a = Folded::ordered(Fold::Sum, &[series("a", &[Some(1.0)])]).unwrap();
        let mut gap = a.clone();
        gap.start += 20;
        gap.end += 20;
        assert!(
            Folded::concat(vec![a.clone(), gap]).is_none(),
            "a slot missing between parts"
        );
        let mut other = a.clone();
        other.start += 10;
        other.end += 10;
        other.names = vec!["b".into()];
        assert!(Folded::concat(vec![a, other]).is_none(), "other series");
    }

    #[test]
    fn what_could_come_out_otherwise_is_not_folded() {
        let floats = vec![series("a", &[Some(0.1)]), series("b", &[Some(0.2)])];
        assert!(Folded::of(Fold::Sum, &floats).is_none());
        assert!(Folded::of(Fold::Average, &floats).is_none());
        assert!(
            Folded::of(Fold::Max, &floats).is_some(),
            "extremes of any values"
        );
        let zero = vec![series("a", &[Some(-0.0)])];
        assert!(Folded::of(Fold::Min, &zero).is_none());
        let huge = vec![series("a", &[Some(3e15)]), series("b", &[Some(3e15)])];
        assert!(Folded::of(Fold::Sum, &huge).is_none());
        let parts = vec![
            Folded::of(Fold::Sum, &huge[..1]).unwrap(),
            Folded::of(Fold::Sum, &huge[1..]).unwrap(),
        ];
        assert!(Folded::combine(Fold::Sum, parts).is_none());
        let shifted = vec![
            series("a", &[Some(1.0)]),
            Some(Series::new("b", 110, 120, 10, vec![Some(1.0)])),
        ];
        assert!(Folded::of(Fold::Sum, &shifted).is_none());
        assert!(Folded::of(Fold::Sum, &[None]).is_none());
    }
}

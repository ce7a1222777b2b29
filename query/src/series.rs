//! A time series as graphite-web's functions see it (its `TimeSeries`): a
//! name, the expression it came from, `start`/`end`/`step`, values with
//! `None` for gaps, tags, and a pending consolidation (`valuesPerPoint`
//! values combined into one by `consolidationFunc` when read).

use std::collections::BTreeMap;

/// How consolidation combines values (graphite's `consolidateBy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consolidation {
    /// Mean of the known values.
    Average,
    /// Mean with gaps as zero.
    AvgZero,
    /// Sum.
    Sum,
    /// Largest.
    Max,
    /// Smallest.
    Min,
    /// First known.
    First,
    /// Last known.
    Last,
}

impl Consolidation {
    /// The name graphite uses (`average`, `sum`, …); `avg` is accepted too.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "average" | "avg" => Self::Average,
            "avg_zero" => Self::AvgZero,
            "sum" => Self::Sum,
            "max" => Self::Max,
            "min" => Self::Min,
            "first" => Self::First,
            "last" => Self::Last,
            _ => return None,
        })
    }

    fn apply(self, usable: &[f64]) -> f64 {
        let sum = || usable.iter().fold(0.0, |a, b| a + b);
        match self {
            Self::Average | Self::AvgZero => sum() / usable.len() as f64,
            Self::Sum => sum(),
            Self::Max => usable[1..]
                .iter()
                .fold(usable[0], |m, &v| if v > m { v } else { m }),
            Self::Min => usable[1..]
                .iter()
                .fold(usable[0], |m, &v| if v < m { v } else { m }),
            Self::First => usable[0],
            Self::Last => usable[usable.len() - 1],
        }
    }
}

/// One series.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Display name (`target` in JSON).
    pub name: String,
    /// The path expression it was fetched with, used to name aggregates.
    pub path_expression: String,
    /// First timestamp.
    pub start: i64,
    /// Last timestamp plus a step, as fetched.
    pub end: i64,
    /// Seconds between raw values.
    pub step: i64,
    /// Raw values (before consolidation).
    pub values: Vec<Option<f64>>,
    /// Tags in the order graphite-web set them (its JSON keeps that
    /// order); always holds `name`; values are strings, as `str(value)`.
    pub tags: serde_json::Map<String, serde_json::Value>,
    /// Raw values per output value.
    pub values_per_point: usize,
    /// How consolidation combines values.
    pub consolidation: Consolidation,
    /// Fraction of known values needed for a consolidated value.
    pub x_files_factor: f64,
    /// Drawing options set by `stacked`, `dashed`, `lineWidth`, … for the
    /// renderer; not part of JSON output, as in graphite-web.
    pub options: BTreeMap<String, serde_json::Value>,
    /// Colour set by `color`/`threshold`, for the renderer.
    pub color: Option<String>,
}

/// The tags graphite-web gives a series named `name`: a tagged name's
/// tags in the order written, `name` last unless given; `{"name": name}`
/// for anything else, and for a function's name (`sumSeries(a;b=c)`).
pub fn tags_of(name: &str) -> serde_json::Map<String, serde_json::Value> {
    let mut tags = serde_json::Map::new();
    let function = name.find('(').is_some_and(|i| {
        i > 0 && name[..i].bytes().all(|b| b.is_ascii_alphabetic()) && name.ends_with(')')
    });
    if name.contains(';') && !function {
        if let Ok(t) = graunt_storage::tags::TaggedSeries::parse(name) {
            for (k, v) in t.tags {
                tags.insert(k, serde_json::Value::String(v));
            }
            return tags;
        }
    }
    tags.insert(
        "name".to_string(),
        serde_json::Value::String(name.to_string()),
    );
    tags
}

impl Series {
    /// A series named `name` with its tags ([`tags_of`]).
    pub fn new(
        name: impl Into<String>,
        start: i64,
        end: i64,
        step: i64,
        values: Vec<Option<f64>>,
    ) -> Self {
        let name = name.into();
        let tags = tags_of(&name);
        Series {
            path_expression: name.clone(),
            name,
            start,
            end,
            step,
            values,
            tags,
            values_per_point: 1,
            consolidation: Consolidation::Average,
            x_files_factor: 0.0,
            options: BTreeMap::new(),
            color: None,
        }
    }

    /// graphite-web's `series.copy(name=…, values=…)`: same times, tags,
    /// consolidation function and xFilesFactor; a fresh path expression
    /// (the new name), no pending consolidation, no drawing options.
    pub fn copy_with(&self, name: impl Into<String>, values: Vec<Option<f64>>) -> Series {
        let name = name.into();
        Series {
            path_expression: name.clone(),
            name,
            start: self.start,
            end: self.end,
            step: self.step,
            values,
            tags: self.tags.clone(),
            values_per_point: 1,
            consolidation: self.consolidation,
            x_files_factor: self.x_files_factor,
            options: BTreeMap::new(),
            color: None,
        }
    }

    /// Renames in place the way most transforms do: name and path
    /// expression both become `name`.
    pub fn wrap(&mut self, name: String) {
        self.path_expression = name.clone();
        self.name = name;
    }

    /// Sets a tag; graphite-web stores every tag value as `str(value)`.
    pub fn tag(&mut self, key: &str, value: impl Into<String>) {
        self.tags
            .insert(key.to_string(), serde_json::Value::String(value.into()));
    }

    /// Replaces the values with `f` over the (consolidated) values.
    pub fn map_values(&mut self, f: impl FnMut(Option<f64>) -> Option<f64>) {
        self.values = self.points().into_iter().map(f).collect();
        self.values_per_point = 1;
    }

    /// How many values reading yields (graphite's `len(list(series))`).
    pub fn len_points(&self) -> usize {
        self.values.len().div_ceil(self.values_per_point.max(1))
    }

    /// The values as read, borrowed when no consolidation is pending.
    pub fn points_cow(&self) -> std::borrow::Cow<'_, [Option<f64>]> {
        if self.values_per_point <= 1 {
            std::borrow::Cow::Borrowed(&self.values)
        } else {
            std::borrow::Cow::Owned(self.points())
        }
    }

    /// The values as read (consolidated when `values_per_point > 1`).
    pub fn points(&self) -> Vec<Option<f64>> {
        if self.values_per_point <= 1 {
            return self.values.clone();
        }
        self.values
            .chunks(self.values_per_point)
            .map(|chunk| {
                let known: Vec<f64> = chunk.iter().flatten().copied().collect();
                let usable: Vec<f64> = if self.consolidation == Consolidation::AvgZero {
                    chunk.iter().map(|v| v.unwrap_or(0.0)).collect()
                } else {
                    known.clone()
                };
                let enough = !known.is_empty()
                    && known.len() as f64 / self.values_per_point as f64 >= self.x_files_factor;
                enough.then(|| self.consolidation.apply(&usable))
            })
            .collect()
    }

    /// `(value, timestamp)` pairs as graphite-web's `datapoints()` pairs them.
    pub fn datapoints(&self) -> Vec<(Option<f64>, i64)> {
        let step = self.step * self.values_per_point as i64;
        let stamps = (self.start..=self.end).step_by(step.max(1) as usize);
        self.points().into_iter().zip(stamps).collect()
    }

    /// A copy under another name; like graphite-web's `series.name = …`,
    /// the tags are left as they were.
    pub fn renamed(&self, name: impl Into<String>) -> Series {
        let mut s = self.clone();
        s.name = name.into();
        s
    }
}

/// Greatest common divisor.
pub fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 {
        a.abs()
    } else {
        gcd(b, a % b)
    }
}

/// Least common multiple.
pub fn lcm(a: i64, b: i64) -> i64 {
    if a == 0 || b == 0 {
        0
    } else {
        // Saturating: a step that large means one point anyway.
        (a / gcd(a, b)).saturating_mul(b).saturating_abs()
    }
}

/// graphite's `normalize`: brings series to a common step (the lcm,
/// consolidating the finer ones) and returns `(start, end, step)`.
pub fn normalize(series: &mut [Series]) -> Option<(i64, i64, i64)> {
    let step = series.iter().map(|s| s.step).reduce(lcm)?;
    for s in series.iter_mut() {
        s.values_per_point = (step / s.step.max(1)) as usize;
    }
    let start = series.iter().map(|s| s.start).min()?;
    let mut end = series.iter().map(|s| s.end).max()?;
    end -= (end - start) % step.max(1);
    Some((start, end, step))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consolidates_like_graphite() {
        let mut s = Series::new(
            "a",
            0,
            60,
            10,
            vec![Some(1.0), None, Some(3.0), None, None, Some(6.0)],
        );
        s.values_per_point = 2;
        assert_eq!(s.points(), vec![Some(1.0), Some(3.0), Some(6.0)]);
        s.x_files_factor = 1.0;
        assert_eq!(s.points(), vec![None, None, None]);
        s.x_files_factor = 0.0;
        s.consolidation = Consolidation::AvgZero;
        assert_eq!(s.points(), vec![Some(0.5), Some(1.5), Some(3.0)]);
        assert_eq!(
            s.datapoints().iter().map(|p| p.1).collect::<Vec<_>>(),
            vec![0, 20, 40]
        );
    }

    #[test]
    fn normalize_uses_the_lcm() {
        let mut v = vec![
            Series::new("a", 0, 60, 10, vec![None; 6]),
            Series::new("b", 0, 60, 15, vec![None; 4]),
        ];
        assert_eq!(normalize(&mut v), Some((0, 60, 30)));
        assert_eq!((v[0].values_per_point, v[1].values_per_point), (3, 2));
    }
}

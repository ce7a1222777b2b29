//! Functions that transform each series on its own, point by point or along
//! its length: arithmetic (`scale`, `offset`, `pow`, `log`, …), derivatives
//! and integrals, gap handling (`keepLastValue`, `interpolate`,
//! `transformNull`), consolidation settings and `timeSlice`.

use super::buckets::summarize_values;
use super::helpers::{py_round, safe_pow};
use super::{arg_err, py_d, py_str, Args, Out};
use crate::eval::{Context, Value};
use crate::pyfmt::{float_repr, format_g};
use crate::series::{Consolidation, Series};

const NAMES: &[&str] = &[
    "scale",
    "offset",
    "pow",
    "add",
    "scaleToSeconds",
    "absolute",
    "squareRoot",
    "invert",
    "exp",
    "sigmoid",
    "logit",
    "log",
    "offsetToZero",
    "minMax",
    "round",
    "derivative",
    "nonNegativeDerivative",
    "perSecond",
    "integral",
    "integralByInterval",
    "delay",
    "keepLastValue",
    "interpolate",
    "changed",
    "transformNull",
    "isNonNull",
    "consolidateBy",
    "cumulative",
    "setXFilesFactor",
    "xFilesFactor",
    "compressPeriodicGaps",
    "timeSlice",
];

pub(super) fn call(ctx: &Context<'_>, name: &str, a: &mut Args) -> Option<Out> {
    if !NAMES.contains(&name) {
        return None;
    }
    Some((|| -> Out {
        let mut list = a.series("seriesList")?;
        match name {
            "scale" | "offset" | "pow" => {
                let factor = a.float("factor")?;
                let tag = py_str(&a.raw("factor").unwrap_or(Value::Float(factor)));
                for s in &mut list {
                    s.tag(name, tag.clone());
                    s.wrap(format!("{name}({},{})", s.name, format_g(factor, 6)));
                    s.map_values(|v| match name {
                        "scale" => v.map(|v| v * factor),
                        "offset" => v.map(|v| v + factor),
                        _ => safe_pow(v, Some(factor)),
                    });
                }
            }
            "add" => {
                let constant = a.float("constant")?;
                let tag = py_str(&a.raw("constant").unwrap_or(Value::Float(constant)));
                for s in &mut list {
                    s.tag("add", tag.clone());
                    s.wrap(format!("add({},{})", s.name, py_d(constant)));
                    s.map_values(|v| v.map(|v| v + constant));
                }
            }
            "scaleToSeconds" => {
                let seconds = a.float("seconds")?;
                let tag = py_str(&a.raw("seconds").unwrap_or(Value::Float(seconds)));
                for s in &mut list {
                    s.tag("scaleToSeconds", tag.clone());
                    s.wrap(format!("scaleToSeconds({},{})", s.name, py_d(seconds)));
                    let factor = seconds / s.step as f64;
                    s.map_values(|v| v.map(|v| py_round(v * factor, 6)));
                }
            }
            "absolute" | "squareRoot" | "invert" | "exp" | "sigmoid" | "logit" => {
                let tag = match name {
                    "exp" => "e",
                    "sigmoid" => "sigmoid",
                    "logit" => "logit",
                    _ => "1",
                };
                for s in &mut list {
                    s.tag(name, tag);
                    s.wrap(format!("{name}({})", s.name));
                    s.map_values(|v| match name {
                        "absolute" => v.map(f64::abs),
                        "squareRoot" => safe_pow(v, Some(0.5)),
                        "invert" => safe_pow(v, Some(-1.0)),
                        "exp" => v.map(f64::exp),
                        "sigmoid" => v.map(|v| 1.0 / (1.0 + (-v).exp())),
                        _ => v.and_then(|v| {
                            if v == 1.0 {
                                return None;
                            }
                            let r = v / (1.0 - v);
                            (r > 0.0).then(|| r.ln())
                        }),
                    });
                }
            }
            "log" => {
                let base = a.float_or("base", 10.0)?;
                let tag = py_str(&a.raw("base").unwrap_or(Value::Int(10)));
                list = list
                    .into_iter()
                    .map(|mut s| {
                        s.tag("log", tag.clone());
                        let values = s
                            .points()
                            .into_iter()
                            .map(|v| v.filter(|v| *v > 0.0).map(|v| py_log(v, base)))
                            .collect();
                        s.copy_with(format!("log({}, {tag})", s.name), values)
                    })
                    .collect();
            }
            "offsetToZero" => {
                for s in &mut list {
                    let points = s.points();
                    let min = points.iter().flatten().copied().reduce(f64::min);
                    s.tag(
                        "offsetToZero",
                        min.map_or_else(|| "None".into(), float_repr),
                    );
                    s.wrap(format!("offsetToZero({})", s.name));
                    s.map_values(|v| v.map(|v| v - min.unwrap_or(0.0)));
                }
            }
            "minMax" => {
                for s in &mut list {
                    s.wrap(format!("minMax({})", s.name));
                    let points = s.points();
                    let min = points
                        .iter()
                        .flatten()
                        .copied()
                        .reduce(f64::min)
                        .unwrap_or(0.0);
                    let max = points
                        .iter()
                        .flatten()
                        .copied()
                        .reduce(f64::max)
                        .unwrap_or(0.0);
                    s.map_values(|v| {
                        v.map(|v| {
                            if max - min == 0.0 {
                                0.0
                            } else {
                                (v - min) / (max - min)
                            }
                        })
                    });
                }
            }
            "round" => {
                let precision = a.opt_int("precision")?;
                for s in &mut list {
                    s.tag("round", precision.unwrap_or(0).to_string());
                    s.wrap(match precision {
                        None => format!("round({})", s.name),
                        Some(p) => format!("round({},{p})", s.name),
                    });
                    s.map_values(|v| v.map(|v| py_round(v, precision.unwrap_or(0))));
                }
            }
            "derivative" => {
                list = derive(list, "derivative", |val, prev| match (val, prev) {
                    (Some(v), Some(p)) => (Some(v - p), Some(v)),
                    (v, _) => (None, v),
                });
            }
            "nonNegativeDerivative" | "perSecond" => {
                let max = a.opt_float("maxValue")?;
                let min = a.opt_float("minValue")?;
                let per_second = name == "perSecond";
                list = list
                    .into_iter()
                    .map(|s| {
                        let step = s.step as f64;
                        let mut s = derive(vec![s], name, |val, prev| {
                            non_negative_delta(val, prev, max, min)
                        })
                        .remove(0);
                        if per_second {
                            s.values = s
                                .values
                                .iter()
                                .map(|v| v.map(|d| py_round(d / step, 6)))
                                .collect();
                        }
                        s
                    })
                    .collect();
            }
            "integral" => {
                list = derive(list, "integral", |_, _| (None, None));
            }
            "integralByInterval" => {
                let unit = a.string("intervalUnit")?;
                let interval = super::offset_seconds(name, &unit)?.abs();
                if interval == 0 {
                    return Err(arg_err(name, "the interval must not be zero"));
                }
                let start_time = ctx.from;
                list = list
                    .into_iter()
                    .map(|mut s| {
                        let mut t = s.start;
                        let mut current = 0.0;
                        let values = s
                            .points()
                            .into_iter()
                            .map(|v| {
                                if (t - start_time).div_euclid(interval)
                                    != (t - start_time - s.step).div_euclid(interval)
                                {
                                    current = 0.0;
                                }
                                current += v.unwrap_or(0.0);
                                t += s.step;
                                Some(current)
                            })
                            .collect();
                        s.tag("integralByInterval", unit.clone());
                        s.copy_with(format!("integralByInterval({},'{unit}')", s.name), values)
                    })
                    .collect();
            }
            "delay" => {
                let steps = a.int("steps")?;
                let tag = py_str(&a.raw("steps").unwrap_or(Value::Int(steps)));
                list = list
                    .into_iter()
                    .map(|mut s| {
                        let v = s.values.clone();
                        let n = v.len() as i64;
                        let values = if steps < 0 {
                            let k = steps.unsigned_abs().min(n as u64) as usize;
                            let mut out: Vec<Option<f64>> = v[k..].to_vec();
                            out.extend(std::iter::repeat_n(None, k));
                            out
                        } else {
                            // Python's series[:-steps]: empty when steps is 0.
                            let keep = if steps == 0 {
                                0
                            } else {
                                (n - steps).max(0) as usize
                            };
                            let mut out = vec![None; steps.min(n) as usize];
                            out.extend_from_slice(&v[..keep]);
                            out
                        };
                        s.tag("delay", tag.clone());
                        s.copy_with(format!("delay({},{steps})", s.name), values)
                    })
                    .collect();
            }
            "keepLastValue" => {
                let limit = a.float_or("limit", f64::INFINITY)?;
                for s in &mut list {
                    keep_last_value(s, limit);
                }
            }
            "interpolate" => {
                let limit = a.float_or("limit", f64::INFINITY)?;
                for s in &mut list {
                    s.wrap(format!("interpolate({})", s.name));
                    let mut v = s.points();
                    let mut gaps = 0usize;
                    for i in 1..v.len() {
                        match v[i] {
                            None => gaps += 1,
                            Some(_) if gaps == 0 => {}
                            Some(value) => {
                                let before = i - gaps - 1;
                                if let Some(b) = v[before] {
                                    if gaps as f64 <= limit {
                                        for (j, slot) in
                                            v.iter_mut().enumerate().take(i).skip(i - gaps)
                                        {
                                            *slot = Some(
                                                b + (j - before) as f64 * (value - b)
                                                    / (gaps + 1) as f64,
                                            );
                                        }
                                    }
                                }
                                gaps = 0;
                            }
                        }
                    }
                    s.values = v;
                    s.values_per_point = 1;
                }
            }
            "changed" => {
                for s in &mut list {
                    s.wrap(format!("changed({})", s.name));
                    let mut previous: Option<f64> = None;
                    s.map_values(|v| match (previous, v) {
                        (None, _) => {
                            previous = v;
                            Some(0.0)
                        }
                        (Some(p), Some(x)) if p != x => {
                            previous = Some(x);
                            Some(1.0)
                        }
                        _ => Some(0.0),
                    });
                }
            }
            "transformNull" => {
                let default = a.float_or("default", 0.0)?;
                let tag = a
                    .raw("default")
                    .map_or_else(|| "0".to_string(), |v| py_str(&v));
                let reference = a.opt_series("referenceSeries")?.filter(|r| !r.is_empty());
                let defaults: Option<Vec<Option<f64>>> = reference.as_ref().map(|r| {
                    super::helpers::rows(r)
                        .iter()
                        .map(|row| row.iter().any(Option::is_some).then_some(default))
                        .collect()
                });
                for s in &mut list {
                    s.tag("transformNull", tag.clone());
                    if reference.is_some() {
                        s.tag("referenceSeries", "1");
                        s.wrap(format!(
                            "transformNull({},{},referenceSeries)",
                            s.name,
                            format_g(default, 6)
                        ));
                    } else {
                        s.wrap(format!(
                            "transformNull({},{})",
                            s.name,
                            format_g(default, 6)
                        ));
                    }
                    let points = s.points();
                    s.values = match defaults.as_ref().filter(|d| !d.is_empty()) {
                        Some(d) => (0..points.len().max(d.len()))
                            .map(|i| {
                                points
                                    .get(i)
                                    .copied()
                                    .flatten()
                                    .or(d.get(i).copied().flatten())
                            })
                            .collect(),
                        None => points
                            .into_iter()
                            .map(|v| Some(v.unwrap_or(default)))
                            .collect(),
                    };
                    s.values_per_point = 1;
                }
            }
            "isNonNull" => {
                for s in &mut list {
                    s.tag("isNonNull", "1");
                    s.wrap(format!("isNonNull({})", s.name));
                    s.map_values(|v| Some(if v.is_some() { 1.0 } else { 0.0 }));
                }
            }
            "consolidateBy" | "cumulative" => {
                let func = if name == "cumulative" {
                    "sum".to_string()
                } else {
                    a.string("consolidationFunc")?
                };
                let consolidation = Consolidation::parse(&func).ok_or_else(|| {
                    arg_err(name, format!("Invalid consolidation function: '{func}'"))
                })?;
                for s in &mut list {
                    s.consolidation = consolidation;
                    s.tag("consolidateBy", func.clone());
                    s.wrap(format!("consolidateBy({},\"{func}\")", s.name));
                }
            }
            "setXFilesFactor" | "xFilesFactor" => {
                let x = a.float("xFilesFactor")?;
                let tag = py_str(&a.raw("xFilesFactor").unwrap_or(Value::Float(x)));
                ctx.set_xff(x);
                for s in &mut list {
                    s.x_files_factor = x;
                    s.tag("xFilesFactor", tag.clone());
                }
            }
            "compressPeriodicGaps" => {
                list = list
                    .into_iter()
                    .map(|mut s| {
                        s.wrap(format!("compressPeriodicGaps({})", s.name));
                        compress_periodic_gaps(s)
                    })
                    .collect();
            }
            "timeSlice" => {
                let start = a.string("startSliceAt")?;
                let end = a.string_or("endSliceAt", "now")?;
                let at = |s: &str| {
                    crate::time::parse(
                        s,
                        &ctx.tz,
                        jiff::Timestamp::from_second(ctx.now)
                            .unwrap_or(jiff::Timestamp::UNIX_EPOCH),
                    )
                    .map(|t| t.as_second())
                    .map_err(|e| arg_err(name, e.to_string()))
                };
                let (start, end) = (at(&start)?, at(&end)?);
                for s in &mut list {
                    s.tag("timeSliceStart", start.to_string());
                    s.tag("timeSliceEnd", end.to_string());
                    s.name = format!("timeSlice({}, {start}, {end})", s.name);
                    let mut t = ctx.from;
                    let step = s.step;
                    s.map_values(|v| {
                        let keep = v.filter(|_| t >= start && t <= end);
                        t += step;
                        keep
                    });
                }
            }
            _ => unreachable!("{name} is listed in NAMES"),
        }
        Ok(list)
    })())
}

/// Python's `math.log(v, base)`: `log(v) / log(base)`.
fn py_log(v: f64, base: f64) -> f64 {
    v.ln() / base.ln()
}

/// graphite-web's `_nonNegativeDelta`: `(delta, new previous)`.
pub(crate) fn non_negative_delta(
    val: Option<f64>,
    prev: Option<f64>,
    max: Option<f64>,
    min: Option<f64>,
) -> (Option<f64>, Option<f64>) {
    if let Some(v) = val {
        if max.is_some_and(|m| v > m) || min.is_some_and(|m| v < m) {
            return (None, None);
        }
    }
    let (Some(v), Some(p)) = (val, prev) else {
        return (None, val);
    };
    if v >= p {
        return (Some(v - p), Some(v));
    }
    if let Some(m) = max {
        return (Some(m + 1.0 + v - p - min.unwrap_or(0.0)), Some(v));
    }
    if let Some(m) = min {
        return (Some(v - m), Some(v));
    }
    (None, Some(v))
}

/// The derivative family: walks each series' values with
/// `step(value, previous) -> (output, new previous)`, names the result
/// `name(series)` and tags it `name = "1"`, as graphite-web's `series.copy`.
fn derive(
    list: Vec<Series>,
    name: &str,
    mut step: impl FnMut(Option<f64>, Option<f64>) -> (Option<f64>, Option<f64>),
) -> Vec<Series> {
    list.into_iter()
        .map(|mut s| {
            let mut prev = None;
            let mut running = 0.0;
            let values = s
                .points()
                .into_iter()
                .map(|val| {
                    if name == "integral" {
                        return val.map(|v| {
                            running += v;
                            running
                        });
                    }
                    let (out, next) = step(val, prev);
                    prev = next;
                    out
                })
                .collect();
            s.tag(name, "1");
            s.copy_with(format!("{name}({})", s.name), values)
        })
        .collect()
}

/// graphite-web's `keepLastValue`: runs of at most `limit` gaps after a known
/// value are filled with it (trailing runs too).
fn keep_last_value(s: &mut Series, limit: f64) {
    s.wrap(format!("keepLastValue({})", s.name));
    let mut values = s.points();
    let mut gaps = 0usize;
    let mut last: Option<f64> = None;
    for i in 0..values.len() {
        match values[i] {
            None => gaps += 1,
            Some(v) => {
                if gaps > 0 && gaps as f64 <= limit {
                    if let Some(l) = last {
                        values[i - gaps..i].iter_mut().for_each(|x| *x = Some(l));
                    }
                }
                gaps = 0;
                last = Some(v);
            }
        }
    }
    if gaps > 0 && gaps as f64 <= limit {
        if let Some(l) = last {
            let n = values.len();
            values[n - gaps..].iter_mut().for_each(|x| *x = Some(l));
        }
    }
    s.values = values;
    s.values_per_point = 1;
}

/// graphite's `_compressPeriodicGaps`: a series written every k-th step
/// (gaps between) becomes one with step k × step.
pub(crate) fn compress_periodic_gaps(s: Series) -> Series {
    let points = s.points();
    let truthy = |v: Option<f64>| v.is_some_and(|v| v != 0.0);
    let (mut first, mut second) = (0usize, 0usize);
    for (i, v) in points.iter().enumerate() {
        if truthy(*v) {
            if first > 0 {
                second = i;
                break;
            }
            first = i;
        }
    }
    let guess = second as i64 - first as i64;
    let third = second as i64 + guess;
    let mut interval = None;
    if guess > 1 && third <= points.len() as i64 - 2 {
        let t = third as usize;
        if truthy(points[t]) && points[t - 1].is_none() && points[t + 1].is_none() {
            interval = Some(guess * s.step);
        }
    }
    let Some(interval) = interval else {
        return s;
    };
    let start = s.start + first as i64 * s.step;
    let (values, _) = summarize_values(&s, "last", interval, start, s.end);
    let end = start + interval * (values.len() as i64 - 1);
    let mut out = s.clone();
    out.start = start;
    out.end = end;
    out.step = interval;
    out.values = values;
    out.values_per_point = 1;
    out
}

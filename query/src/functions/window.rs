//! Functions over windows and buckets of time: the `moving*` family and
//! `exponentialMovingAverage` (which fetch a bootstrap window before the
//! range), `stdev`, `summarize`/`smartSummarize`/`hitcount` (bucket
//! alignment as graphite-web's), and Holt-Winters forecasting.

use super::aggregate::{aggregate_row, check_agg};
use super::buckets::summarize_values;
use super::helpers::py_round;
use super::{arg_err, offset_seconds, py_str, refetch, Args, Out};
use crate::eval::{Context, EvalError, Value};
use crate::parser::Call;
use crate::series::Series;

const NAMES: &[&str] = &[
    "movingWindow",
    "movingAverage",
    "movingSum",
    "movingMin",
    "movingMax",
    "movingMedian",
    "exponentialMovingAverage",
    "stdev",
    "summarize",
    "smartSummarize",
    "hitcount",
    "holtWintersForecast",
    "holtWintersConfidenceBands",
    "holtWintersConfidenceArea",
    "holtWintersAberration",
];

pub(super) fn call(ctx: &Context<'_>, raw: Option<&Call>, name: &str, a: &mut Args) -> Option<Out> {
    if !NAMES.contains(&name) {
        return None;
    }
    Some((|| -> Out {
        let list = a.series("seriesList")?;
        match name {
            "movingWindow" | "movingAverage" | "movingSum" | "movingMin" | "movingMax"
            | "movingMedian" => {
                let window = a
                    .raw("windowSize")
                    .ok_or_else(|| arg_err(name, "missing argument windowSize"))?;
                let func = match name {
                    "movingWindow" => a.string_or("func", "average")?,
                    _ => name.trim_start_matches("moving").to_ascii_lowercase(),
                };
                let xff = a.opt_float("xFilesFactor")?;
                moving_window(ctx, raw, list, &window, &func, xff)
            }
            "exponentialMovingAverage" => {
                let window = a
                    .raw("windowSize")
                    .ok_or_else(|| arg_err(name, "missing argument windowSize"))?;
                exponential_moving_average(ctx, raw, list, &window)
            }
            "stdev" => {
                let points = a.int("points")?;
                if points <= 0 {
                    return Err(arg_err(
                        name,
                        format!("points must be positive, not {points}"),
                    ));
                }
                let tolerance = a.float_or("windowTolerance", 0.1)?;
                Ok(list
                    .into_iter()
                    .map(|s| stdev(s, points, tolerance))
                    .collect())
            }
            "summarize" => {
                let interval_text = a.string("intervalString")?;
                let func = a.string_or("func", "sum")?;
                let align = a.bool_or("alignToFrom", false);
                check_agg(name, &func)?;
                let interval = positive_interval(name, &interval_text)?;
                for s in &list {
                    ctx.charge_points(((s.end - s.start).max(0) / interval) as usize + 2)?;
                }
                Ok(list
                    .into_iter()
                    .map(|mut s| {
                        let (start, end) = if align {
                            (s.start, s.end)
                        } else {
                            (
                                s.start - s.start.rem_euclid(interval),
                                s.end - s.end.rem_euclid(interval) + interval,
                            )
                        };
                        let (values, aligned_end) =
                            summarize_values(&s, &func, interval, start, end);
                        s.tag("summarize", interval_text.clone());
                        s.tag("summarizeFunction", func.clone());
                        let new_name = format!(
                            "summarize({}, \"{interval_text}\", \"{func}\"{})",
                            s.name,
                            if align { ", true" } else { "" }
                        );
                        let mut out = s.copy_with(new_name, values);
                        out.start = start;
                        out.end = if align { aligned_end } else { end };
                        out.step = interval;
                        out
                    })
                    .collect())
            }
            "smartSummarize" => {
                let interval_text = a.string("intervalString")?;
                let func = a.string_or("func", "sum")?;
                check_agg(name, &func)?;
                let interval = positive_interval(name, &interval_text)?;
                let list = match a.raw("alignTo") {
                    Some(Value::Str(unit)) => {
                        let from = align_start(ctx, name, &unit)?;
                        refetch(ctx, raw, name, from, ctx.until)?
                    }
                    _ => list,
                };
                for s in &list {
                    ctx.charge_points(((s.end - s.start).max(0) / interval) as usize + 1)?;
                }
                Ok(list
                    .into_iter()
                    .map(|mut s| {
                        let (values, aligned_end) =
                            summarize_values(&s, &func, interval, s.start, s.end);
                        s.tag("smartSummarize", interval_text.clone());
                        s.tag("smartSummarizeFunction", func.clone());
                        let new_name = format!(
                            "smartSummarize({}, \"{interval_text}\", \"{func}\")",
                            s.name
                        );
                        let mut out = s.copy_with(new_name, values);
                        out.end = aligned_end;
                        out.step = interval;
                        out
                    })
                    .collect())
            }
            "hitcount" => {
                let interval_text = a.string("intervalString")?;
                let align = a.bool_or("alignToInterval", false);
                let interval = positive_interval(name, &interval_text)?;
                let list = if align {
                    let unit = if interval >= 86400 {
                        "d"
                    } else if interval >= 3600 {
                        "h"
                    } else if interval >= 60 {
                        "min"
                    } else {
                        ""
                    };
                    let from = if unit.is_empty() {
                        ctx.from
                    } else {
                        align_start(ctx, name, unit)?
                    };
                    let mut l = refetch(ctx, raw, name, from, ctx.until)?;
                    for s in &mut l {
                        let count = (s.end - s.start).div_euclid(interval);
                        s.end = s.start + count * interval + interval;
                    }
                    l
                } else {
                    list
                };
                for s in &list {
                    ctx.charge_points(((s.end - s.start).max(0) / interval) as usize + 1)?;
                }
                Ok(list
                    .into_iter()
                    .map(|s| hitcount(s, interval, &interval_text, align))
                    .collect())
            }
            _ => {
                let delta = a.float_or("delta", 3.0)?;
                let bootstrap = a.string_or("bootstrapInterval", "7d")?;
                let seasonality = a.string_or("seasonality", "1d")?;
                let preview = offset_seconds(name, &bootstrap)?;
                let season = offset_seconds(name, &seasonality)?;
                let previews = refetch(ctx, raw, name, ctx.from - preview, ctx.until)?;
                match name {
                    "holtWintersForecast" => Ok(previews
                        .into_iter()
                        .map(|mut s| {
                            let (predictions, _) = holt_winters(&mut s, season);
                            let skip = window_points(preview, s.step);
                            let mut out = s.copy_with(
                                format!("holtWintersForecast({})", s.name),
                                predictions.get(skip..).unwrap_or_default().to_vec(),
                            );
                            out.start = s.start + preview;
                            out.path_expression = out.name.clone();
                            // A new TimeSeries in graphite-web: default consolidation.
                            out.consolidation = crate::series::Consolidation::Average;
                            out
                        })
                        .collect()),
                    "holtWintersConfidenceBands" => Ok(previews
                        .into_iter()
                        .flat_map(|s| bands(s, preview, season, delta))
                        .collect()),
                    "holtWintersConfidenceArea" => {
                        let mut bands: Vec<Series> = previews
                            .into_iter()
                            .flat_map(|s| bands(s, preview, season, delta))
                            .collect();
                        if bands.len() != 2 {
                            return Err(arg_err(
                                name,
                                "areaBetween series argument must reference *exactly* 2 series",
                            ));
                        }
                        let upper_expr = bands[1].path_expression.clone();
                        let mut tags = bands[1].tags.clone();
                        tags.insert("holtWintersConfidenceArea".into(), "1".into());
                        for (i, b) in bands.iter_mut().enumerate() {
                            b.tags = tags.clone();
                            b.options.insert("stacked".into(), true.into());
                            if i == 0 {
                                b.options.insert("invisible".into(), true.into());
                            }
                            b.wrap(format!("holtWintersConfidenceArea({upper_expr})"));
                        }
                        Ok(bands)
                    }
                    _ => {
                        let all: Vec<Series> = previews
                            .into_iter()
                            .flat_map(|s| bands(s, preview, season, delta))
                            .collect();
                        list.into_iter()
                            .map(|mut s| {
                                let find = |prefix: &str| {
                                    let want = format!("{prefix}({})", s.name);
                                    all.iter()
                                        .find(|b| b.name == want)
                                        .map(Series::points)
                                        .ok_or_else(|| {
                                            arg_err(name, format!("no confidence band {want}"))
                                        })
                                };
                                let lower = find("holtWintersConfidenceLower")?;
                                let upper = find("holtWintersConfidenceUpper")?;
                                let values = s
                                    .points()
                                    .into_iter()
                                    .enumerate()
                                    .map(|(i, v)| {
                                        let Some(v) = v else { return Some(0.0) };
                                        match (
                                            upper.get(i).copied().flatten(),
                                            lower.get(i).copied().flatten(),
                                        ) {
                                            (Some(u), _) if v > u => Some(v - u),
                                            (_, Some(l)) if v < l => Some(v - l),
                                            _ => Some(0.0),
                                        }
                                    })
                                    .collect();
                                s.tag("holtWintersAberration", "1");
                                let mut out = s.copy_with(
                                    format!("holtWintersAberration({})", s.name),
                                    values,
                                );
                                out.path_expression = out.name.clone();
                                out.consolidation = crate::series::Consolidation::Average;
                                Ok(out)
                            })
                            .collect()
                    }
                }
            }
        }
    })())
}

/// The furthest a window may reach back: a century.
const MAX_PREVIEW: i64 = 100 * 365 * 86400;

fn positive_interval(function: &str, text: &str) -> Result<i64, EvalError> {
    let interval = offset_seconds(function, text)?;
    if interval <= 0 {
        return Err(arg_err(
            function,
            format!("the interval {text:?} must be positive"),
        ));
    }
    Ok(interval)
}

/// `previewSeconds // step`.
fn window_points(preview: i64, step: i64) -> usize {
    preview.div_euclid(step.max(1)).max(0) as usize
}

/// The request's start truncated to the unit (`smartSummarize`'s `alignTo`,
/// `hitcount`'s `alignToInterval`), in the request's time zone.
fn align_start(ctx: &Context<'_>, function: &str, unit: &str) -> Result<i64, EvalError> {
    let ts =
        jiff::Timestamp::from_second(ctx.from).map_err(|e| arg_err(function, e.to_string()))?;
    let z = ts.to_zoned(ctx.tz.clone());
    let letters = unit.trim_start_matches(|c: char| c.is_ascii_digit() || c == '-' || c == '+');
    let d = z.date();
    let civil = |date: jiff::civil::Date, h: i8, m: i8, s: i8| date.at(h, m, s, 0);
    let start = if letters.starts_with('s') {
        civil(d, z.hour(), z.minute(), z.second())
    } else if letters.starts_with("min") {
        civil(d, z.hour(), z.minute(), 0)
    } else if letters.starts_with('h') {
        civil(d, z.hour(), 0, 0)
    } else if letters.starts_with('d') {
        civil(d, 0, 0, 0)
    } else if letters.starts_with('w') {
        let target: i8 = unit
            .chars()
            .last()
            .and_then(|c| c.to_digit(10))
            .map_or(1, |d| d as i8);
        let mut back = d.weekday().to_monday_one_offset() - target;
        if back < 0 {
            back += 7;
        }
        civil(d, 0, 0, 0) - jiff::Span::new().days(back)
    } else if letters.starts_with("mon") {
        civil(d.first_of_month(), 0, 0, 0)
    } else if letters.starts_with('y') {
        civil(jiff::civil::date(d.year(), 1, 1), 0, 0, 0)
    } else {
        return Err(arg_err(function, format!("Invalid offset unit '{unit}'")));
    };
    start
        .to_zoned(ctx.tz.clone())
        .map(|z| z.timestamp().as_second())
        .map_err(|e| arg_err(function, e.to_string()))
}

/// The preview length of a window argument: an interval string, or that
/// many steps of the coarsest series.
fn preview_seconds(
    function: &str,
    window: &Value,
    list: &[Series],
) -> Result<(i64, Option<String>, i64), EvalError> {
    match window {
        Value::Str(s) => {
            let preview = offset_seconds(function, s)?
                .checked_abs()
                .unwrap_or(i64::MAX);
            if preview > MAX_PREVIEW {
                return Err(arg_err(
                    function,
                    format!("windowSize {s:?} reaches back too far"),
                ));
            }
            Ok((preview, Some(s.clone()), 0))
        }
        Value::Int(_) | Value::Float(_) => {
            let n = match window {
                Value::Int(i) => *i,
                Value::Float(f) => f.trunc() as i64,
                _ => 0,
            };
            let step = list.iter().map(|s| s.step).max().unwrap_or(0);
            let preview = step
                .checked_mul(n)
                .filter(|p| (0..=MAX_PREVIEW).contains(p))
                .ok_or_else(|| arg_err(function, format!("windowSize {n} is out of range")))?;
            Ok((preview, None, n))
        }
        other => Err(arg_err(
            function,
            format!(
                "windowSize must be a number of points or an interval, not {}",
                other.kind()
            ),
        )),
    }
}

fn moving_window(
    ctx: &Context<'_>,
    raw: Option<&Call>,
    list: Vec<Series>,
    window: &Value,
    func: &str,
    xff: Option<f64>,
) -> Out {
    if list.is_empty() {
        return Ok(Vec::new());
    }
    check_agg("movingWindow", func)?;
    let (preview, text, points) = preview_seconds("movingWindow", window, &list)?;
    let previews = refetch(ctx, raw, "movingWindow", ctx.from - preview, ctx.until)?;
    let mut tag_name = String::from("moving");
    let mut chars = func.chars();
    if let Some(c) = chars.next() {
        tag_name.extend(c.to_uppercase());
        tag_name.push_str(&chars.as_str().to_lowercase());
    }
    Ok(previews
        .into_iter()
        .map(|mut s| {
            let (name, w) = match &text {
                Some(t) => (
                    format!("{tag_name}({},\"{t}\")", s.name),
                    window_points(preview, s.step),
                ),
                None => (
                    format!("{tag_name}({},{})", s.name, py_str(window)),
                    points.max(0) as usize,
                ),
            };
            s.tag(&tag_name, py_str(window));
            let x = xff.unwrap_or(s.x_files_factor);
            let raw_values = &s.values;
            let values: Vec<Option<f64>> = (w + 1..=raw_values.len())
                .map(|i| {
                    let known: Vec<Option<f64>> = raw_values[i - w..i]
                        .iter()
                        .copied()
                        .filter(Option::is_some)
                        .collect();
                    if !known.is_empty() && w > 0 && known.len() as f64 / w as f64 >= x {
                        aggregate_row(func, &known)
                    } else {
                        None
                    }
                })
                .collect();
            let mut out = s.copy_with(name, values);
            out.start = s.start + preview;
            out
        })
        .collect())
}

fn exponential_moving_average(
    ctx: &Context<'_>,
    raw: Option<&Call>,
    list: Vec<Series>,
    window: &Value,
) -> Out {
    if list.is_empty() {
        return Ok(Vec::new());
    }
    let (preview, text, points) = preview_seconds("exponentialMovingAverage", window, &list)?;
    let constant = match &text {
        Some(_) => 2.0 / (preview as f64 + 1.0),
        None => 2.0 / (points as f64 + 1.0),
    };
    let previews = refetch(
        ctx,
        raw,
        "exponentialMovingAverage",
        ctx.from - preview,
        ctx.until,
    )?;
    Ok(previews
        .into_iter()
        .map(|mut s| {
            let (name, w) = match &text {
                Some(t) => (
                    format!("exponentialMovingAverage({},\"{t}\")", s.name),
                    window_points(preview, s.step),
                ),
                None => (
                    format!("exponentialMovingAverage({},{})", s.name, py_str(window)),
                    points.max(0) as usize,
                ),
            };
            s.tag("exponentialMovingAverage", py_str(window));
            let v = s.values.clone();
            let head = &v[..w.min(v.len())];
            let mut ema = aggregate_row("average", head)
                .filter(|e| *e != 0.0)
                .unwrap_or(0.0);
            let mut values = vec![Some(py_round(ema, 6))];
            for x in v.iter().skip(w) {
                values.push(x.map(|x| {
                    ema = constant * x + (1.0 - constant) * ema;
                    py_round(ema, 6)
                }));
            }
            let mut out = s.copy_with(name, values);
            out.start = s.start + preview;
            out
        })
        .collect())
}

fn stdev(mut s: Series, points: i64, tolerance: f64) -> Series {
    s.tag("stdev", points.to_string());
    let name = format!("stdev({},{points})", s.name);
    let values = s.points();
    let (mut valid, mut sum, mut squares) = (0i64, 0.0f64, 0.0f64);
    let mut out = Vec::with_capacity(values.len());
    for (i, new) in values.iter().enumerate() {
        let dropped = if (i as i64) < points {
            None
        } else {
            values[i - points as usize]
        };
        if let Some(d) = dropped {
            valid -= 1;
            sum -= d;
            squares -= d * d;
        }
        if let Some(n) = new {
            valid += 1;
            sum += n;
            squares += n * n;
        }
        if valid > 0 && valid as f64 / points as f64 >= tolerance {
            let inner = valid as f64 * squares - sum * sum;
            out.push((inner >= 0.0).then(|| inner.sqrt() / valid as f64));
        } else {
            out.push(None);
        }
    }
    s.copy_with(name, out)
}

fn hitcount(mut s: Series, interval: i64, text: &str, align: bool) -> Series {
    let step = s.step;
    let buckets_n = ((s.end - s.start) as f64 / interval as f64).ceil().max(0.0) as usize;
    let mut buckets: Vec<Vec<f64>> = vec![Vec::new(); buckets_n];
    let new_start = s.end - buckets_n as i64 * interval;
    for (i, v) in s.points().into_iter().enumerate() {
        let Some(v) = v else { continue };
        let t = s.start + i as i64 * step;
        let (start_bucket, start_mod) = (
            (t - new_start).div_euclid(interval),
            (t - new_start).rem_euclid(interval),
        );
        let end_t = t + step;
        let (mut end_bucket, mut end_mod) = (
            (end_t - new_start).div_euclid(interval),
            (end_t - new_start).rem_euclid(interval),
        );
        if end_bucket >= buckets_n as i64 {
            end_bucket = buckets_n as i64 - 1;
            end_mod = interval;
        }
        let mut put = |b: i64, x: f64| {
            if let Some(bucket) = usize::try_from(b).ok().and_then(|b| buckets.get_mut(b)) {
                bucket.push(x);
            }
        };
        if start_bucket == end_bucket {
            if start_bucket >= 0 {
                put(start_bucket, v * (end_mod - start_mod) as f64);
            }
        } else {
            if start_bucket >= 0 {
                put(start_bucket, v * (interval - start_mod) as f64);
            }
            for j in start_bucket + 1..end_bucket {
                put(j, v * interval as f64);
            }
            if end_mod > 0 {
                put(end_bucket, v * end_mod as f64);
            }
        }
    }
    let values = buckets
        .iter()
        .map(|b| (!b.is_empty()).then(|| b.iter().fold(0.0, |a, x| a + x)))
        .collect();
    s.tag("hitcount", text);
    let name = format!(
        "hitcount({}, \"{text}\"{})",
        s.name,
        if align { ", true" } else { "" }
    );
    let mut out = s.copy_with(name, values);
    out.start = new_start;
    out.step = interval;
    out
}

/// graphite's `holtWintersAnalysis`: (predictions, deviations). Tags the
/// series as graphite-web does (both tags land on the shared tag dict).
fn holt_winters(s: &mut Series, season: i64) -> (Vec<Option<f64>>, Vec<Option<f64>>) {
    let (alpha, gamma, beta) = (0.1, 0.1, 0.0035);
    let season_length = season.div_euclid(s.step.max(1));
    let mut intercepts: Vec<Option<f64>> = Vec::new();
    let mut slopes: Vec<f64> = Vec::new();
    let mut seasonals: Vec<f64> = Vec::new();
    let mut predictions: Vec<Option<f64>> = Vec::new();
    let mut deviations: Vec<f64> = Vec::new();
    let last_of = |list: &[f64], i: i64| -> f64 {
        let j = i - season_length;
        if j >= 0 {
            // Python's list[j], j < len here as i <= len.
            list.get(j as usize).copied().unwrap_or(0.0)
        } else {
            0.0
        }
    };
    let mut next_pred: Option<f64> = None;
    for (i, actual) in s.points().into_iter().enumerate() {
        let Some(actual) = actual else {
            intercepts.push(None);
            slopes.push(0.0);
            seasonals.push(0.0);
            predictions.push(next_pred);
            deviations.push(0.0);
            next_pred = None;
            continue;
        };
        let (last_intercept, last_slope, prediction) = if i == 0 {
            (actual, 0.0, Some(actual))
        } else {
            let li = intercepts.last().copied().flatten().unwrap_or(actual);
            (li, *slopes.last().unwrap_or(&0.0), next_pred)
        };
        let i = i as i64;
        let last_seasonal = last_of(&seasonals, i);
        let next_last_seasonal = last_of(&seasonals, i + 1);
        let last_seasonal_dev = last_of(&deviations, i);
        let intercept =
            alpha * (actual - last_seasonal) + (1.0 - alpha) * (last_intercept + last_slope);
        let slope = beta * (intercept - last_intercept) + (1.0 - beta) * last_slope;
        let seasonal = gamma * (actual - intercept) + (1.0 - gamma) * last_seasonal;
        next_pred = Some(intercept + slope + next_last_seasonal);
        let deviation =
            gamma * (actual - prediction.unwrap_or(0.0)).abs() + (1.0 - gamma) * last_seasonal_dev;
        intercepts.push(Some(intercept));
        slopes.push(slope);
        seasonals.push(seasonal);
        predictions.push(prediction);
        deviations.push(deviation);
    }
    s.tag("holtWintersForecast", "1");
    s.tag("holtWintersDeviation", "1");
    (predictions, deviations.into_iter().map(Some).collect())
}

/// `holtWintersConfidenceBands` for one preview series: `[lower, upper]`.
fn bands(mut s: Series, preview: i64, season: i64, delta: f64) -> Vec<Series> {
    let (predictions, deviations) = holt_winters(&mut s, season);
    let skip = window_points(preview, s.step);
    let forecast = predictions.get(skip..).unwrap_or_default();
    let deviation = deviations.get(skip..).unwrap_or_default();
    let (mut upper, mut lower) = (Vec::new(), Vec::new());
    for (f, d) in forecast.iter().zip(deviation) {
        match (f, d) {
            (Some(f), Some(d)) => {
                upper.push(Some(f + delta * d));
                lower.push(Some(f - delta * d));
            }
            _ => {
                upper.push(None);
                lower.push(None);
            }
        }
    }
    s.tag("holtWintersConfidenceUpper", "1");
    s.tag("holtWintersConfidenceLower", "1");
    let make = |prefix: &str, values: Vec<Option<f64>>| {
        let mut b = s.copy_with(format!("{prefix}({})", s.name), values);
        b.consolidation = crate::series::Consolidation::Average;
        b.start = s.start + preview;
        b.path_expression = s.path_expression.clone();
        b
    };
    vec![
        make("holtWintersConfidenceLower", lower),
        make("holtWintersConfidenceUpper", upper),
    ]
}

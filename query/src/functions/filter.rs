//! Functions that choose, order or blank out series: `filterSeries` and its
//! shorthands, `highest*`/`lowest*`, `sortBy*`, `limit`, `grep`/`exclude`,
//! percentile and value cut-offs, `removeEmptySeries`, `useSeriesAbove`.

use super::aggregate::{aggregate_row, check_agg, percentile};
use super::helpers::python_replacement;
use super::{arg_err, cmp_f64, py_str, Args, Out};
use crate::eval::{Context, Value};
use crate::pyfmt::format_g;
use crate::series::Series;

const NAMES: &[&str] = &[
    "filterSeries",
    "maximumAbove",
    "minimumAbove",
    "maximumBelow",
    "minimumBelow",
    "currentAbove",
    "currentBelow",
    "averageAbove",
    "averageBelow",
    "highest",
    "highestAverage",
    "highestCurrent",
    "highestMax",
    "lowest",
    "lowestAverage",
    "lowestCurrent",
    "limit",
    "sortBy",
    "sortByName",
    "sortByTotal",
    "sortByMaxima",
    "sortByMinima",
    "exclude",
    "grep",
    "mostDeviant",
    "averageOutsidePercentile",
    "removeBetweenPercentile",
    "removeAbovePercentile",
    "removeAboveValue",
    "removeBelowPercentile",
    "removeBelowValue",
    "removeEmptySeries",
    "useSeriesAbove",
    "nPercentile",
];

/// Python 2's ordering, where `None` sorts below every number (graphite-web
/// was written against it; Python 3 raises instead).
fn lt(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (None, Some(_)) => true,
        (Some(x), Some(y)) => x < y,
        _ => false,
    }
}

fn operator_holds(op: &str, v: Option<f64>, t: f64) -> bool {
    match op {
        "=" => v == Some(t),
        "!=" => v != Some(t),
        ">" => v.is_some_and(|v| v > t),
        ">=" => v.is_some_and(|v| v >= t),
        "<" => v.is_none_or(|v| v < t),
        _ => v.is_none_or(|v| v <= t),
    }
}

/// graphite's `keyFunc`: an aggregation over the series, `None` as -inf.
fn key(func: &str, s: &Series) -> f64 {
    aggregate_row(func, &s.points()).unwrap_or(f64::NEG_INFINITY)
}

fn sort_by_key(list: &mut [Series], func: &str, reverse: bool) {
    let keys: Vec<f64> = list.iter().map(|s| key(func, s)).collect();
    let mut order: Vec<usize> = (0..list.len()).collect();
    if reverse {
        order.sort_by(|&a, &b| cmp_f64(keys[b], keys[a]));
    } else {
        order.sort_by(|&a, &b| cmp_f64(keys[a], keys[b]));
    }
    let sorted: Vec<Series> = order.iter().map(|&i| list[i].clone()).collect();
    list.clone_from_slice(&sorted);
}

pub(super) fn call(ctx: &Context<'_>, name: &str, a: &mut Args) -> Option<Out> {
    if !NAMES.contains(&name) {
        return None;
    }
    Some((|| -> Out {
        let mut list = a.series("seriesList")?;
        let shorthand = |func: &str, op: &str| (func.to_string(), op.to_string());
        let filter = match name {
            "maximumAbove" => Some(shorthand("max", ">")),
            "minimumAbove" => Some(shorthand("min", ">")),
            "maximumBelow" => Some(shorthand("max", "<=")),
            "minimumBelow" => Some(shorthand("min", "<=")),
            "currentAbove" => Some(shorthand("last", ">")),
            "currentBelow" => Some(shorthand("last", "<=")),
            "averageAbove" => Some(shorthand("average", ">")),
            "averageBelow" => Some(shorthand("average", "<=")),
            _ => None,
        };
        if let Some((func, op)) = filter {
            let n = a.float("n")?;
            return Ok(list
                .into_iter()
                .filter(|s| operator_holds(&op, aggregate_row(&func, &s.points()), n))
                .collect());
        }
        match name {
            "filterSeries" => {
                let func = a.string("func")?;
                let op = a.string("operator")?;
                let threshold = a.float("threshold")?;
                check_agg(name, &func)?;
                if !["=", "!=", ">", ">=", "<", "<="].contains(&op.as_str()) {
                    return Err(arg_err(name, format!("Unsupported operator: {op}")));
                }
                list.retain(|s| operator_holds(&op, aggregate_row(&func, &s.points()), threshold));
            }
            "highest" | "lowest" | "highestAverage" | "highestCurrent" | "highestMax"
            | "lowestAverage" | "lowestCurrent" => {
                let n = match name {
                    "highest" | "lowest" => a.int_or("n", 1)?,
                    _ => a.int("n")?,
                };
                let func = match name {
                    "highest" | "lowest" => a.string_or("func", "average")?,
                    "highestCurrent" | "lowestCurrent" => "current".into(),
                    "highestMax" => "max".into(),
                    _ => "average".into(),
                };
                check_agg(name, &func)?;
                sort_by_key(&mut list, &func, name.starts_with("highest"));
                super::py_truncate(&mut list, n);
            }
            "limit" => {
                let n = a.int("n")?;
                super::py_truncate(&mut list, n);
            }
            "sortBy" | "sortByTotal" | "sortByMaxima" => {
                let (func, reverse) = match name {
                    "sortBy" => (a.string_or("func", "average")?, a.bool_or("reverse", false)),
                    "sortByTotal" => ("sum".into(), true),
                    _ => ("max".into(), true),
                };
                check_agg(name, &func)?;
                sort_by_key(&mut list, &func, reverse);
            }
            "sortByMinima" => {
                list.retain(|s| aggregate_row("max", &s.points()).unwrap_or(0.0) > 0.0);
                sort_by_key(&mut list, "min", false);
            }
            "sortByName" => {
                let natural = a.bool_or("natural", false);
                let reverse = a.bool_or("reverse", false);
                let digits = regex::Regex::new(r"\d+").expect("a valid regex");
                let key = |s: &Series| {
                    if natural {
                        digits
                            .replace_all(&s.name, |c: &regex::Captures| {
                                let n = c[0].trim_start_matches('0');
                                format!("{n:0>10}")
                            })
                            .into_owned()
                    } else {
                        s.name.clone()
                    }
                };
                if reverse {
                    list.sort_by_key(|s| std::cmp::Reverse(key(s)));
                } else {
                    list.sort_by_key(key);
                }
            }
            "exclude" | "grep" => {
                let pattern = a.string("pattern")?;
                let re = regex::Regex::new(&pattern)
                    .map_err(|e| arg_err(name, format!("invalid pattern {pattern:?}: {e}")))?;
                let keep = name == "grep";
                list.retain(|s| re.is_match(&s.name) == keep);
            }
            "mostDeviant" => {
                let n = a.int("n")?;
                let mut deviants: Vec<(f64, Series)> = list
                    .into_iter()
                    .filter_map(|s| {
                        let known: Vec<f64> = s.points().into_iter().flatten().collect();
                        if known.is_empty() {
                            return None;
                        }
                        let mean = known.iter().fold(0.0, |a, b| a + b) / known.len() as f64;
                        let squares = known.iter().fold(0.0, |a, v| a + (v - mean).powi(2));
                        Some((squares / known.len() as f64, s))
                    })
                    .collect();
                deviants.sort_by(|a, b| cmp_f64(b.0, a.0));
                super::py_truncate(&mut deviants, n);
                list = deviants.into_iter().map(|(_, s)| s).collect();
            }
            "averageOutsidePercentile" => {
                let mut n = a.float("n")?;
                if n < 50.0 {
                    n = 100.0 - n;
                }
                let averages: Vec<Option<f64>> = list
                    .iter()
                    .map(|s| aggregate_row("average", &s.points()))
                    .collect();
                let low = percentile(&averages, 100.0 - n, false);
                let high = percentile(&averages, n, false);
                list = list
                    .into_iter()
                    .zip(averages)
                    .filter(|(_, avg)| !(lt(low, *avg) && lt(*avg, high)))
                    .map(|(s, _)| s)
                    .collect();
            }
            "removeBetweenPercentile" => {
                let mut n = a.float("n")?;
                if n < 50.0 {
                    n = 100.0 - n;
                }
                let columns: Vec<Vec<Option<f64>>> = list.iter().map(Series::points).collect();
                let len = columns.iter().map(Vec::len).min().unwrap_or(0);
                let mut lows = Vec::with_capacity(len);
                let mut highs = Vec::with_capacity(len);
                for i in 0..len {
                    let column: Vec<Option<f64>> = columns.iter().map(|c| c[i]).collect();
                    lows.push(percentile(&column, 100.0 - n, false));
                    highs.push(percentile(&column, n, false));
                }
                list = list
                    .into_iter()
                    .zip(columns)
                    .filter(|(_, values)| {
                        values.iter().enumerate().any(|(i, v)| {
                            let (Some(low), Some(high)) = (lows.get(i), highs.get(i)) else {
                                return false;
                            };
                            !(lt(*low, *v) && lt(*v, *high))
                        })
                    })
                    .map(|(s, _)| s)
                    .collect();
            }
            "removeAbovePercentile"
            | "removeBelowPercentile"
            | "removeAboveValue"
            | "removeBelowValue" => {
                let n = a.float("n")?;
                for s in &mut list {
                    s.wrap(format!("{name}({}, {})", s.name, format_g(n, 6)));
                    let cut = if name.ends_with("Percentile") {
                        if n == 0.0 {
                            return Err(arg_err(
                                name,
                                "The requested percent is required to be greater than 0",
                            ));
                        }
                        let points = s.points();
                        let count = (s.end - s.start) / s.step.max(1);
                        let Some(p) = percentile(&points, n, false) else {
                            continue;
                        };
                        // nPercentile() tags the series it was given.
                        s.tag("nPercentile", crate::pyfmt::float_repr(n));
                        if count <= 0 {
                            continue;
                        }
                        p
                    } else {
                        n
                    };
                    let above = name.starts_with("removeAbove");
                    s.map_values(|v| match v {
                        Some(x) if above && x > cut => None,
                        Some(x) if !above && x < cut => None,
                        other => other,
                    });
                }
            }
            "removeEmptySeries" => {
                let xff = a.float_or("xFilesFactor", 0.0)?;
                list.retain(|s| {
                    let points = s.points();
                    let known = points.iter().filter(|v| v.is_some()).count();
                    known > 0 && known as f64 / points.len() as f64 >= xff
                });
            }
            "nPercentile" => {
                let n = a.float("n")?;
                if n == 0.0 {
                    return Err(arg_err(
                        name,
                        "The requested percent is required to be greater than 0",
                    ));
                }
                let tag = py_str(&a.raw("n").unwrap_or(Value::Float(n)));
                list = list
                    .into_iter()
                    .filter_map(|mut s| {
                        let p = percentile(&s.points(), n, false)?;
                        s.tag("nPercentile", tag.clone());
                        let count =
                            ((s.end - s.start) as f64 / s.step as f64).trunc().max(0.0) as usize;
                        Some(s.copy_with(
                            format!("nPercentile({}, {})", s.name, format_g(n, 6)),
                            vec![Some(p); count],
                        ))
                    })
                    .collect();
            }
            "useSeriesAbove" => {
                let value = a.float("value")?;
                let search = a.string("search")?;
                let replace = python_replacement(&a.string("replace")?);
                let re = regex::Regex::new(&search)
                    .map_err(|e| arg_err(name, format!("invalid pattern {search:?}: {e}")))?;
                let names: Vec<String> = list
                    .iter()
                    .filter(|s| {
                        s.points()
                            .into_iter()
                            .flatten()
                            .reduce(f64::max)
                            .is_some_and(|m| m > value)
                    })
                    .map(|s| re.replace_all(&s.name, replace.as_str()).into_owned())
                    .collect();
                if names.is_empty() {
                    return Ok(Vec::new());
                }
                let found =
                    crate::eval::evaluate_target(ctx, &format!("group({})", names.join(",")))?;
                list = found.into_iter().filter(|s| !s.values.is_empty()).collect();
            }
            _ => unreachable!("{name} is listed in NAMES"),
        }
        Ok(list)
    })())
}

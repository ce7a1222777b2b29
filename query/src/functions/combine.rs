//! Functions that combine series: the aggregate family (`sumSeries`,
//! `aggregate`, `*WithWildcards`, `*Lists`), `asPercent`, `divideSeries`,
//! `weightedAverage`, grouping (`groupByNode(s)`, `groupByTags`, `map`/
//! `reduce`, `applyByNode`) and list plumbing (`group`, `unique`,
//! `fallbackSeries`).

use serde_json::Value as Json;

use super::{arg_err, py_str, Args, Out};
use crate::eval::{Context, EvalError, Value};
use crate::parser::{self, Call, Expr};
use crate::series::{lcm, normalize, Series};

pub(super) fn call(ctx: &Context<'_>, raw: Option<&Call>, name: &str, a: &mut Args) -> Option<Out> {
    let xff = Some(ctx.xff());
    Some(match name {
        "sumSeries" | "sum" => a.series_lists().and_then(|l| aggregate(l, "sum", xff)),
        "averageSeries" | "avg" => a.series_lists().and_then(|l| aggregate(l, "average", xff)),
        "maxSeries" => a.series_lists().and_then(|l| aggregate(l, "max", xff)),
        "minSeries" => a.series_lists().and_then(|l| aggregate(l, "min", xff)),
        "diffSeries" => a.series_lists().and_then(|l| aggregate(l, "diff", xff)),
        "stddevSeries" => a.series_lists().and_then(|l| aggregate(l, "stddev", xff)),
        "rangeOfSeries" => a.series_lists().and_then(|l| aggregate(l, "rangeOf", xff)),
        "multiplySeries" => a.series_lists().and_then(|lists| {
            // graphite-web keeps a lone series as it is.
            if lists.len() == 1 && lists[0].len() == 1 {
                Ok(lists.into_iter().flatten().collect())
            } else {
                aggregate(lists, "multiply", xff)
            }
        }),
        "aggregate" => (|| {
            let list = a.series("seriesList")?;
            let func = a.string("func")?;
            let x = a.opt_float("xFilesFactor")?.or(xff);
            aggregate(vec![list], &func, x)
        })(),
        "sumSeriesLists" | "diffSeriesLists" | "multiplySeriesLists" | "aggregateSeriesLists" => {
            (|| {
                let first = a.series("seriesListFirstPos")?;
                let second = a.series("seriesListSecondPos")?;
                let (func, x) = match name {
                    "aggregateSeriesLists" => {
                        (a.string("func")?, a.opt_float("xFilesFactor")?.or(xff))
                    }
                    _ => (name.trim_end_matches("SeriesLists").to_string(), xff),
                };
                aggregate_lists(first, second, &func, x)
            })()
        }
        "sumSeriesWithWildcards"
        | "averageSeriesWithWildcards"
        | "multiplySeriesWithWildcards"
        | "aggregateWithWildcards" => (|| {
            let list = a.series("seriesList")?;
            let func = match name {
                "aggregateWithWildcards" => a.string("func")?,
                "sumSeriesWithWildcards" => "sum".into(),
                "averageSeriesWithWildcards" => "average".into(),
                _ => "multiply".into(),
            };
            let positions: Vec<i64> = a.rest().iter().filter_map(super::as_index).collect();
            with_wildcards(list, &func, &positions, xff)
        })(),
        "countSeries" => (|| {
            let lists = a.series_lists()?;
            if lists.is_empty() {
                let mut s = super::graph::constant_line(ctx, 0.0, "0".into());
                s.path_expression = "countSeries()".into();
                return Ok(vec![s]);
            }
            let mut series: Vec<Series> = lists.into_iter().flatten().collect();
            let Some((start, end, step)) = normalize(&mut series) else {
                return Ok(Vec::new());
            };
            let len = series.iter().map(Series::len_points).max().unwrap_or(0);
            let name = format!("countSeries({})", path_expressions(&series));
            let mut out = Series::new(name, start, end, step, vec![Some(series.len() as f64); len]);
            out.x_files_factor = ctx.xff();
            Ok(vec![out])
        })(),
        "percentileOfSeries" => (|| {
            let mut list = a.series("seriesList")?;
            let n = a.float("n")?;
            let interpolate = a.bool_or("interpolate", false);
            if n <= 0.0 {
                return Err(arg_err(
                    name,
                    "The requested percent is required to be greater than 0",
                ));
            }
            if list.is_empty() {
                return Ok(Vec::new());
            }
            let name = format!(
                "percentileOfSeries({},{})",
                list[0].path_expression,
                crate::pyfmt::format_g(n, 6)
            );
            let (start, end, step) = normalize(&mut list).expect("a non-empty list");
            let values = rows(&list)
                .iter()
                .map(|row| percentile(row, n, interpolate))
                .collect();
            let mut out = Series::new(name, start, end, step, values);
            out.x_files_factor = ctx.xff();
            Ok(vec![out])
        })(),
        "powSeries" => (|| {
            let mut series: Vec<Series> = a.series_lists()?.into_iter().flatten().collect();
            let Some((start, end, step)) = normalize(&mut series) else {
                return Ok(Vec::new());
            };
            let name = format!(
                "powSeries({})",
                series
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            );
            let values = rows(&series)
                .iter()
                .map(|row| {
                    let mut it = row.iter().copied();
                    let first = it.next().flatten();
                    it.fold(first, super::transform::safe_pow)
                })
                .collect();
            let mut out = Series::new(name, start, end, step, values);
            out.x_files_factor = ctx.xff();
            Ok(vec![out])
        })(),
        "asPercent" | "pct" => (|| {
            let list = a.series("seriesList")?;
            let total = a.raw("total");
            let nodes = a.rest();
            as_percent(ctx, list, total, &nodes)
        })(),
        "divideSeries" => (|| {
            let dividends = a.series("dividendSeriesList")?;
            let divisor = a.series("divisorSeries")?;
            if divisor.is_empty() {
                return Ok(dividends
                    .into_iter()
                    .map(|mut s| {
                        s.wrap(format!("divideSeries({},MISSING)", s.name));
                        s.values = vec![None; s.values.len()];
                        s
                    })
                    .collect());
            }
            if divisor.len() > 1 {
                return Err(arg_err(
                    name,
                    format!(
                        "divideSeries second argument must reference exactly 1 series (got {})",
                        divisor.len()
                    ),
                ));
            }
            Ok(dividends
                .into_iter()
                .map(|d| divide(ctx, d, divisor[0].clone()))
                .collect())
        })(),
        "divideSeriesLists" => (|| {
            let dividends = a.series("dividendSeriesList")?;
            let divisors = a.series("divisorSeriesList")?;
            if dividends.len() != divisors.len() {
                return Err(arg_err(
                    name,
                    "dividendSeriesList and divisorSeriesList argument must have equal length",
                ));
            }
            Ok(dividends
                .into_iter()
                .zip(divisors)
                .map(|(d, v)| divide(ctx, d, v))
                .collect())
        })(),
        "weightedAverage" => (|| {
            let avg = a.series("seriesListAvg")?;
            let weight = a.series("seriesListWeight")?;
            let nodes = a.rest();
            weighted_average(ctx, avg, weight, &nodes)
        })(),
        "group" => a.series_lists().map(|l| l.into_iter().flatten().collect()),
        "unique" => a.series_lists().map(|lists| {
            let mut seen = std::collections::HashSet::new();
            lists
                .into_iter()
                .flatten()
                .filter(|s| seen.insert(s.name.clone()))
                .collect()
        }),
        "fallbackSeries" => (|| {
            let list = a.series("seriesList")?;
            let fallback = a.series("fallback")?;
            Ok(if list.is_empty() { fallback } else { list })
        })(),
        "groupByNode" | "groupByNodes" => (|| {
            let list = a.series("seriesList")?;
            let (callback, nodes) = if name == "groupByNode" {
                let node = a.raw("nodeNum").unwrap_or(Value::None);
                (a.string_or("callback", "average")?, vec![node])
            } else {
                (a.string("callback")?, a.rest())
            };
            let mut groups: Vec<(String, Vec<Series>)> = Vec::new();
            for s in list {
                let key = agg_key(&s, &nodes);
                push_group(&mut groups, key, s);
            }
            groups
                .into_iter()
                .map(|(key, group)| {
                    let mut s = apply_callback(ctx, &callback, group)?;
                    s.name = key;
                    Ok(s)
                })
                .collect()
        })(),
        "groupByTags" => (|| {
            let list = a.series("seriesList")?;
            let callback = a.string("callback")?;
            let tags: Vec<String> = a.rest().iter().map(py_str).collect();
            group_by_tags(ctx, list, &callback, &tags)
        })(),
        "reduceSeries" | "reduce" => (|| {
            let lists = match a.raw("seriesLists") {
                Some(Value::SeriesLists(l)) => l,
                Some(Value::Series(s)) => vec![s],
                _ => return Err(arg_err(name, "seriesLists must come from mapSeries()")),
            };
            let function = a.string("reduceFunction")?;
            let node = a.int("reduceNode")?;
            let matchers: Vec<String> = a.rest().iter().map(py_str).collect();
            reduce_series(ctx, lists, &function, node, &matchers)
        })(),
        "applyByNode" => (|| {
            let list = a.series("seriesList")?;
            let node = a.int("nodeNum")?;
            let template = a.string("templateFunction")?;
            let new_name = a.opt_string("newName")?;
            apply_by_node(ctx, list, node, &template, new_name.as_deref())
        })(),
        _ => {
            let _ = raw;
            return None;
        }
    })
}

/// `map`/`mapSeries`: the series grouped by the nodes, in first-seen order.
pub(super) fn map_series(a: &mut Args) -> Result<Vec<Vec<Series>>, EvalError> {
    let list = a.series("seriesList")?;
    let nodes = a.rest();
    let mut groups: Vec<(String, Vec<Series>)> = Vec::new();
    for s in list {
        let key = agg_key(&s, &nodes);
        push_group(&mut groups, key, s);
    }
    Ok(groups.into_iter().map(|(_, g)| g).collect())
}

fn push_group(groups: &mut Vec<(String, Vec<Series>)>, key: String, s: Series) {
    match groups.iter_mut().find(|(k, _)| *k == key) {
        Some((_, g)) => g.push(s),
        None => groups.push((key, vec![s])),
    }
}

/// The consolidated values of several series side by side, padded with
/// gaps to the longest (Python's `izip_longest(*seriesList)`).
pub(crate) fn rows(series: &[Series]) -> Vec<Vec<Option<f64>>> {
    let columns: Vec<Vec<Option<f64>>> = series.iter().map(Series::points).collect();
    let len = columns.iter().map(Vec::len).max().unwrap_or(0);
    (0..len)
        .map(|i| {
            columns
                .iter()
                .map(|c| c.get(i).copied().flatten())
                .collect()
        })
        .collect()
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

/// graphite's `getNodeOrTag`/`aggKey`: the nodes (indexes into the path,
/// or tag names) joined with dots.
pub(crate) fn agg_key(s: &Series, nodes: &[Value]) -> String {
    let path = if s.name.ends_with(')') {
        first_path_expression(&s.name)
    } else {
        None
    };
    let path = path.as_deref().unwrap_or(&s.name);
    let parts: Vec<&str> = path.split(';').next().unwrap_or("").split('.').collect();
    nodes
        .iter()
        .map(|n| {
            let index = match n {
                Value::Int(i) => Some(*i),
                Value::Float(f) if f.fract() == 0.0 => Some(*f as i64),
                _ => None,
            };
            if let Some(i) = index {
                let i = if i < 0 { parts.len() as i64 + i } else { i };
                if let Some(p) = usize::try_from(i).ok().and_then(|i| parts.get(i)) {
                    return p.to_string();
                }
            }
            match s.tags.get(&py_str(n)) {
                Some(Json::String(v)) => v.clone(),
                Some(v) => v.to_string(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// graphite's `_getFirstPathExpression`: follows first arguments down to a
/// path expression.
pub(crate) fn first_path_expression(name: &str) -> Option<String> {
    let mut e = parser::parse_prefix(name).ok()?;
    loop {
        match e {
            Expr::Path(p) => return Some(p),
            Expr::Call(c) => e = c.args.into_iter().next()?,
            _ => return None,
        }
    }
}

/// graphite's `formatPathExpressions`: the distinct expressions, in order.
pub(crate) fn path_expressions(series: &[Series]) -> String {
    let mut expressions: Vec<&str> = Vec::new();
    for s in series {
        if !expressions.contains(&s.path_expression.as_str()) {
            expressions.push(&s.path_expression);
        }
    }
    expressions.join(",")
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

fn aggregate_lists(first: Vec<Series>, second: Vec<Series>, func: &str, xff: Option<f64>) -> Out {
    if first.len() != second.len() {
        return Err(arg_err(
            "aggregateSeriesLists",
            "seriesListFirstPos and seriesListSecondPos argument must have equal length",
        ));
    }
    let mut out = Vec::new();
    for (a, b) in first.into_iter().zip(second) {
        let names = format!("{},{}", a.name, b.name);
        let Some(mut s) = aggregate(vec![vec![a, b]], func, xff)?.pop() else {
            continue;
        };
        let cut = s.name.find("Series(").unwrap_or(s.name.len());
        s.name = format!("{}Series({names})", &s.name[..cut]);
        out.push(s);
    }
    Ok(out)
}

fn with_wildcards(list: Vec<Series>, func: &str, positions: &[i64], xff: Option<f64>) -> Out {
    let mut groups: Vec<(String, Vec<Series>)> = Vec::new();
    for s in list {
        let key = s
            .name
            .split('.')
            .enumerate()
            .filter(|(i, _)| !positions.contains(&(*i as i64)))
            .map(|(_, p)| p)
            .collect::<Vec<_>>()
            .join(".");
        push_group(&mut groups, key, s);
    }
    let mut out = Vec::new();
    for (key, group) in groups {
        if let Some(mut s) = aggregate(vec![group], func, xff)?.pop() {
            s.name = key;
            out.push(s);
        }
    }
    Ok(out)
}

/// `groupByNodes`' callback: a series function by name, or an aggregation.
fn apply_callback(
    ctx: &Context<'_>,
    callback: &str,
    group: Vec<Series>,
) -> Result<Series, EvalError> {
    let result = if super::catalog::PARAMS.contains_key(callback) {
        match super::call(ctx, None, callback, vec![Value::Series(group)], Vec::new())? {
            Value::Series(s) => s,
            _ => Vec::new(),
        }
    } else {
        aggregate(vec![group], callback, Some(ctx.xff()))?
    };
    result
        .into_iter()
        .next()
        .ok_or_else(|| arg_err(callback, "the callback returned no series"))
}

fn group_by_tags(ctx: &Context<'_>, list: Vec<Series>, callback: &str, tags: &[String]) -> Out {
    if tags.is_empty() {
        return Err(arg_err("groupByTags", "groupByTags(): no tags specified"));
    }
    let tag = |s: &Series, t: &str| match s.tags.get(t) {
        Some(Json::String(v)) => v.clone(),
        Some(v) => v.to_string(),
        None => String::new(),
    };
    let by_name = tags.iter().any(|t| t == "name");
    let common_name = {
        let names: std::collections::BTreeSet<String> =
            list.iter().map(|s| tag(s, "name")).collect();
        if names.len() == 1 {
            names.into_iter().next().unwrap_or_default()
        } else {
            callback.to_string()
        }
    };
    let mut groups: Vec<(String, Vec<Series>)> = Vec::new();
    for s in list {
        let mut pairs: Vec<String> = tags
            .iter()
            .filter(|t| !by_name || *t != "name")
            .map(|t| format!("{t}={}", tag(&s, t)))
            .collect();
        pairs.sort();
        let head = if by_name {
            tag(&s, "name")
        } else {
            common_name.clone()
        };
        let key = std::iter::once(head)
            .chain(pairs)
            .collect::<Vec<_>>()
            .join(";");
        push_group(&mut groups, key, s);
    }
    groups
        .into_iter()
        .map(|(key, group)| {
            let mut s = apply_callback(ctx, callback, group)?;
            s.name = key.clone();
            s.path_expression = key.clone();
            s.tags = parse_tags(&key);
            Ok(s)
        })
        .collect()
}

/// A tagged name `a.b;k=v;…` as graphite's tag database parses it.
pub(crate) fn parse_tags(name: &str) -> serde_json::Map<String, Json> {
    let mut parts = name.split(';');
    let mut tags = serde_json::Map::new();
    tags.insert("name".to_string(), Json::from(parts.next().unwrap_or("")));
    for p in parts {
        if let Some((k, v)) = p.split_once('=') {
            tags.insert(k.to_string(), Json::from(v));
        }
    }
    tags
}

fn reduce_series(
    ctx: &Context<'_>,
    lists: Vec<Vec<Series>>,
    function: &str,
    node: i64,
    matchers: &[String],
) -> Out {
    let mut groups: Vec<(String, Vec<Option<Series>>)> = Vec::new();
    for s in lists.into_iter().flatten() {
        let nodes: Vec<String> = s.name.split('.').map(str::to_string).collect();
        let i = if node < 0 {
            nodes.len() as i64 + node
        } else {
            node
        };
        let Some(n) = usize::try_from(i).ok().filter(|&i| i < nodes.len()) else {
            return Err(arg_err(
                "reduceSeries",
                format!("reduceNode {node} is out of range for {}", s.name),
            ));
        };
        let key = format!("{}.reduce.{function}", nodes[..n].join("."));
        if let Some(m) = matchers.iter().position(|m| *m == nodes[n]) {
            let slot = match groups.iter().position(|(k, _)| *k == key) {
                Some(g) => g,
                None => {
                    groups.push((key, vec![None; matchers.len()]));
                    groups.len() - 1
                }
            };
            groups[slot].1[m] = Some(s);
        }
    }
    let mut out = Vec::new();
    for (key, members) in groups {
        let args = members
            .into_iter()
            .map(|m| Value::Series(m.into_iter().collect()))
            .collect();
        let result = match super::call(ctx, None, function, args, Vec::new())? {
            Value::Series(s) => s,
            _ => Vec::new(),
        };
        let mut s = result.into_iter().next().ok_or_else(|| {
            arg_err(
                "reduceSeries",
                format!("{function} returned no series for {key}"),
            )
        })?;
        s.name = key;
        out.push(s);
    }
    Ok(out)
}

fn apply_by_node(
    ctx: &Context<'_>,
    list: Vec<Series>,
    node: i64,
    template: &str,
    new_name: Option<&str>,
) -> Out {
    let Some(last) = list.last() else {
        return Ok(Vec::new());
    };
    let (start, end) = (last.start, last.end);
    let mut prefixes: Vec<String> = list
        .iter()
        .map(|s| {
            let parts: Vec<&str> = s.name.split('.').collect();
            // Python's split('.')[:nodeNum + 1].
            let end = node.saturating_add(1);
            let n = if end >= 0 {
                (end as usize).min(parts.len())
            } else {
                parts.len().saturating_sub(end.unsigned_abs() as usize)
            };
            parts[..n].join(".")
        })
        .collect();
    prefixes.sort();
    prefixes.dedup();
    let mut out = Vec::new();
    for prefix in prefixes {
        for mut s in crate::eval::evaluate_target(ctx, &template.replace('%', &prefix))? {
            if let Some(n) = new_name {
                s.name = n.replace('%', &prefix);
            }
            s.path_expression = prefix.clone();
            s.start = start;
            s.end = end;
            out.push(s);
        }
    }
    Ok(out)
}

/// `divideSeries` of one pair: both brought to the lcm of their steps.
fn divide(ctx: &Context<'_>, mut dividend: Series, mut divisor: Series) -> Series {
    let name = format!("divideSeries({},{})", dividend.name, divisor.name);
    let step = lcm(dividend.step, divisor.step);
    dividend.values_per_point = (step / dividend.step.max(1)) as usize;
    divisor.values_per_point = (step / divisor.step.max(1)) as usize;
    let start = dividend.start.min(divisor.start);
    let mut end = dividend.end.max(divisor.end);
    end -= (end - start) % step.max(1);
    let values = rows(&[dividend, divisor])
        .iter()
        .map(|r| safe_div(r[0], r[1]))
        .collect();
    let mut out = Series::new(name, start, end, step, values);
    out.x_files_factor = ctx.xff();
    out
}

/// `safeDiv`: unknown over anything, or anything over zero or unknown, is unknown.
pub(crate) fn safe_div(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b != 0.0 => Some(a / b),
        _ => None,
    }
}

fn percent(v: Option<f64>, total: Option<f64>) -> Option<f64> {
    safe_div(v, total).map(|x| x * 100.0)
}

fn sum_rows(series: &[Series]) -> Vec<Option<f64>> {
    rows(series)
        .iter()
        .map(|r| aggregate_row("sum", r))
        .collect()
}

fn as_percent(
    ctx: &Context<'_>,
    mut list: Vec<Series>,
    total: Option<Value>,
    nodes: &[Value],
) -> Out {
    let xff = ctx.xff();
    let Some(_) = normalize(&mut list) else {
        return Ok(Vec::new());
    };
    let make = |name: String, (start, end, step): (i64, i64, i64), values: Vec<Option<f64>>| {
        let mut s = Series::new(name, start, end, step, values);
        s.x_files_factor = xff;
        s
    };
    if !nodes.is_empty() {
        // graphite-web reuses the times of the last group it normalized for
        // MISSING results; `last` follows that.
        let mut last: Option<(i64, i64, i64)> = None;
        let mut keys: Vec<String> = Vec::new();
        let mut groups: Vec<(String, Vec<Series>)> = Vec::new();
        for s in list {
            let key = agg_key(&s, nodes);
            if !keys.contains(&key) {
                keys.push(key.clone());
            }
            push_group(&mut groups, key, s);
        }
        let mut totals: Vec<(String, Series)> = Vec::new();
        let sum_group = |mut group: Vec<Series>, last: &mut Option<(i64, i64, i64)>| -> Series {
            if group.len() == 1 {
                return group.pop().expect("one series");
            }
            let name = format!("sumSeries({})", path_expressions(&group));
            let times = normalize(&mut group).expect("a non-empty group");
            *last = Some(times);
            make(name, times, sum_rows(&group))
        };
        match total {
            None | Some(Value::None) => {
                for (k, g) in &groups {
                    totals.push((k.clone(), sum_group(g.clone(), &mut last)));
                }
            }
            Some(Value::Series(total)) => {
                let mut tgroups: Vec<(String, Vec<Series>)> = Vec::new();
                for s in total {
                    let key = agg_key(&s, nodes);
                    if !keys.contains(&key) {
                        keys.push(key.clone());
                    }
                    push_group(&mut tgroups, key, s);
                }
                for (k, g) in tgroups {
                    totals.push((k, sum_group(g, &mut last)));
                }
            }
            Some(_) => return Err(arg_err("asPercent", "total must be None or a seriesList")),
        }
        let mut out = Vec::new();
        for key in keys {
            let total = totals
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, s)| s.clone());
            let Some((_, members)) = groups.iter().find(|(k, _)| *k == key) else {
                let total = total.expect("a key comes from one side");
                let times =
                    last.ok_or_else(|| arg_err("asPercent", "cannot place a MISSING series"))?;
                out.push(make(
                    format!("asPercent(MISSING,{})", total.name),
                    times,
                    vec![None; total.len_points()],
                ));
                continue;
            };
            for s in members {
                match &total {
                    None => {
                        let times = last
                            .ok_or_else(|| arg_err("asPercent", "cannot place a MISSING series"))?;
                        out.push(make(
                            format!("asPercent({},MISSING)", s.name),
                            times,
                            vec![None; s.len_points()],
                        ));
                    }
                    Some(t) => {
                        let mut pair = vec![s.clone(), t.clone()];
                        let times = normalize(&mut pair).expect("two series");
                        last = Some(times);
                        let values = rows(&pair).iter().map(|r| percent(r[0], r[1])).collect();
                        out.push(make(
                            format!("asPercent({},{})", s.name, t.name),
                            times,
                            values,
                        ));
                    }
                }
            }
        }
        return Ok(out);
    }
    let (total_values, total_text): (Vec<Option<f64>>, String) = match &total {
        None | Some(Value::None) => (
            sum_rows(&list),
            format!("sumSeries({})", path_expressions(&list)),
        ),
        Some(Value::Series(t)) => {
            if t.len() != 1 && t.len() != list.len() {
                return Err(arg_err(
                    "asPercent",
                    "asPercent second argument must be missing, a single digit, reference exactly 1 series or reference the same number of series as the first argument",
                ));
            }
            if t.len() == 1 {
                let mut all: Vec<Series> = list.iter().cloned().chain(t.iter().cloned()).collect();
                normalize(&mut all);
                let total = all.pop().expect("the total");
                list = all;
                (total.points(), total.name)
            } else {
                (Vec::new(), String::new())
            }
        }
        Some(v @ (Value::Int(_) | Value::Float(_))) => {
            let n = match v {
                Value::Int(i) => *i as f64,
                Value::Float(f) => *f,
                _ => unreachable!(),
            };
            (vec![Some(n); list[0].values.len()], py_str(v))
        }
        Some(v) => {
            return Err(arg_err(
                "asPercent",
                format!("total must be a number or a series list, not {}", v.kind()),
            ))
        }
    };
    if let Some(Value::Series(t)) = &total {
        if t.len() == list.len() {
            let mut a = list.clone();
            let mut b = t.clone();
            a.sort_by(|x, y| x.name.cmp(&y.name));
            b.sort_by(|x, y| x.name.cmp(&y.name));
            return Ok(a
                .into_iter()
                .zip(b)
                .map(|(s1, s2)| {
                    let name = format!("asPercent({},{})", s1.name, s2.name);
                    let mut pair = vec![s1, s2];
                    let times = normalize(&mut pair).expect("two series");
                    let values = rows(&pair).iter().map(|r| percent(r[0], r[1])).collect();
                    make(name, times, values)
                })
                .collect());
        }
    }
    Ok(list
        .into_iter()
        .map(|s| {
            let points = s.points();
            let len = points.len().max(total_values.len());
            let values = (0..len)
                .map(|i| {
                    percent(
                        points.get(i).copied().flatten(),
                        total_values.get(i).copied().flatten(),
                    )
                })
                .collect();
            let text = if total_text.is_empty() {
                s.path_expression.clone()
            } else {
                total_text.clone()
            };
            make(
                format!("asPercent({},{text})", s.name),
                (s.start, s.end, s.step),
                values,
            )
        })
        .collect())
}

fn weighted_average(
    ctx: &Context<'_>,
    avg: Vec<Series>,
    weight: Vec<Series>,
    nodes: &[Value],
) -> Out {
    if avg.len() != weight.len() {
        return Err(arg_err(
            "weightedAverage",
            format!(
                "weightedAverage must receive the same number of series for seriesListAvg and seriesListWeight but received respectively {} and {}",
                avg.len(),
                weight.len()
            ),
        ));
    }
    let mut keyed: Vec<(String, Option<Series>, Option<Series>)> = Vec::new();
    let mut slot = |key: String| -> usize {
        match keyed.iter().position(|(k, _, _)| *k == key) {
            Some(i) => i,
            None => {
                keyed.push((key, None, None));
                keyed.len() - 1
            }
        }
    };
    let mut idx = Vec::new();
    for (a, w) in avg.iter().zip(&weight) {
        idx.push((slot(agg_key(a, nodes)), slot(agg_key(w, nodes))));
    }
    for ((ia, iw), (a, w)) in idx.into_iter().zip(avg.iter().zip(&weight)) {
        keyed[ia].1 = Some(a.clone());
        keyed[iw].2 = Some(w.clone());
    }
    let products: Vec<Series> = keyed
        .into_iter()
        .filter_map(|(_, a, w)| {
            let (a, w) = (a?, w?);
            let values = rows(&[a.clone(), w.clone()])
                .iter()
                .map(|r| match (r[0], r[1]) {
                    (Some(x), Some(y)) => Some(x * y),
                    _ => None,
                })
                .collect();
            let mut s = Series::new(
                format!("product({},{})", w.name, a.name),
                a.start,
                a.end,
                a.step,
                values,
            );
            s.x_files_factor = ctx.xff();
            Some(s)
        })
        .collect();
    if products.is_empty() {
        return Ok(Vec::new());
    }
    let xff = Some(ctx.xff());
    let sum_products = aggregate(vec![products], "sum", xff)?.remove(0);
    let Some(sum_weights) = aggregate(vec![weight.clone()], "sum", xff)?.pop() else {
        return Ok(Vec::new());
    };
    let values = rows(&[sum_products.clone(), sum_weights])
        .iter()
        .map(|r| safe_div(r[0], r[1]))
        .collect();
    let exprs = |l: &[Series]| {
        let set: std::collections::BTreeSet<&str> =
            l.iter().map(|s| s.path_expression.as_str()).collect();
        set.into_iter().collect::<Vec<_>>().join(",")
    };
    let name = format!(
        "weightedAverage({}, {}, {})",
        exprs(&avg),
        exprs(&weight),
        nodes.iter().map(py_str).collect::<Vec<_>>().join(",")
    );
    let mut s = Series::new(
        name,
        sum_products.start,
        sum_products.end,
        sum_products.step,
        values,
    );
    s.x_files_factor = ctx.xff();
    Ok(vec![s])
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

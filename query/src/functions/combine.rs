//! Functions that combine series: the aggregate family (`sumSeries`,
//! `aggregate`, `*WithWildcards`, `*Lists`), `countSeries`,
//! `percentileOfSeries`, `powSeries`, `asPercent`, `divideSeries`,
//! `weightedAverage` and list plumbing (`group`, `unique`, `fallbackSeries`).

use super::aggregate::{aggregate, aggregate_row, percentile};
use super::helpers::{agg_key, constant_line, path_expressions, push_group, rows, safe_pow};
use super::{arg_err, py_str, Args, Out};
use crate::eval::{Context, Value};
use crate::parser::Call;
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
                let mut s = constant_line(ctx, 0.0, "0".into());
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
                    it.fold(first, safe_pow)
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
        _ => {
            let _ = raw;
            return None;
        }
    })
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
        let key = wildcard_key(&s.name, positions);
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

/// The group a `*WithWildcards` call puts a series named `name` in: its
/// name without the nodes at `positions`.
pub(crate) fn wildcard_key(name: &str, positions: &[i64]) -> String {
    name.split('.')
        .enumerate()
        .filter(|(i, _)| !positions.contains(&(*i as i64)))
        .map(|(_, p)| p)
        .collect::<Vec<_>>()
        .join(".")
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

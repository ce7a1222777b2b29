//! Functions that rename series: `alias`, `aliasByNode`/`aliasByTags`/
//! `aliasByMetric`, `aliasSub`, `aliasQuery`, `substr`, `upper`/`lower`,
//! and the legend decorations `legendValue` and `cactiStyle`.

use super::aggregate::{aggregate_row, AGG_FUNCS};
use super::helpers::{agg_key, python_replacement};
use super::{arg_err, Args, Out};
use crate::eval::{Context, Value};
use crate::pyfmt::{float_repr, format_fixed as format_f};
use crate::series::Series;

const NAMES: &[&str] = &[
    "alias",
    "aliasByNode",
    "aliasByTags",
    "aliasByMetric",
    "aliasSub",
    "aliasQuery",
    "substr",
    "upper",
    "lower",
    "legendValue",
    "cactiStyle",
];

pub(super) fn call(ctx: &Context<'_>, name: &str, a: &mut Args) -> Option<Out> {
    if !NAMES.contains(&name) {
        return None;
    }
    Some((|| -> Out {
        let mut list = a.series("seriesList")?;
        match name {
            "alias" => {
                let new = a.string("newName")?;
                for s in &mut list {
                    s.name = new.clone();
                }
            }
            "aliasByNode" | "aliasByTags" => {
                let nodes = a.rest();
                for s in &mut list {
                    s.name = agg_key(s, &nodes);
                }
            }
            "aliasByMetric" => substr(&mut list, -1, 0),
            "substr" => {
                let start = a.int_or("start", 0)?;
                let stop = a.int_or("stop", 0)?;
                substr(&mut list, start, stop);
            }
            "aliasSub" => {
                let search = a.string("search")?;
                let replace = python_replacement(&a.string("replace")?);
                let re = regex::Regex::new(&search)
                    .map_err(|e| arg_err(name, format!("invalid pattern {search:?}: {e}")))?;
                for s in &mut list {
                    s.name = re.replace_all(&s.name, replace.as_str()).into_owned();
                }
            }
            "aliasQuery" => {
                let search = a.string("search")?;
                let replace = python_replacement(&a.string("replace")?);
                let new = a.string("newName")?;
                let re = regex::Regex::new(&search)
                    .map_err(|e| arg_err(name, format!("invalid pattern {search:?}: {e}")))?;
                for s in &mut list {
                    let query = re.replace_all(&s.name, replace.as_str()).into_owned();
                    let found = crate::eval::evaluate_target(ctx, &query)?;
                    let first = found.first().ok_or_else(|| {
                        arg_err(name, format!("No series found with query: {query}"))
                    })?;
                    let current = first
                        .points()
                        .into_iter()
                        .rev()
                        .flatten()
                        .next()
                        .ok_or_else(|| {
                            arg_err(
                                name,
                                format!("Cannot get last value of series: {}", first.name),
                            )
                        })?;
                    s.name = percent_format(&new, current);
                }
            }
            "upper" | "lower" => {
                let positions: Vec<i64> = a.rest().iter().filter_map(super::as_index).collect();
                let change = |c: char| -> String {
                    if name == "upper" {
                        c.to_uppercase().collect()
                    } else {
                        c.to_lowercase().collect()
                    }
                };
                for s in &mut list {
                    if positions.is_empty() {
                        s.name = s.name.chars().map(change).collect();
                        continue;
                    }
                    let mut chars: Vec<String> = s.name.chars().map(String::from).collect();
                    let len = chars.len() as i64;
                    for &p in &positions {
                        let i = if p < 0 { len + p } else { p };
                        if let Some(c) = usize::try_from(i).ok().and_then(|i| chars.get_mut(i)) {
                            *c = c.chars().map(change).collect();
                        }
                    }
                    s.name = chars.concat();
                }
            }
            "legendValue" => {
                let mut types: Vec<String> = a
                    .rest()
                    .iter()
                    .map(|v| match v {
                        Value::Str(s) => s.clone(),
                        other => super::py_str(other),
                    })
                    .collect();
                let system = match types.last().map(String::as_str) {
                    Some("si") | Some("binary") => types.pop(),
                    _ => None,
                };
                for t in &types {
                    for s in &mut list {
                        let value = AGG_FUNCS
                            .contains(&t.as_str())
                            .then(|| aggregate_row(t, &s.points()));
                        match &system {
                            None => {
                                let shown = match value {
                                    None => "(?)".to_string(),
                                    Some(None) => "None".to_string(),
                                    Some(Some(v)) => float_repr(v),
                                };
                                s.name = format!("{} ({t}: {shown})", s.name);
                            }
                            Some(system) => {
                                let shown = match value {
                                    None => "(?)".to_string(),
                                    Some(None) => "None".to_string(),
                                    Some(Some(v)) => {
                                        let (v, prefix) = format_units(v, system, None);
                                        format!("{}{prefix}", format_f(v, 2))
                                    }
                                };
                                s.name = format!("{:<20}{t:<5}{shown:<10}", s.name);
                            }
                        }
                    }
                }
            }
            "cactiStyle" => {
                let system = a.opt_string("system")?;
                let units = a.opt_string("units")?;
                cacti_style(&mut list, system.as_deref(), units.as_deref());
            }
            _ => unreachable!("{name} is listed in NAMES"),
        }
        Ok(list)
    })())
}

/// graphite's `substr`: the dotted nodes `[start:stop]` of the innermost
/// argument text, cut at its first comma.
fn substr(list: &mut [Series], start: i64, stop: i64) {
    for s in list {
        let name = &s.name;
        let left = name.rfind('(').map_or(0, |i| i + 1);
        let right = name.find(')').unwrap_or(name.len() + 1).min(name.len());
        let clean = if right > left { &name[left..right] } else { "" };
        let parts: Vec<&str> = clean.split('.').collect();
        let n = parts.len() as i64;
        let norm = |i: i64| if i < 0 { (n + i).max(0) } else { i.min(n) } as usize;
        let (from, to) = (
            norm(start),
            if stop == 0 { parts.len() } else { norm(stop) },
        );
        let picked = if to > from {
            parts[from..to].join(".")
        } else {
            String::new()
        };
        s.name = match picked.find(',') {
            Some(i) => picked[..i].to_string(),
            None => picked,
        };
    }
}

/// graphite's `format_units`: the value scaled into the largest prefix of
/// `system` it reaches, and that prefix (with `units` appended).
pub(crate) fn format_units(v: f64, system: &str, units: Option<&str>) -> (f64, String) {
    let table: &[(&str, f64)] = match system {
        "binary" => &[
            ("Pi", 1125899906842624.0),
            ("Ti", 1099511627776.0),
            ("Gi", 1073741824.0),
            ("Mi", 1048576.0),
            ("Ki", 1024.0),
        ],
        "si" => &[("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)],
        "sec" => &[
            ("Y", 31536000.0),
            ("M", 2592000.0),
            ("D", 86400.0),
            ("H", 3600.0),
            ("m", 60.0),
        ],
        "msec" => &[
            ("Y", 31536000000.0),
            ("M", 2592000000.0),
            ("D", 86400000.0),
            ("H", 3600000.0),
            ("m", 60000.0),
            ("s", 1000.0),
        ],
        _ => &[],
    };
    let whole = |x: f64| {
        if x - x.floor() < 0.00000000001 && x > 1.0 {
            x.floor()
        } else {
            x
        }
    };
    for (prefix, size) in table {
        if v.abs() >= *size {
            let v2 = v / size;
            let v2 = if v2 - v2.floor() < 0.00000000001 && v > 1.0 {
                v2.floor()
            } else {
                v2
            };
            return (v2, format!("{prefix}{}", units.unwrap_or("")));
        }
    }
    (whole(v), units.unwrap_or("").to_string())
}

/// Last, max and min of a series.
type Stats = (Option<f64>, Option<f64>, Option<f64>);

fn cacti_style(list: &mut [Series], system: Option<&str>, units: Option<&str>) {
    if list.is_empty() {
        return;
    }
    let fmt = |x: f64| -> String {
        match (system, units) {
            (Some(sys), Some(u)) => {
                let (v, p) = format_units(x, sys, Some(u));
                format!("{} {p}", format_f(v, 2))
            }
            (Some(sys), None) => {
                let (v, p) = format_units(x, sys, None);
                format!("{}{p}", format_f(v, 2))
            }
            (None, Some(u)) => format!("{} {u}", format_f(x, 2)),
            (None, None) => format_f(x, 2),
        }
    };
    let stats: Vec<Stats> = list
        .iter()
        .map(|s| {
            let p = s.points();
            (
                aggregate_row("last", &p),
                aggregate_row("max", &p),
                aggregate_row("min", &p),
            )
        })
        .collect();
    // Widths come from int(value or 3), as graphite-web measures them.
    let width = |pick: fn(&Stats) -> Option<f64>| {
        stats
            .iter()
            .map(|st| {
                let v = pick(st).filter(|v| *v != 0.0).unwrap_or(3.0).trunc();
                fmt(v).chars().count()
            })
            .max()
            .unwrap_or(0)
            + 3
    };
    let name_len = list
        .iter()
        .map(|s| s.name.chars().count())
        .max()
        .unwrap_or(0);
    let (last_len, max_len, min_len) = (width(|s| s.0), width(|s| s.1), width(|s| s.2));
    let show = |v: Option<f64>| v.map_or_else(|| "nan".to_string(), fmt);
    for (s, (last, max, min)) in list.iter_mut().zip(stats) {
        s.name = format!(
            "{:<name_len$} Current:{:<last_len$} Max:{:<max_len$} Min:{:<min_len$} ",
            s.name,
            show(last),
            show(max),
            show(min)
        );
    }
}

/// Python's `fmt % value` for one number: `%s`, `%d`/`%i`, `%f`, `%g`, `%e`
/// with optional precision, and `%%`.
pub(crate) fn percent_format(fmt: &str, v: f64) -> String {
    let mut out = String::new();
    let mut chars = fmt.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut spec = String::new();
        while let Some(&d) = chars.peek() {
            if d.is_ascii_digit() || d == '.' || d == '-' || d == '+' || d == ' ' {
                spec.push(d);
                chars.next();
            } else {
                break;
            }
        }
        let precision = spec
            .split_once('.')
            .and_then(|(_, p)| p.parse::<usize>().ok());
        match chars.next() {
            Some('%') => out.push('%'),
            Some('s') | Some('r') => out.push_str(&float_repr(v)),
            Some('d') | Some('i') => out.push_str(&super::py_d(v)),
            Some('f') | Some('F') => out.push_str(&format_f(v, precision.unwrap_or(6))),
            Some('g') | Some('G') => {
                out.push_str(&crate::pyfmt::format_g(v, precision.unwrap_or(6)))
            }
            Some('e') | Some('E') => out.push_str(&format!("{v:.*e}", precision.unwrap_or(6))),
            Some(other) => {
                out.push('%');
                out.push_str(&spec);
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

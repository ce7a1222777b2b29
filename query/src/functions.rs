//! graphite-web's render functions, with its names, argument rules and the
//! series names it builds. This is the start of the library: the aggregate
//! family, aliasing and simple transforms; the rest of graphite-web 1.1.10's
//! list follows the same pattern.

use std::collections::BTreeMap;

use serde_json::Value as Json;

use crate::eval::{Context, EvalError, Value};
use crate::parser::{self, Call, Expr};
use crate::pyfmt::{float_repr, format_g};
use crate::series::{normalize, Consolidation, Series};

type Kwargs = Vec<(String, Value)>;

/// The functions graunt implements, by every name graphite-web accepts.
pub const NAMES: &[&str] = &[
    "absolute",
    "aggregate",
    "alias",
    "aliasByNode",
    "avg",
    "averageSeries",
    "aliasSub",
    "consolidateBy",
    "countSeries",
    "derivative",
    "diffSeries",
    "exclude",
    "grep",
    "group",
    "highest",
    "highestAverage",
    "highestCurrent",
    "highestMax",
    "integral",
    "limit",
    "lowest",
    "lowestAverage",
    "lowestCurrent",
    "multiplySeries",
    "sortByName",
    "keepLastValue",
    "nonNegativeDerivative",
    "perSecond",
    "transformNull",
    "max",
    "maxSeries",
    "min",
    "minSeries",
    "offset",
    "scale",
    "sum",
    "sumSeries",
];

fn arg_err(function: &str, message: impl Into<String>) -> EvalError {
    EvalError::Argument {
        function: function.to_string(),
        message: message.into(),
    }
}

/// Arguments of one call, read positionally or by keyword.
struct Args<'a> {
    function: &'a str,
    args: Vec<Value>,
    kwargs: Kwargs,
}

impl Args<'_> {
    fn take(&mut self, index: usize, name: &str) -> Option<Value> {
        if let Some(pos) = self.kwargs.iter().position(|(k, _)| k == name) {
            return Some(self.kwargs.remove(pos).1);
        }
        (index < self.args.len()).then(|| std::mem::replace(&mut self.args[index], Value::None))
    }

    fn series(&mut self, index: usize, name: &str) -> Result<Vec<Series>, EvalError> {
        match self.take(index, name) {
            Some(Value::Series(s)) => Ok(s),
            Some(other) => Err(arg_err(
                self.function,
                format!("argument {name} must be a series list, not {other:?}"),
            )),
            None => Err(arg_err(
                self.function,
                format!("missing argument {name} (a series list)"),
            )),
        }
    }

    /// Every positional argument from `index` on, each a series list, flattened.
    fn series_rest(&mut self, index: usize) -> Result<Vec<Vec<Series>>, EvalError> {
        let mut lists = Vec::new();
        for (i, v) in self.args.drain(..).enumerate().skip(index) {
            match v {
                Value::Series(s) => lists.push(s),
                other => {
                    return Err(arg_err(
                        self.function,
                        format!("argument {} must be a series list, not {other:?}", i + 1),
                    ))
                }
            }
        }
        Ok(lists)
    }

    fn number(&mut self, index: usize, name: &str) -> Result<f64, EvalError> {
        match self.take(index, name) {
            Some(Value::Int(i)) => Ok(i as f64),
            Some(Value::Float(f)) => Ok(f),
            Some(other) => Err(arg_err(
                self.function,
                format!("argument {name} must be a number, not {other:?}"),
            )),
            None => Err(arg_err(
                self.function,
                format!("missing argument {name} (a number)"),
            )),
        }
    }

    fn string(&mut self, index: usize, name: &str) -> Result<String, EvalError> {
        match self.take(index, name) {
            Some(Value::Str(s)) => Ok(s),
            Some(other) => Err(arg_err(
                self.function,
                format!("argument {name} must be a string, not {other:?}"),
            )),
            None => Err(arg_err(
                self.function,
                format!("missing argument {name} (a string)"),
            )),
        }
    }

    fn optional_number(&mut self, index: usize, name: &str) -> Result<Option<f64>, EvalError> {
        match self.take(index, name) {
            None | Some(Value::None) => Ok(None),
            Some(Value::Int(i)) => Ok(Some(i as f64)),
            Some(Value::Float(f)) => Ok(Some(f)),
            Some(other) => Err(arg_err(
                self.function,
                format!("argument {name} must be a number, not {other:?}"),
            )),
        }
    }
}

/// Calls a function by name with evaluated arguments.
pub fn call(
    ctx: &Context<'_>,
    call: &Call,
    args: Vec<Value>,
    kwargs: Kwargs,
) -> Result<Value, EvalError> {
    let name = call.name.as_str();
    let mut a = Args {
        function: name,
        args,
        kwargs,
    };
    let out = match name {
        "sumSeries" | "sum" => aggregate(a.series_rest(0)?, "sum", Some(ctx.x_files_factor))?,
        "averageSeries" | "avg" => {
            aggregate(a.series_rest(0)?, "average", Some(ctx.x_files_factor))?
        }
        "maxSeries" | "max" => aggregate(a.series_rest(0)?, "max", Some(ctx.x_files_factor))?,
        "minSeries" | "min" => aggregate(a.series_rest(0)?, "min", Some(ctx.x_files_factor))?,
        "aggregate" => {
            let list = a.series(0, "seriesList")?;
            let func = a.string(1, "func")?;
            let xff = a
                .optional_number(2, "xFilesFactor")?
                .or(Some(ctx.x_files_factor));
            let func = func.strip_suffix("Series").unwrap_or(&func).to_string();
            aggregate(vec![list], &func, xff)?
        }
        "alias" => {
            let list = a.series(0, "seriesList")?;
            let new = a.string(1, "newName")?;
            list.into_iter().map(|s| s.renamed(new.clone())).collect()
        }
        "aliasByNode" => {
            let list = a.series(0, "seriesList")?;
            let mut nodes = Vec::new();
            for (i, v) in a.args.drain(..).enumerate().skip(1) {
                match v {
                    Value::Int(n) => nodes.push(n),
                    other => {
                        return Err(arg_err(
                            name,
                            format!("node {i} must be an integer, not {other:?}"),
                        ))
                    }
                }
            }
            list.into_iter()
                .map(|s| {
                    let path = first_path_expression(&s.name);
                    let parts: Vec<&str> =
                        path.split(';').next().unwrap_or("").split('.').collect();
                    let picked: Vec<&str> = nodes
                        .iter()
                        .filter_map(|&n| {
                            let i = if n < 0 { parts.len() as i64 + n } else { n };
                            usize::try_from(i).ok().and_then(|i| parts.get(i).copied())
                        })
                        .collect();
                    s.renamed(picked.join("."))
                })
                .collect()
        }
        "scale" => {
            let list = a.series(0, "seriesList")?;
            let factor = a.number(1, "factor")?;
            transform(list, "scale", factor, |v| v * factor)
        }
        "offset" => {
            let list = a.series(0, "seriesList")?;
            let factor = a.number(1, "factor")?;
            transform(list, "offset", factor, |v| v + factor)
        }
        "absolute" => {
            let list = a.series(0, "seriesList")?;
            list.into_iter()
                .map(|mut s| {
                    s.tags.insert("absolute".into(), Json::from("1"));
                    s.name = format!("absolute({})", s.name);
                    s.path_expression = s.name.clone();
                    s.values = s.values.iter().map(|v| v.map(f64::abs)).collect();
                    s
                })
                .collect()
        }
        "diffSeries" => aggregate(a.series_rest(0)?, "diff", Some(ctx.x_files_factor))?,
        "multiplySeries" => {
            let lists = a.series_rest(0)?;
            // graphite-web keeps a lone series as it is.
            if lists.len() == 1 && lists[0].len() == 1 {
                lists.into_iter().flatten().collect()
            } else {
                aggregate(lists, "multiply", Some(ctx.x_files_factor))?
            }
        }
        "countSeries" => {
            let mut series: Vec<Series> = a.series_rest(0)?.into_iter().flatten().collect();
            let Some((start, end, step)) = normalize(&mut series) else {
                return Err(arg_err(
                    name,
                    "countSeries() of nothing is not supported yet",
                ));
            };
            let len = series.iter().map(|s| s.points().len()).max().unwrap_or(0);
            let name = format!("countSeries({})", path_expressions(&series));
            vec![Series::new(
                name,
                start,
                end,
                step,
                vec![Some(series.len() as f64); len],
            )]
        }
        "group" => a.series_rest(0)?.into_iter().flatten().collect(),
        "highest" | "highestCurrent" | "highestAverage" | "highestMax" | "lowest"
        | "lowestCurrent" | "lowestAverage" => {
            let mut list = a.series(0, "seriesList")?;
            let n = a.optional_number(1, "n")?.unwrap_or(1.0).max(0.0) as usize;
            let func = match name {
                "highestCurrent" | "lowestCurrent" => "current".to_string(),
                "highestAverage" | "lowestAverage" => "average".to_string(),
                "highestMax" => "max".to_string(),
                _ => match a.take(2, "func") {
                    Some(Value::Str(f)) => f,
                    None => "average".to_string(),
                    Some(other) => {
                        return Err(arg_err(
                            name,
                            format!("func must be a string, not {other:?}"),
                        ))
                    }
                },
            };
            if !AGG_FUNCS.contains(&func.as_str()) {
                return Err(arg_err(
                    name,
                    format!("Unsupported aggregation function: {func}"),
                ));
            }
            let key = |s: &Series| aggregate_row(&func, &s.points()).unwrap_or(f64::NEG_INFINITY);
            let cmp = |a: &Series, b: &Series| {
                key(a)
                    .partial_cmp(&key(b))
                    .unwrap_or(std::cmp::Ordering::Equal)
            };
            if name.starts_with("highest") {
                // Python's sort(reverse=True) is stable: ties keep their order.
                list.sort_by(|a, b| cmp(b, a));
            } else {
                list.sort_by(cmp);
            }
            list.truncate(n);
            list
        }
        "limit" => {
            let mut list = a.series(0, "seriesList")?;
            list.truncate(a.number(1, "n")?.max(0.0) as usize);
            list
        }
        "sortByName" => {
            let mut list = a.series(0, "seriesList")?;
            let natural = matches!(a.take(1, "natural"), Some(Value::Bool(true)));
            let reverse = matches!(a.take(2, "reverse"), Some(Value::Bool(true)));
            let digits = regex::Regex::new(r"\d+").expect("a valid regex");
            let key = |s: &Series| {
                if natural {
                    digits
                        .replace_all(&s.name, |c: &regex::Captures| {
                            format!("{:0>10}", c[0].trim_start_matches('0'))
                        })
                        .into_owned()
                } else {
                    s.name.clone()
                }
            };
            list.sort_by_key(key);
            if reverse {
                // sort(reverse=True) keeps ties in order: reverse, then
                // restore the order within each run of equal keys.
                list.reverse();
                list.sort_by_key(|s| std::cmp::Reverse(key(s)));
            }
            list
        }
        "exclude" | "grep" => {
            let list = a.series(0, "seriesList")?;
            let pattern = a.string(1, "pattern")?;
            let re = regex::Regex::new(&pattern)
                .map_err(|e| arg_err(name, format!("invalid pattern {pattern:?}: {e}")))?;
            let keep = name == "grep";
            list.into_iter()
                .filter(|s| re.is_match(&s.name) == keep)
                .collect()
        }
        "aliasSub" => {
            let list = a.series(0, "seriesList")?;
            let search = a.string(1, "search")?;
            let replace = python_replacement(&a.string(2, "replace")?);
            let re = regex::Regex::new(&search)
                .map_err(|e| arg_err(name, format!("invalid pattern {search:?}: {e}")))?;
            list.into_iter()
                .map(|s| {
                    let new = re.replace_all(&s.name, replace.as_str()).into_owned();
                    s.renamed(new)
                })
                .collect()
        }
        "consolidateBy" => {
            let list = a.series(0, "seriesList")?;
            let func = a.string(1, "consolidationFunc")?;
            let consolidation = Consolidation::parse(&func).ok_or_else(|| {
                arg_err(name, format!("Invalid consolidation function: '{func}'"))
            })?;
            list.into_iter()
                .map(|mut s| {
                    s.consolidation = consolidation;
                    s.tags
                        .insert("consolidateBy".into(), Json::from(func.clone()));
                    s.name = format!("consolidateBy({},\"{func}\")", s.name);
                    s.path_expression = s.name.clone();
                    s
                })
                .collect()
        }
        "integral" => {
            let list = a.series(0, "seriesList")?;
            list.into_iter()
                .map(|mut s| {
                    let mut total = 0.0;
                    let values = s
                        .points()
                        .into_iter()
                        .map(|v| {
                            v.map(|v| {
                                total += v;
                                total
                            })
                        })
                        .collect();
                    s.tags.insert("integral".into(), Json::from("1"));
                    s.name = format!("integral({})", s.name);
                    s.path_expression = s.name.clone();
                    s.values = values;
                    s.values_per_point = 1;
                    s
                })
                .collect()
        }
        "derivative" => {
            let list = a.series(0, "seriesList")?;
            derive(list, "derivative", |val, prev| match (val, prev) {
                (Some(v), Some(p)) => (Some(v - p), Some(v)),
                (v, _) => (None, v),
            })
        }
        "nonNegativeDerivative" | "perSecond" => {
            let list = a.series(0, "seriesList")?;
            let max = a.optional_number(1, "maxValue")?;
            let min = a.optional_number(2, "minValue")?;
            let per_second = name == "perSecond";
            list.into_iter()
                .map(|s| {
                    let step = s.step as f64;
                    let mut out = derive(vec![s], name, |val, prev| {
                        non_negative_delta(val, prev, max, min)
                    });
                    let mut s = out.remove(0);
                    if per_second {
                        s.values = s
                            .values
                            .iter()
                            .map(|v| v.map(|d| round6(d / step)))
                            .collect();
                    }
                    s
                })
                .collect()
        }
        "keepLastValue" => {
            let list = a.series(0, "seriesList")?;
            let limit = a.optional_number(1, "limit")?.unwrap_or(f64::INFINITY);
            list.into_iter()
                .map(|s| keep_last_value(s, limit))
                .collect()
        }
        "transformNull" => {
            let list = a.series(0, "seriesList")?;
            // An explicit default is coerced to float (its tag reads "0.0");
            // the implicit one stays the int 0 (tag "0").
            let given = a.optional_number(1, "default")?;
            if a.take(2, "referenceSeries")
                .is_some_and(|v| v != Value::None)
            {
                return Err(arg_err(name, "referenceSeries is not supported yet"));
            }
            let default = given.unwrap_or(0.0);
            let tag = given.map_or_else(|| "0".to_string(), float_repr);
            list.into_iter()
                .map(|mut s| {
                    s.tags
                        .insert("transformNull".into(), Json::from(tag.clone()));
                    s.name = format!("transformNull({},{})", s.name, format_g(default, 6));
                    s.path_expression = s.name.clone();
                    s.values = s
                        .points()
                        .into_iter()
                        .map(|v| Some(v.unwrap_or(default)))
                        .collect();
                    s.values_per_point = 1;
                    s
                })
                .collect()
        }
        other => return Err(EvalError::UnknownFunction(other.to_string())),
    };
    Ok(Value::Series(out))
}

/// graphite-web's `_nonNegativeDelta`: `(delta, new previous)`.
fn non_negative_delta(
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

/// Python's `round(x, 6)`: correctly rounded to six decimals.
fn round6(x: f64) -> f64 {
    format!("{x:.6}").parse().unwrap_or(x)
}

/// The derivative family: walks each series' (consolidated) values with
/// `step(value, previous) -> (output, new previous)`, names the result
/// `name(series)` and tags it `name = "1"`, as graphite-web's `series.copy`.
fn derive(
    list: Vec<Series>,
    name: &str,
    step: impl Fn(Option<f64>, Option<f64>) -> (Option<f64>, Option<f64>),
) -> Vec<Series> {
    list.into_iter()
        .map(|mut s| {
            let mut prev = None;
            let mut values = Vec::with_capacity(s.values.len());
            for val in s.points() {
                let (out, next) = step(val, prev);
                values.push(out);
                prev = next;
            }
            s.tags.insert(name.into(), Json::from("1"));
            s.name = format!("{name}({})", s.name);
            s.path_expression = s.name.clone();
            s.values = values;
            s.values_per_point = 1;
            s
        })
        .collect()
}

/// graphite-web's `keepLastValue`: runs of at most `limit` gaps after a known
/// value are filled with it (trailing runs too).
fn keep_last_value(mut s: Series, limit: f64) -> Series {
    s.name = format!("keepLastValue({})", s.name);
    s.path_expression = s.name.clone();
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
    s
}

/// `scale`/`offset`: the value transform, the name `f(name,%g)`, the tag.
fn transform(list: Vec<Series>, name: &str, factor: f64, f: impl Fn(f64) -> f64) -> Vec<Series> {
    list.into_iter()
        .map(|mut s| {
            // graphite-web's tags are strings: str() of the float argument.
            s.tags.insert(name.into(), Json::from(float_repr(factor)));
            s.name = format!("{name}({},{})", s.name, format_g(factor, 6));
            s.path_expression = s.name.clone();
            s.values = s.values.iter().map(|v| v.map(&f)).collect();
            s
        })
        .collect()
}

/// The first path expression inside a (possibly function-wrapped) name.
fn first_path_expression(name: &str) -> String {
    fn first(e: &Expr) -> Option<String> {
        match e {
            Expr::Path(p) => Some(p.clone()),
            Expr::Call(c) => c.args.iter().find_map(first),
            _ => None,
        }
    }
    parser::parse(name)
        .ok()
        .as_ref()
        .and_then(first)
        .unwrap_or_else(|| name.to_string())
}

/// graphite's aggregation functions (`aggfuncs.py` over `safe.py`) on one
/// row of values; `None` where graphite's returns `None`.
fn aggregate_row(func: &str, row: &[Option<f64>]) -> Option<f64> {
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
            sorted.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
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

const AGG_FUNCS: &[&str] = &[
    "average", "avg", "avg_zero", "median", "sum", "total", "min", "max", "diff", "stddev",
    "count", "range", "rangeOf", "multiply", "last", "current",
];

/// graphite's `formatPathExpressions`: the distinct expressions, in order.
fn path_expressions(series: &[Series]) -> String {
    let mut expressions: Vec<&str> = Vec::new();
    for s in series {
        if !expressions.contains(&s.path_expression.as_str()) {
            expressions.push(&s.path_expression);
        }
    }
    expressions.join(",")
}

/// Python `re.sub` replacement syntax (`\1`, `\g<1>`, `\g<name>`) in the
/// regex crate's (`${1}`), with literal `$` escaped.
fn python_replacement(replace: &str) -> String {
    let mut out = String::new();
    let mut chars = replace.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '$' => out.push_str("$$"),
            '\\' => match chars.peek().copied() {
                Some(d) if d.is_ascii_digit() => {
                    let mut n = String::new();
                    while let Some(d) = chars.peek().copied().filter(char::is_ascii_digit) {
                        n.push(d);
                        chars.next();
                    }
                    out.push_str(&format!("${{{n}}}"));
                }
                Some('g') => {
                    chars.next();
                    if chars.peek() == Some(&'<') {
                        chars.next();
                        let group: String = chars.by_ref().take_while(|&c| c != '>').collect();
                        out.push_str(&format!("${{{group}}}"));
                    } else {
                        out.push_str("\\g");
                    }
                }
                Some('n') => {
                    chars.next();
                    out.push('\n');
                }
                Some('\\') => {
                    chars.next();
                    out.push('\\');
                }
                _ => out.push('\\'),
            },
            c => out.push(c),
        }
    }
    out
}

/// graphite's `aggregate`: normalizes the series to one step, combines each
/// row, names the result `<func>Series(<path expressions>)`.
fn aggregate(
    lists: Vec<Vec<Series>>,
    func: &str,
    xff: Option<f64>,
) -> Result<Vec<Series>, EvalError> {
    if !AGG_FUNCS.contains(&func) {
        return Err(arg_err(
            "aggregate",
            format!("Unsupported aggregation function: {func}"),
        ));
    }
    let mut series: Vec<Series> = lists.into_iter().flatten().collect();
    let Some((start, end, step)) = normalize(&mut series) else {
        return Ok(Vec::new());
    };
    let columns: Vec<Vec<Option<f64>>> = series.iter().map(Series::points).collect();
    let len = columns.iter().map(Vec::len).max().unwrap_or(0);
    let xff = xff.unwrap_or(0.0);
    let values = (0..len)
        .map(|i| {
            let row: Vec<Option<f64>> = columns
                .iter()
                .map(|c| c.get(i).copied().flatten())
                .collect();
            let known = row.iter().filter(|v| v.is_some()).count();
            (known > 0 && known as f64 / row.len() as f64 >= xff)
                .then(|| aggregate_row(func, &row))
                .flatten()
        })
        .collect();
    let name = format!("{func}Series({})", path_expressions(&series));
    let mut tags: BTreeMap<String, Json> = series[0].tags.clone();
    tags.retain(|k, v| series.iter().all(|s| s.tags.get(k) == Some(v)));
    tags.entry("name".into())
        .or_insert_with(|| Json::from(name.clone()));
    tags.insert("aggregatedBy".into(), Json::from(func));
    let mut out = Series::new(name, start, end, step, values);
    out.tags = tags;
    out.x_files_factor = xff;
    Ok(vec![out])
}

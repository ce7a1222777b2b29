//! Series plumbing and Python semantics the function families share: values
//! zipped into rows, graphite's node-or-tag keys and path-expression names,
//! first-seen grouping, constant lines, and Python's `round`, `safePow` and
//! `re.sub` replacement syntax.

use serde_json::Value as Json;

use super::py_str;
use crate::eval::{Context, Value};
use crate::parser::{self, Expr};
use crate::series::Series;

/// Adds `s` to the group under `key`. Groups stay in first-seen order
/// because that is the order graphite-web emits its groups in.
pub(crate) fn push_group(groups: &mut Vec<(String, Vec<Series>)>, key: String, s: Series) {
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

/// graphite's `constantLine`: three points spanning the request.
pub(crate) fn constant_line(ctx: &Context<'_>, value: f64, name: String) -> Series {
    let step = ((ctx.until - ctx.from) as f64 / 2.0).trunc() as i64;
    let mut s = Series::new(name, ctx.from, ctx.until, step.max(1), vec![Some(value); 3]);
    s.x_files_factor = ctx.xff();
    s
}

/// `safePow`: unknown in, unknown out; Python's math errors (a negative
/// base with a fractional exponent, zero to a negative power, overflow)
/// are unknown too.
pub(crate) fn safe_pow(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    let (a, b) = (a?, b?);
    if a == 0.0 && b < 0.0 {
        return None;
    }
    let r = a.powf(b);
    (!r.is_nan() || a.is_nan() || b.is_nan())
        .then_some(r)
        .filter(|r| !r.is_infinite() || a.is_infinite() || b.is_infinite())
}

/// Python's `round(x, ndigits)` on a float: the exact value rounded to
/// `ndigits` decimals, ties to even.
pub(crate) fn py_round(x: f64, ndigits: i64) -> f64 {
    if !x.is_finite() {
        return x;
    }
    if ndigits >= 0 {
        let digits = ndigits.min(340) as usize;
        return format!("{x:.digits$}").parse().unwrap_or(x);
    }
    let pow = 10f64.powi((-ndigits).min(308) as i32);
    let y = x / pow;
    let mut z = y.round();
    if (y - z).abs() == 0.5 {
        z = 2.0 * (y / 2.0).round();
    }
    z * pow
}

/// Python `re.sub` replacement syntax (`\1`, `\g<1>`, `\g<name>`) in the
/// regex crate's (`${1}`), with literal `$` escaped.
pub(crate) fn python_replacement(replace: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_rounding() {
        assert_eq!(py_round(2.5, 0), 2.0);
        assert_eq!(py_round(3.5, 0), 4.0);
        assert_eq!(py_round(0.125, 2), 0.12);
        assert_eq!(py_round(1234.5, -2), 1200.0);
        assert_eq!(py_round(1250.0, -2), 1200.0);
        assert_eq!(py_round(2.675, 2), 2.67);
    }
}

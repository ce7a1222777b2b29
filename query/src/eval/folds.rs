//! Calls the source may fold where the data is ([`crate::fold`]): an
//! aggregation over plain path expressions (`sumSeries(a.*, b.*)`,
//! `aggregate(a.*, "sum")`), and
//! `groupByNode`/`groupByNodes` and the `*WithWildcards` aggregations over
//! one with a function that folds, whose groups are folded side by side in
//! one fetch.

use std::collections::HashMap;

use super::{find_paths, finish_fetch, Context, EvalError, Value};
use crate::fold::{Fetched, Fold};
use crate::functions;
use crate::parser::{Call, Expr};
use crate::series::Series;

/// The value of `call` when it is one the source may fold, `None` when it
/// must be evaluated as any call.
pub(super) fn evaluate(ctx: &Context<'_>, call: &Call) -> Result<Option<Value>, EvalError> {
    if let Some(fold) = foldable(call) {
        return fold_call(ctx, call, fold);
    }
    if let Some(grouping) = Grouping::of(call) {
        return grouping.evaluate(ctx);
    }
    Ok(None)
}

/// A plain path expression: tagged ones name series whose tags the fold
/// would have to compare.
fn plain_path(e: &Expr) -> Option<&str> {
    match e {
        Expr::Path(p) if !graunt_storage::tags::is_tagged(p) => Some(p.as_str()),
        _ => None,
    }
}

/// A call of a [`Fold`] over plain path expressions: `sumSeries(a.*, b.*)`
/// or `aggregate(a.*, "sum"[, xFilesFactor])`.
struct Foldable<'a> {
    fold: Fold,
    /// The name `aggregate` gives the function (`totalSeries(…)`).
    func: &'static str,
    patterns: Vec<&'a str>,
    /// The literal arguments after the paths, for the call made when the
    /// members do not fold.
    rest: &'a [Expr],
    /// `aggregate`'s own xFilesFactor.
    xff: Option<f64>,
}

fn foldable(call: &Call) -> Option<Foldable<'_>> {
    if !call.kwargs.is_empty() || call.args.is_empty() {
        return None;
    }
    if call.name == "aggregate" {
        let (path, func, xff) = match call.args.as_slice() {
            [p, Expr::Str(f)] => (p, f, None),
            [p, Expr::Str(f), Expr::Float(x)] => (p, f, Some(*x)),
            [p, Expr::Str(f), Expr::Int(x)] => (p, f, Some(*x as f64)),
            _ => return None,
        };
        let (fold, func) = aggregate_fold(func)?;
        return Some(Foldable {
            fold,
            func,
            patterns: vec![plain_path(path)?],
            rest: &call.args[1..],
            xff,
        });
    }
    let fold = Fold::of(&call.name)?;
    let patterns = call
        .args
        .iter()
        .map(plain_path)
        .collect::<Option<Vec<&str>>>()?;
    Some(Foldable {
        fold,
        func: fold.as_str(),
        patterns,
        rest: &[],
        xff: None,
    })
}

/// Whether `fetched_so_far` and `paths` stay within the request's bound and
/// name no tagged series: else the call is evaluated as any call, which
/// fails where it always did and keeps the tags members share.
fn within_bounds(ctx: &Context<'_>, paths: &[String]) -> bool {
    let fetched_so_far = ctx.state.fetched.get().0;
    fetched_so_far.saturating_add(paths.len()) <= ctx.max_series
        && !paths.iter().any(|p| graunt_storage::tags::is_tagged(p))
}

/// Counts a fold's members against the request's bounds, as their fetch
/// would have.
fn count_folded(ctx: &Context<'_>, names: usize, slots: usize) -> Result<(), EvalError> {
    for _ in 0..names {
        ctx.count_fetch(slots)?;
    }
    Ok(())
}

/// Evaluates a [`foldable`] call: its members fetched together, folded by
/// the source where it can, else aggregated here as any call. `None`
/// when it must be evaluated as any call.
fn fold_call(ctx: &Context<'_>, call: &Call, f: Foldable<'_>) -> Result<Option<Value>, EvalError> {
    let Foldable {
        fold,
        func,
        patterns,
        rest,
        xff,
    } = f;
    let mut found = Vec::with_capacity(patterns.len());
    for pattern in &patterns {
        found.push(find_paths(ctx, pattern)?);
    }
    let all: Vec<String> = found.iter().flatten().cloned().collect();
    let distinct: std::collections::HashSet<&String> = all.iter().collect();
    // A path in two arguments counts twice.
    if distinct.len() != all.len() || !within_bounds(ctx, &all) {
        return Ok(None);
    }
    let fetched = ctx.source.fetch_folds(
        fold,
        std::slice::from_ref(&all),
        ctx.from,
        ctx.until,
        ctx.now,
    )?;
    let Some(fetched) = fetched.into_iter().next() else {
        return Ok(None);
    };
    Ok(Some(match fetched {
        Fetched::Series(fetched) => {
            let mut fetched = fetched.into_iter();
            let mut args = Vec::with_capacity(patterns.len());
            for (pattern, paths) in patterns.iter().zip(&found) {
                let mine: Vec<Option<Series>> = fetched.by_ref().take(paths.len()).collect();
                args.push(Value::Series(finish_fetch(ctx, pattern, mine)?));
            }
            for literal in rest {
                args.push(super::evaluate(ctx, literal)?);
            }
            functions::call(ctx, Some(call), &call.name, args, Vec::new())?
        }
        Fetched::Folded(folded) => {
            count_folded(ctx, folded.names.len(), folded.slots.len())?;
            if folded.names.is_empty() {
                return Ok(Some(Value::Series(Vec::new())));
            }
            let members: std::collections::HashSet<&str> =
                folded.names.iter().map(String::as_str).collect();
            let expressions: Vec<&str> = patterns
                .iter()
                .zip(&found)
                .filter(|(_, paths)| paths.iter().any(|p| members.contains(p.as_str())))
                .map(|(pattern, _)| *pattern)
                .collect();
            let mut unique: Vec<&str> = Vec::new();
            for e in expressions {
                if !unique.contains(&e) {
                    unique.push(e);
                }
            }
            let xff = xff.unwrap_or(ctx.xff());
            Value::Series(vec![folded.finish_as(fold, func, &unique.join(","), xff)])
        }
    }))
}

/// How a grouping call names each series' group.
enum Key {
    /// `groupByNode(s)`: the nodes (or tags) at these positions.
    Nodes(Vec<Value>),
    /// `*WithWildcards`: the name without the nodes at these positions.
    Without(Vec<i64>),
}

/// What a grouping call makes of each group.
enum Then {
    /// `groupByNode(s)`' callback: a render function of that name, else
    /// `aggregate` with it.
    Callback(String),
    /// `aggregate` with this function.
    Aggregate(String),
}

/// The fold of graphite's `aggregate` with `func`, and the name it gives
/// the result (`totalSeries(…)` is a sum).
fn aggregate_fold(func: &str) -> Option<(Fold, &'static str)> {
    Some(match func.strip_suffix("Series").unwrap_or(func) {
        "sum" => (Fold::Sum, "sum"),
        "total" => (Fold::Sum, "total"),
        "average" => (Fold::Average, "average"),
        "avg" => (Fold::Average, "avg"),
        "min" => (Fold::Min, "min"),
        "max" => (Fold::Max, "max"),
        _ => return None,
    })
}

/// Literal integer positions.
fn positions(args: &[Expr]) -> Option<Vec<i64>> {
    args.iter()
        .map(|a| match a {
            Expr::Int(i) => Some(*i),
            _ => None,
        })
        .collect()
}

/// `groupByNode(a.*.b, 1, "sum")`, `groupByNodes(a.*.b, "sum", 1, …)` or
/// `sumSeriesWithWildcards(a.*.b, 1, …)` (`averageSeriesWithWildcards`,
/// `aggregateWithWildcards(…, "sum", 1, …)`) over one plain path
/// expression, with literal positions and a function that folds.
struct Grouping<'a> {
    pattern: &'a str,
    key: Key,
    then: Then,
    fold: Fold,
    /// The name `aggregate` gives the function (`totalSeries(…)`).
    func: &'static str,
}

impl<'a> Grouping<'a> {
    fn of(call: &'a Call) -> Option<Grouping<'a>> {
        if !call.kwargs.is_empty() {
            return None;
        }
        let (pattern, key, then) = match (call.name.as_str(), call.args.as_slice()) {
            ("groupByNode", [p, node]) => (p, std::slice::from_ref(node), None),
            ("groupByNode", [p, node, Expr::Str(callback)]) => {
                (p, std::slice::from_ref(node), Some(callback))
            }
            ("groupByNodes", [p, Expr::Str(callback), nodes @ ..]) => (p, nodes, Some(callback)),
            ("sumSeriesWithWildcards", [p, rest @ ..]) => {
                return Grouping::wildcards(p, rest, "sum");
            }
            ("averageSeriesWithWildcards", [p, rest @ ..]) => {
                return Grouping::wildcards(p, rest, "average");
            }
            ("aggregateWithWildcards", [p, Expr::Str(func), rest @ ..]) => {
                return Grouping::wildcards(p, rest, func);
            }
            _ => return None,
        };
        let nodes = key
            .iter()
            .map(|n| match n {
                Expr::Int(i) => Some(Value::Int(*i)),
                Expr::Str(s) => Some(Value::Str(s.clone())),
                _ => None,
            })
            .collect::<Option<Vec<Value>>>()?;
        let callback = then.map_or("average", String::as_str);
        let (fold, func) = match callback {
            "sumSeries" | "sum" => (Fold::Sum, "sum"),
            "averageSeries" | "avg" => (Fold::Average, "average"),
            "minSeries" => (Fold::Min, "min"),
            "maxSeries" => (Fold::Max, "max"),
            "countSeries" => (Fold::Count, "count"),
            // Not a render function: `aggregate` with it.
            other => aggregate_fold(other)?,
        };
        Some(Grouping {
            pattern: plain_path(pattern)?,
            key: Key::Nodes(nodes),
            then: Then::Callback(callback.to_string()),
            fold,
            func,
        })
    }

    fn wildcards(pattern: &'a Expr, rest: &[Expr], func: &str) -> Option<Grouping<'a>> {
        let (fold, label) = aggregate_fold(func)?;
        Some(Grouping {
            pattern: plain_path(pattern)?,
            key: Key::Without(positions(rest)?),
            then: Then::Aggregate(func.to_string()),
            fold,
            func: label,
        })
    }

    /// The group of a plain path's series, named after it with no other tag.
    fn key_of(&self, path: &str) -> String {
        match &self.key {
            Key::Nodes(nodes) => functions::agg_key(&Series::new(path, 0, 0, 1, Vec::new()), nodes),
            Key::Without(positions) => functions::wildcard_key(path, positions),
        }
    }

    /// What the call makes of a group's series (at least one).
    fn make(&self, ctx: &Context<'_>, list: Vec<Series>) -> Result<Option<Series>, EvalError> {
        Ok(match &self.then {
            Then::Callback(callback) => Some(functions::apply_callback(ctx, callback, list)?),
            Then::Aggregate(func) => {
                functions::aggregate::aggregate(vec![list], func, Some(ctx.xff()))?.pop()
            }
        })
    }

    /// The groups, in the order of their first member among the series
    /// found (sorted by name), each folded where the source can.
    fn evaluate(&self, ctx: &Context<'_>) -> Result<Option<Value>, EvalError> {
        let mut paths = find_paths(ctx, self.pattern)?;
        paths.sort();
        paths.dedup();
        if !within_bounds(ctx, &paths) {
            return Ok(None);
        }
        let mut keys: Vec<String> = Vec::new();
        let mut groups: Vec<Vec<String>> = Vec::new();
        let mut by_key: HashMap<String, usize> = HashMap::new();
        for path in paths.iter() {
            let key = self.key_of(path);
            let i = *by_key.entry(key.clone()).or_insert_with(|| {
                keys.push(key);
                groups.push(Vec::new());
                groups.len() - 1
            });
            groups[i].push(path.clone());
        }
        let fetched = ctx
            .source
            .fetch_folds(self.fold, &groups, ctx.from, ctx.until, ctx.now)?;
        if fetched.len() != groups.len() {
            return Ok(None);
        }
        // (position of the group's first member found, its series)
        let mut out: Vec<(usize, Series)> = Vec::with_capacity(groups.len());
        for ((key, members), fetched) in keys.into_iter().zip(&groups).zip(fetched) {
            let (first, series) = match fetched {
                Fetched::Folded(folded) => {
                    count_folded(ctx, folded.names.len(), folded.slots.len())?;
                    if folded.names.is_empty() {
                        continue;
                    }
                    let series = folded.finish_as(self.fold, self.func, self.pattern, ctx.xff());
                    (members[0].clone(), Some(series))
                }
                Fetched::Series(fetched) => {
                    let list = finish_fetch(ctx, self.pattern, fetched)?;
                    let Some(first) = list.first().map(|s| s.name.clone()) else {
                        continue;
                    };
                    (first, self.make(ctx, list)?)
                }
            };
            let Some(mut series) = series else {
                continue;
            };
            series.name = key;
            let position = paths.binary_search(&first).unwrap_or(usize::MAX);
            out.push((position, series));
        }
        out.sort_by_key(|(position, _)| *position);
        Ok(Some(Value::Series(
            out.into_iter().map(|(_, s)| s).collect(),
        )))
    }
}

//! Calls the source may fold where the data is ([`crate::fold`]): an
//! aggregation over plain path expressions (`sumSeries(a.*, b.*)`), and
//! `groupByNode`/`groupByNodes` over one with a callback that folds, whose
//! groups are folded side by side in one fetch.

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

/// A call of a [`Fold`] whose arguments are all plain path expressions.
fn foldable(call: &Call) -> Option<(Fold, Vec<&str>)> {
    let fold = Fold::of(&call.name)?;
    if !call.kwargs.is_empty() || call.args.is_empty() {
        return None;
    }
    let patterns = call
        .args
        .iter()
        .map(plain_path)
        .collect::<Option<Vec<&str>>>()?;
    Some((fold, patterns))
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
fn fold_call(
    ctx: &Context<'_>,
    call: &Call,
    (fold, patterns): (Fold, Vec<&str>),
) -> Result<Option<Value>, EvalError> {
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
            Value::Series(vec![folded.finish(fold, &unique.join(","), ctx.xff())])
        }
    }))
}

/// `groupByNode(a.*.b, 1, "sum")` or `groupByNodes(a.*.b, "sum", 1, …)`
/// over one plain path expression, with literal nodes and a callback that
/// folds.
struct Grouping<'a> {
    pattern: &'a str,
    nodes: Vec<Value>,
    callback: String,
    fold: Fold,
    /// The name `aggregate` gives the callback (`totalSeries(…)`).
    func: &'static str,
}

impl<'a> Grouping<'a> {
    fn of(call: &'a Call) -> Option<Grouping<'a>> {
        if !call.kwargs.is_empty() {
            return None;
        }
        let (pattern, callback, nodes) = match (call.name.as_str(), call.args.as_slice()) {
            ("groupByNode", [p, node]) => (p, "average", std::slice::from_ref(node)),
            ("groupByNode", [p, node, Expr::Str(callback)]) => {
                (p, callback.as_str(), std::slice::from_ref(node))
            }
            ("groupByNodes", [p, Expr::Str(callback), nodes @ ..]) => (p, callback.as_str(), nodes),
            _ => return None,
        };
        let nodes = nodes
            .iter()
            .map(|n| match n {
                Expr::Int(i) => Some(Value::Int(*i)),
                Expr::Str(s) => Some(Value::Str(s.clone())),
                _ => None,
            })
            .collect::<Option<Vec<Value>>>()?;
        // What `groupByNode` does with each callback: a render function of
        // that name, else `aggregate` with it.
        let (fold, func) = match callback {
            "sumSeries" | "sum" => (Fold::Sum, "sum"),
            "total" => (Fold::Sum, "total"),
            "averageSeries" | "avg" | "average" => (Fold::Average, "average"),
            "minSeries" | "min" => (Fold::Min, "min"),
            "maxSeries" | "max" => (Fold::Max, "max"),
            "countSeries" => (Fold::Count, "count"),
            _ => return None,
        };
        Some(Grouping {
            pattern: plain_path(pattern)?,
            nodes,
            callback: callback.to_string(),
            fold,
            func,
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
            // A plain path's series is named after it and has no other tag.
            let key = functions::agg_key(
                &Series::new(path.as_str(), 0, 0, 1, Vec::new()),
                &self.nodes,
            );
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
            let (first, mut series) = match fetched {
                Fetched::Folded(folded) => {
                    count_folded(ctx, folded.names.len(), folded.slots.len())?;
                    if folded.names.is_empty() {
                        continue;
                    }
                    let series = folded.finish_as(self.fold, self.func, self.pattern, ctx.xff());
                    (members[0].as_str().to_string(), series)
                }
                Fetched::Series(fetched) => {
                    let list = finish_fetch(ctx, self.pattern, fetched)?;
                    let Some(first) = list.first().map(|s| s.name.clone()) else {
                        continue;
                    };
                    (first, functions::apply_callback(ctx, &self.callback, list)?)
                }
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

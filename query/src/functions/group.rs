//! Functions that split a list into groups and apply a function to each:
//! `groupByNode(s)`, `groupByTags`, `map`/`reduce`, `applyByNode`.

use serde_json::Value as Json;

use super::aggregate::aggregate;
use super::helpers::{agg_key, push_group};
use super::{arg_err, py_str, Args, Out};
use crate::eval::{Context, EvalError, Value};
use crate::series::Series;

pub(super) fn call(ctx: &Context<'_>, name: &str, a: &mut Args) -> Option<Out> {
    Some(match name {
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
        _ => return None,
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

/// `groupByNodes`' callback: a series function by name, or an aggregation.
pub(crate) fn apply_callback(
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
    crate::series::tags_of(name)
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

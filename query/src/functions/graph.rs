//! Functions for drawing and generated series: options carried for the
//! renderer (`color`, `alpha`, `dashed`, `lineWidth`, `stacked`,
//! `secondYAxis`, `drawAsInfinite`, `areaBetween`), lines (`constantLine`,
//! `threshold`, `aggregateLine`, `verticalLine`), generators (`identity`,
//! `time`, `sin`, `randomWalk`) and `events` (the count of events each second).

use serde_json::Value as Json;

use super::aggregate::{aggregate_row, check_agg};
use super::helpers::constant_line;
use super::{arg_err, py_str, Args, Out};
use crate::eval::Context;
use crate::pyfmt::{float_repr, format_g};
use crate::series::Series;

const NAMES: &[&str] = &[
    "color",
    "alpha",
    "dashed",
    "lineWidth",
    "stacked",
    "secondYAxis",
    "drawAsInfinite",
    "areaBetween",
    "constantLine",
    "threshold",
    "aggregateLine",
    "verticalLine",
    "identity",
    "time",
    "timeFunction",
    "sin",
    "sinFunction",
    "randomWalk",
    "randomWalkFunction",
    "events",
];

fn generated(
    ctx: &Context<'_>,
    name: String,
    step: i64,
    f: impl Fn(i64, usize) -> Option<f64>,
) -> Result<Series, crate::eval::EvalError> {
    let step = step.max(1);
    ctx.charge_points(((ctx.until - ctx.from).max(0) / step) as usize + 1)?;
    let values = (ctx.from..ctx.until)
        .step_by(step as usize)
        .enumerate()
        .map(|(i, t)| f(t, i))
        .collect();
    let mut s = Series::new(name, ctx.from, ctx.until, step, values);
    s.x_files_factor = ctx.xff();
    Ok(s)
}

pub(super) fn call(ctx: &Context<'_>, name: &str, a: &mut Args) -> Option<Out> {
    if !NAMES.contains(&name) {
        return None;
    }
    Some((|| -> Out {
        match name {
            "constantLine" => {
                let value = a.float("value")?;
                let mut s = constant_line(ctx, value, float_repr(value));
                s.path_expression = format!("constantLine({})", float_repr(value));
                return Ok(vec![s]);
            }
            "threshold" => {
                let value = a.float("value")?;
                let mut s = constant_line(ctx, value, float_repr(value));
                s.path_expression = format!("constantLine({})", float_repr(value));
                if let Some(label) = a.opt_string("label")?.filter(|l| !l.is_empty()) {
                    s.name = label;
                }
                s.color = a.opt_string("color")?.filter(|c| !c.is_empty());
                return Ok(vec![s]);
            }
            "verticalLine" => {
                let text = a.string("ts")?;
                let now =
                    jiff::Timestamp::from_second(ctx.now).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
                let ts = crate::time::parse(&text, &ctx.tz, now)
                    .map_err(|e| arg_err(name, e.to_string()))?
                    .as_second();
                if ts < ctx.from {
                    return Err(arg_err(
                        name,
                        format!("verticalLine(): timestamp {ts} exists before start of range"),
                    ));
                }
                if ts > ctx.until {
                    return Err(arg_err(
                        name,
                        format!("verticalLine(): timestamp {ts} exists after end of range"),
                    ));
                }
                let label = a.opt_string("label")?.unwrap_or_else(|| "None".into());
                let mut s = Series::new(label, ts, ts, 1, vec![Some(1.0), Some(1.0)]);
                s.x_files_factor = ctx.xff();
                s.options.insert("drawAsInfinite".into(), Json::Bool(true));
                s.color = a.opt_string("color")?.filter(|c| !c.is_empty());
                return Ok(vec![s]);
            }
            "identity" => {
                let n = a.string("name")?;
                let mut s = generated(ctx, n.clone(), 60, |t, _| Some(t as f64))?;
                s.path_expression = format!("identity(\"{n}\")");
                return Ok(vec![s]);
            }
            "time" | "timeFunction" => {
                let n = a.string("name")?;
                let step = a.int_or("step", 60)?;
                return Ok(vec![generated(ctx, n, step, |t, _| Some(t as f64))?]);
            }
            "sin" | "sinFunction" => {
                let n = a.string("name")?;
                let amplitude = a.float_or("amplitude", 1.0)?;
                let step = a.int_or("step", 60)?;
                return Ok(vec![generated(ctx, n, step, |t, _| {
                    Some((t as f64).sin() * amplitude)
                })?]);
            }
            "randomWalk" | "randomWalkFunction" => {
                let n = a.string("name")?;
                let step = a.int_or("step", 60)?;
                let mut current = 0.0;
                let mut s = generated(ctx, n, step, |_, _| Some(0.0))?;
                for v in &mut s.values {
                    *v = Some(current);
                    current += fastrand::f64() - 0.5;
                }
                return Ok(vec![s]);
            }
            "events" => {
                let tags: Vec<String> = a.rest().iter().map(py_str).collect();
                let name = format!("events(\"{}\")", tags.join("\", \""));
                let points = (ctx.until - ctx.from).max(0) as usize;
                ctx.charge_points(points)?;
                let mut values = vec![None; points];
                let tags = (tags != ["*"]).then_some(tags);
                let found = ctx.events.find(
                    ctx.from.saturating_mul(1_000_000),
                    ctx.until.saturating_mul(1_000_000),
                    tags.as_deref(),
                    graunt_storage::events::SetOperation::All,
                );
                for e in found {
                    // graphite-web fails on an event at the range's very end
                    // (one slot past its list); it is left out here.
                    if let Some(v) = values.get_mut((e.when() - ctx.from) as usize) {
                        *v = Some(v.unwrap_or(0.0) + 1.0);
                    }
                }
                let mut s = Series::new(name, ctx.from, ctx.until, 1, values);
                s.consolidation = crate::series::Consolidation::Sum;
                s.x_files_factor = ctx.xff();
                return Ok(vec![s]);
            }
            _ => {}
        }
        let mut list = if name == "stacked" {
            a.series("seriesLists")?
        } else {
            a.series("seriesList")?
        };
        match name {
            "color" => {
                let c = a.string("theColor")?;
                list.iter_mut().for_each(|s| s.color = Some(c.clone()));
            }
            "alpha" => {
                let v = a.float("alpha")?;
                list.iter_mut().for_each(|s| {
                    s.options.insert("alpha".into(), Json::from(v));
                });
            }
            "lineWidth" => {
                let v = a.float("width")?;
                list.iter_mut().for_each(|s| {
                    s.options.insert("lineWidth".into(), Json::from(v));
                });
            }
            "dashed" => {
                let v = a.float_or("dashLength", 5.0)?;
                let tag = a
                    .raw("dashLength")
                    .map_or_else(|| "5".into(), |v| py_str(&v));
                for s in &mut list {
                    s.tag("dashed", tag.clone());
                    s.name = format!("dashed({}, {})", s.name, format_g(v, 6));
                    s.options.insert("dashed".into(), Json::from(v));
                }
            }
            "secondYAxis" | "drawAsInfinite" => {
                for s in &mut list {
                    s.options.insert(name.into(), Json::Bool(true));
                    s.tag(name, "1");
                    s.name = format!("{name}({})", s.name);
                }
            }
            "stacked" => {
                let stack = a.string_or("stackName", "__DEFAULT__")?;
                let mut stacks = ctx.stacks();
                let total = stacks.entry(stack.clone()).or_default();
                list = list
                    .into_iter()
                    .map(|mut s| {
                        let values = s
                            .points()
                            .into_iter()
                            .enumerate()
                            .map(|(i, v)| {
                                if total.len() <= i {
                                    total.push(0.0);
                                }
                                v.map(|v| {
                                    total[i] += v;
                                    total[i]
                                })
                            })
                            .collect();
                        let new_name = if stack == "__DEFAULT__" {
                            s.tag("stacked", stack.clone());
                            format!("stacked({})", s.name)
                        } else {
                            s.name.clone()
                        };
                        let mut out = s.copy_with(new_name, values);
                        out.options.insert("stacked".into(), Json::Bool(true));
                        out
                    })
                    .collect();
            }
            "areaBetween" => {
                if list.len() != 2 {
                    return Err(arg_err(
                        name,
                        "areaBetween series argument must reference *exactly* 2 series",
                    ));
                }
                list[1].tag("areaBetween", "1");
                let tags = list[1].tags.clone();
                let new_name = format!("areaBetween({})", list[1].path_expression);
                for (i, s) in list.iter_mut().enumerate() {
                    s.options.insert("stacked".into(), Json::Bool(true));
                    if i == 0 {
                        s.options.insert("invisible".into(), Json::Bool(true));
                    }
                    s.tags = tags.clone();
                    s.name = new_name.clone();
                }
            }
            "aggregateLine" => {
                let func = a.string_or("func", "average")?;
                check_agg(name, &func)?;
                let keep_step = a.bool_or("keepStep", false);
                list = list
                    .into_iter()
                    .map(|s| {
                        let value = aggregate_row(&func, &s.points());
                        let line_name = match value {
                            Some(v) => format!("aggregateLine({}, {})", s.name, format_g(v, 6)),
                            None => format!("aggregateLine({}, None)", s.name),
                        };
                        if keep_step {
                            s.copy_with(line_name, vec![value; s.values.len()])
                        } else {
                            // constantLine() names (and tags) it str(value) first.
                            let shown = value.map_or_else(|| "None".into(), float_repr);
                            let mut line = constant_line(ctx, 0.0, shown);
                            line.values = vec![value; 3];
                            line.name = line_name.clone();
                            line.path_expression = line_name;
                            line
                        }
                    })
                    .collect();
            }
            _ => unreachable!("{name} is listed in NAMES"),
        }
        Ok(list)
    })())
}

//! Functions that read the same series over other times: `timeShift`,
//! `timeStack` and `linearRegression` (fitted over a source range).

use super::{arg_err, offset_seconds, refetch, Args, Out};
use crate::eval::Context;
use crate::parser::Call;
use crate::series::Series;

const NAMES: &[&str] = &["timeShift", "timeStack", "linearRegression"];

/// `timeShift`'s rule: an offset written without a sign goes back in time.
fn backwards(shift: &str) -> String {
    if shift.starts_with(|c: char| c.is_ascii_digit()) {
        format!("-{shift}")
    } else {
        shift.to_string()
    }
}

fn is_dst(ctx: &Context<'_>, t: i64) -> bool {
    jiff::Timestamp::from_second(t)
        .map(|ts| ctx.tz.to_offset_info(ts).dst().is_dst())
        .unwrap_or(false)
}

pub(super) fn call(ctx: &Context<'_>, raw: Option<&Call>, name: &str, a: &mut Args) -> Option<Out> {
    if !NAMES.contains(&name) {
        return None;
    }
    Some((|| -> Out {
        let list = a.series("seriesList")?;
        match name {
            "timeShift" => {
                let shift = backwards(&a.string("timeShift")?);
                let reset_end = a.bool_or("resetEnd", true);
                let align_dst = a.bool_or("alignDST", false);
                let delta = offset_seconds(name, &shift)?;
                let (Some(mut from), Some(mut until)) =
                    (ctx.from.checked_add(delta), ctx.until.checked_add(delta))
                else {
                    return Err(arg_err(
                        name,
                        format!("the shift {shift:?} is out of range"),
                    ));
                };
                if align_dst {
                    let (req_start, req_end) = (is_dst(ctx, ctx.from), is_dst(ctx, ctx.until));
                    let (my_start, my_end) = (is_dst(ctx, from), is_dst(ctx, until));
                    let adjust = if req_start && req_end && !my_start && !my_end {
                        3600
                    } else if !req_start && !req_end && my_start && my_end {
                        -3600
                    } else {
                        0
                    };
                    from += adjust;
                    until += adjust;
                }
                let Some(first) = list.first() else {
                    return Ok(Vec::new());
                };
                let (start, end) = (first.start, first.end);
                Ok(refetch(ctx, raw, name, from, until)?
                    .into_iter()
                    .map(|mut s| {
                        s.tag("timeShift", shift.clone());
                        s.name = format!("timeShift({}, \"{shift}\")", s.name);
                        s.end = if reset_end {
                            end
                        } else {
                            s.end - s.start + start
                        };
                        s.start = start;
                        s
                    })
                    .collect())
            }
            "timeStack" => {
                let unit = backwards(&a.string_or("timeShiftUnit", "1d")?);
                let first_shift = a.int_or("timeShiftStart", 0)?;
                let last_shift = a.int_or("timeShiftEnd", 7)?;
                let delta = offset_seconds(name, &unit)?;
                let Some(first) = list.first() else {
                    return Ok(Vec::new());
                };
                let (start, end) = (first.start, first.end);
                if last_shift.saturating_sub(first_shift) > 1000 {
                    return Err(arg_err(name, "at most 1,000 shifts per timeStack"));
                }
                let mut out = Vec::new();
                for shift in first_shift..last_shift {
                    let d = delta
                        .checked_mul(shift)
                        .filter(|d| {
                            ctx.from.checked_add(*d).is_some()
                                && ctx.until.checked_add(*d).is_some()
                        })
                        .ok_or_else(|| arg_err(name, "the shifted range is out of range"))?;
                    for mut s in refetch(ctx, raw, name, ctx.from + d, ctx.until + d)? {
                        s.tag("timeShiftUnit", unit.clone());
                        s.tag("timeShift", shift.to_string());
                        s.wrap(format!("timeShift({}, {unit}, {shift})", s.name));
                        s.start = start;
                        s.end = end;
                        out.push(s);
                    }
                }
                Ok(out)
            }
            _ => {
                let at =
                    |text: Option<String>, default: i64| -> Result<i64, crate::eval::EvalError> {
                        match text {
                            None => Ok(default),
                            Some(t) => crate::time::parse(
                                &t,
                                &ctx.tz,
                                jiff::Timestamp::from_second(ctx.now)
                                    .unwrap_or(jiff::Timestamp::UNIX_EPOCH),
                            )
                            .map(|t| t.as_second())
                            .map_err(|e| arg_err(name, e.to_string())),
                        }
                    };
                let from = at(a.opt_string("startSourceAt")?, ctx.from)?;
                let until = at(a.opt_string("endSourceAt")?, ctx.until)?;
                let sources = refetch(ctx, raw, name, from, until)?;
                Ok(sources
                    .iter()
                    .zip(list)
                    .filter_map(|(source, mut s)| {
                        s.tag("linearRegressions", format!("{from}, {until}"));
                        let (factor, offset) = regression(source)?;
                        let values = (0..s.values.len())
                            .map(|i| Some(offset + (s.start + i as i64 * s.step) as f64 * factor))
                            .collect();
                        let mut out = s.copy_with(
                            format!("linearRegression({}, {from}, {until})", s.name),
                            values,
                        );
                        out.consolidation = crate::series::Consolidation::Average;
                        Some(out)
                    })
                    .collect())
            }
        }
    })())
}

/// graphite's `_linearRegressionAnalysis`: `(factor, offset)` of the
/// least-squares line through the known values, or `None` if degenerate.
fn regression(s: &Series) -> Option<(f64, f64)> {
    let (mut n, mut sum_i, mut sum_ii) = (0i128, 0i128, 0i128);
    let (mut sum_v, mut sum_iv) = (0.0f64, 0.0f64);
    for (i, v) in s.points().into_iter().enumerate() {
        if let Some(v) = v {
            let i = i as i128;
            n += 1;
            sum_i += i;
            sum_ii += i * i;
            sum_v += v;
            sum_iv += i as f64 * v;
        }
    }
    let denominator = (n * sum_ii - sum_i * sum_i) as f64;
    if denominator == 0.0 {
        return None;
    }
    let factor = (n as f64 * sum_iv - sum_i as f64 * sum_v) / denominator / s.step as f64;
    let offset =
        (sum_ii as f64 * sum_v - sum_iv * sum_i as f64) / denominator - factor * s.start as f64;
    Some((factor, offset))
}

//! Line graphs as graphite-web's LineGraph draws them: values consolidated
//! to one per pixel, gaps left open (unless `connected` or
//! `drawNullAsZero`), areas filled or stacked, a second y axis for series
//! marked `secondYAxis`, dashed series, grid and labels from `axis`.

use graunt_query::series::Series;
use plotters::prelude::*;

use super::axis::{XAxis, YAxis};
use super::options::AreaMode;
use super::{err, legend, series_color, text_style, GraphOptions};

/// One series ready to draw: its pixel-consolidated points, and for
/// stacked ones the stack below it.
struct Prepared<'a> {
    series: &'a Series,
    color: RGBColor,
    points: Vec<(i64, Option<f64>)>,
    below: Option<Vec<f64>>,
    right: bool,
    stacked: bool,
}

fn limits<'a>(prepared: impl Iterator<Item = &'a Prepared<'a>>) -> (f64, f64) {
    let mut lo = f64::INFINITY;
    let mut hi = f64::NEG_INFINITY;
    for p in prepared {
        for (k, (_, v)) in p.points.iter().enumerate() {
            if let Some(v) = v.filter(|v| v.is_finite()) {
                // A stacked value is drawn at its stack's top.
                let base = p.below.as_ref().map_or(0.0, |b| b[k]);
                let raw = if p.stacked { v - base } else { v };
                lo = lo.min(raw);
                hi = hi.max(v);
            }
        }
    }
    if lo.is_finite() {
        (lo, hi)
    } else {
        (0.0, 1.0)
    }
}

pub(super) fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, plotters::coord::Shift>,
    series: &[Series],
    o: &GraphOptions,
    mut deferred: Option<&mut super::Deferred>,
) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    root.fill(&o.background).map_err(err::<DB>)?;
    let (w, h) = (o.width as i32, o.height as i32);
    let font = text_style(o, o.font_size);
    let start = series.iter().map(|s| s.start).min().unwrap_or(0);
    let end = series
        .iter()
        .map(|s| s.end)
        .max()
        .unwrap_or(start + 1)
        .max(start + 1);

    // Legend entries first: the legend's height shapes the plot.
    let mut entries: Vec<(String, RGBColor)> = Vec::new();
    for (i, s) in series.iter().enumerate() {
        let e = (s.name.clone(), series_color(s, i, o));
        if !(o.unique_legend && entries.iter().any(|x| x.0 == e.0)) {
            entries.push(e);
        }
    }
    let show_legend = !o.graph_only && !o.hide_legend.unwrap_or(series.len() > 10);
    let legend_height = if show_legend && !entries.is_empty() {
        legend(&root, &entries, o, 0, true)?
    } else {
        0
    };
    let axes = !o.graph_only && !o.hide_axes;
    let line_height = (o.font_size * 1.4).ceil() as i32;
    let mut top = 10;
    if let Some(t) = o.title.as_deref().filter(|_| !o.graph_only) {
        let title_font = text_style(o, o.font_size + 2.0);
        for line in t.split('\n') {
            let tw = root
                .estimate_text_size(line, &title_font)
                .map_or(0, |s| s.0) as i32;
            root.draw(&Text::new(
                line.to_string(),
                ((w - tw) / 2, top),
                title_font.clone(),
            ))
            .map_err(err::<DB>)?;
            top += line_height + 2;
        }
    }
    if axes {
        top += line_height / 2;
    }
    let bottom = h
        - 10
        - legend_height
        - if axes && !o.hide_x_axis {
            line_height + 4
        } else {
            0
        };

    // Consolidate to the plot's width, as graphite-web does, then stack.
    let rough_width = f64::from((w - 80).max(1));
    let any_right = series.iter().any(|s| s.options.contains_key("secondYAxis"));
    let mut prepared: Vec<Prepared> = Vec::new();
    let mut stack_left: Vec<f64> = Vec::new();
    let mut stack_right: Vec<f64> = Vec::new();
    for (i, s) in series.iter().enumerate() {
        let mut c = s.clone();
        let n = c.values.len() as f64;
        if n > rough_width {
            c.values_per_point = (n / rough_width).ceil() as usize;
        }
        let points: Vec<(i64, Option<f64>)> = c
            .datapoints()
            .into_iter()
            .map(|(v, t)| {
                let v = if o.draw_null_as_zero {
                    Some(v.unwrap_or(0.0))
                } else {
                    v
                };
                (t, v)
            })
            .collect();
        let right = s.options.contains_key("secondYAxis");
        let stacked = o.area_mode == AreaMode::Stacked || s.options.contains_key("stacked");
        let (points, below) = if stacked {
            let stack = if right {
                &mut stack_right
            } else {
                &mut stack_left
            };
            if stack.len() < points.len() {
                stack.resize(points.len(), 0.0);
            }
            let below: Vec<f64> = stack[..points.len()].to_vec();
            let tops = points
                .iter()
                .enumerate()
                .map(|(k, &(t, v))| {
                    stack[k] += v.unwrap_or(0.0);
                    (t, v.map(|_| stack[k]))
                })
                .collect();
            (tops, Some(below))
        } else {
            (points, None)
        };
        prepared.push(Prepared {
            series: s,
            color: series_color(s, i, o),
            points,
            below,
            right,
            stacked,
        });
    }

    let (lo, hi) = limits(prepared.iter().filter(|p| !p.right));
    let left = YAxis::new(lo, hi, o.y, o.units)?;
    let right_axis = if any_right {
        let (lo, hi) = limits(prepared.iter().filter(|p| p.right));
        Some(YAxis::new(lo, hi, o.y, o.units)?)
    } else {
        None
    };
    let label_width = |a: &YAxis| {
        a.labels
            .iter()
            .map(|(_, l)| root.estimate_text_size(l, &font).map_or(0, |s| s.0))
            .max()
            .unwrap_or(0) as i32
    };
    let show_y = axes && !o.hide_y_axis;
    let mut x0 = 10;
    let mut x1 = w - 10;
    if show_y {
        x0 += (f64::from(label_width(&left)) * 1.02) as i32 + 4;
        if o.vtitle.is_some() {
            x0 += line_height + 2;
        }
        if let Some(r) = &right_axis {
            x1 -= (f64::from(label_width(r)) * 1.02) as i32 + 4;
        }
        if o.vtitle_right.is_some() {
            x1 -= line_height + 2;
        }
    }
    let (x1, bottom) = (x1.max(x0 + 1), bottom.max(top + 1));
    let plot_w = f64::from(x1 - x0);
    let plot_h = f64::from(bottom - top);
    let x_of = |t: i64| x0 + ((t - start) as f64 / (end - start) as f64 * plot_w).round() as i32;
    let y_of = |a: &YAxis, v: f64| -> Option<i32> {
        let f = a.fraction(v)?;
        Some(bottom - (f.clamp(-0.01, 1.01) * plot_h).round() as i32)
    };

    // Grid: minor then major lines, as graphite layers them.
    if axes && !o.hide_grid {
        let x_axis = XAxis::new(start, end, plot_w, &o.tz, o.x_format.as_deref());
        let thin = |c: RGBColor| ShapeStyle {
            color: c.to_rgba(),
            filled: false,
            stroke_width: 1,
        };
        if o.minor_y > 0 && left.log_base.is_none() {
            for pair in left.labels.windows(2) {
                let gap = (pair[1].0 - pair[0].0) / f64::from(o.minor_y + 1);
                for m in 1..=o.minor_y {
                    if let Some(y) = y_of(&left, pair[0].0 + gap * f64::from(m)) {
                        root.draw(&PathElement::new(
                            vec![(x0, y), (x1, y)],
                            thin(o.minor_grid),
                        ))
                        .map_err(err::<DB>)?;
                    }
                }
            }
        }
        for &t in &x_axis.minor {
            let x = x_of(t);
            root.draw(&PathElement::new(
                vec![(x, top), (x, bottom)],
                thin(o.minor_grid),
            ))
            .map_err(err::<DB>)?;
        }
        for &(v, _) in &left.labels {
            if let Some(y) = y_of(&left, v).filter(|y| (top..=bottom).contains(y)) {
                root.draw(&PathElement::new(
                    vec![(x0, y), (x1, y)],
                    thin(o.major_grid),
                ))
                .map_err(err::<DB>)?;
            }
        }
        for &t in &x_axis.major {
            let x = x_of(t);
            root.draw(&PathElement::new(
                vec![(x, top), (x, bottom)],
                thin(o.major_grid),
            ))
            .map_err(err::<DB>)?;
        }
    }

    // Areas first (stacked ones in order), then lines over them.
    for (k, p) in prepared.iter().enumerate() {
        let fill = match o.area_mode {
            AreaMode::All | AreaMode::Stacked => true,
            AreaMode::First => k == 0,
            AreaMode::None => p.stacked,
        };
        if !fill {
            continue;
        }
        let axis = if p.right {
            right_axis.as_ref().unwrap_or(&left)
        } else {
            &left
        };
        let alpha = o.area_alpha.unwrap_or(1.0);
        for run in runs(&p.points, o) {
            let mut polygon: Vec<(i32, i32)> = Vec::with_capacity(run.len() * 2);
            for &(_, t, v) in &run {
                if let Some(y) = y_of(axis, v) {
                    polygon.push((x_of(t), y));
                }
            }
            for &(idx, t, _) in run.iter().rev() {
                let base = p
                    .below
                    .as_ref()
                    .map_or(axis.bottom.max(0.0).min(axis.top), |b| {
                        b.get(idx).copied().unwrap_or(0.0)
                    });
                let base = if axis.log_base.is_some() {
                    axis.bottom
                } else {
                    base.max(axis.bottom)
                };
                if let Some(y) = y_of(axis, base) {
                    polygon.push((x_of(t), y));
                }
            }
            if polygon.len() >= 3 {
                root.draw(&Polygon::new(polygon, p.color.mix(alpha).filled()))
                    .map_err(err::<DB>)?;
            }
        }
    }
    for p in &prepared {
        let axis = if p.right {
            right_axis.as_ref().unwrap_or(&left)
        } else {
            &left
        };
        let width = p
            .series
            .options
            .get("lineWidth")
            .and_then(|w| w.as_f64())
            .unwrap_or(o.line_width)
            .max(0.5);
        let style = ShapeStyle {
            color: p.color.to_rgba(),
            filled: false,
            stroke_width: width.round().max(1.0) as u32,
        };
        let dashed = p
            .series
            .options
            .get("dashed")
            .and_then(|d| d.as_f64())
            .filter(|d| *d > 0.0);
        let step = p.series.step * p.series.values_per_point.max(1) as i64;
        for run in runs(&p.points, o) {
            let mut path: Vec<(i32, i32)> = Vec::with_capacity(run.len() * 2);
            for (k, &(_, t, v)) in run.iter().enumerate() {
                let Some(y) = y_of(axis, v) else { continue };
                path.push((x_of(t), y));
                if o.line_mode == "staircase" {
                    let next = run.get(k + 1).map_or(t + step, |n| n.1);
                    path.push((x_of(next), y));
                }
            }
            if path.len() == 1 {
                root.draw(&Circle::new(path[0], 1, style.filled()))
                    .map_err(err::<DB>)?;
            } else if let Some(d) = dashed {
                let d = d.round().max(1.0) as u32;
                root.draw(&plotters::element::DashedPathElement::new(
                    path, d, d, style,
                ))
                .map_err(err::<DB>)?;
            } else if let Some(d) = deferred.as_mut().filter(|_| style.stroke_width == 1) {
                // One-pixel lines into a bitmap: drawn by the caller straight
                // into the pixels, many times faster than plotters' per-pixel
                // path (most of a big graph's time).
                d.push((path, p.color));
            } else {
                root.draw(&PathElement::new(path, style))
                    .map_err(err::<DB>)?;
            }
        }
    }

    // Frame, labels, titles.
    if axes {
        if show_y {
            for &(v, ref label) in &left.labels {
                let Some(y) = y_of(&left, v).filter(|y| (top - 2..=bottom + 2).contains(y)) else {
                    continue;
                };
                let (tw, th) = root.estimate_text_size(label, &font).unwrap_or((0, 0));
                root.draw(&Text::new(
                    label.clone(),
                    (x0 - 4 - tw as i32, y - th as i32 / 2),
                    font.clone(),
                ))
                .map_err(err::<DB>)?;
            }
            if let Some(r) = &right_axis {
                for &(v, ref label) in &r.labels {
                    let Some(y) = y_of(r, v).filter(|y| (top - 2..=bottom + 2).contains(y)) else {
                        continue;
                    };
                    let th = root.estimate_text_size(label, &font).map_or(0, |s| s.1);
                    root.draw(&Text::new(
                        label.clone(),
                        (x1 + 4, y - th as i32 / 2),
                        font.clone(),
                    ))
                    .map_err(err::<DB>)?;
                }
            }
            let rotated = |a: FontTransform| font.clone().transform(a);
            if let Some(v) = &o.vtitle {
                let tw = root.estimate_text_size(v, &font).map_or(0, |s| s.0) as i32;
                let y = (top + bottom) / 2 + tw / 2;
                root.draw(&Text::new(
                    v.clone(),
                    (10, y),
                    rotated(FontTransform::Rotate270),
                ))
                .map_err(err::<DB>)?;
            }
            if let Some(v) = &o.vtitle_right {
                let tw = root.estimate_text_size(v, &font).map_or(0, |s| s.0) as i32;
                let y = (top + bottom) / 2 - tw / 2;
                root.draw(&Text::new(
                    v.clone(),
                    (w - 10, y),
                    rotated(FontTransform::Rotate90),
                ))
                .map_err(err::<DB>)?;
            }
        }
        if !o.hide_x_axis {
            let x_axis = XAxis::new(start, end, plot_w, &o.tz, o.x_format.as_deref());
            for (t, label) in &x_axis.labels {
                let tw = root.estimate_text_size(label, &font).map_or(0, |s| s.0) as i32;
                let x = x_of(*t) - tw / 2;
                if x < 0 || x + tw > w {
                    // Cut off at the image's edge: graphite leaves it out too.
                    continue;
                }
                root.draw(&Text::new(label.clone(), (x, bottom + 4), font.clone()))
                    .map_err(err::<DB>)?;
            }
        }
        let frame = ShapeStyle {
            color: o.foreground.to_rgba(),
            filled: false,
            stroke_width: 1,
        };
        root.draw(&PathElement::new(
            vec![(x0, top), (x0, bottom), (x1, bottom)],
            frame,
        ))
        .map_err(err::<DB>)?;
        if right_axis.is_some() {
            root.draw(&PathElement::new(vec![(x1, top), (x1, bottom)], frame))
                .map_err(err::<DB>)?;
        }
    }
    if show_legend && !entries.is_empty() {
        legend(&root, &entries, o, h - 6 - legend_height, false)?;
    }
    root.present().map_err(err::<DB>)
}

/// The unbroken runs of a series as (index, time, value): gaps split them
/// unless `lineMode=connected`.
fn runs(points: &[(i64, Option<f64>)], o: &GraphOptions) -> Vec<Vec<(usize, i64, f64)>> {
    let mut out = Vec::new();
    let mut run = Vec::new();
    for (k, &(t, v)) in points.iter().enumerate() {
        match v.filter(|v| v.is_finite()) {
            Some(v) => run.push((k, t, v)),
            None if !run.is_empty() && o.line_mode != "connected" => {
                out.push(std::mem::take(&mut run))
            }
            None => {}
        }
    }
    if !run.is_empty() {
        out.push(run);
    }
    out
}

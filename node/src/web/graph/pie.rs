//! `graphType=pie`: one slice per series, sized by its average, maximum or
//! minimum (`pieMode`), labelled with its share as graphite writes it
//! (`%12.34`), legend underneath.

use graunt_query::series::Series;
use plotters::prelude::*;

use super::{err, legend, series_color, text_style, GraphOptions};

pub(super) fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, plotters::coord::Shift>,
    series: &[Series],
    o: &GraphOptions,
) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    root.fill(&o.background).map_err(err::<DB>)?;
    let mut slices: Vec<(String, RGBColor, f64)> = Vec::new();
    for (i, s) in series.iter().enumerate() {
        let known: Vec<f64> = s
            .values
            .iter()
            .flatten()
            .copied()
            .filter(|v| v.is_finite())
            .collect();
        if known.is_empty() {
            continue;
        }
        let value = match o.pie_mode.as_str() {
            "maximum" => known.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            "minimum" => known.iter().copied().fold(f64::INFINITY, f64::min),
            _ => known.iter().sum::<f64>() / known.len() as f64,
        };
        if value > 0.0 {
            slices.push((s.name.clone(), series_color(s, i, o), value));
        }
    }
    let (w, h) = (o.width as i32, o.height as i32);
    let mut top = 10;
    if let Some(t) = o.title.as_deref().filter(|_| !o.graph_only) {
        let font = text_style(o, o.font_size + 2.0);
        let tw = root.estimate_text_size(t, &font).map_or(0, |s| s.0) as i32;
        root.draw(&Text::new(t.to_string(), ((w - tw) / 2, top), font))
            .map_err(err::<DB>)?;
        top += (o.font_size * 2.0) as i32;
    }
    let entries: Vec<(String, RGBColor)> = slices.iter().map(|s| (s.0.clone(), s.1)).collect();
    let show_legend = !o.graph_only && !o.hide_legend.unwrap_or(entries.len() > 10);
    let legend_height = if show_legend {
        legend(&root, &entries, o, 0, true)?
    } else {
        0
    };
    let bottom = h - 10 - legend_height;
    let total: f64 = slices.iter().map(|s| s.2).sum();
    let (cx, cy) = (w as f64 / 2.0, f64::from(top + bottom) / 2.0);
    let radius = (f64::from(w - 20) / 2.0)
        .min(f64::from(bottom - top) / 2.0)
        .max(1.0)
        * 0.95;
    let mut theta = 0.0f64;
    for (_, color, value) in &slices {
        let phi = theta + std::f64::consts::TAU * value / total;
        let steps = (((phi - theta) * radius) / 2.0).ceil().max(2.0) as usize;
        let mut polygon = vec![(cx as i32, cy as i32)];
        for k in 0..=steps {
            let a = theta + (phi - theta) * k as f64 / steps as f64;
            polygon.push((
                (cx + radius * a.cos()) as i32,
                (cy + radius * a.sin()) as i32,
            ));
        }
        root.draw(&Polygon::new(polygon, color.filled()))
            .map_err(err::<DB>)?;
        theta = phi;
    }
    if o.pie_labels != "none" {
        let font = text_style(o, o.font_size);
        let mut theta = 0.0f64;
        for (_, _, value) in &slices {
            let share = value / total;
            let phi = theta + std::f64::consts::TAU * share;
            let mid = (theta + phi) / 2.0;
            theta = phi;
            // graphite leaves out slices under 5 %.
            if share * 100.0 < 5.0 {
                continue;
            }
            let label = format!("%{:.2}", share * 100.0);
            let (tw, th) = root.estimate_text_size(&label, &font).unwrap_or((0, 0));
            let x = cx + radius / 2.0 * mid.cos() - f64::from(tw) / 2.0;
            let y = cy + radius / 2.0 * mid.sin() - f64::from(th) / 2.0;
            root.draw(&Text::new(label, (x as i32, y as i32), font.clone()))
                .map_err(err::<DB>)?;
        }
    }
    if show_legend {
        legend(&root, &entries, o, bottom + 4, false)?;
    }
    root.present().map_err(err::<DB>)
}

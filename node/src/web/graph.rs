//! `/render` images: `format=png` (the default) and `format=svg`, line
//! graphs drawn with plotters and the bundled DejaVu Sans, in graphite-web's
//! look (its palette and colour names, the legend under the plot, `10 K`
//! style axis labels). This is the first cut of issue 7: the common graph
//! parameters; the rest (pie graphs, `logBase`, `secondYAxis`, …) follow.

use std::sync::Once;

use graunt_query::series::Series;
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

use super::params::{param, Params};

/// The font every graph is drawn with, bundled so no system fonts are needed.
const FONT: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");

fn font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The bytes are a valid TrueType font; a failure would leave text out.
        let _ = register_font("sans-serif", FontStyle::Normal, FONT);
        let _ = register_font("sans-serif", FontStyle::Bold, FONT);
    });
}

/// graphite-web's colour names (`glyph.colorAliases`).
fn named(name: &str) -> Option<(u8, u8, u8)> {
    Some(match name {
        "black" => (0, 0, 0),
        "white" => (255, 255, 255),
        "blue" => (100, 100, 255),
        "green" => (0, 200, 0),
        "red" => (200, 0, 50),
        "yellow" => (255, 255, 0),
        "orange" => (255, 165, 0),
        "purple" => (200, 100, 255),
        "brown" => (150, 100, 50),
        "cyan" => (0, 255, 255),
        "aqua" => (0, 150, 150),
        "gray" | "grey" => (175, 175, 175),
        "magenta" => (255, 0, 255),
        "pink" => (255, 100, 100),
        "gold" => (200, 200, 0),
        "rose" => (200, 150, 200),
        "darkblue" => (0, 0, 255),
        "darkgreen" => (0, 255, 0),
        "darkred" => (255, 0, 0),
        "darkgray" | "darkgrey" => (111, 111, 111),
        _ => return None,
    })
}

/// A colour as graphite-web takes it: a name, or hex `rrggbb` (with or
/// without `#`, `%23`-decoded by the query parser).
pub fn parse_color(text: &str) -> Result<RGBColor, String> {
    if let Some((r, g, b)) = named(text) {
        return Ok(RGBColor(r, g, b));
    }
    let hex = text.trim_start_matches('#');
    if hex.len() == 6 || hex.len() == 8 {
        let byte = |i: usize| u8::from_str_radix(&hex[i..i + 2], 16);
        if let (Ok(r), Ok(g), Ok(b)) = (byte(0), byte(2), byte(4)) {
            return Ok(RGBColor(r, g, b));
        }
    }
    Err(format!(
        "unknown colour {text:?}: use a name (red, blue, …) or hex rrggbb"
    ))
}

/// Graph parameters graphite-web reads from the request.
#[derive(Debug, Clone)]
pub struct GraphOptions {
    width: u32,
    height: u32,
    title: Option<String>,
    vtitle: Option<String>,
    colors: Vec<RGBColor>,
    background: RGBColor,
    foreground: RGBColor,
    major_grid: RGBColor,
    minor_grid: RGBColor,
    font_size: f64,
    line_width: f64,
    y_min: Option<f64>,
    y_max: Option<f64>,
    hide_legend: Option<bool>,
    hide_axes: bool,
    hide_grid: bool,
    graph_only: bool,
    draw_null_as_zero: bool,
    area: bool,
    /// `slope` (default), `staircase` or `connected` (lines bridge gaps).
    line_mode: String,
}

fn flag(params: &Params, key: &str) -> Result<Option<bool>, String> {
    match param(params, key) {
        None => Ok(None),
        Some(v) => match v.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" | "" => Ok(Some(true)),
            "false" | "0" | "no" | "off" => Ok(Some(false)),
            other => Err(format!("{key}={other}: use true or false")),
        },
    }
}

fn number(params: &Params, key: &str) -> Result<Option<f64>, String> {
    param(params, key)
        .map(|v| {
            v.parse::<f64>()
                .ok()
                .filter(|f| f.is_finite())
                .ok_or_else(|| format!("{key}={v}: must be a number"))
        })
        .transpose()
}

impl GraphOptions {
    /// Reads and checks the parameters; a bad value is an error naming it.
    pub fn parse(params: &Params) -> Result<GraphOptions, String> {
        let size = |key: &str, default: u32| -> Result<u32, String> {
            match number(params, key)? {
                None => Ok(default),
                Some(v) if (1.0..=8000.0).contains(&v) => Ok(v as u32),
                Some(v) => Err(format!("{key}={v}: must be between 1 and 8000")),
            }
        };
        let color = |key: &str, default: (u8, u8, u8)| -> Result<RGBColor, String> {
            param(params, key).map_or(Ok(RGBColor(default.0, default.1, default.2)), |c| {
                parse_color(c).map_err(|e| format!("{key}: {e}"))
            })
        };
        let colors = match param(params, "colorList") {
            Some(list) => list
                .split(',')
                .map(|c| parse_color(c.trim()).map_err(|e| format!("colorList: {e}")))
                .collect::<Result<Vec<_>, _>>()?,
            None => "blue,green,red,purple,brown,yellow,aqua,grey,magenta,pink,gold,rose"
                .split(',')
                .map(|c| parse_color(c).expect("a palette colour"))
                .collect(),
        };
        let area = match param(params, "areaMode") {
            None | Some("none") => false,
            Some("first" | "all" | "stacked") => true,
            Some(other) => {
                return Err(format!("areaMode={other}: use none, first, all or stacked"))
            }
        };
        let line_mode = param(params, "lineMode").unwrap_or("slope").to_string();
        if !matches!(line_mode.as_str(), "slope" | "staircase" | "connected") {
            return Err(format!(
                "lineMode={line_mode}: use slope, staircase or connected"
            ));
        }
        let font_size = number(params, "fontSize")?.unwrap_or(10.0);
        if !(1.0..=100.0).contains(&font_size) {
            return Err(format!("fontSize={font_size}: must be between 1 and 100"));
        }
        let line_width = number(params, "lineWidth")?.unwrap_or(1.2);
        if !(0.0..=100.0).contains(&line_width) {
            return Err(format!("lineWidth={line_width}: must be between 0 and 100"));
        }
        Ok(GraphOptions {
            width: size("width", 330)?,
            height: size("height", 250)?,
            title: param(params, "title").map(str::to_string),
            vtitle: param(params, "vtitle").map(str::to_string),
            colors,
            background: color("bgcolor", (255, 255, 255))?,
            foreground: color("fgcolor", (0, 0, 0))?,
            major_grid: color("majorGridLineColor", (200, 150, 200))?,
            minor_grid: color("minorGridLineColor", (175, 175, 175))?,
            font_size,
            line_width,
            y_min: number(params, "yMin")?,
            y_max: number(params, "yMax")?,
            hide_legend: flag(params, "hideLegend")?,
            hide_axes: flag(params, "hideAxes")?.unwrap_or(false),
            hide_grid: flag(params, "hideGrid")?.unwrap_or(false),
            graph_only: flag(params, "graphOnly")?.unwrap_or(false),
            draw_null_as_zero: flag(params, "drawNullAsZero")?.unwrap_or(false),
            area,
            line_mode,
        })
    }
}

/// graphite's axis labels: `10 K`, `1.5 M`.
fn si_label(v: f64) -> String {
    for (prefix, size) in [("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)] {
        if v.abs() >= size {
            let x = v / size;
            return if x.fract() == 0.0 {
                format!("{x:.0} {prefix}")
            } else {
                format!("{x:.1} {prefix}")
            };
        }
    }
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, plotters::coord::Shift>,
    series: &[Series],
    o: &GraphOptions,
) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| format!("drawing failed: {e:?}");
    root.fill(&o.background).map_err(err)?;
    let font = ("sans-serif", o.font_size).into_font().color(&o.foreground);
    let show_legend = !o.graph_only && !o.hide_legend.unwrap_or(series.len() > 10);
    let legend_rows = if show_legend { series.len() } else { 0 };
    let legend_height = (legend_rows as f64 * (o.font_size + 4.0)) as u32;
    let (plot, legend) = root.split_vertically(o.height.saturating_sub(legend_height).max(10));
    let start = series.iter().map(|s| s.start).min().unwrap_or(0);
    let end = series
        .iter()
        .map(|s| s.end)
        .max()
        .unwrap_or(start + 1)
        .max(start + 1);
    // As graphite-web's LineGraph: no more values than pixels, combined
    // with each series' consolidation function.
    let pixels = f64::from(o.width.saturating_sub(60).max(1));
    let series: Vec<Series> = series
        .iter()
        .map(|s| {
            let mut s = s.clone();
            let n = s.values.len() as f64;
            if n > pixels {
                s.values_per_point = (n / pixels).ceil() as usize;
            }
            s
        })
        .collect();
    let series = &series[..];
    let points: Vec<Vec<(i64, Option<f64>)>> = series
        .iter()
        .map(|s| {
            s.datapoints()
                .into_iter()
                .map(|(v, t)| {
                    (
                        t,
                        if o.draw_null_as_zero {
                            Some(v.unwrap_or(0.0))
                        } else {
                            v
                        },
                    )
                })
                .collect()
        })
        .collect();
    let known = points
        .iter()
        .flatten()
        .filter_map(|p| p.1)
        .filter(|v| v.is_finite());
    let (lo, hi) = known.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
        (a.min(v), b.max(v))
    });
    let (mut lo, mut hi) = if lo.is_finite() {
        (lo.min(0.0), hi)
    } else {
        (0.0, 1.0)
    };
    if let Some(m) = o.y_min {
        lo = m;
    }
    if let Some(m) = o.y_max {
        hi = m;
    }
    if hi <= lo {
        hi = lo + 1.0;
    }
    let mut builder = ChartBuilder::on(&plot);
    builder.margin(6);
    if let Some(t) = o.title.as_deref().filter(|_| !o.graph_only) {
        builder.caption(t, font.clone());
    }
    if !o.graph_only && !o.hide_axes {
        builder
            .x_label_area_size((o.font_size * 2.0) as u32)
            .y_label_area_size((o.font_size * 4.5) as u32);
    }
    let mut chart = builder
        .build_cartesian_2d(start..end, lo..hi)
        .map_err(err)?;
    if !o.graph_only && !o.hide_axes {
        let mut mesh = chart.configure_mesh();
        mesh.label_style(font.clone())
            .axis_style(o.foreground)
            .bold_line_style(o.major_grid)
            .light_line_style(o.minor_grid)
            .x_labels(5)
            .y_labels(6)
            .x_label_formatter(&|t| {
                jiff::Timestamp::from_second(*t)
                    .map(|ts| ts.strftime("%H:%M").to_string())
                    .unwrap_or_default()
            })
            .y_label_formatter(&|v| si_label(*v));
        if let Some(v) = &o.vtitle {
            mesh.y_desc(v.as_str());
        }
        if o.hide_grid {
            mesh.disable_mesh();
        }
        mesh.draw().map_err(err)?;
    }
    for (i, (s, pts)) in series.iter().zip(&points).enumerate() {
        let color = s
            .color
            .as_deref()
            .and_then(|c| parse_color(c).ok())
            .unwrap_or(o.colors[i % o.colors.len()]);
        let width = s
            .options
            .get("lineWidth")
            .and_then(|w| w.as_f64())
            .unwrap_or(o.line_width)
            .max(0.5);
        let style = ShapeStyle {
            color: color.to_rgba(),
            filled: false,
            stroke_width: width.round().max(1.0) as u32,
        };
        // Gaps break the line, as graphite draws them.
        let mut run: Vec<(i64, f64)> = Vec::new();
        let mut runs: Vec<Vec<(i64, f64)>> = Vec::new();
        for &(t, v) in pts {
            match v.filter(|v| v.is_finite()) {
                Some(v) => run.push((t, v.clamp(lo, hi))),
                None if !run.is_empty() && o.line_mode != "connected" => {
                    runs.push(std::mem::take(&mut run))
                }
                None => {}
            }
        }
        if !run.is_empty() {
            runs.push(run);
        }
        if o.line_mode == "staircase" {
            // Each value holds until the next point's time.
            let step = s.step * s.values_per_point.max(1) as i64;
            runs = runs
                .into_iter()
                .map(|r| {
                    let mut stairs = Vec::with_capacity(r.len() * 2);
                    for (k, &(t, v)) in r.iter().enumerate() {
                        stairs.push((t, v));
                        let next = r.get(k + 1).map_or(t + step, |n| n.0);
                        stairs.push((next, v));
                    }
                    stairs
                })
                .collect();
        }
        for run in runs {
            if o.area {
                chart
                    .draw_series(
                        AreaSeries::new(run.iter().copied(), lo, color.mix(0.6))
                            .border_style(style),
                    )
                    .map_err(err)?;
            } else if run.len() == 1 {
                chart
                    .draw_series(std::iter::once(Circle::new(run[0], 1, style.filled())))
                    .map_err(err)?;
            } else {
                chart
                    .draw_series(LineSeries::new(run, style))
                    .map_err(err)?;
            }
        }
    }
    if show_legend {
        for (i, s) in series.iter().enumerate() {
            let color = s
                .color
                .as_deref()
                .and_then(|c| parse_color(c).ok())
                .unwrap_or(o.colors[i % o.colors.len()]);
            let y = (i as f64 * (o.font_size + 4.0)) as i32 + 2;
            let box_size = o.font_size as i32;
            legend
                .draw(&Rectangle::new(
                    [(8, y), (8 + box_size, y + box_size)],
                    color.filled(),
                ))
                .map_err(err)?;
            legend
                .draw(&Text::new(s.name.clone(), (12 + box_size, y), font.clone()))
                .map_err(err)?;
        }
    }
    root.present().map_err(err)
}

/// The graph as PNG bytes.
pub fn png(series: &[Series], o: &GraphOptions) -> Result<Vec<u8>, String> {
    font();
    let (w, h) = (o.width, o.height);
    let mut rgb = vec![0u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
        draw(root, series, o)?;
    }
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, w, h);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().map_err(|e| e.to_string())?;
        writer.write_image_data(&rgb).map_err(|e| e.to_string())?;
    }
    Ok(out)
}

/// The graph as an SVG document.
pub fn svg(series: &[Series], o: &GraphOptions) -> Result<String, String> {
    font();
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (o.width, o.height)).into_drawing_area();
        draw(root, series, o)?;
    }
    Ok(out)
}

//! `/render` images: `format=png` (the default) and `format=svg`, drawn with
//! plotters and the bundled DejaVu Sans in graphite-web's look: its palette
//! and colour names, its axis steps and labels (`10 k`, `1.5 Mi`), its x
//! grid for each time span, the legend under the plot, line and pie graphs.

mod axis;
mod line;
mod options;
mod pie;

use std::sync::Once;

use graunt_query::series::Series;
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

pub use options::{GraphOptions, GraphType};

/// The fonts every graph is drawn with, bundled so no system fonts are needed.
const FONT: &[u8] = include_bytes!("../../../assets/DejaVuSans.ttf");
const FONT_BOLD: &[u8] = include_bytes!("../../../assets/DejaVuSans-Bold.ttf");

fn fonts() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The bytes are valid TrueType fonts; a failure would leave text out.
        let _ = register_font("sans-serif", FontStyle::Normal, FONT);
        let _ = register_font("sans-serif", FontStyle::Bold, FONT_BOLD);
    });
}

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, plotters::coord::Shift>,
    series: &[Series],
    o: &GraphOptions,
) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    match o.graph_type {
        GraphType::Line => line::draw(root, series, o),
        GraphType::Pie => pie::draw(root, series, o),
    }
}

/// The graph as PNG bytes.
pub fn png(series: &[Series], o: &GraphOptions) -> Result<Vec<u8>, String> {
    fonts();
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
    fonts();
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (o.width, o.height)).into_drawing_area();
        draw(root, series, o)?;
    }
    Ok(out)
}

/// The text style of a graph.
fn text_style(o: &GraphOptions, size: f64) -> TextStyle<'static> {
    let style = if o.font_bold {
        FontStyle::Bold
    } else {
        FontStyle::Normal
    };
    // Built with its style: `FontDesc::style` would keep the regular glyphs.
    ("sans-serif", size, style).into_font().color(&o.foreground)
}

/// A series' colour: its own (`color()`), else the palette's next.
fn series_color(s: &Series, i: usize, o: &GraphOptions) -> RGBColor {
    s.color
        .as_deref()
        .and_then(|c| options::parse_color(c).ok())
        .unwrap_or(o.colors[i % o.colors.len()])
}

/// Draws the legend (colour boxes and names, in as many columns as fit)
/// in `area`; returns nothing, or the height it needs when `measure`.
fn legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    entries: &[(String, RGBColor)],
    o: &GraphOptions,
    top: i32,
    measure: bool,
) -> Result<i32, String>
where
    DB::ErrorType: 'static,
{
    let font = text_style(o, o.font_size);
    let box_size = o.font_size as i32;
    let line_height = (o.font_size * 1.4).ceil() as i32;
    let widest = entries
        .iter()
        .map(|(name, _)| area.estimate_text_size(name, &font).map_or(0, |s| s.0))
        .max()
        .unwrap_or(0) as i32;
    let column = widest + box_size + 16;
    let width = area.dim_in_pixel().0 as i32 - 20;
    let columns = (width / column.max(1)).max(1) as usize;
    let rows = entries.len().div_ceil(columns) as i32;
    if measure {
        return Ok(rows * line_height + 6);
    }
    for (k, (name, color)) in entries.iter().enumerate() {
        let (row, col) = ((k / columns) as i32, (k % columns) as i32);
        let x = 10 + col * column;
        let y = top + 4 + row * line_height;
        area.draw(&Rectangle::new(
            [(x, y), (x + box_size, y + box_size)],
            color.filled(),
        ))
        .map_err(err::<DB>)?;
        area.draw(&Text::new(
            name.clone(),
            (x + box_size + 4, y),
            font.clone(),
        ))
        .map_err(err::<DB>)?;
    }
    Ok(0)
}

fn err<DB: DrawingBackend>(e: DrawingAreaErrorKind<DB::ErrorType>) -> String
where
    DB::ErrorType: 'static,
{
    format!("drawing failed: {e:?}")
}

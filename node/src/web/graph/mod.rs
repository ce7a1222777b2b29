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

/// One-pixel polylines (pixel coordinates and colour) left for the caller
/// to draw into its bitmap.
type Deferred = Vec<(Vec<(i32, i32)>, RGBColor)>;

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, plotters::coord::Shift>,
    series: &[Series],
    o: &GraphOptions,
    deferred: Option<&mut Deferred>,
) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    match o.graph_type {
        GraphType::Line => line::draw(root, series, o, deferred),
        GraphType::Pie => pie::draw(root, series, o),
    }
}

/// Draws a one-pixel polyline into an RGB buffer (Bresenham), clipped to
/// the image.
fn polyline(rgb: &mut [u8], (w, h): (u32, u32), path: &[(i32, i32)], c: RGBColor) {
    let (w, h) = (w as i32, h as i32);
    let mut plot = |x: i32, y: i32| {
        if (0..w).contains(&x) && (0..h).contains(&y) {
            let at = ((y * w + x) * 3) as usize;
            rgb[at..at + 3].copy_from_slice(&[c.0, c.1, c.2]);
        }
    };
    for pair in path.windows(2) {
        let ((mut x0, mut y0), (x1, y1)) = (pair[0], pair[1]);
        let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
        let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
        let mut e = dx + dy;
        loop {
            plot(x0, y0);
            if x0 == x1 && y0 == y1 {
                break;
            }
            let e2 = 2 * e;
            if e2 >= dy {
                e += dy;
                x0 += sx;
            }
            if e2 <= dx {
                e += dx;
                y0 += sy;
            }
        }
    }
}

/// The graph as PNG bytes.
pub fn png(series: &[Series], o: &GraphOptions) -> Result<Vec<u8>, String> {
    fonts();
    let (w, h) = (o.width, o.height);
    let mut rgb = vec![0u8; (w * h * 3) as usize];
    let mut lines = Vec::new();
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
        draw(root, series, o, Some(&mut lines))?;
    }
    for (path, color) in &lines {
        polyline(&mut rgb, (w, h), path, *color);
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
        draw(root, series, o, None)?;
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

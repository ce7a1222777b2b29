//! The graph parameters of `/render` (graphite-web's names and defaults),
//! read and checked once per request: a bad value is an error naming it.

use jiff::tz::TimeZone;
use plotters::style::RGBColor;

use super::axis::{Units, YRequest};
use crate::web::params::{param, Params};

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
/// How areas under lines are filled (`areaMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AreaMode {
    /// Lines only.
    None,
    /// The first series filled.
    First,
    /// Every series filled.
    All,
    /// Series stacked on each other, filled.
    Stacked,
}

/// `graphType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GraphType {
    /// Lines over time.
    Line,
    /// One slice per series.
    Pie,
}

/// Every graph parameter of a request.
#[derive(Debug, Clone)]
pub struct GraphOptions {
    /// Image size, pixels.
    pub width: u32,
    /// Image size, pixels.
    pub height: u32,
    /// `title`.
    pub title: Option<String>,
    /// `vtitle`, the left axis title.
    pub vtitle: Option<String>,
    /// `vtitleRight`.
    pub vtitle_right: Option<String>,
    /// `colorList`.
    pub colors: Vec<RGBColor>,
    /// `bgcolor`.
    pub background: RGBColor,
    /// `fgcolor`.
    pub foreground: RGBColor,
    /// `majorGridLineColor`.
    pub major_grid: RGBColor,
    /// `minorGridLineColor`.
    pub minor_grid: RGBColor,
    /// `fontSize`.
    pub font_size: f64,
    /// `fontBold`.
    pub font_bold: bool,
    /// `lineWidth`.
    pub line_width: f64,
    /// `yMin`, `yMax`, `yStep`, `logBase`.
    pub y: YRequest,
    /// `yUnitSystem`.
    pub units: Units,
    /// `hideLegend` (unset: hidden past 10 series).
    pub hide_legend: Option<bool>,
    /// `uniqueLegend`.
    pub unique_legend: bool,
    /// `hideAxes`.
    pub hide_axes: bool,
    /// `hideYAxis`.
    pub hide_y_axis: bool,
    /// `hideXAxis`.
    pub hide_x_axis: bool,
    /// `hideGrid`.
    pub hide_grid: bool,
    /// `graphOnly`.
    pub graph_only: bool,
    /// `drawNullAsZero`.
    pub draw_null_as_zero: bool,
    /// `areaMode`.
    pub area_mode: AreaMode,
    /// `areaAlpha` (unset: opaque fills, as graphite).
    pub area_alpha: Option<f64>,
    /// `lineMode`: `slope` (default), `staircase` or `connected`.
    pub line_mode: String,
    /// `minorY`: minor grid lines between y labels.
    pub minor_y: u32,
    /// `xFormat` (strftime).
    pub x_format: Option<String>,
    /// `tz`, for x labels.
    pub tz: TimeZone,
    /// `graphType`.
    pub graph_type: GraphType,
    /// `pieMode`: `average`, `maximum` or `minimum`.
    pub pie_mode: String,
    /// `pieLabels`: `horizontal`, `rotated` or `none`.
    pub pie_labels: String,
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
    pub fn parse(params: &Params, tz: TimeZone) -> Result<GraphOptions, String> {
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
        let area_mode = match param(params, "areaMode") {
            None | Some("none") => AreaMode::None,
            Some("first") => AreaMode::First,
            Some("all") => AreaMode::All,
            Some("stacked") => AreaMode::Stacked,
            Some(other) => {
                return Err(format!("areaMode={other}: use none, first, all or stacked"))
            }
        };
        let one_of = |key: &str, default: &str, allowed: &[&str]| -> Result<String, String> {
            let v = param(params, key).unwrap_or(default);
            if allowed.contains(&v) {
                Ok(v.to_string())
            } else {
                Err(format!("{key}={v}: use {}", allowed.join(", ")))
            }
        };
        let line_mode = one_of("lineMode", "slope", &["slope", "staircase", "connected"])?;
        let font_size = number(params, "fontSize")?.unwrap_or(10.0);
        if !(1.0..=100.0).contains(&font_size) {
            return Err(format!("fontSize={font_size}: must be between 1 and 100"));
        }
        let line_width = number(params, "lineWidth")?.unwrap_or(1.2);
        if !(0.0..=100.0).contains(&line_width) {
            return Err(format!("lineWidth={line_width}: must be between 0 and 100"));
        }
        let area_alpha = number(params, "areaAlpha")?;
        if let Some(a) = area_alpha.filter(|a| !(0.0..=1.0).contains(a)) {
            return Err(format!("areaAlpha={a}: must be between 0 and 1"));
        }
        let y_step = number(params, "yStep")?;
        if let Some(s) = y_step.filter(|s| *s <= 0.0) {
            return Err(format!("yStep={s}: must be above zero"));
        }
        let log_base = match param(params, "logBase") {
            None => None,
            Some("e") => Some(std::f64::consts::E),
            Some(_) => match number(params, "logBase")? {
                Some(b) if b > 1.0 => Some(b),
                Some(b) => return Err(format!("logBase={b}: must be above 1 (or e)")),
                None => None,
            },
        };
        let units = match param(params, "yUnitSystem").unwrap_or("si") {
            "si" => Units::Si,
            "binary" => Units::Binary,
            "none" => Units::None,
            other => return Err(format!("yUnitSystem={other}: use si, binary or none")),
        };
        let (y_min, y_max) = (number(params, "yMin")?, number(params, "yMax")?);
        if let (Some(lo), Some(hi)) = (y_min, y_max) {
            if lo >= hi {
                return Err(format!("yMin={lo} must be less than yMax={hi}"));
            }
        }
        let minor_y = match number(params, "minorY")? {
            None => 1,
            Some(v) if (0.0..=100.0).contains(&v) => v as u32,
            Some(v) => return Err(format!("minorY={v}: must be between 0 and 100")),
        };
        let graph_type = match param(params, "graphType").unwrap_or("line") {
            "line" => GraphType::Line,
            "pie" => GraphType::Pie,
            other => return Err(format!("graphType={other}: use line or pie")),
        };
        Ok(GraphOptions {
            width: size("width", 330)?,
            height: size("height", 250)?,
            title: param(params, "title").map(str::to_string),
            vtitle: param(params, "vtitle").map(str::to_string),
            vtitle_right: param(params, "vtitleRight").map(str::to_string),
            colors,
            background: color("bgcolor", (255, 255, 255))?,
            foreground: color("fgcolor", (0, 0, 0))?,
            major_grid: color("majorGridLineColor", (200, 150, 200))?,
            minor_grid: color("minorGridLineColor", (175, 175, 175))?,
            font_size,
            font_bold: flag(params, "fontBold")?.unwrap_or(false),
            line_width,
            y: YRequest {
                min: y_min,
                max: y_max,
                step: y_step,
                log_base,
            },
            units,
            hide_legend: flag(params, "hideLegend")?,
            unique_legend: flag(params, "uniqueLegend")?.unwrap_or(false),
            hide_axes: flag(params, "hideAxes")?.unwrap_or(false),
            hide_y_axis: flag(params, "hideYAxis")?.unwrap_or(false),
            hide_x_axis: flag(params, "hideXAxis")?.unwrap_or(false),
            hide_grid: flag(params, "hideGrid")?.unwrap_or(false),
            graph_only: flag(params, "graphOnly")?.unwrap_or(false),
            draw_null_as_zero: flag(params, "drawNullAsZero")?.unwrap_or(false),
            area_mode,
            area_alpha,
            line_mode,
            minor_y,
            x_format: param(params, "xFormat").map(str::to_string),
            tz,
            graph_type,
            pie_mode: one_of("pieMode", "average", &["average", "maximum", "minimum"])?,
            pie_labels: one_of(
                "pieLabels",
                "horizontal",
                &["horizontal", "rotated", "none"],
            )?,
        })
    }
}

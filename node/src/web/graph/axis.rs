//! Axes as graphite-web lays them out: y steps of 1, 2 or 5 × 10^k (powers
//! of two for binary units) over 4 to 6 divisions with the least slop, or
//! powers of `logBase`; labels with SI or binary prefixes (`10 K`, `1.5 Mi`);
//! x grid and labels from graphite's seconds-per-pixel table.

use jiff::tz::TimeZone;
use jiff::Timestamp;

/// graphite's tolerance in tick arithmetic.
const EPSILON: f64 = 0.0001;

/// How y labels abbreviate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Units {
    /// k, M, G, T, P (powers of 1000).
    Si,
    /// Ki, Mi, Gi, Ti, Pi (powers of 1024).
    Binary,
    /// Plain numbers.
    None,
}

impl Units {
    fn prefixes(self) -> &'static [(&'static str, f64)] {
        match self {
            Units::Si => &[("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)],
            Units::Binary => &[
                ("Pi", 1_125_899_906_842_624.0),
                ("Ti", 1_099_511_627_776.0),
                ("Gi", 1_073_741_824.0),
                ("Mi", 1_048_576.0),
                ("Ki", 1024.0),
            ],
            Units::None => &[],
        }
    }
}

/// `v` scaled to the largest prefix it (and, when given, the step) reaches.
pub fn format_units(v: f64, step: Option<f64>, units: Units) -> (f64, &'static str) {
    for &(prefix, size) in units.prefixes() {
        if v.abs() >= size && step.is_none_or(|s| s >= size) {
            let mut x = v / size;
            if x - x.floor() < 1e-11 && v > 1.0 {
                x = x.floor();
            }
            return (x, prefix);
        }
    }
    let mut x = v;
    if x - x.floor() < 1e-11 && v > 1.0 {
        x = x.floor();
    }
    (x, "")
}

/// Python's `%g`: six significant digits, trailing zeros dropped.
fn g(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let exp = v.abs().log10().floor() as i32;
    if !(-5..6).contains(&exp) {
        let s = format!("{:.5e}", v);
        let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
        let m = m.trim_end_matches('0').trim_end_matches('.');
        let e: i32 = e.parse().unwrap_or(0);
        return format!("{m}e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs());
    }
    let decimals = (5 - exp).max(0) as usize;
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// A y axis: its range, step and labels.
#[derive(Debug, Clone)]
pub struct YAxis {
    /// Lowest value drawn.
    pub bottom: f64,
    /// Highest value drawn.
    pub top: f64,
    /// `Some(base)` for a logarithmic axis.
    pub log_base: Option<f64>,
    /// Label positions and texts.
    pub labels: Vec<(f64, String)>,
}

/// What the axis is asked for.
#[derive(Debug, Clone, Copy, Default)]
pub struct YRequest {
    /// `yMin`.
    pub min: Option<f64>,
    /// `yMax`.
    pub max: Option<f64>,
    /// `yStep`.
    pub step: Option<f64>,
    /// `logBase`.
    pub log_base: Option<f64>,
}

impl YAxis {
    /// The axis for data spanning `data_min..=data_max`.
    pub fn new(data_min: f64, data_max: f64, req: YRequest, units: Units) -> Result<YAxis, String> {
        let (mut lo, mut hi) = (data_min, data_max);
        let min_fixed = req.min.is_some();
        let max_fixed = req.max.is_some();
        if let Some(m) = req.min {
            lo = m;
        }
        if let Some(m) = req.max {
            hi = m;
        }
        // graphite's reconcileLimits.
        if lo >= hi {
            let delta = |x: f64| if x.abs() < 1e-9 { 1.0 } else { 0.1 * x.abs() };
            match (min_fixed, max_fixed) {
                (true, true) => return Err(format!("yMin={lo} must be less than yMax={hi}")),
                (true, false) => hi = lo + delta(lo),
                (false, true) => lo = hi - delta(hi),
                (false, false) => {
                    let d = delta(lo.abs().max(hi.abs()));
                    let mid = (lo + hi) / 2.0;
                    lo = mid - d;
                    hi = mid + d;
                }
            }
        }
        if let Some(base) = req.log_base {
            return Self::log(lo, hi, base, units);
        }
        let step = match req.step {
            Some(s) if s > 0.0 && (hi - lo) / s <= 1000.0 => s,
            _ => choose_step(lo, hi, units == Units::Binary),
        };
        let bottom = if min_fixed {
            lo
        } else {
            step * (lo / step + EPSILON).floor()
        };
        let mut top = if max_fixed {
            hi
        } else {
            step * (hi / step - EPSILON).ceil()
        };
        if top == bottom {
            top += 1.0;
        }
        let span = top - bottom;
        let start = step * (bottom / step - EPSILON).ceil();
        let labels = (0..)
            .map(|i| start + f64::from(i) * step)
            .take_while(|v| *v <= top + EPSILON * step)
            .take(1001)
            .map(|v| (v, make_label(v, Some(step), span, units)))
            .collect();
        Ok(YAxis {
            bottom,
            top,
            log_base: None,
            labels,
        })
    }

    fn log(lo: f64, hi: f64, base: f64, units: Units) -> Result<YAxis, String> {
        if lo <= 0.0 {
            return Err(
                "logBase needs values above zero: this data has a minimum of zero or less".into(),
            );
        }
        let bottom = base.powf(lo.log(base).floor());
        let mut top = base.powf(hi.log(base).ceil());
        if top == bottom {
            top *= base;
        }
        let mut labels = Vec::new();
        let mut v = base.powf((bottom.log(base) - EPSILON).ceil());
        while v < top * (1.0 + EPSILON) && labels.len() < 1000 {
            labels.push((v, make_label(v, None, top - bottom, units)));
            v *= base;
        }
        Ok(YAxis {
            bottom,
            top,
            log_base: Some(base),
            labels,
        })
    }

    /// Where `v` falls, 0 at the bottom and 1 at the top (outside for
    /// values off the axis; `None` for values a log axis cannot show).
    pub fn fraction(&self, v: f64) -> Option<f64> {
        match self.log_base {
            Some(_) if v <= 0.0 => None,
            Some(_) => Some((v.ln() - self.bottom.ln()) / (self.top.ln() - self.bottom.ln())),
            None => Some((v - self.bottom) / (self.top - self.bottom)),
        }
    }
}

/// graphite's chooseStep: the step (and 4, 5 or 6 divisions) that covers
/// the range with the least space left over.
fn choose_step(lo: f64, hi: f64, binary: bool) -> f64 {
    let variance = hi - lo;
    let min_step = variance / 6.0;
    let (base, mantissas): (f64, &[f64]) = if binary {
        (2.0, &[1.0])
    } else {
        (10.0, &[1.0, 2.0, 5.0])
    };
    let mut exponent = (min_step.log(base) - EPSILON).floor() as i32;
    let mut best: Option<(f64, f64)> = None;
    for _ in 0..200 {
        let multiplier = base.powi(exponent);
        for &m in mantissas {
            let step = m * multiplier;
            if step < min_step * (1.0 - EPSILON) {
                continue;
            }
            if let Some((slop, _)) = best {
                if step * 4.0 >= 2.0 * slop + variance {
                    return best.map_or(step, |b| b.1);
                }
            }
            for divisor in [4.0, 5.0, 6.0] {
                let bottom = step * (lo / step + EPSILON).floor();
                let top = bottom + step * divisor;
                if top >= hi - EPSILON * step {
                    let slop = (top - hi).max(lo - bottom);
                    if best.is_none_or(|(b, _)| slop < b) {
                        best = Some((slop, step));
                    }
                }
            }
        }
        exponent += 1;
    }
    best.map_or(variance.max(1.0), |b| b.1)
}

/// graphite's makeLabel: `value` with the prefix its size (and the step,
/// on a linear axis) allows; the digits depend on the axis' span. Python
/// formats these floats, so whole numbers still print as `20.0`.
fn make_label(v: f64, step: Option<f64>, span: f64, units: Units) -> String {
    let (x, prefix) = format_units(v, step, units);
    let (s, span_prefix) = format_units(span, step, units);
    let text = if x < 0.1 {
        format!("{} {prefix}", g(x))
    } else if x < 1.0 {
        format!("{x:.2} {prefix}")
    } else if s > 10.0 || !prefix.is_empty() || span_prefix != prefix {
        // (graphite compares the span's prefix with the label's after adding
        // a space to the latter: any prefixed label takes this branch.)
        format!("{x:.1} {prefix}")
    } else if s > 3.0 {
        format!("{x:.1} {prefix}")
    } else if s > 0.1 {
        format!("{x:.2} {prefix}")
    } else {
        format!("{} {prefix}", g(x))
    };
    text.trim_end().to_string()
}

const MIN: i64 = 60;
const HOUR: i64 = 3600;
const DAY: i64 = 86_400;

/// One row of graphite's x-axis table: from `seconds` per pixel up, for
/// ranges up to `max_interval`, minor grid, major grid and label steps (in
/// seconds) and the label format.
struct XConfig {
    seconds: f64,
    minor: f64,
    major: i64,
    label: i64,
    format: &'static str,
    max_interval: i64,
}

const fn x(
    seconds: f64,
    minor: f64,
    major: i64,
    label: i64,
    format: &'static str,
    max_interval: i64,
) -> XConfig {
    XConfig {
        seconds,
        minor,
        major,
        label,
        format,
        max_interval,
    }
}

/// graphite-web 1.1's `xAxisConfigs` (its DATE_FORMAT is `%m/%d`).
const X_CONFIGS: &[XConfig] = &[
    x(0.00, 5.0, MIN, 5, "%H:%M:%S", 10 * MIN),
    x(0.07, 10.0, MIN, 10, "%H:%M:%S", 20 * MIN),
    x(0.14, 15.0, MIN, 15, "%H:%M:%S", 30 * MIN),
    x(0.27, 30.0, 2 * MIN, MIN, "%H:%M", 2 * HOUR),
    x(0.5, 60.0, 2 * MIN, MIN, "%H:%M", 2 * HOUR),
    x(1.2, 60.0, 4 * MIN, 2 * MIN, "%H:%M", 3 * HOUR),
    x(2.0, 60.0, 10 * MIN, 5 * MIN, "%H:%M", 6 * HOUR),
    x(5.0, 120.0, 10 * MIN, 10 * MIN, "%H:%M", 12 * HOUR),
    x(10.0, 300.0, 20 * MIN, 20 * MIN, "%H:%M", DAY),
    x(30.0, 600.0, HOUR, HOUR, "%H:%M", 2 * DAY),
    x(60.0, 1800.0, 2 * HOUR, 2 * HOUR, "%H:%M", 2 * DAY),
    x(100.0, 7200.0, 4 * HOUR, 4 * HOUR, "%a %H:%M", 6 * DAY),
    x(
        255.0,
        21600.0,
        12 * HOUR,
        12 * HOUR,
        "%m/%d %H:%M",
        10 * DAY,
    ),
    x(600.0, 21600.0, DAY, DAY, "%m/%d", 14 * DAY),
    x(1000.0, 43200.0, DAY, DAY, "%m/%d", 365 * DAY),
    x(2000.0, 86400.0, 2 * DAY, 2 * DAY, "%m/%d", 365 * DAY),
    x(4000.0, 172800.0, 4 * DAY, 4 * DAY, "%m/%d", 365 * DAY),
    x(8000.0, 302400.0, 7 * DAY, 7 * DAY, "%m/%d", 365 * DAY),
    x(16000.0, 604800.0, 14 * DAY, 14 * DAY, "%m/%d", 365 * DAY),
    x(32000.0, 1296000.0, 30 * DAY, 30 * DAY, "%m/%d", 365 * DAY),
    x(64000.0, 2592000.0, 60 * DAY, 60 * DAY, "%m/%d %Y", i64::MAX),
    x(
        100000.0,
        5184000.0,
        120 * DAY,
        120 * DAY,
        "%m/%d %Y",
        i64::MAX,
    ),
    x(
        120000.0,
        10368000.0,
        240 * DAY,
        240 * DAY,
        "%m/%d %Y",
        i64::MAX,
    ),
];

/// The x axis of a graph `width` pixels wide over `start..end`.
pub struct XAxis {
    /// Minor grid line times.
    pub minor: Vec<i64>,
    /// Major grid line times.
    pub major: Vec<i64>,
    /// Label times and texts.
    pub labels: Vec<(i64, String)>,
}

impl XAxis {
    /// Grid and labels as graphite places them, in `tz`; `format` is
    /// `xFormat` (strftime) when given.
    pub fn new(start: i64, end: i64, width: f64, tz: &TimeZone, format: Option<&str>) -> XAxis {
        let range = (end - start).max(1);
        let per_pixel = range as f64 / width.max(1.0);
        let conf = X_CONFIGS
            .iter()
            .rev()
            .find(|c| c.seconds <= per_pixel && c.max_interval >= range)
            .unwrap_or(&X_CONFIGS[X_CONFIGS.len() - 1]);
        let times = |step: i64| -> Vec<i64> { aligned(start, end, step, tz) };
        let format = format.unwrap_or(conf.format);
        let labels = times(conf.label)
            .into_iter()
            .map(|t| {
                let text = Timestamp::from_second(t)
                    .map(|ts| ts.to_zoned(tz.clone()).strftime(format).to_string())
                    .unwrap_or_default();
                (t, text)
            })
            .collect();
        XAxis {
            minor: times(conf.minor.max(1.0) as i64),
            major: times(conf.major),
            labels,
        }
    }
}

/// Times from `start` to `end` on multiples of `step` in local time (days
/// and hours counted from local midnight, as graphite's find_x_times).
fn aligned(start: i64, end: i64, step: i64, tz: &TimeZone) -> Vec<i64> {
    let step = step.max(1);
    let offset = Timestamp::from_second(start)
        .map(|t| i64::from(tz.to_offset(t).seconds()))
        .unwrap_or(0);
    let local = start + offset;
    // Steps of days start at the first day's midnight, as graphite's do.
    let unit = if step >= DAY { DAY } else { step };
    let first = local - local.rem_euclid(unit) - offset;
    let mut out = Vec::new();
    let mut t = first;
    while t <= end && out.len() < 2000 {
        if t >= start {
            out.push(t);
        }
        t += step;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(lo: f64, hi: f64, units: Units) -> Vec<String> {
        YAxis::new(lo, hi, YRequest::default(), units)
            .unwrap()
            .labels
            .into_iter()
            .map(|l| l.1)
            .collect()
    }

    #[test]
    fn y_labels_follow_graphite() {
        // As graphite-web 1.1.10's _LinearAxisTics labels these ranges.
        assert_eq!(
            labels(0.0, 2_500_000.0, Units::Si),
            ["0", "500.0 k", "1000.0 k", "1500.0 k", "2000.0 k", "2500.0 k"]
        );
        let tens = ["0", "20.0", "40.0", "60.0", "80.0", "100.0"];
        assert_eq!(labels(0.0, 100.0, Units::Si), tens);
        assert_eq!(labels(10.0, 90.0, Units::Si), tens);
        assert_eq!(
            labels(0.0, 4096.0, Units::Binary),
            ["0", "1.0 Ki", "2.0 Ki", "3.0 Ki", "4.0 Ki"]
        );
        assert_eq!(
            labels(0.0, 0.5, Units::Si),
            ["0", "0.10", "0.20", "0.30", "0.40", "0.50"]
        );
        assert_eq!(
            labels(5.0, 45.0, Units::Si),
            ["0", "10.0", "20.0", "30.0", "40.0", "50.0"]
        );
        assert_eq!(
            labels(3.0, 7.0, Units::Si),
            ["3.0", "4.0", "5.0", "6.0", "7.0"]
        );
        let flat = YAxis::new(5.0, 5.0, YRequest::default(), Units::Si).unwrap();
        assert!(flat.bottom < 5.0 && flat.top > 5.0);
    }

    #[test]
    fn fixed_limits_and_steps_are_kept() {
        let a = YAxis::new(
            3.0,
            7.0,
            YRequest {
                min: Some(0.0),
                max: Some(10.0),
                step: Some(2.5),
                log_base: None,
            },
            Units::None,
        )
        .unwrap();
        assert_eq!((a.bottom, a.top), (0.0, 10.0));
        let v: Vec<f64> = a.labels.iter().map(|l| l.0).collect();
        assert_eq!(v, [0.0, 2.5, 5.0, 7.5, 10.0]);
        let bad = YRequest {
            min: Some(5.0),
            max: Some(1.0),
            ..Default::default()
        };
        assert!(YAxis::new(0.0, 1.0, bad, Units::Si).is_err());
    }

    #[test]
    fn log_axes_label_powers() {
        let req = YRequest {
            log_base: Some(10.0),
            ..Default::default()
        };
        let a = YAxis::new(3.0, 50_000.0, req, Units::Si).unwrap();
        let t: Vec<&str> = a.labels.iter().map(|l| l.1.as_str()).collect();
        assert_eq!(t, ["1.0", "10.0", "100.0", "1.0 k", "10.0 k", "100.0 k"]);
        assert!(YAxis::new(0.0, 10.0, req, Units::Si).is_err());
    }

    #[test]
    fn x_labels_for_a_day_are_hours() {
        let tz = TimeZone::UTC;
        let start = 1_700_000_000 - 86_400;
        let axis = XAxis::new(start, 1_700_000_000, 740.0, &tz, None);
        // 86400 s / 740 px = 117 s per pixel: every 4 hours, "%a %H:%M".
        assert!(axis.labels.iter().all(|(t, _)| t % (4 * 3600) == 0));
        // 2023-11-13 22:13 to 2023-11-14 22:13 UTC: the first is Tuesday 00:00.
        assert_eq!(axis.labels[0].1, "Tue 00:00");
        let axis = XAxis::new(start, 1_700_000_000, 740.0, &tz, Some("%H"));
        assert_eq!(axis.labels[0].1, "00");
    }
}

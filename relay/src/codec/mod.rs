//! Wire formats carbon clients speak, each a pure function from bytes to
//! points (or an error saying why a record was refused).

pub mod ack;
pub mod pickle;
pub mod pickle_scan;
pub mod plaintext;
pub mod statsd;

/// One received datapoint: the storage layer's own type, so a decoded batch
/// goes to the store without copying.
pub use graunt_storage::Datapoint as Point;

/// Limits a receiver applies to timestamps, relative to its clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeBounds {
    /// The receiver's clock, epoch seconds (`-1` and `N` mean this).
    pub now: i64,
    /// How far ahead of `now` a timestamp may be, seconds.
    pub max_future: i64,
}

impl TimeBounds {
    /// Bounds at `now` allowing `max_future` seconds ahead.
    pub fn new(now: i64, max_future: i64) -> Self {
        TimeBounds { now, max_future }
    }

    /// Whether a timestamp is storable: positive, within whisper's 32-bit
    /// range, and not further ahead than allowed.
    pub fn accepts(&self, ts: i64) -> bool {
        ts > 0 && ts <= i64::from(u32::MAX) && ts <= self.now + self.max_future
    }
}

/// Why a record was refused; each is counted separately.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordError {
    /// Not `name value timestamp`.
    Fields,
    /// Bytes that are not UTF-8.
    NotUtf8,
    /// The value is not a number.
    Value,
    /// NaN or infinite value.
    NonFinite,
    /// The timestamp is not a number.
    Timestamp,
    /// Timestamp not positive, past 2106, or too far in the future.
    TimestampRange,
    /// The name is refused.
    Name(graunt_storage::metric::NameError),
}

impl RecordError {
    /// A short label for counters and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            RecordError::Fields => "fields",
            RecordError::NotUtf8 => "utf8",
            RecordError::Value => "value",
            RecordError::NonFinite => "non_finite",
            RecordError::Timestamp => "timestamp",
            RecordError::TimestampRange => "timestamp_range",
            RecordError::Name(_) => "name",
        }
    }
}

impl std::fmt::Display for RecordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecordError::Fields => f.write_str("expected `name value timestamp`"),
            RecordError::NotUtf8 => f.write_str("line is not UTF-8"),
            RecordError::Value => f.write_str("value is not a number"),
            RecordError::NonFinite => f.write_str("value is NaN or infinite"),
            RecordError::Timestamp => f.write_str("timestamp is not a number"),
            RecordError::TimestampRange => {
                f.write_str("timestamp is not positive, beyond 2106, or too far in the future")
            }
            RecordError::Name(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for RecordError {}

/// Python's `float()` of text: Rust's parser, which already takes `nan`,
/// `inf` and exponents, plus Python's `_` digit separators.
pub fn parse_float(s: &str) -> Option<f64> {
    if let Ok(v) = s.parse::<f64>() {
        return Some(v);
    }
    if s.contains('_') && !s.starts_with('_') && !s.ends_with('_') && !s.contains("__") {
        return s.replace('_', "").parse().ok();
    }
    None
}

/// Checks a decoded record and builds the point.
pub fn check(
    name: &str,
    value: f64,
    timestamp: i64,
    bounds: &TimeBounds,
) -> Result<Point, RecordError> {
    if !value.is_finite() {
        return Err(RecordError::NonFinite);
    }
    if !bounds.accepts(timestamp) {
        return Err(RecordError::TimestampRange);
    }
    let name = graunt_storage::metric::normalize_name(name).map_err(RecordError::Name)?;
    Ok(Point {
        name: name.into_owned(),
        timestamp,
        value,
    })
}

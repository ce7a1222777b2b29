//! graphite-web's time expressions (its `attime.py`): what `/render`'s
//! `from`, `until` and `now` accept.
//!
//! An expression is a reference (`now`, `noon`, `midnight`, `teatime`,
//! `HH:MM`, `Ham`/`Hpm`, `today`, `yesterday`, `tomorrow`, `MM/DD/YY[YY]`,
//! `YYYYMMDD`, a month and day, a weekday) followed by an optional offset
//! (`-1h`, `+3days`, `-2weeks1d`), or plain epoch seconds. Case, spaces,
//! `_` and `,` are ignored, so `16:00_20231113` and `4pm 20231113` mean the
//! same. Offsets are absolute durations (a day is 86,400 s, a month 30 days,
//! a year 365 days); references are wall-clock times in the request's time
//! zone.

use jiff::civil::{Date, DateTime};
use jiff::tz::{Disambiguation, TimeZone};
use jiff::{SignedDuration, Timestamp, Zoned};

/// A time expression that does not parse; the message names the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid time {input:?}: {reason}")]
pub struct TimeError {
    /// The expression as given.
    pub input: String,
    /// What is wrong with it.
    pub reason: String,
}

fn err(input: &str, reason: impl Into<String>) -> TimeError {
    TimeError {
        input: input.to_string(),
        reason: reason.into(),
    }
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// Parses an expression relative to `now` in time zone `tz`.
pub fn parse(input: &str, tz: &TimeZone, now: Timestamp) -> Result<Timestamp, TimeError> {
    let s: String = input
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| !matches!(c, '_' | ',' | ' '))
        .collect();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        let yyyymmdd = s.len() == 8
            && s[..4].parse::<u32>().is_ok_and(|y| y > 1900)
            && s[4..6].parse::<u32>().is_ok_and(|m| m < 13)
            && s[6..].parse::<u32>().is_ok_and(|d| d < 32);
        if !yyyymmdd {
            let secs: i64 = s
                .parse()
                .map_err(|_| err(input, "epoch seconds out of range"))?;
            return Timestamp::from_second(secs).map_err(|e| err(input, e.to_string()));
        }
    }
    let (reference, offset) = match (s.find('+'), s.find('-')) {
        (Some(i), _) => (&s[..i], &s[i..]),
        (None, Some(i)) => (&s[..i], &s[i..]),
        (None, None) => (s.as_str(), ""),
    };
    let base = reference_time(reference, input, tz, now)?;
    let offset = parse_offset(offset).map_err(|reason| err(input, reason))?;
    base.checked_add(offset)
        .map_err(|e| err(input, e.to_string()))
}

/// Leading ASCII digits of `s` and the rest.
fn split_digits(s: &str) -> (&str, &str) {
    let n = s.bytes().take_while(u8::is_ascii_digit).count();
    s.split_at(n)
}

fn reference_time(
    reference: &str,
    input: &str,
    tz: &TimeZone,
    now: Timestamp,
) -> Result<Timestamp, TimeError> {
    if reference.is_empty() || reference == "now" {
        return Ok(now);
    }
    let bad_number = |_| err(input, "bad number in time of day");
    let mut rest = reference;
    let (mut hour, mut minute) = (0i8, 0i8);
    if let Some(i) = rest.find(':').filter(|i| (1..3).contains(i)) {
        hour = rest[..i].parse().map_err(bad_number)?;
        let mins = rest.get(i + 1..(i + 3).min(rest.len())).unwrap_or("");
        minute = mins.parse().map_err(bad_number)?;
        rest = rest.get(i + 3..).unwrap_or("");
        if let Some(r) = rest.strip_prefix("am") {
            rest = r;
        } else if let Some(r) = rest.strip_prefix("pm") {
            hour = (hour + 12) % 24;
            rest = r;
        }
    }
    if let Some(i) = rest.find("am").filter(|i| (1..3).contains(i)) {
        hour = rest[..i].parse().map_err(bad_number)?;
        rest = &rest[i + 2..];
    }
    if let Some(i) = rest.find("pm").filter(|i| (1..3).contains(i)) {
        hour = (rest[..i].parse::<i8>().map_err(bad_number)? + 12) % 24;
        rest = &rest[i + 2..];
    }
    for (word, h) in [("noon", 12), ("midnight", 0), ("teatime", 16)] {
        if let Some(r) = rest.strip_prefix(word) {
            (hour, minute) = (h, 0);
            rest = r;
            break;
        }
    }
    let today = now.to_zoned(tz.clone()).date();
    let at = |date: Date| -> Result<DateTime, TimeError> {
        date.at(0, 0, 0, 0)
            .with()
            .hour(hour)
            .minute(minute)
            .build()
            .map_err(|e| err(input, format!("invalid time of day: {e}")))
    };
    let date = if rest.is_empty() || rest == "today" {
        today
    } else if rest == "yesterday" {
        today.yesterday().map_err(|e| err(input, e.to_string()))?
    } else if rest == "tomorrow" {
        today.tomorrow().map_err(|e| err(input, e.to_string()))?
    } else if rest.matches('/').count() == 2 {
        let parts: Vec<i16> = rest
            .split('/')
            .map(|p| {
                p.parse()
                    .map_err(|_| err(input, "expected MM/DD/YY or MM/DD/YYYY"))
            })
            .collect::<Result<_, _>>()?;
        let mut year = parts[2];
        if year < 1900 {
            year += 1900;
        }
        if year < 1970 {
            year += 100;
        }
        Date::new(year, parts[0] as i8, parts[1] as i8).map_err(|e| err(input, e.to_string()))?
    } else if rest.len() == 8 && rest.bytes().all(|b| b.is_ascii_digit()) {
        let (y, m, d) = (&rest[..4], &rest[4..6], &rest[6..]);
        let num = |s: &str| s.parse::<i16>().map_err(|_| err(input, "bad YYYYMMDD"));
        Date::new(num(y)?, num(m)? as i8, num(d)? as i8).map_err(|e| err(input, e.to_string()))?
    } else if let Some(month) = MONTHS.iter().position(|m| rest.starts_with(m)) {
        let (_, tail) = rest.split_at(
            rest.len()
                - rest
                    .bytes()
                    .rev()
                    .take_while(u8::is_ascii_digit)
                    .take(2)
                    .count(),
        );
        if tail.is_empty() {
            return Err(err(input, "Day of month required after month name"));
        }
        let day: i8 = tail.parse().map_err(|_| err(input, "bad day of month"))?;
        Date::new(today.year(), month as i8 + 1, day).map_err(|e| err(input, e.to_string()))?
    } else if let Some(wanted) = WEEKDAYS.iter().position(|d| rest.starts_with(d)) {
        let current = today.weekday().to_sunday_zero_offset() as i64;
        let back = (current - wanted as i64).rem_euclid(7);
        today
            .checked_sub(jiff::Span::new().days(back))
            .map_err(|e| err(input, e.to_string()))?
    } else {
        return Err(err(input, format!("Unknown day reference: {reference}")));
    };
    let local = at(date)?;
    // pytz's localize() takes the standard-time reading of an ambiguous wall time.
    let zoned: Zoned = tz
        .to_ambiguous_zoned(local)
        .disambiguate(Disambiguation::Later)
        .map_err(|e| err(input, e.to_string()))?;
    Ok(zoned.timestamp())
}

/// Seconds of one unit, matched by prefix as graphite does (`s`, `min`, `h`,
/// `d`, `w`, `mon` = 30 days, `y` = 365 days).
fn unit_seconds(unit: &str) -> Option<i64> {
    Some(if unit.starts_with('s') {
        1
    } else if unit.starts_with("min") {
        60
    } else if unit.starts_with('h') {
        3600
    } else if unit.starts_with('d') {
        86400
    } else if unit.starts_with('w') {
        7 * 86400
    } else if unit.starts_with("mon") {
        30 * 86400
    } else if unit.starts_with('y') {
        365 * 86400
    } else {
        return None;
    })
}

/// Parses an offset such as `-1h`, `+2days3h` or `5min` into a signed duration.
pub fn parse_offset(offset: &str) -> Result<SignedDuration, String> {
    if offset.is_empty() {
        return Ok(SignedDuration::ZERO);
    }
    let (sign, mut rest) = match offset.as_bytes()[0] {
        b'+' => (1, &offset[1..]),
        b'-' => (-1, &offset[1..]),
        b'0'..=b'9' => (1, offset),
        _ => return Err(format!("Invalid offset: {offset}")),
    };
    let mut total: i64 = 0;
    while !rest.is_empty() {
        let (digits, after) = split_digits(rest);
        let num: i64 = digits
            .parse()
            .map_err(|_| format!("Invalid offset: {offset} (expected a number)"))?;
        let letters = after.bytes().take_while(u8::is_ascii_alphabetic).count();
        let (unit, after) = after.split_at(letters);
        let secs = unit_seconds(unit).ok_or_else(|| format!("Invalid offset unit '{unit}'"))?;
        total = num
            .checked_mul(secs)
            .and_then(|s| total.checked_add(s))
            .ok_or_else(|| format!("offset {offset} is too large"))?;
        rest = after;
    }
    Ok(SignedDuration::from_secs(sign * total))
}

/// The time zone named by a request's `tz`, or an error naming it.
pub fn time_zone(name: &str) -> Result<TimeZone, TimeError> {
    TimeZone::get(name).map_err(|_| err(name, "unknown time zone"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000; // Tue 2023-11-14 22:13:20 UTC

    fn at(s: &str) -> i64 {
        parse(s, &TimeZone::UTC, Timestamp::from_second(NOW).unwrap())
            .unwrap()
            .as_second()
    }

    #[test]
    fn offsets() {
        assert_eq!(at("-1h"), NOW - 3600);
        assert_eq!(at("-12hours"), NOW - 12 * 3600);
        assert_eq!(at("now-1d"), NOW - 86400);
        assert_eq!(at("-5min"), NOW - 300);
        assert_eq!(at("-1mon"), NOW - 30 * 86400);
        assert_eq!(at("-1y"), NOW - 365 * 86400);
        assert_eq!(at("-2w1d"), NOW - 15 * 86400);
        assert_eq!(at("+30s"), NOW + 30);
        assert_eq!(at("now"), NOW);
        assert_eq!(at(""), NOW);
    }

    #[test]
    fn references() {
        let midnight = NOW - NOW % 86400;
        assert_eq!(at("midnight"), midnight);
        assert_eq!(at("today"), midnight);
        assert_eq!(at("yesterday"), midnight - 86400);
        assert_eq!(at("noon yesterday"), midnight - 86400 + 12 * 3600);
        assert_eq!(at("16:00_20231113"), 1_699_891_200);
        assert_eq!(at("4pm20231113"), 1_699_891_200);
        assert_eq!(at("20231113"), 1_699_833_600);
        assert_eq!(at("11/13/2023"), 1_699_833_600);
        assert_eq!(at("11/13/23"), 1_699_833_600);
        assert_eq!(at("nov13"), 1_699_833_600);
        assert_eq!(at("monday"), 1_699_833_600);
        assert_eq!(at("teatime"), midnight + 16 * 3600);
        assert_eq!(at("midnight+1h"), midnight + 3600);
        assert_eq!(at("1699999999"), 1_699_999_999);
    }

    #[test]
    fn errors_name_the_problem() {
        let e =
            |s: &str| parse(s, &TimeZone::UTC, Timestamp::from_second(NOW).unwrap()).unwrap_err();
        assert!(e("-1fortnights").reason.contains("unit 'fortnights'"));
        assert!(e("blursday").reason.contains("Unknown day reference"));
        assert!(e("nov").reason.contains("Day of month"));
        assert!(e("-h").reason.contains("expected a number"));
        assert!(e("13/45/2023").reason.contains("month") || e("13/45/2023").reason.contains("day"));
        assert!(time_zone("Mars/Olympus").is_err());
        assert!(time_zone("Europe/Berlin").is_ok());
    }
}

//! Retention definitions (`10s:1d`, `60:1440`) and the rules whisper applies to
//! an archive list before creating a file.

use std::fmt;

use super::{Result, WhisperError};

/// One archive's precision and length, before it has an offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Retention {
    /// Seconds each point covers.
    pub seconds_per_point: u32,
    /// Number of points kept.
    pub points: u32,
}

impl Retention {
    /// Seconds of history kept.
    pub fn retention(&self) -> u64 {
        u64::from(self.seconds_per_point) * u64::from(self.points)
    }
}

impl fmt::Display for Retention {
    /// Python's tuple repr, as whisper's messages print archives.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "({}, {})", self.seconds_per_point, self.points)
    }
}

const UNITS: [(&str, u64); 6] = [
    ("seconds", 1),
    ("minutes", 60),
    ("hours", 3600),
    ("days", 86400),
    ("weeks", 86400 * 7),
    ("years", 86400 * 365),
];

/// Whisper's unit lookup: the first unit whose name starts with `s`
/// (`m` and `min` are minutes, `y` years).
fn unit_seconds(s: &str) -> Result<u64> {
    UNITS
        .iter()
        .find(|(name, _)| name.starts_with(s))
        .map(|(_, mult)| *mult)
        .ok_or_else(|| WhisperError::InvalidRetention(format!("Invalid unit '{s}'")))
}

/// Splits `123abc` into its number and unit, as whisper's `^(\d+)([a-z]+)$`.
fn number_and_unit(s: &str) -> Option<(u64, &str)> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let (num, unit) = s.split_at(digits);
    if num.is_empty() || unit.is_empty() || !unit.bytes().all(|b| b.is_ascii_lowercase()) {
        return None;
    }
    Some((num.parse().ok()?, unit))
}

fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// Parses a precision alone (`60`, `1m`), as `fetch`'s archive selection does.
pub fn parse_precision(precision: &str) -> Result<u32> {
    let seconds = if all_digits(precision) {
        precision.parse::<u64>().ok()
    } else {
        match number_and_unit(precision) {
            Some((n, unit)) => n.checked_mul(unit_seconds(unit)?),
            None => {
                return Err(WhisperError::InvalidRetention(format!(
                    "Invalid precision specification '{precision}'"
                )))
            }
        }
    };
    seconds.and_then(|s| u32::try_from(s).ok()).ok_or_else(|| {
        WhisperError::InvalidRetention(format!("precision '{precision}' is too large for whisper"))
    })
}

/// Parses `precision:points` exactly as whisper's `parseRetentionDef`:
/// a bare number is seconds or a point count, a number with a unit is a
/// duration (`1d` of points at `10s` is 8640 points).
pub fn parse_retention(def: &str) -> Result<Retention> {
    let Some((precision, points)) = def.trim().split_once(':') else {
        return Err(WhisperError::InvalidRetention(format!(
            "Invalid retention definition '{def}'"
        )));
    };
    let seconds_per_point = parse_precision(precision)?;
    if seconds_per_point == 0 {
        return Err(WhisperError::InvalidRetention(format!(
            "Invalid retention definition '{def}': precision must be at least one second"
        )));
    }
    let points = if all_digits(points) {
        points.parse::<u64>().ok()
    } else {
        match number_and_unit(points) {
            Some((n, unit)) => n
                .checked_mul(unit_seconds(unit)?)
                .map(|s| s / u64::from(seconds_per_point)),
            None => {
                return Err(WhisperError::InvalidRetention(format!(
                    "Invalid retention specification '{points}'"
                )))
            }
        }
    };
    let points = points.and_then(|p| u32::try_from(p).ok()).ok_or_else(|| {
        WhisperError::InvalidRetention(format!("retention '{def}' has too many points for whisper"))
    })?;
    Ok(Retention {
        seconds_per_point,
        points,
    })
}

/// Sorts `archives` by precision and checks them as whisper's
/// `validateArchiveList` does, with its messages.
pub fn validate_archive_list(archives: &mut [Retention]) -> Result<()> {
    if archives.is_empty() {
        return Err(WhisperError::InvalidConfiguration(
            "You must specify at least one archive configuration!".into(),
        ));
    }
    archives.sort_by_key(|a| a.seconds_per_point);
    for (i, pair) in archives.windows(2).enumerate() {
        let (a, next) = (pair[0], pair[1]);
        if a.seconds_per_point == 0 || a.points == 0 || next.points == 0 {
            return Err(WhisperError::InvalidConfiguration(format!(
                "An archive must have a positive precision and at least one point (archive{i}: {a}, archive{}: {next})",
                i + 1
            )));
        }
        if a.seconds_per_point >= next.seconds_per_point {
            return Err(WhisperError::InvalidConfiguration(format!(
                "A Whisper database may not be configured having two archives with the same precision (archive{i}: {a}, archive{}: {next})",
                i + 1
            )));
        }
        if next.seconds_per_point % a.seconds_per_point != 0 {
            return Err(WhisperError::InvalidConfiguration(format!(
                "Higher precision archives' precision must evenly divide all lower precision archives' precision (archive{i}: {}, archive{}: {})",
                a.seconds_per_point,
                i + 1,
                next.seconds_per_point
            )));
        }
        if next.retention() <= a.retention() {
            return Err(WhisperError::InvalidConfiguration(format!(
                "Lower precision archives must cover larger time intervals than higher precision archives (archive{i}: {} seconds, archive{}: {} seconds)",
                a.retention(),
                i + 1,
                next.retention()
            )));
        }
        let per_consolidation = next.seconds_per_point / a.seconds_per_point;
        if a.points < per_consolidation {
            return Err(WhisperError::InvalidConfiguration(format!(
                "Each archive must have at least enough points to consolidate to the next archive (archive{} consolidates {per_consolidation} of archive{i}'s points but it has only {} total points)",
                i + 1,
                a.points
            )));
        }
    }
    let last = archives[archives.len() - 1];
    if last.seconds_per_point == 0 || last.points == 0 {
        return Err(WhisperError::InvalidConfiguration(format!(
            "An archive must have a positive precision and at least one point ({last})"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: u32, p: u32) -> Retention {
        Retention {
            seconds_per_point: s,
            points: p,
        }
    }

    #[test]
    fn parses_whisper_forms() {
        assert_eq!(parse_retention("60:1440").unwrap(), r(60, 1440));
        assert_eq!(parse_retention("15m:8").unwrap(), r(900, 8));
        assert_eq!(parse_retention("1h:7d").unwrap(), r(3600, 168));
        assert_eq!(parse_retention("12h:2y").unwrap(), r(43200, 1460));
        assert_eq!(parse_retention("10s:1d").unwrap(), r(10, 8640));
        assert_eq!(parse_retention("1min:1w").unwrap(), r(60, 10080));
        assert_eq!(parse_retention(" 10s:6h ").unwrap(), r(10, 2160));
        assert_eq!(parse_retention("7s:1m").unwrap(), r(7, 8));
    }

    #[test]
    fn rejects_bad_definitions() {
        let msg = |s| parse_retention(s).unwrap_err().to_string();
        assert_eq!(msg("60"), "Invalid retention definition '60'");
        assert_eq!(msg("6x0:1"), "Invalid precision specification '6x0'");
        assert_eq!(msg("60:1q"), "Invalid unit 'q'");
        assert_eq!(msg("60:abc"), "Invalid retention specification 'abc'");
        assert!(msg("0:10").contains("at least one second"));
        assert!(msg("1:99999999999").contains("too many points"));
    }

    #[test]
    fn validates_like_whisper() {
        let msg = |mut v: Vec<Retention>| validate_archive_list(&mut v).unwrap_err().to_string();
        assert!(msg(vec![]).contains("at least one archive"));
        assert!(msg(vec![r(60, 10), r(60, 20)]).contains("same precision (archive0: (60, 10)"));
        assert!(msg(vec![r(60, 100), r(90, 100)]).contains("evenly divide"));
        assert!(msg(vec![r(60, 100), r(120, 10)]).contains("larger time intervals"));
        assert!(msg(vec![r(1, 5), r(10, 100)])
            .contains("consolidates 10 of archive0's points but it has only 5"));
        let mut ok = vec![r(3600, 24), r(60, 60)];
        validate_archive_list(&mut ok).unwrap();
        assert_eq!(ok, vec![r(60, 60), r(3600, 24)]);
    }
}

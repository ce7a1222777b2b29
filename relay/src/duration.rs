//! Durations as operators write them, in config files and flags alike:
//! bare seconds (`10`, `0.5`) or a number with a unit (`500ms`, `10s`,
//! `1min`, `2h`, `1d`, `1w`).

use serde::{Deserialize, Deserializer};

/// Seconds in `text`: a number, or a number and a unit (`ms`, `s`, `sec`,
/// `m`/`min`, `h`/`hour`, `d`/`day`, `w`/`week`, plurals too).
pub fn parse_seconds(text: &str) -> Result<f64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number.parse().map_err(|_| {
        format!("{text:?} is not a duration: use seconds (10) or a number and a unit (500ms, 10s, 1min, 2h, 1d)")
    })?;
    let scale = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "s" | "sec" | "secs" | "second" | "seconds" => 1.0,
        "ms" | "msec" | "millisecond" | "milliseconds" => 0.001,
        "m" | "min" | "mins" | "minute" | "minutes" => 60.0,
        "h" | "hr" | "hrs" | "hour" | "hours" => 3600.0,
        "d" | "day" | "days" => 86_400.0,
        "w" | "week" | "weeks" => 604_800.0,
        other => {
            return Err(format!(
                "{text:?}: unknown unit {other:?}; use ms, s, min, h, d or w"
            ))
        }
    };
    let seconds = value * scale;
    if !seconds.is_finite() {
        return Err(format!("{text:?} is not a finite duration"));
    }
    Ok(seconds)
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Written {
    Number(f64),
    Text(String),
}

/// For `#[serde(default, deserialize_with = ...)]` on an `Option<f64>` of
/// seconds: a number, or a string with a unit.
pub fn option_seconds<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    match Option::<Written>::deserialize(d)? {
        None => Ok(None),
        Some(Written::Number(n)) => Ok(Some(n)),
        Some(Written::Text(t)) => parse_seconds(&t)
            .map(Some)
            .map_err(serde::de::Error::custom),
    }
}

/// As [`option_seconds`], for settings kept in whole seconds (rounded).
pub fn option_whole_seconds<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match option_seconds(d)? {
        None => Ok(None),
        Some(s) if s >= 0.0 => Ok(Some(s.round() as u64)),
        Some(s) => Err(serde::de::Error::custom(format!(
            "{s} seconds: a duration here cannot be negative"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_as_operators_write_them() {
        assert_eq!(parse_seconds("10").unwrap(), 10.0);
        assert_eq!(parse_seconds("0.5").unwrap(), 0.5);
        assert_eq!(parse_seconds("10s").unwrap(), 10.0);
        assert_eq!(parse_seconds("500ms").unwrap(), 0.5);
        assert_eq!(parse_seconds("1min").unwrap(), 60.0);
        assert_eq!(parse_seconds("2h").unwrap(), 7200.0);
        assert_eq!(parse_seconds("1 day").unwrap(), 86_400.0);
        assert_eq!(parse_seconds("1w").unwrap(), 604_800.0);
        assert!(parse_seconds("10 parsecs")
            .unwrap_err()
            .contains("unknown unit"));
        assert!(parse_seconds("soon")
            .unwrap_err()
            .contains("not a duration"));
    }

    #[test]
    fn config_files_take_numbers_and_strings() {
        #[derive(Deserialize)]
        struct F {
            #[serde(default, deserialize_with = "option_seconds")]
            a: Option<f64>,
            #[serde(default, deserialize_with = "option_whole_seconds")]
            b: Option<u64>,
            #[serde(default, deserialize_with = "option_seconds")]
            c: Option<f64>,
        }
        let f: F = toml::from_str("a = \"1min\"\nb = \"10m\"").unwrap();
        assert_eq!((f.a, f.b, f.c), (Some(60.0), Some(600), None));
        let f: F = toml::from_str("a = 2.5\nb = 7").unwrap();
        assert_eq!((f.a, f.b), (Some(2.5), Some(7)));
        assert!(toml::from_str::<F>("a = \"1 fortnight\"").is_err());
    }
}

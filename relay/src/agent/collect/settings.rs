//! One collector's settings: the `[collectors]` defaults merged with its own
//! `[collectors.<name>]` table, as diamond merges `[[default]]` into
//! `[[CPUCollector]]`, read with diamond's value forms (booleans or
//! `"True"`, lists or `"a, b"` strings).

use crate::error::Error;

/// Keys every collector takes.
pub const COMMON_KEYS: &[&str] = &[
    "enabled",
    "interval",
    "path",
    "path_prefix",
    "path_suffix",
    "hostname",
    "hostname_method",
    "byte_unit",
    "metrics_whitelist",
    "metrics_blacklist",
    "measure_collector_time",
    // diamond's, accepted and without effect here: no virtual machine
    // metrics, no event TTLs, rounds start when the agent does.
    "instance_prefix",
    "ttl_multiplier",
    "stagger_collection",
];

/// A collector's merged table.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The collector's name in the config (`cpu`), for messages.
    pub collector: &'static str,
    table: toml::Table,
}

impl Settings {
    /// `defaults` overlaid with `own`; a key neither common nor in `keys`
    /// is refused.
    pub fn merge(
        collector: &'static str,
        defaults: &toml::Table,
        own: Option<&toml::Table>,
        keys: &[&str],
    ) -> Result<Settings, Error> {
        let mut table = defaults.clone();
        if let Some(own) = own {
            for (k, v) in own {
                if !COMMON_KEYS.contains(&k.as_str()) && !keys.contains(&k.as_str()) {
                    let mut known: Vec<&str> = COMMON_KEYS.iter().chain(keys).copied().collect();
                    known.sort_unstable();
                    return Err(Error::config(format!(
                        "[collectors.{collector}] has no setting {k:?}; it takes {}",
                        known.join(", ")
                    )));
                }
                table.insert(k.clone(), v.clone());
            }
        }
        Ok(Settings { collector, table })
    }

    fn bad(&self, key: &str, want: &str) -> Error {
        Error::config(format!("[collectors.{}] {key}: use {want}", self.collector))
    }

    /// Whether `key` is set.
    pub fn has(&self, key: &str) -> bool {
        self.table.contains_key(key)
    }

    /// A boolean: true/false, or diamond's strings (`True`, `yes`, `f`, …).
    pub fn bool(&self, key: &str, default: bool) -> Result<bool, Error> {
        match self.table.get(key) {
            None => Ok(default),
            Some(toml::Value::Boolean(b)) => Ok(*b),
            Some(toml::Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "t" | "yes" | "y" => Ok(true),
                "false" | "f" | "no" | "n" | "" => Ok(false),
                _ => Err(self.bad(key, "true or false")),
            },
            Some(_) => Err(self.bad(key, "true or false")),
        }
    }

    /// A number (integer, float or a numeric string).
    pub fn number(&self, key: &str, default: f64) -> Result<f64, Error> {
        match self.table.get(key) {
            None => Ok(default),
            Some(toml::Value::Integer(i)) => Ok(*i as f64),
            Some(toml::Value::Float(f)) => Ok(*f),
            Some(toml::Value::String(s)) => s.trim().parse().map_err(|_| self.bad(key, "a number")),
            Some(_) => Err(self.bad(key, "a number")),
        }
    }

    /// Seconds: a number or a duration with a unit (`10s`, `5min`).
    pub fn seconds(&self, key: &str, default: f64) -> Result<f64, Error> {
        let v = match self.table.get(key) {
            Some(toml::Value::String(s)) => crate::duration::parse_seconds(s).map_err(|e| {
                Error::config(format!("[collectors.{}] {key}: {e}", self.collector))
            })?,
            _ => self.number(key, default)?,
        };
        if (0.001..=1e9).contains(&v) {
            Ok(v)
        } else {
            Err(self.bad(key, "a number of seconds from 0.001 to 1e9"))
        }
    }

    /// A string, if set.
    pub fn string(&self, key: &str) -> Result<Option<String>, Error> {
        match self.table.get(key) {
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(s.clone())),
            Some(toml::Value::Integer(i)) => Ok(Some(i.to_string())),
            Some(_) => Err(self.bad(key, "a string")),
        }
    }

    /// A list: an array of strings, or one string split at commas (and,
    /// for `byte_unit`, diamond splits at spaces).
    pub fn list(&self, key: &str, default: &[&str]) -> Result<Vec<String>, Error> {
        match self.table.get(key) {
            None => Ok(default.iter().map(|s| s.to_string()).collect()),
            Some(toml::Value::Array(a)) => a
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| self.bad(key, "a list of strings"))
                })
                .collect(),
            Some(toml::Value::String(s)) => {
                let sep = |c: char| c == ',' || (key == "byte_unit" && c.is_whitespace());
                Ok(s.split(sep)
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(str::to_string)
                    .collect())
            }
            Some(_) => Err(self.bad(key, "a list of strings")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_table_overrides_defaults_and_unknown_keys_are_named() {
        let defaults: toml::Table =
            toml::from_str("interval = 300\nbyte_unit = \"kilobyte bit\"").unwrap();
        let own: toml::Table = toml::from_str("interval = \"10s\"\npercore = \"False\"").unwrap();
        let s = Settings::merge("cpu", &defaults, Some(&own), &["percore"]).unwrap();
        assert_eq!(s.seconds("interval", 300.0).unwrap(), 10.0);
        assert!(!s.bool("percore", true).unwrap());
        assert_eq!(s.list("byte_unit", &[]).unwrap(), ["kilobyte", "bit"]);
        let own: toml::Table = toml::from_str("percroe = true").unwrap();
        let err = Settings::merge("cpu", &defaults, Some(&own), &["percore"]).unwrap_err();
        assert!(err.to_string().contains("percroe"), "{err}");
    }
}

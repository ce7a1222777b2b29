//! What every collector shares, as diamond's `Collector` base class does:
//! the metric path (`<path_prefix>.<host>.<path_suffix>.<path>.<name>`),
//! the metrics white- and blacklist, byte units, and the derivative that
//! turns a counter into a rate over the configured interval.

use std::collections::HashMap;

use super::hostname;
use super::settings::Settings;
use super::units::Unit;
use crate::error::Error;

/// Counters of 64 bits roll over here (diamond's `MAX_COUNTER`).
pub const MAX_COUNTER: i128 = u64::MAX as i128;

/// One published value: the name under the collector's path, the value,
/// and the decimals diamond prints it with.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Name under the collector's path (`total.user`).
    pub name: String,
    /// The value.
    pub value: f64,
    /// Decimal places on the wire.
    pub precision: u8,
}

/// A collector's shared state.
#[derive(Debug)]
pub struct Base {
    /// Everything before the metric name (`servers.web01.cpu`), or empty.
    prefix: String,
    /// Seconds between rounds: the time base of rates.
    pub interval: f64,
    /// `byte_unit`, in order.
    pub byte_units: Vec<Unit>,
    whitelist: Option<regex::Regex>,
    blacklist: Option<regex::Regex>,
    /// Whether to publish `collector_time_ms`.
    pub measure_time: bool,
    /// Each counter's last reading and the round it was read in.
    last_counts: HashMap<String, (i128, u64)>,
    last_values: HashMap<String, (f64, u64)>,
    /// Rounds taken so far.
    round: u64,
    out: Vec<Sample>,
}

impl Base {
    /// The shared state from `settings`; `default_path` is the collector's
    /// own `path` (`cpu`, `iostat`, …), `default_units` its `byte_unit`,
    /// and `outer_prefix` goes before everything.
    pub fn new(
        settings: &Settings,
        default_path: &str,
        default_units: &[&str],
        outer_prefix: Option<&str>,
    ) -> Result<Base, Error> {
        let path = settings
            .string("path")?
            .unwrap_or_else(|| default_path.to_string());
        let method = settings
            .string("hostname_method")?
            .unwrap_or_else(|| "smart".into());
        let host = hostname::resolve(&method, settings.string("hostname")?.as_deref())?;
        let mut prefix = settings
            .string("path_prefix")?
            .unwrap_or_else(|| "servers".into());
        if let Some(host) = host {
            prefix = if prefix.is_empty() {
                host
            } else {
                format!("{prefix}.{host}")
            };
        }
        if let Some(suffix) = settings.string("path_suffix")?.filter(|s| !s.is_empty()) {
            prefix = format!("{prefix}.{suffix}");
        }
        let outer = outer_prefix.unwrap_or_default().trim_matches('.');
        let pieces: Vec<&str> = [
            outer,
            prefix.as_str(),
            if path == "." { "" } else { path.as_str() },
        ]
        .into_iter()
        .filter(|p| !p.is_empty())
        .collect();
        let byte_units = settings
            .list("byte_unit", default_units)?
            .iter()
            .map(|u| {
                Unit::parse(u).ok_or_else(|| {
                    Error::config(format!(
                        "[collectors.{}] byte_unit {u:?}: use bit, byte, kilobyte (kB), megabyte (MB), gigabit (Gbit), …",
                        settings.collector
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if byte_units.is_empty() {
            return Err(Error::config(format!(
                "[collectors.{}] byte_unit is empty",
                settings.collector
            )));
        }
        let anchored = |key: &str| -> Result<Option<regex::Regex>, Error> {
            // diamond matches with re.match: anchored at the start only.
            let pats = settings.list(key, &[])?;
            if pats.is_empty() {
                return Ok(None);
            }
            let joined = pats
                .iter()
                .map(|p| format!("(?:{p})"))
                .collect::<Vec<_>>()
                .join("|");
            regex::Regex::new(&format!("^(?:{joined})"))
                .map(Some)
                .map_err(|e| {
                    Error::config(format!("[collectors.{}] {key}: {e}", settings.collector))
                })
        };
        let whitelist = anchored("metrics_whitelist")?;
        let blacklist = anchored("metrics_blacklist")?;
        if whitelist.is_some() && blacklist.is_some() {
            return Err(Error::config(format!(
                "[collectors.{}] has both metrics_whitelist and metrics_blacklist: keep one",
                settings.collector
            )));
        }
        Ok(Base {
            prefix: pieces.join("."),
            interval: settings.seconds("interval", 300.0)?,
            byte_units,
            whitelist,
            blacklist,
            measure_time: settings.bool("measure_collector_time", false)?,
            last_counts: HashMap::new(),
            last_values: HashMap::new(),
            round: 0,
            out: Vec::new(),
        })
    }

    /// The full metric path of `name`.
    pub fn path(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    /// Publishes `value` as `name` with `precision` decimals, unless the
    /// white- or blacklist keeps it out.
    pub fn publish(&mut self, name: impl Into<String>, value: f64, precision: u8) {
        let name = name.into();
        if self.whitelist.as_ref().is_some_and(|w| !w.is_match(&name))
            || self.blacklist.as_ref().is_some_and(|b| b.is_match(&name))
        {
            return;
        }
        self.out.push(Sample {
            name,
            value,
            precision,
        });
    }

    /// What this round published, emptying it. Counters not read this
    /// round (a device or interface that went away) are forgotten, so a
    /// host whose devices come and go does not grow the agent.
    pub fn take(&mut self) -> Vec<Sample> {
        let round = self.round;
        self.last_counts.retain(|_, (_, r)| *r == round);
        self.last_values.retain(|_, (_, r)| *r == round);
        self.round += 1;
        std::mem::take(&mut self.out)
    }

    /// The change of counter `name` since the last round per second of the
    /// interval (`per_second`) or as is; a counter below its last value
    /// rolled over at `max`. Exact on 64-bit counters. A negative result is
    /// 0. `None` on the first sight of `name`: there is no rate yet, and
    /// diamond's 0 there would draw a false dip on every restart.
    pub fn counter(&mut self, name: &str, new: i128, max: i128, per_second: bool) -> Option<f64> {
        let (old, _) = self
            .last_counts
            .insert(name.to_string(), (new, self.round))?;
        let old = if new < old { old - max } else { old };
        let change = (new - old) as f64;
        let rate = if per_second {
            change / self.interval
        } else {
            change
        };
        Some(rate.max(0.0))
    }

    /// [`Base::counter`] over float readings (diskusage's sector counts,
    /// already scaled), with no time division.
    pub fn change(&mut self, name: &str, new: f64, max: f64) -> Option<f64> {
        let (old, _) = self
            .last_values
            .insert(name.to_string(), (new, self.round))?;
        let old = if new < old { old - max } else { old };
        Some((new - old).max(0.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Base {
        let t: toml::Table = toml::from_str("hostname = \"h\"\ninterval = 10").unwrap();
        Base::new(
            &Settings::merge("cpu", &t, None, &[]).unwrap(),
            "cpu",
            &["byte"],
            None,
        )
        .unwrap()
    }

    #[test]
    fn counters_rate_roll_over_and_are_forgotten_when_gone() {
        let mut b = base();
        assert_eq!(b.counter("a", 100, MAX_COUNTER, true), None);
        assert_eq!(b.counter("gone", 1, MAX_COUNTER, true), None);
        b.take();
        assert_eq!(b.counter("a", 150, MAX_COUNTER, true), Some(5.0));
        b.take();
        // Rolled over at 2^64 - 1: exact.
        assert_eq!(
            b.counter("a", 9, MAX_COUNTER, false),
            Some((MAX_COUNTER - 150 + 9) as f64)
        );
        // "gone" was not read last round: a first sight again.
        assert_eq!(b.counter("gone", 5, MAX_COUNTER, true), None);
        b.take();
        assert_eq!(b.counter("a", 8, 0, true), Some(0.0));
    }
}

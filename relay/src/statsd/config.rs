//! statsd settings: the `[statsd]` table of a config file as read
//! ([`StatsdFile`], etsy's option names in brackets where they differ) and
//! validated into each listener's aggregation [`Config`].

use std::time::Duration;

use serde::Deserialize;

use super::aggregate::Config;
use crate::error::Error;

/// The `[statsd]` table of a config file (etsy's option names in brackets
/// where they differ).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatsdFile {
    /// Percentiles for timers [`percentThreshold`, 90].
    pub percent_threshold: Option<Vec<f64>>,
    /// etsy's old names (`stats.X`, `stats_counts.X`) [false].
    pub legacy_namespace: Option<bool>,
    /// [`stats`].
    pub global_prefix: Option<String>,
    /// [`counters`].
    pub prefix_counter: Option<String>,
    /// [`timers`].
    pub prefix_timer: Option<String>,
    /// [`gauges`].
    pub prefix_gauge: Option<String>,
    /// [`sets`].
    pub prefix_set: Option<String>,
    /// [none].
    pub global_suffix: Option<String>,
    /// statsd's own metrics namespace [`statsd`].
    pub prefix_stats: Option<String>,
    /// Counts beside rates [true].
    pub flush_counts: Option<bool>,
    /// Stop sending idle metrics [false].
    pub delete_idle_stats: Option<bool>,
    /// [as `delete_idle_stats`].
    pub delete_counters: Option<bool>,
    /// [as `delete_idle_stats`].
    pub delete_timers: Option<bool>,
    /// [as `delete_idle_stats`].
    pub delete_sets: Option<bool>,
    /// [as `delete_idle_stats`].
    pub delete_gauges: Option<bool>,
    /// Flushes a gauge may stay idle before it is dropped [1].
    pub gauges_max_ttl: Option<u32>,
    /// Histogram bins for timers whose key contains `metric`.
    pub histogram: Option<Vec<HistogramFile>>,
    /// Only these timer fields (`count`, `upper_percent`, `histogram`, …).
    pub calculated_timer_metrics: Option<Vec<String>>,
    /// Sanitize keys as etsy does [true].
    pub key_name_sanitize: Option<bool>,
    /// Listeners besides `statsd_addr`, each with its own prefix.
    pub listener: Option<Vec<ListenerFile>>,
    /// Distinct keys held between flushes; samples of more new keys are
    /// dropped and counted [100000].
    pub max_keys: Option<usize>,
    /// Timings per timer and members per set held between flushes [100000].
    pub max_samples: Option<usize>,
}

/// One `histogram` entry: bins are numbers or `"inf"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistogramFile {
    /// Substring of the timer keys it applies to.
    pub metric: String,
    /// Upper bounds of the bins.
    pub bins: Vec<toml::Value>,
}

/// One extra listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerFile {
    /// Address (UDP; TCP too with `tcp = true`).
    pub addr: String,
    /// Prepended to every name it flushes (`smc` gives `smc.stats.…`).
    pub prefix: Option<String>,
    /// Also accept TCP [false].
    pub tcp: Option<bool>,
}

/// One listener to start.
#[derive(Debug, Clone)]
pub struct Listener {
    /// Where it listens.
    pub addr: String,
    /// Also on TCP.
    pub tcp: bool,
    /// Its aggregation settings (with its prefix).
    pub config: Config,
}

impl StatsdFile {
    /// The aggregation settings for a listener with `prefix`.
    pub fn config(
        &self,
        flush_interval: Duration,
        prefix: Option<String>,
    ) -> Result<Config, Error> {
        let d = Config::default();
        let idle = self.delete_idle_stats.unwrap_or(false);
        let histogram = self
            .histogram
            .iter()
            .flatten()
            .map(|h| {
                let bins = h
                    .bins
                    .iter()
                    .map(|b| match b {
                        toml::Value::Integer(i) => Ok(*i as f64),
                        toml::Value::Float(f) => Ok(*f),
                        toml::Value::String(s) if s == "inf" => Ok(f64::INFINITY),
                        other => Err(Error::config(format!(
                            "histogram bin {other} for {:?}: use a number or \"inf\"",
                            h.metric
                        ))),
                    })
                    .collect::<Result<Vec<f64>, Error>>()?;
                Ok((h.metric.clone(), bins))
            })
            .collect::<Result<Vec<_>, Error>>()?;
        if let Some(bad) = self
            .percent_threshold
            .iter()
            .flatten()
            .find(|p| !(p.abs() <= 100.0 && **p != 0.0))
        {
            return Err(Error::config(format!(
                "percent_threshold {bad}: use percentages between -100 and 100, not 0"
            )));
        }
        Ok(Config {
            flush_interval_ms: flush_interval.as_millis().max(1) as u64,
            percent_threshold: self
                .percent_threshold
                .clone()
                .unwrap_or(d.percent_threshold),
            legacy_namespace: self.legacy_namespace.unwrap_or(d.legacy_namespace),
            global_prefix: self.global_prefix.clone().unwrap_or(d.global_prefix),
            prefix_counter: self.prefix_counter.clone().unwrap_or(d.prefix_counter),
            prefix_timer: self.prefix_timer.clone().unwrap_or(d.prefix_timer),
            prefix_gauge: self.prefix_gauge.clone().unwrap_or(d.prefix_gauge),
            prefix_set: self.prefix_set.clone().unwrap_or(d.prefix_set),
            global_suffix: self.global_suffix.clone(),
            prefix_stats: self.prefix_stats.clone().unwrap_or(d.prefix_stats),
            flush_counts: self.flush_counts.unwrap_or(true),
            delete_counters: self.delete_counters.unwrap_or(idle),
            delete_timers: self.delete_timers.unwrap_or(idle),
            delete_sets: self.delete_sets.unwrap_or(idle),
            delete_gauges: self.delete_gauges.unwrap_or(idle),
            gauges_max_ttl: self.gauges_max_ttl.unwrap_or(1).max(1),
            histogram,
            calculated_timer_metrics: self.calculated_timer_metrics.clone().unwrap_or_default(),
            key_name_sanitize: self.key_name_sanitize.unwrap_or(true),
            listener_prefix: prefix.filter(|p| !p.is_empty()),
            max_keys: self.max_keys.unwrap_or(d.max_keys).max(1),
            max_samples: self.max_samples.unwrap_or(d.max_samples).max(1),
        })
    }

    /// Every listener: `main_addr` (if not `""`) without a prefix, then the
    /// `[[statsd.listener]]` entries.
    pub fn listeners(
        &self,
        main_addr: Option<&str>,
        main_tcp: bool,
        main_prefix: Option<String>,
        flush_interval: Duration,
    ) -> Result<Vec<Listener>, Error> {
        let mut out = Vec::new();
        if let Some(addr) = main_addr.filter(|a| !a.is_empty()) {
            out.push(Listener {
                addr: addr.to_string(),
                tcp: main_tcp,
                config: self.config(flush_interval, main_prefix)?,
            });
        }
        for l in self.listener.iter().flatten() {
            out.push(Listener {
                addr: l.addr.clone(),
                tcp: l.tcp.unwrap_or(false),
                config: self.config(flush_interval, l.prefix.clone())?,
            });
        }
        Ok(out)
    }
}

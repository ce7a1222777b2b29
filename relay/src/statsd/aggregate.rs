//! statsd aggregation with etsy statsd 0.9's semantics and graphite backend
//! names: counters (rate and count), timers (percentiles, histograms),
//! gauges (with signed deltas), sets, and statsd's own `statsd.*` metrics,
//! flushed every interval. Shared by `graunt serve` (into the node),
//! `graunt agent` (to a remote node or relay) and the relay.

use std::collections::{HashMap, HashSet};

use crate::codec::statsd::{parse_packet, Kind, Options};

/// How a listener aggregates and names what it flushes (etsy's config keys
/// in brackets).
#[derive(Debug, Clone)]
pub struct Config {
    /// Seconds between flushes, as a rate divisor [`flushInterval`].
    pub flush_interval_ms: u64,
    /// Percentiles for timers [`percentThreshold`, default 90].
    pub percent_threshold: Vec<f64>,
    /// etsy's old names (`stats.X`, `stats_counts.X`) [`legacyNamespace`, default false here].
    pub legacy_namespace: bool,
    /// [`graphite.globalPrefix`, default `stats`].
    pub global_prefix: String,
    /// [`graphite.prefixCounter`, default `counters`].
    pub prefix_counter: String,
    /// [`graphite.prefixTimer`, default `timers`].
    pub prefix_timer: String,
    /// [`graphite.prefixGauge`, default `gauges`].
    pub prefix_gauge: String,
    /// [`graphite.prefixSet`, default `sets`].
    pub prefix_set: String,
    /// [`graphite.globalSuffix`, default none].
    pub global_suffix: Option<String>,
    /// Namespace of statsd's own metrics [`prefixStats`, default `statsd`].
    pub prefix_stats: String,
    /// Send counts beside rates [`flush_counts`, default true].
    pub flush_counts: bool,
    /// Drop idle counters [`deleteCounters`].
    pub delete_counters: bool,
    /// Drop idle timers [`deleteTimers`].
    pub delete_timers: bool,
    /// Drop idle sets [`deleteSets`].
    pub delete_sets: bool,
    /// Drop gauges idle for `gauges_max_ttl` flushes [`deleteGauges`].
    pub delete_gauges: bool,
    /// [`gaugesMaxTTL`, default 1].
    pub gauges_max_ttl: u32,
    /// Timer histograms: (substring of the key, bin upper bounds; `inf` as
    /// infinity) [`histogram`].
    pub histogram: Vec<(String, Vec<f64>)>,
    /// Only these timer fields (`count`, `upper_percent`, …) [`calculatedTimerMetrics`].
    pub calculated_timer_metrics: Vec<String>,
    /// Key sanitizing [`keyNameSanitize`, default true].
    pub key_name_sanitize: bool,
    /// Prepended to every name this listener flushes (a tenant's namespace,
    /// e.g. `smc`), before `global_prefix`.
    pub listener_prefix: Option<String>,
    /// Distinct keys held between flushes (all kinds together); samples of
    /// further new keys are dropped and counted, so random keys from a
    /// hostile client cannot grow memory without bound. (etsy has no bound.)
    pub max_keys: usize,
    /// Samples kept per timer and members per set between flushes; further
    /// ones are dropped and counted (a timer's count still counts them).
    pub max_samples: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            flush_interval_ms: 10_000,
            percent_threshold: vec![90.0],
            legacy_namespace: false,
            global_prefix: "stats".into(),
            prefix_counter: "counters".into(),
            prefix_timer: "timers".into(),
            prefix_gauge: "gauges".into(),
            prefix_set: "sets".into(),
            global_suffix: None,
            prefix_stats: "statsd".into(),
            flush_counts: true,
            delete_counters: false,
            delete_timers: false,
            delete_sets: false,
            delete_gauges: false,
            gauges_max_ttl: 1,
            histogram: Vec::new(),
            calculated_timer_metrics: Vec::new(),
            key_name_sanitize: true,
            listener_prefix: None,
            max_keys: 100_000,
            max_samples: 100_000,
        }
    }
}

impl Config {
    /// etsy's `deleteIdleStats`: turns on the four `delete_*` switches.
    pub fn delete_idle_stats(mut self) -> Self {
        self.delete_counters = true;
        self.delete_timers = true;
        self.delete_sets = true;
        self.delete_gauges = true;
        self
    }
}

/// JavaScript's `Number.prototype.toString()`: how etsy prints values.
pub fn js_number_string(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    if v == 0.0 {
        return "0".into();
    }
    let sci = format!("{:e}", v.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let k = digits.len() as i32;
    let n = exp.parse::<i32>().unwrap_or(0) + 1;
    let sign = if v < 0.0 { "-" } else { "" };
    let body = if k <= n && n <= 21 {
        format!("{digits}{}", "0".repeat((n - k) as usize))
    } else if 0 < n && n <= 21 {
        format!("{}.{}", &digits[..n as usize], &digits[n as usize..])
    } else if -6 < n && n <= 0 {
        format!("0.{}{digits}", "0".repeat((-n) as usize))
    } else {
        let e = n - 1;
        let exp = if e >= 0 {
            format!("e+{e}")
        } else {
            format!("e{e}")
        };
        if k == 1 {
            format!("{digits}{exp}")
        } else {
            format!("{}.{}{exp}", &digits[..1], &digits[1..])
        }
    };
    format!("{sign}{body}")
}

/// One flushed line: name, value, timestamp.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    /// Full metric name.
    pub name: String,
    /// The value.
    pub value: f64,
    /// Flush time, epoch seconds.
    pub timestamp: i64,
}

impl Line {
    /// The carbon plaintext line etsy's graphite backend writes.
    pub fn to_plaintext(&self) -> String {
        format!(
            "{} {} {}",
            self.name,
            js_number_string(self.value),
            self.timestamp
        )
    }
}

/// The state between flushes of one listener.
#[derive(Debug)]
pub struct Aggregator {
    config: Config,
    counters: HashMap<String, f64>,
    timers: HashMap<String, Vec<f64>>,
    timer_counters: HashMap<String, f64>,
    gauges: HashMap<String, f64>,
    gauges_ttl: HashMap<String, u32>,
    sets: HashMap<String, HashSet<String>>,
    options: Options,
    // statsd's own counters, kept apart so they are never deleted.
    bad_lines: f64,
    packets: f64,
    metrics: f64,
    old_timestamp: Option<i64>,
    last_flush: i64,
    flush_time_ms: f64,
    flush_length: f64,
    dropped: u64,
}

impl Aggregator {
    /// An empty aggregator; `started` (epoch seconds) is statsd's startup time.
    pub fn new(config: Config, started: i64) -> Self {
        let options = Options {
            sanitize: config.key_name_sanitize,
            ..Options::default()
        };
        Aggregator {
            config,
            counters: HashMap::new(),
            timers: HashMap::new(),
            timer_counters: HashMap::new(),
            gauges: HashMap::new(),
            gauges_ttl: HashMap::new(),
            sets: HashMap::new(),
            options,
            bad_lines: 0.0,
            packets: 0.0,
            metrics: 0.0,
            old_timestamp: None,
            last_flush: started,
            flush_time_ms: 0.0,
            flush_length: 0.0,
            dropped: 0,
        }
    }

    /// The listener's settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Malformed groups seen since the last flush.
    pub fn bad_lines(&self) -> f64 {
        self.bad_lines
    }

    /// Takes one datagram (or one TCP line batch).
    pub fn add_packet(&mut self, data: &[u8]) {
        self.packets += 1.0;
        let packet = parse_packet(data, &self.options);
        self.metrics += packet.lines as f64;
        self.bad_lines += packet.bad as f64;
        for s in packet.samples {
            let key = s.key;
            if !self.has_room(key.as_ref(), &s.kind) {
                self.dropped += 1;
                continue;
            }
            match s.kind {
                Kind::Counter => {
                    let add = s.value * (1.0 / s.rate);
                    match self.counters.get_mut(key.as_ref()) {
                        Some(c) => *c += add,
                        None => {
                            self.counters.insert(key.into_owned(), 0.0 + add);
                        }
                    }
                }
                Kind::Timer => {
                    let count = 1.0 / s.rate;
                    match self.timers.get_mut(key.as_ref()) {
                        Some(t) => {
                            if t.len() < self.config.max_samples {
                                t.push(s.value);
                            } else {
                                self.dropped += 1;
                            }
                            *self.timer_counters.entry(key.into_owned()).or_insert(0.0) += count;
                        }
                        None => {
                            self.timers.insert(key.to_string(), vec![s.value]);
                            self.timer_counters.insert(key.into_owned(), count);
                        }
                    }
                }
                Kind::Gauge { signed } => {
                    if self.config.delete_gauges {
                        self.gauges_ttl
                            .insert(key.to_string(), self.config.gauges_max_ttl.max(1));
                    }
                    match self.gauges.get_mut(key.as_ref()) {
                        // etsy adds only to a truthy (non-zero) gauge.
                        Some(g) if signed && *g != 0.0 && !g.is_nan() => *g += s.value,
                        Some(g) => *g = s.value,
                        None => {
                            self.gauges.insert(key.into_owned(), s.value);
                        }
                    }
                }
                Kind::Set(member) => {
                    if let Some(set) = self.sets.get_mut(key.as_ref()) {
                        if !set.contains(member) {
                            if set.len() < self.config.max_samples {
                                set.insert(member.to_string());
                            } else {
                                self.dropped += 1;
                            }
                        }
                    } else {
                        self.sets
                            .insert(key.into_owned(), HashSet::from([member.to_string()]));
                    }
                }
            }
        }
    }

    /// Whether a sample may be kept: its key is already held, or there is
    /// room for one more key.
    fn has_room(&self, key: &str, kind: &Kind) -> bool {
        let held = match kind {
            Kind::Counter => self.counters.contains_key(key),
            Kind::Timer => self.timers.contains_key(key),
            Kind::Gauge { .. } => self.gauges.contains_key(key),
            Kind::Set(_) => self.sets.contains_key(key),
        };
        held || self.keys() < self.config.max_keys
    }

    fn keys(&self) -> usize {
        self.counters.len() + self.timers.len() + self.gauges.len() + self.sets.len()
    }

    /// Samples dropped for the bounds since the last call (for the caller
    /// to count and log).
    pub fn take_dropped(&mut self) -> u64 {
        std::mem::take(&mut self.dropped)
    }

    /// etsy's `format(namespace, key, ...)`: tags of the key move to the end.
    fn name(&self, namespace: &[&str], key: &str, extra: &[&str]) -> String {
        let (key_name, tags) = match key.split_once(';') {
            Some((k, t)) => (k, format!(";{t}")),
            None => (key, String::new()),
        };
        let mut parts: Vec<&str> = Vec::with_capacity(namespace.len() + 2 + extra.len());
        if let Some(p) = &self.config.listener_prefix {
            parts.push(p);
        }
        parts.extend_from_slice(namespace);
        parts.push(key_name);
        parts.extend_from_slice(extra);
        let mut name = parts.join(".");
        if let Some(suffix) = &self.config.global_suffix {
            name.push('.');
            name.push_str(suffix);
        }
        name.push_str(&tags);
        name
    }

    fn namespace<'a>(&'a self, kind: &'a str) -> Vec<&'a str> {
        let c = &self.config;
        if c.legacy_namespace {
            return match kind {
                "counter" | "global" => vec!["stats"],
                "timer" => vec!["stats", "timers"],
                "gauge" => vec!["stats", "gauges"],
                _ => vec!["stats", "sets"],
            };
        }
        let mut ns: Vec<&str> = Vec::new();
        if !c.global_prefix.is_empty() {
            ns.push(&c.global_prefix);
        }
        let own = match kind {
            "counter" => &c.prefix_counter,
            "timer" => &c.prefix_timer,
            "gauge" => &c.prefix_gauge,
            "set" => &c.prefix_set,
            _ => return ns,
        };
        if !own.is_empty() {
            ns.push(own);
        }
        ns
    }

    /// Computes one flush at `now_ms` (epoch milliseconds): the lines for
    /// the backend, then resets counters, timers and sets as etsy does.
    pub fn flush(&mut self, now_ms: i64) -> Vec<Line> {
        let lines = self.compute_flush(now_ms);
        // A burst of keys leaves big tables behind; give the memory back
        // once they are mostly empty.
        fn shrink<V>(m: &mut HashMap<String, V>) {
            if m.capacity() > 4 * m.len() + 1024 {
                m.shrink_to_fit();
            }
        }
        shrink(&mut self.counters);
        shrink(&mut self.timers);
        shrink(&mut self.timer_counters);
        shrink(&mut self.gauges);
        shrink(&mut self.gauges_ttl);
        shrink(&mut self.sets);
        lines
    }

    fn compute_flush(&mut self, now_ms: i64) -> Vec<Line> {
        let started = std::time::Instant::now();
        let ts = (now_ms as f64 / 1000.0).round() as i64;
        let interval_s = self.config.flush_interval_ms as f64 / 1000.0;
        let stats = self.config.prefix_stats.clone();
        let lag_key = format!("{stats}.timestamp_lag");
        if let Some(old) = self.old_timestamp {
            self.gauges
                .insert(lag_key.clone(), (ts - old) as f64 - interval_s);
        }
        self.old_timestamp = Some(ts);

        let mut out: Vec<Line> = Vec::new();
        let mut add = |name: String, value: f64| {
            out.push(Line {
                name,
                value,
                timestamp: ts,
            })
        };
        let mut num_stats = 0u64;

        // Counters: statsd's own first, as etsy creates them first.
        let own = [
            (format!("{stats}.bad_lines_seen"), self.bad_lines),
            (format!("{stats}.packets_received"), self.packets),
            (format!("{stats}.metrics_received"), self.metrics),
        ];
        let counter_ns = self.namespace("counter");
        let mut counters: Vec<(&String, &f64)> = own.iter().map(|(k, v)| (k, v)).collect();
        counters.extend(self.counters.iter());
        for (key, value) in counters {
            let rate = value / interval_s;
            if self.config.legacy_namespace {
                add(self.name(&counter_ns, key, &[]), rate);
                if self.config.flush_counts {
                    add(self.name(&["stats_counts"], key, &[]), *value);
                }
            } else {
                add(self.name(&counter_ns, key, &["rate"]), rate);
                if self.config.flush_counts {
                    add(self.name(&counter_ns, key, &["count"]), *value);
                }
            }
            num_stats += 1;
        }

        let timer_ns = self.namespace("timer");
        for (key, values) in &self.timers {
            let count = self.timer_counters.get(key).copied().unwrap_or(0.0);
            for (field, value) in self.timer_fields(key, values, count, interval_s) {
                let parts: Vec<&str> = field.split('.').collect();
                add(self.name(&timer_ns, key, &parts), value);
            }
            num_stats += 1;
        }
        let gauge_ns = self.namespace("gauge");
        for (key, value) in &self.gauges {
            add(self.name(&gauge_ns, key, &[]), *value);
            num_stats += 1;
        }
        let set_ns = self.namespace("set");
        for (key, members) in &self.sets {
            add(self.name(&set_ns, key, &["count"]), members.len() as f64);
            num_stats += 1;
        }

        let global = self.namespace("global");
        let calc_ms = started.elapsed().as_secs_f64() * 1000.0;
        let processing_ms = calc_ms.round();
        if self.config.legacy_namespace {
            add(self.name(&[], &stats, &["numStats"]), num_stats as f64);
            add(
                self.name(&["stats"], &stats, &["graphiteStats", "calculationtime"]),
                calc_ms.round(),
            );
            add(
                self.name(&["stats"], &stats, &["processing_time"]),
                processing_ms,
            );
        } else {
            add(self.name(&global, &stats, &["numStats"]), num_stats as f64);
            add(
                self.name(&global, &stats, &["graphiteStats", "calculationtime"]),
                calc_ms.round(),
            );
            add(
                self.name(&global, &stats, &["processing_time"]),
                processing_ms,
            );
        }
        // What etsy's graphite backend adds about its previous send.
        let post_ns: Vec<&str> = if self.config.legacy_namespace {
            vec!["stats"]
        } else {
            global.clone()
        };
        for (field, value) in [
            ("last_exception", 0.0),
            ("last_flush", self.last_flush as f64),
            ("flush_time", self.flush_time_ms),
            ("flush_length", self.flush_length),
        ] {
            add(
                self.name(&post_ns, &stats, &["graphiteStats", field]),
                value,
            );
        }
        self.last_flush = ts;
        self.flush_time_ms = started.elapsed().as_millis() as f64;
        self.flush_length = out
            .iter()
            .map(|l| l.to_plaintext().len() as f64 + 1.0)
            .sum();
        self.reset();
        out
    }

    /// etsy's `process_metrics` for one timer: `(field, value)` pairs,
    /// `histogram.bin_X` as a dotted field.
    fn timer_fields(
        &self,
        key: &str,
        values: &[f64],
        count: f64,
        interval_s: f64,
    ) -> Vec<(String, f64)> {
        let mut out: Vec<(String, f64)> = Vec::new();
        if values.is_empty() {
            out.push(("count".into(), 0.0));
            out.push(("count_ps".into(), 0.0));
            return self.filter_timer(out);
        }
        let mut values = values.to_vec();
        values.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
        let n = values.len();
        let (min, max) = (values[0], values[n - 1]);
        let mut cumulative = Vec::with_capacity(n);
        let mut cumulative_squares = Vec::with_capacity(n);
        cumulative.push(min);
        cumulative_squares.push(min * min);
        for i in 1..n {
            cumulative.push(values[i] + cumulative[i - 1]);
            cumulative_squares.push(values[i] * values[i] + cumulative_squares[i - 1]);
        }
        let (mut sum, mut sum_squares, mut mean, mut boundary) = (min, min * min, min, max);
        // etsy would index past the values (and print NaN); keep within range.
        for &pct in self
            .config
            .percent_threshold
            .iter()
            .filter(|p| p.abs() <= 100.0 && **p != 0.0)
        {
            let mut in_threshold = n;
            if n > 1 {
                // JavaScript's Math.round: halves go up.
                in_threshold = (pct.abs() / 100.0 * n as f64 + 0.5).floor() as usize;
                if in_threshold == 0 {
                    continue;
                }
                if pct > 0.0 {
                    boundary = values[in_threshold - 1];
                    sum = cumulative[in_threshold - 1];
                    sum_squares = cumulative_squares[in_threshold - 1];
                } else {
                    boundary = values[n - in_threshold];
                    let before = n.checked_sub(in_threshold + 1);
                    let base = before.map_or(0.0, |b| cumulative[b]);
                    let base_sq = before.map_or(0.0, |b| cumulative_squares[b]);
                    sum = cumulative[n - 1] - base;
                    sum_squares = cumulative_squares[n - 1] - base_sq;
                }
                mean = sum / in_threshold as f64;
            }
            let clean = js_number_string(pct)
                .replacen('.', "_", 1)
                .replacen('-', "top", 1);
            out.push((format!("count_{clean}"), in_threshold as f64));
            out.push((format!("mean_{clean}"), mean));
            let bound = if pct > 0.0 { "upper_" } else { "lower_" };
            out.push((format!("{bound}{clean}"), boundary));
            out.push((format!("sum_{clean}"), sum));
            out.push((format!("sum_squares_{clean}"), sum_squares));
        }
        let sum = cumulative[n - 1];
        let sum_squares = cumulative_squares[n - 1];
        let mean = sum / n as f64;
        let diffs = values.iter().fold(0.0, |a, v| a + (v - mean) * (v - mean));
        let mid = n / 2;
        let median = if n % 2 == 1 {
            values[mid]
        } else {
            (values[mid - 1] + values[mid]) / 2.0
        };
        out.push(("std".into(), (diffs / n as f64).sqrt()));
        out.push(("upper".into(), max));
        out.push(("lower".into(), min));
        out.push(("count".into(), count));
        out.push(("count_ps".into(), count / interval_s));
        out.push(("sum".into(), sum));
        out.push(("sum_squares".into(), sum_squares));
        out.push(("mean".into(), mean));
        out.push(("median".into(), median));
        if let Some((_, bins)) = self
            .config
            .histogram
            .iter()
            .find(|(m, _)| key.contains(m.as_str()))
        {
            let mut i = 0;
            for &bin in bins {
                let mut freq = 0.0;
                while i < n && (bin.is_infinite() || values[i] < bin) {
                    freq += 1.0;
                    i += 1;
                }
                let label = if bin.is_infinite() {
                    "inf".to_string()
                } else {
                    js_number_string(bin)
                };
                out.push((
                    format!("histogram.bin_{}", label.replacen('.', "_", 1)),
                    freq,
                ));
            }
        }
        self.filter_timer(out)
    }

    fn filter_timer(&self, fields: Vec<(String, f64)>) -> Vec<(String, f64)> {
        let wanted = &self.config.calculated_timer_metrics;
        if wanted.is_empty() {
            return fields;
        }
        let percent = regex_lite_percent;
        fields
            .into_iter()
            .filter(|(f, _)| {
                let top = f.split('.').next().unwrap_or(f);
                wanted.iter().any(|w| *w == percent(top))
            })
            .collect()
    }

    fn reset(&mut self) {
        let c = &self.config;
        self.bad_lines = 0.0;
        self.packets = 0.0;
        self.metrics = 0.0;
        if c.delete_counters {
            self.counters.clear();
        } else {
            self.counters.values_mut().for_each(|v| *v = 0.0);
        }
        if c.delete_timers {
            self.timers.clear();
            self.timer_counters.clear();
        } else {
            self.timers.values_mut().for_each(Vec::clear);
            self.timer_counters.values_mut().for_each(|v| *v = 0.0);
        }
        if c.delete_sets {
            self.sets.clear();
        } else {
            self.sets.values_mut().for_each(HashSet::clear);
        }
        if c.delete_gauges {
            let mut expired = Vec::new();
            for (k, ttl) in self.gauges_ttl.iter_mut() {
                *ttl = ttl.saturating_sub(1);
                if *ttl < 1 {
                    expired.push(k.clone());
                }
            }
            for k in expired {
                self.gauges.remove(&k);
                self.gauges_ttl.remove(&k);
            }
        }
    }
}

/// etsy's `key.replace(/_(top)?\d+$/, "_percent")` for timer field names.
fn regex_lite_percent(field: &str) -> String {
    let trimmed = field.trim_end_matches(|c: char| c.is_ascii_digit());
    if trimmed.len() == field.len() {
        return field.to_string();
    }
    let trimmed = trimmed.strip_suffix("top").unwrap_or(trimmed);
    match trimmed.strip_suffix('_') {
        Some(base) => format!("{base}_percent"),
        None => field.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_print_as_javascript_does() {
        for (v, s) in [
            (0.5, "0.5"),
            (1.0, "1"),
            (-7.0, "-7"),
            (1e21, "1e+21"),
            (1e20, "100000000000000000000"),
            (1.5e-7, "1.5e-7"),
            (0.000001, "0.000001"),
            (34.138888888888886, "34.138888888888886"),
            (f64::INFINITY, "Infinity"),
            (-0.0, "0"),
        ] {
            assert_eq!(js_number_string(v), s);
        }
    }

    #[test]
    fn new_keys_past_the_bound_are_dropped_and_counted() {
        let config = Config {
            max_keys: 3,
            max_samples: 2,
            ..Config::default()
        };
        let mut a = Aggregator::new(config, 0);
        a.add_packet(b"a:1|c\nb:1|c\nc:1|ms\nd:1|c\na:2|c\nc:2|ms\nc:3|ms\ns:x|s");
        // d and s are new keys past 3; the third timing of c is past 2.
        assert_eq!(a.take_dropped(), 3);
        assert_eq!(a.take_dropped(), 0);
        let lines = a.flush(10_000);
        let value = |name: &str| lines.iter().find(|l| l.name == name).map(|l| l.value);
        assert_eq!(value("stats.counters.a.count"), Some(3.0));
        assert_eq!(value("stats.counters.d.count"), None);
        assert_eq!(
            value("stats.timers.c.count"),
            Some(3.0),
            "counted, not kept"
        );
        assert_eq!(value("stats.timers.c.upper"), Some(2.0));
    }
}

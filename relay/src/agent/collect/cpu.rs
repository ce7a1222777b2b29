//! diamond's CPUCollector: jiffies from `/proc/stat` turned into rates
//! (per CPU, per second of the interval: about 100 per CPU in all), totals
//! optionally divided by the number of CPUs, and diamond's Xen fix (idle
//! halved when a guest's cpu0 adds up past 110).

use super::base::{Base, MAX_COUNTER};
use super::settings::Settings;
use super::Host;
use crate::error::Error;

/// Settings beyond the common ones.
pub const KEYS: &[&str] = &["percore", "simple", "normalize", "derivative", "xenfix"];

/// The fields of a `cpu` line, in the kernel's order.
const FIELDS: [&str; 10] = [
    "user",
    "nice",
    "system",
    "idle",
    "iowait",
    "irq",
    "softirq",
    "steal",
    "guest",
    "guest_nice",
];

/// The CPU collector's settings and state.
#[derive(Debug)]
pub struct Cpu {
    percore: bool,
    simple: bool,
    normalize: bool,
    derivative: bool,
    /// diamond's `xenfix`: unset (detect), on (detect again each round) or
    /// off (decided: no fix).
    xenfix: Option<bool>,
}

impl Cpu {
    /// From the merged settings.
    pub fn new(s: &Settings) -> Result<Cpu, Error> {
        Ok(Cpu {
            percore: s.bool("percore", true)?,
            simple: s.bool("simple", false)?,
            normalize: s.bool("normalize", false)?,
            derivative: s.bool("derivative", true)?,
            xenfix: if s.has("xenfix") {
                Some(s.bool("xenfix", false)?)
            } else {
                None
            },
        })
    }

    /// One round.
    pub fn collect(&mut self, host: &Host, base: &mut Base) -> Result<(), Error> {
        if self.simple {
            return self.collect_simple(host, base);
        }
        let text = host.read_proc("stat")?;
        let mut ncpus: i64 = -1;
        let mut readings: Vec<(String, i128)> = Vec::new();
        for line in text.lines().filter(|l| l.starts_with("cpu")) {
            ncpus += 1;
            let mut elements = line.split_whitespace();
            let cpu = match elements.next() {
                Some("cpu") => "total",
                Some(c) if self.percore => c,
                _ => continue,
            };
            for (field, value) in FIELDS.iter().zip(elements) {
                if let Ok(value) = value.parse::<i128>() {
                    readings.push((format!("{cpu}.{field}"), value));
                }
            }
        }
        let mut metrics: Vec<(String, f64)> = Vec::new();
        for (name, value) in readings {
            // Totals are divided by the count of every cpuN line.
            let div = if self.normalize && name.starts_with("total.") && ncpus > 0 {
                ncpus
            } else {
                1
            };
            if self.derivative {
                if let Some(rate) = base.counter(&name, value, MAX_COUNTER, true) {
                    metrics.push((name, rate / div as f64));
                }
            } else {
                // Python 2 divides integers by integers with floor.
                metrics.push((name, value.div_euclid(div as i128) as f64));
            }
        }
        metrics.push(("cpu_count".into(), ncpus as f64));
        self.xen_fix(host, &mut metrics);
        for (name, value) in metrics {
            base.publish(name, value, 2);
        }
        Ok(())
    }

    /// Under Xen, old kernels counted a guest's idle time twice.
    fn xen_fix(&mut self, host: &Host, metrics: &mut [(String, f64)]) {
        if self.xenfix == Some(false) {
            return;
        }
        if !host.proc_path("xen").is_dir() {
            self.xenfix = Some(false);
            return;
        }
        // diamond's substring test, cpu10. included.
        let total: i64 = metrics
            .iter()
            .filter(|(n, _)| n.contains("cpu0."))
            .map(|(_, v)| v.trunc() as i64)
            .sum();
        if total > 110 {
            self.xenfix = Some(true);
            for (n, v) in metrics.iter_mut() {
                if n.contains(".idle") {
                    *v /= 2.0;
                }
            }
        } else if total > 0 {
            self.xenfix = Some(false);
        }
    }

    /// `simple = true`: one busy percentage from two reads a second apart.
    fn collect_simple(&mut self, host: &Host, base: &mut Base) -> Result<(), Error> {
        let times = |host: &Host| -> Result<Vec<i64>, Error> {
            let text = host.read_proc("stat")?;
            let first = text.lines().next().unwrap_or_default();
            // diamond splits the first line at single spaces and takes
            // fields 2..6 (the kernel writes "cpu  user nice system idle").
            Ok(first
                .split(' ')
                .skip(2)
                .take(4)
                .filter_map(|f| f.trim().parse().ok())
                .collect())
        };
        let before = times(host)?;
        std::thread::sleep(std::time::Duration::from_secs(1));
        let after = times(host)?;
        let delta: Vec<i64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
        let sum: i64 = delta.iter().sum();
        if let (Some(idle), true) = (delta.last(), sum != 0) {
            let busy = 100.0 - (*idle as f64 * 100.0 / sum as f64);
            // diamond publishes the '%.4f' string, which its Metric makes
            // whole with Python 2's round(): halves away from zero.
            let four: f64 = format!("{busy:.4}").parse().unwrap_or(busy);
            base.publish("percent", four.round(), 0);
        }
        Ok(())
    }
}

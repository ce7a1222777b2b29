//! diamond's LoadAverageCollector: the load averages from `/proc/loadavg`,
//! also divided by the online CPUs, and the running and total tasks.

use super::base::Base;
use super::settings::Settings;
use super::Host;
use crate::error::Error;

/// Settings beyond the common ones.
pub const KEYS: &[&str] = &["simple"];

/// The load average collector's settings.
#[derive(Debug)]
pub struct LoadAverage {
    simple: bool,
}

impl LoadAverage {
    /// From the merged settings.
    pub fn new(s: &Settings) -> Result<LoadAverage, Error> {
        Ok(LoadAverage {
            simple: s.bool("simple", false)?,
        })
    }

    /// One round.
    pub fn collect(&mut self, host: &Host, base: &mut Base) -> Result<(), Error> {
        let text = host.read_proc("loadavg")?;
        let fields: Vec<&str> = text.split_whitespace().collect();
        let load = |i: usize| -> Result<f64, Error> {
            fields.get(i).and_then(|f| f.parse().ok()).ok_or_else(|| {
                Error::config(format!(
                    "{} does not look like /proc/loadavg",
                    host.proc_path("loadavg").display()
                ))
            })
        };
        let (l1, l5, l15) = (load(0)?, load(1)?, load(2)?);
        let cpus = host.online_cpus() as f64;
        if self.simple {
            base.publish("load", l1, 2);
            base.publish("load_normalized", l1 / cpus, 2);
        } else {
            base.publish("01", l1, 2);
            base.publish("05", l5, 2);
            base.publish("15", l15, 2);
            base.publish("01_normalized", l1 / cpus, 2);
            base.publish("05_normalized", l5 / cpus, 2);
            base.publish("15_normalized", l15 / cpus, 2);
        }
        if let Some((running, total)) = fields.get(3).and_then(|f| f.split_once('/')) {
            if let (Ok(r), Ok(t)) = (running.parse::<i64>(), total.parse::<i64>()) {
                base.publish("processes_running", r as f64, 0);
                base.publish("processes_total", t as f64, 0);
            }
        }
        Ok(())
    }
}

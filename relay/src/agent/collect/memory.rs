//! diamond's MemoryCollector: `/proc/meminfo` in the first `byte_unit`,
//! and `MemUsedPercentage` from MemTotal and MemAvailable.

use super::base::Base;
use super::settings::Settings;
use super::units::{self, Unit};
use super::Host;
use crate::error::Error;

/// Settings beyond the common ones (`force_psutil` and `method` are
/// diamond's and change nothing here).
pub const KEYS: &[&str] = &["detailed", "force_psutil", "method"];

/// The fields published unless `detailed`.
const FIELDS: &[&str] = &[
    "MemTotal",
    "MemFree",
    "MemAvailable",
    "Buffers",
    "Cached",
    "Active",
    "Dirty",
    "Inactive",
    "Shmem",
    "SwapTotal",
    "SwapFree",
    "SwapCached",
    "VmallocTotal",
    "VmallocUsed",
    "VmallocChunk",
    "Committed_AS",
];

/// The memory collector's settings.
#[derive(Debug)]
pub struct Memory {
    detailed: bool,
}

impl Memory {
    /// From the merged settings; diamond collects every field when
    /// `detailed` is set at all.
    pub fn new(s: &Settings) -> Result<Memory, Error> {
        Ok(Memory {
            detailed: s.has("detailed"),
        })
    }

    /// One round.
    pub fn collect(&mut self, host: &Host, base: &mut Base) -> Result<(), Error> {
        let text = host.read_proc("meminfo")?;
        let unit = base.byte_units[0].clone();
        let (mut total, mut available) = (None, None);
        for line in text.lines() {
            // Only "Name: value unit" lines (HugePages_Total has no unit).
            let parts: Vec<&str> = line.split_whitespace().collect();
            let [name, value, from] = parts[..] else {
                continue;
            };
            let name = name.trim_end_matches(':');
            let (Ok(value), Some(from)) = (value.parse::<i64>(), Unit::parse(from)) else {
                continue;
            };
            if !self.detailed && !FIELDS.contains(&name) {
                continue;
            }
            match name {
                "MemTotal" => total = Some(value),
                "MemAvailable" => available = Some(value),
                _ => {}
            }
            base.publish(name, units::convert(value as f64, &from, &unit), 0);
        }
        if let (Some(total), Some(available)) = (total, available) {
            if total != 0 {
                let used = (total - available) as f64;
                // diamond rounds to 2 places (a float), then prints it
                // with no decimals.
                let pct = 100.0 * used / total as f64;
                let two: f64 = format!("{pct:.2}").parse().unwrap_or(pct);
                base.publish("MemUsedPercentage", two, 0);
            }
        }
        Ok(())
    }
}

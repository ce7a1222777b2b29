//! diamond's DiskUsageCollector (iostat): `/proc/diskstats` of the devices
//! matching `devices`, as changes over the round, per-second rates over the
//! time that really passed, and iostat's derived figures (await, service
//! time, utilisation, queue length). A device is published only in rounds
//! with I/O, unless `send_zero`.

use super::base::{Base, MAX_COUNTER};
use super::settings::Settings;
use super::units::{self, Unit};
use super::Host;
use crate::error::Error;

/// Settings beyond the common ones.
pub const KEYS: &[&str] = &[
    "devices",
    "sector_size",
    "send_zero",
    "exclude_devices",
    "persistent_naming",
];

const DEVICES: &str = concat!(
    r"PhysicalDrive[0-9]+$",
    r"|md[0-9]+$",
    r"|sd[a-z]+[0-9]*$",
    r"|x?vd[a-z]+[0-9]*$",
    r"|disk[0-9]+$",
    r"|nvme[0-9]+n[0-9]+(p[0-9]+)?$",
    r"|dm\-[0-9]+$"
);

/// The counters of a `/proc/diskstats` line after major, minor and name.
const FIELDS: [&str; 11] = [
    "reads",
    "reads_merged",
    "reads_sectors",
    "reads_milliseconds",
    "writes",
    "writes_merged",
    "writes_sectors",
    "writes_milliseconds",
    "io_in_progress",
    "io_milliseconds",
    "io_milliseconds_weighted",
];

/// Where the kernel's 32-bit counters roll over.
const MAX_32: f64 = 4294967295.0;

/// The disk usage collector's settings and state.
#[derive(Debug)]
pub struct DiskUsage {
    devices: regex::Regex,
    exclude: Option<regex::Regex>,
    sector_size: f64,
    send_zero: bool,
    last_time: Option<f64>,
}

impl DiskUsage {
    /// From the merged settings (diamond matches both patterns at the
    /// start of the name).
    pub fn new(s: &Settings) -> Result<DiskUsage, Error> {
        let anchored = |p: &str| regex::Regex::new(&format!("^(?:{p})"));
        let devices = s.string("devices")?.unwrap_or_else(|| DEVICES.to_string());
        let devices = anchored(&devices)
            .map_err(|e| Error::config(format!("[collectors.diskusage] devices: {e}")))?;
        let exclude = match s.string("exclude_devices")?.filter(|p| !p.is_empty()) {
            Some(p) => Some(anchored(&p).map_err(|e| {
                Error::config(format!("[collectors.diskusage] exclude_devices: {e}"))
            })?),
            None => None,
        };
        let sector_size = s.number("sector_size", 512.0)?;
        if sector_size.is_nan() || sector_size <= 0.0 {
            return Err(Error::config(
                "[collectors.diskusage] sector_size: use a positive number of bytes",
            ));
        }
        if s.bool("persistent_naming", false)? {
            tracing::warn!("[collectors.diskusage] persistent_naming needs udev's Python bindings in diamond and is not supported here: devices keep their kernel names");
        }
        Ok(DiskUsage {
            devices,
            exclude,
            sector_size,
            send_zero: s.bool("send_zero", false)?,
            last_time: None,
        })
    }

    /// One round at wall-clock time `now` (seconds).
    pub fn collect(&mut self, host: &Host, base: &mut Base, now: f64) -> Result<(), Error> {
        let mut time_delta = match self.last_time {
            Some(last) => now - last,
            None => base.interval,
        };
        if time_delta == 0.0 {
            time_delta = base.interval;
        }
        self.last_time = Some(now);
        let text = host.read_proc("diskstats")?;
        let kb = Unit::kilobyte();
        let byte = Unit::byte();
        for line in text.lines() {
            let columns: Vec<&str> = line.split_whitespace().collect();
            // Partitions of kernels before 2.6.25 have 4 fields only.
            if columns.len() < 14 {
                continue;
            }
            let device = columns[2];
            if device.starts_with("ram") || device.starts_with("loop") {
                continue;
            }
            let Some(values) = columns[3..14]
                .iter()
                .map(|c| c.parse::<f64>().ok())
                .collect::<Option<Vec<f64>>>()
            else {
                continue;
            };
            if !self.devices.is_match(device)
                || self.exclude.as_ref().is_some_and(|x| x.is_match(device))
            {
                continue;
            }
            let mut m: Vec<(String, f64)> = Vec::new();
            let mut complete = true;
            for (field, value) in FIELDS.iter().zip(values) {
                if *field == "io_in_progress" {
                    m.push((field.to_string(), value));
                    continue;
                }
                if let Some(stem) = field.strip_suffix("sectors") {
                    for unit in base.byte_units.clone() {
                        let key = format!("{stem}{}", unit.name);
                        let kbytes = value / (1024.0 / self.sector_size);
                        let scaled = units::convert(kbytes, &kb, &unit);
                        let max = units::convert(MAX_COUNTER as f64, &byte, &unit);
                        match base.change(&format!("{device}.{key}"), scaled, max) {
                            Some(d) => m.push((key, d)),
                            None => complete = false,
                        }
                    }
                } else {
                    match base.change(&format!("{device}.{field}"), value, MAX_32) {
                        Some(d) => m.push((field.to_string(), d)),
                        None => complete = false,
                    }
                }
            }
            if !complete {
                // The first round only remembers the counters.
                continue;
            }
            let get = |m: &[(String, f64)], k: &str| {
                m.iter().find(|(n, _)| n == k).map_or(0.0, |(_, v)| *v)
            };
            let (reads, writes) = (get(&m, "reads"), get(&m, "writes"));
            m.push((
                "read_requests_merged_per_second".into(),
                get(&m, "reads_merged") / time_delta,
            ));
            m.push((
                "write_requests_merged_per_second".into(),
                get(&m, "writes_merged") / time_delta,
            ));
            m.push(("reads_per_second".into(), reads / time_delta));
            m.push(("writes_per_second".into(), writes / time_delta));
            for unit in &base.byte_units {
                let u = &unit.name;
                m.push((
                    format!("read_{u}_per_second"),
                    get(&m, &format!("reads_{u}")) / time_delta,
                ));
                m.push((
                    format!("write_{u}_per_second"),
                    get(&m, &format!("writes_{u}")) / time_delta,
                ));
            }
            let io = reads + writes;
            m.push(("io".into(), io));
            m.push((
                "average_queue_length".into(),
                get(&m, "io_milliseconds_weighted") / time_delta / 1000.0,
            ));
            m.push((
                "util_percentage".into(),
                get(&m, "io_milliseconds") / time_delta / 10.0,
            ));
            let per = |x: f64, n: f64| if n > 0.0 { x / n } else { 0.0 };
            m.push((
                "read_await".into(),
                per(get(&m, "reads_milliseconds"), reads),
            ));
            m.push((
                "write_await".into(),
                per(get(&m, "writes_milliseconds"), writes),
            ));
            for unit in &base.byte_units {
                let u = &unit.name;
                let size = per(
                    get(&m, &format!("reads_{u}")) + get(&m, &format!("writes_{u}")),
                    io,
                );
                m.push((format!("average_request_size_{u}"), size));
            }
            m.push(("iops".into(), io / time_delta));
            let service_time = per(get(&m, "io_milliseconds"), io);
            m.push(("service_time".into(), service_time));
            m.push((
                "await".into(),
                per(
                    get(&m, "reads_milliseconds") + get(&m, "writes_milliseconds"),
                    io,
                ),
            ));
            m.push((
                "concurrent_io".into(),
                (reads / time_delta + writes / time_delta) * (service_time / 1000.0),
            ));
            if io > 0.0 || self.send_zero {
                for (key, value) in m {
                    base.publish(format!("{device}.{key}").replace('/', "_"), value, 3);
                }
            }
        }
        Ok(())
    }
}

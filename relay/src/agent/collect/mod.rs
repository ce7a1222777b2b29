//! Host collectors of `graunt agent`: diamond 4.0's system collectors
//! (cpu, memory, loadavg, network, diskspace, diskusage, vmstat, tcp,
//! sockstat), reading Linux's `/proc` and `/sys` directly, each on its own
//! interval, with diamond's metric paths, units and computations.
//!
//! ```text
//! /proc, /sys, statvfs ─▶ Collector::round ─▶ Line ─▶ agent Buffer ─▶ forwarder
//! ```
//!
//! Where this differs from diamond, on purpose: a rate is first published
//! in the round after its counter is first read (diamond publishes 0 then,
//! a false dip on every restart), and iostat with several `byte_unit`s
//! computes each unit on its own (diamond's loop divides the sector counts
//! once per unit and zeroes the other counters). A collector with its own
//! table runs unless the table says `enabled = false` (diamond would keep
//! a default `enabled = false`). Patterns are Rust regular expressions:
//! look-around and back-references, which Python's `re` has, are refused
//! with a message.

mod base;
mod cpu;
mod diskspace;
mod diskusage;
mod hostname;
mod loadavg;
mod memory;
mod network;
pub mod run;
mod settings;
mod sockstat;
mod tcp;
pub mod units;
mod vmstat;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use self::base::Base;
pub use self::base::Sample;
use self::settings::Settings;
use crate::error::Error;
use crate::statsd::Line;

/// Every collector by its name in `[collectors.<name>]`, with diamond's
/// class name (accepted too), whether diamond's shipped config enables it,
/// and its own settings.
const KINDS: &[(&str, &str, bool, &[&str])] = &[
    ("cpu", "CPUCollector", true, cpu::KEYS),
    ("memory", "MemoryCollector", true, memory::KEYS),
    ("loadavg", "LoadAverageCollector", true, loadavg::KEYS),
    ("network", "NetworkCollector", false, network::KEYS),
    ("diskspace", "DiskSpaceCollector", true, diskspace::KEYS),
    ("diskusage", "DiskUsageCollector", true, diskusage::KEYS),
    ("vmstat", "VMStatCollector", true, vmstat::KEYS),
    ("tcp", "TCPCollector", false, tcp::KEYS),
    ("sockstat", "SockstatCollector", false, sockstat::KEYS),
];

/// The names of every collector, in order.
pub fn names() -> impl Iterator<Item = &'static str> {
    KINDS.iter().map(|k| k.0)
}

/// What statvfs(3) says of a filesystem, the fields diamond reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct FsStats {
    pub f_frsize: u64,
    pub f_blocks: u64,
    pub f_bfree: u64,
    pub f_bavail: u64,
    pub f_files: u64,
    pub f_ffree: u64,
    pub f_favail: u64,
}

/// How mounted filesystems are asked about: the live system, or recorded
/// answers when replaying a host's files.
pub trait Filesystems: Send + Sync {
    /// statvfs(3) of `path`.
    fn statvfs(&self, path: &Path) -> std::io::Result<FsStats>;
    /// The device `path` lives on (stat's `st_dev`).
    fn device_id(&self, path: &Path) -> std::io::Result<u64>;
}

/// This machine's filesystems.
#[derive(Debug, Clone, Copy, Default)]
pub struct LiveFilesystems;

impl Filesystems for LiveFilesystems {
    fn statvfs(&self, path: &Path) -> std::io::Result<FsStats> {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(path.as_os_str().as_bytes())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        // SAFETY: a zeroed statvfs is a valid out-parameter; the path is a
        // NUL-terminated string that outlives the call.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(FsStats {
            f_frsize: st.f_frsize as u64,
            f_blocks: st.f_blocks as u64,
            f_bfree: st.f_bfree as u64,
            f_bavail: st.f_bavail as u64,
            f_files: st.f_files as u64,
            f_ffree: st.f_ffree as u64,
            f_favail: st.f_favail as u64,
        })
    }

    fn device_id(&self, path: &Path) -> std::io::Result<u64> {
        use std::os::unix::fs::MetadataExt;
        Ok(std::fs::metadata(path)?.dev())
    }
}

/// Where the collectors read the host: `/proc`, `/sys` and the root of the
/// host's filesystem tree (mount points, `/dev/disk/by-label`) — elsewhere
/// when the agent runs in a container with the host's files mounted in.
#[derive(Clone)]
pub struct Host {
    /// The host's `/proc`.
    pub proc_root: PathBuf,
    /// The host's `/sys`.
    pub sys_root: PathBuf,
    /// The host's `/`.
    pub host_root: PathBuf,
    /// statvfs and stat of mount points.
    pub filesystems: Arc<dyn Filesystems>,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("proc_root", &self.proc_root)
            .field("sys_root", &self.sys_root)
            .field("host_root", &self.host_root)
            .finish()
    }
}

impl Default for Host {
    fn default() -> Host {
        Host {
            proc_root: "/proc".into(),
            sys_root: "/sys".into(),
            host_root: "/".into(),
            filesystems: Arc::new(LiveFilesystems),
        }
    }
}

impl Host {
    /// `relative` under the proc root.
    pub fn proc_path(&self, relative: &str) -> PathBuf {
        self.proc_root.join(relative)
    }

    /// The text of `relative` under the proc root.
    pub fn read_proc(&self, relative: &str) -> Result<String, Error> {
        let path = self.proc_path(relative);
        std::fs::read_to_string(&path)
            .map_err(|e| Error::io(format!("cannot read {}", path.display()), e))
    }

    /// A file /proc shows per process (`mounts`, `net/*`): pid 1's when the
    /// proc root is not this process's own `/proc`, so an agent in a
    /// container with the host's /proc mounted sees the host's mounts and
    /// network, not the container's.
    pub fn read_proc_of_host(&self, relative: &str) -> Result<String, Error> {
        if self.proc_root != Path::new("/proc") {
            if let Ok(text) = std::fs::read_to_string(self.proc_root.join("1").join(relative)) {
                return Ok(text);
            }
        }
        self.read_proc(relative)
    }

    /// An absolute host path under the host root.
    pub fn host_path(&self, absolute: &str) -> PathBuf {
        self.host_root.join(absolute.trim_start_matches('/'))
    }

    /// The CPUs online (`/sys/devices/system/cpu/online`, as glibc counts
    /// them for Python's `cpu_count`), else the `cpuN` lines of
    /// `/proc/stat`, else 1.
    pub fn online_cpus(&self) -> usize {
        let online = std::fs::read_to_string(self.sys_root.join("devices/system/cpu/online"))
            .ok()
            .and_then(|t| count_cpu_list(t.trim()));
        online
            .or_else(|| {
                let stat = self.read_proc("stat").ok()?;
                let n = stat
                    .lines()
                    .filter(|l| {
                        l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit)
                    })
                    .count();
                (n > 0).then_some(n)
            })
            .unwrap_or(1)
    }
}

/// Counts a kernel CPU list (`0-3,5,7-8`).
fn count_cpu_list(list: &str) -> Option<usize> {
    let mut n = 0;
    for part in list.split(',').filter(|p| !p.is_empty()) {
        n += match part.split_once('-') {
            Some((a, b)) => {
                b.parse::<usize>()
                    .ok()?
                    .checked_sub(a.parse::<usize>().ok()?)?
                    + 1
            }
            None => {
                part.parse::<usize>().ok()?;
                1
            }
        };
    }
    (n > 0).then_some(n)
}

/// One collector's own state.
#[derive(Debug)]
enum Kind {
    Cpu(cpu::Cpu),
    Memory(memory::Memory),
    LoadAverage(loadavg::LoadAverage),
    Network(network::Network),
    DiskSpace(diskspace::DiskSpace),
    DiskUsage(diskusage::DiskUsage),
    VmStat,
    Tcp(tcp::Tcp),
    Sockstat,
}

/// One enabled collector: its settings, its counters' last readings.
#[derive(Debug)]
pub struct Collector {
    name: &'static str,
    base: Base,
    kind: Kind,
}

impl Collector {
    /// The collector's name (`cpu`).
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Its interval.
    pub fn interval(&self) -> Duration {
        Duration::from_secs_f64(self.base.interval)
    }

    /// One round read from `host` at wall-clock `now` (epoch seconds):
    /// the values published, under the collector's path.
    pub fn samples(&mut self, host: &Host, now: f64) -> Result<Vec<Sample>, Error> {
        let started = Instant::now();
        let b = &mut self.base;
        let result = match &mut self.kind {
            Kind::Cpu(c) => c.collect(host, b),
            Kind::Memory(c) => c.collect(host, b),
            Kind::LoadAverage(c) => c.collect(host, b),
            Kind::Network(c) => c.collect(host, b),
            Kind::DiskSpace(c) => c.collect(host, b),
            Kind::DiskUsage(c) => c.collect(host, b, now),
            Kind::VmStat => vmstat::collect(host, b),
            Kind::Tcp(c) => c.collect(host, b),
            Kind::Sockstat => sockstat::collect(host, b),
        };
        if b.measure_time {
            b.publish("collector_time_ms", started.elapsed().as_millis() as f64, 0);
        }
        let samples = b.take();
        result.map(|()| samples)
    }

    /// One round as the lines sent: full names, values rounded to the
    /// decimals diamond prints, stamped `now`.
    pub fn round(&mut self, host: &Host, now: f64) -> Result<Vec<Line>, Error> {
        let samples = self.samples(host, now)?;
        Ok(samples
            .into_iter()
            .filter(|s| s.value.is_finite())
            .map(|s| Line {
                name: self.base.path(&s.name),
                value: round_to(s.value, s.precision),
                timestamp: now as i64,
            })
            .collect())
    }
}

/// `value` as `%0.<precision>f` prints it.
fn round_to(value: f64, precision: u8) -> f64 {
    format!("{value:.*}", precision as usize)
        .parse()
        .unwrap_or(value)
}

/// The `[collectors]` table: defaults for every collector (diamond's
/// `[[default]]`), and a table per collector. `outer_prefix` (the agent's
/// name prefix) goes before every path, so that a tenant's fence at the
/// relay admits the host's metrics as it admits its statsd flushes.
pub fn build(table: &toml::Table, outer_prefix: Option<&str>) -> Result<Vec<Collector>, Error> {
    let mut defaults = toml::Table::new();
    let mut own: Vec<(&'static str, &toml::Table)> = Vec::new();
    for (key, value) in table {
        // diamond's [[default]] section, as [collectors.default].
        if let ("default", toml::Value::Table(t)) = (key.as_str(), value) {
            defaults.extend(t.clone());
            continue;
        }
        match (KINDS.iter().find(|k| k.0 == key || k.1 == key), value) {
            (Some(kind), toml::Value::Table(t)) => own.push((kind.0, t)),
            (Some(kind), _) => {
                return Err(Error::config(format!(
                    "[collectors] {key}: make it a table, [collectors.{}]",
                    kind.0
                )))
            }
            (None, toml::Value::Table(_)) => {
                return Err(Error::config(format!(
                    "[collectors.{key}]: no such collector; there are {}",
                    names().collect::<Vec<_>>().join(", ")
                )))
            }
            (None, v) => {
                defaults.insert(key.clone(), v.clone());
            }
        }
    }
    if let Some(bad) = defaults
        .keys()
        .find(|k| !settings::COMMON_KEYS.contains(&k.as_str()))
    {
        return Err(Error::config(format!(
            "[collectors] has no setting {bad:?}; it takes {} and a table per collector ({})",
            settings::COMMON_KEYS.join(", "),
            names().collect::<Vec<_>>().join(", ")
        )));
    }
    let mut collectors = Vec::new();
    for &(name, _, enabled_by_default, keys) in KINDS {
        let mine = own.iter().find(|(n, _)| *n == name).map(|(_, t)| *t);
        let s = Settings::merge(name, &defaults, mine, keys)?;
        // An own table turns a collector on unless it says otherwise.
        let enabled = if mine.is_some_and(|t| t.contains_key("enabled")) || mine.is_none() {
            s.bool("enabled", enabled_by_default)?
        } else {
            true
        };
        if !enabled {
            continue;
        }
        let (path, units): (&str, &[&str]) = match name {
            "cpu" => ("cpu", &["byte"]),
            "memory" => ("memory", &["byte"]),
            "loadavg" => ("loadavg", &["byte"]),
            "network" => ("network", &["bit", "byte"]),
            "diskspace" => ("diskspace", &["byte"]),
            "diskusage" => ("iostat", &["byte"]),
            "vmstat" => ("vmstat", &["byte"]),
            "tcp" => ("tcp", &["byte"]),
            _ => ("sockets", &["byte"]),
        };
        let base = Base::new(&s, path, units, outer_prefix)?;
        let kind = match name {
            "cpu" => Kind::Cpu(cpu::Cpu::new(&s)?),
            "memory" => Kind::Memory(memory::Memory::new(&s)?),
            "loadavg" => Kind::LoadAverage(loadavg::LoadAverage::new(&s)?),
            "network" => Kind::Network(network::Network::new(&s)?),
            "diskspace" => Kind::DiskSpace(diskspace::DiskSpace::new(&s)?),
            "diskusage" => Kind::DiskUsage(diskusage::DiskUsage::new(&s)?),
            "vmstat" => Kind::VmStat,
            "tcp" => Kind::Tcp(tcp::Tcp::new(&s)?),
            _ => Kind::Sockstat,
        };
        collectors.push(Collector { name, base, kind });
    }
    Ok(collectors)
}

/// Wall-clock time, epoch seconds.
pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_count() {
        assert_eq!(count_cpu_list("0-3,5,7-8"), Some(7));
        assert_eq!(count_cpu_list("0"), Some(1));
        assert_eq!(count_cpu_list(""), None);
    }

    #[test]
    fn collectors_enable_as_diamond_ships_them() {
        let t: toml::Table =
            toml::from_str("interval = 10\nhostname = \"h\"\n[tcp]\n[memory]\nenabled = false")
                .unwrap();
        let names: Vec<_> = build(&t, None).unwrap().iter().map(|c| c.name()).collect();
        assert_eq!(
            names,
            ["cpu", "loadavg", "diskspace", "diskusage", "vmstat", "tcp"]
        );
        let tcp = build(&t, Some("cust.acme")).unwrap().pop().unwrap();
        assert_eq!(tcp.base.path("x"), "cust.acme.servers.h.tcp.x");
        assert_eq!(tcp.interval(), Duration::from_secs(10));
        let t: toml::Table = toml::from_str("[gpu]\nenabled = true").unwrap();
        assert!(build(&t, None)
            .unwrap_err()
            .to_string()
            .contains("no such collector"));
    }
}

//! diamond's DiskSpaceCollector: for each mounted filesystem of a listed
//! type (`/proc/mounts`), space and inodes from statvfs, named by the
//! filesystem's label or its mount point (`/var/log` → `_var_log`, `/` →
//! `root`), in every `byte_unit`.

use std::collections::HashMap;
use std::path::PathBuf;

use super::base::Base;
use super::settings::Settings;
use super::units::{self, Unit};
use super::Host;
use crate::error::Error;

/// Settings beyond the common ones.
pub const KEYS: &[&str] = &["filesystems", "exclude_filters"];

/// The disk space collector's settings.
#[derive(Debug)]
pub struct DiskSpace {
    filesystems: Vec<String>,
    exclude: regex::Regex,
}

impl DiskSpace {
    /// From the merged settings.
    pub fn new(s: &Settings) -> Result<DiskSpace, Error> {
        let filesystems = s.list(
            "filesystems",
            &[
                "ext2",
                "ext3",
                "ext4",
                "xfs",
                "glusterfs",
                "nfs",
                "nfs4",
                "ntfs",
                "hfs",
                "fat32",
                "fat16",
                "btrfs",
            ],
        )?;
        let filters = s.list("exclude_filters", &["^/export/home"])?;
        // diamond's "exclude nothing" is a pattern only a "!" can match.
        let pattern = if filters.is_empty() {
            "!.*".to_string()
        } else {
            filters.join("|")
        };
        let exclude = regex::Regex::new(&pattern)
            .map_err(|e| Error::config(format!("[collectors.diskspace] exclude_filters: {e}")))?;
        Ok(DiskSpace {
            filesystems,
            exclude,
        })
    }

    /// One round.
    pub fn collect(&mut self, host: &Host, base: &mut Base) -> Result<(), Error> {
        let labels = labels(host);
        let mounts = host.read_proc_of_host("mounts")?;
        let mut seen_devices = Vec::new();
        for line in mounts.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [device, mount_point, fs_type, ..] = fields[..] else {
                continue;
            };
            if !self.filesystems.iter().any(|f| f == fs_type) || self.exclude.is_match(mount_point)
            {
                continue;
            }
            let real_fs = device.contains('/') || device.contains(':') || device == "tmpfs";
            if !real_fs || !mount_point.starts_with('/') {
                continue;
            }
            // As diamond: a mount point /proc/mounts escapes (\040 for a
            // space) does not stat, and is skipped.
            let on_host = host.host_path(mount_point);
            // One filesystem mounted twice (bind mounts) counts once.
            let Ok(dev) = host.filesystems.device_id(&on_host) else {
                continue;
            };
            if seen_devices.contains(&dev) {
                continue;
            }
            seen_devices.push(dev);
            let name = match labels.get(&realpath(host, device)) {
                Some(label) => label.clone(),
                None => {
                    let n = mount_point.replace(['/', '.'], "_").replace('\\', "");
                    match n.as_str() {
                        "_" => "root".to_string(),
                        "_tmp" => "tmp".to_string(),
                        _ => n,
                    }
                }
            };
            let st = match host.filesystems.statvfs(&on_host) {
                Ok(st) => st,
                Err(e) => {
                    tracing::debug!(mount_point, error = %e, "statvfs failed");
                    continue;
                }
            };
            let byte = Unit::byte();
            let block = st.f_frsize as f64;
            for unit in base.byte_units.clone() {
                let u = &unit.name;
                let total = st.f_bfree as f64 + (st.f_blocks as f64 - st.f_bfree as f64);
                let pct = if total == 0.0 {
                    0.0
                } else {
                    st.f_bfree as f64 / total * 100.0
                };
                base.publish(format!("{name}.{u}_percentfree"), pct, 2);
                let used = block * (st.f_blocks as f64 - st.f_bfree as f64);
                base.publish(
                    format!("{name}.{u}_used"),
                    units::convert(used, &byte, &unit),
                    2,
                );
                let free = block * st.f_bfree as f64;
                base.publish(
                    format!("{name}.{u}_free"),
                    units::convert(free, &byte, &unit),
                    2,
                );
                let avail = block * st.f_bavail as f64;
                base.publish(
                    format!("{name}.{u}_avail"),
                    units::convert(avail, &byte, &unit),
                    2,
                );
            }
            if st.f_files > 0 {
                base.publish(
                    format!("{name}.inodes_percentfree"),
                    st.f_ffree as f64 / st.f_files as f64 * 100.0,
                    0,
                );
            }
            base.publish(
                format!("{name}.inodes_used"),
                st.f_files as f64 - st.f_ffree as f64,
                0,
            );
            base.publish(format!("{name}.inodes_free"), st.f_ffree as f64, 0);
            base.publish(format!("{name}.inodes_avail"), st.f_favail as f64, 0);
        }
        Ok(())
    }
}

/// Device node → label, from `/dev/disk/by-label` (under the host root).
fn labels(host: &Host) -> HashMap<PathBuf, String> {
    let dir = host.host_path("/dev/disk/by-label");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return HashMap::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            // diamond resolves a label with an escaped "/" (\x2f) after
            // decoding it, a path that does not exist: such labels never
            // name a device there, nor here.
            let label = e.file_name().to_string_lossy().into_owned();
            if label.contains("\\x2f") {
                return None;
            }
            let device = std::fs::canonicalize(e.path()).ok()?;
            Some((device, label))
        })
        .collect()
}

/// A device path from `/proc/mounts` resolved as the host sees it.
fn realpath(host: &Host, device: &str) -> PathBuf {
    std::fs::canonicalize(host.host_path(device)).unwrap_or_else(|_| host.host_path(device))
}

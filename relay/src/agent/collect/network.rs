//! diamond's NetworkCollector: `/proc/net/dev` counters of the interfaces
//! whose names start with one of `interfaces`, as rates per second; bytes
//! published in every `byte_unit` (`rx_bit`, `tx_byte`, …).

use super::base::{Base, MAX_COUNTER};
use super::settings::Settings;
use super::units::{self, Unit};
use super::Host;
use crate::error::Error;

/// Settings beyond the common ones.
pub const KEYS: &[&str] = &["interfaces", "greedy"];

/// The counters of a `/proc/net/dev` line, in the kernel's order.
const FIELDS: [&str; 16] = [
    "rx_bytes",
    "rx_packets",
    "rx_errors",
    "rx_drop",
    "rx_fifo",
    "rx_frame",
    "rx_compressed",
    "rx_multicast",
    "tx_bytes",
    "tx_packets",
    "tx_errors",
    "tx_drop",
    "tx_fifo",
    "tx_colls",
    "tx_carrier",
    "tx_compressed",
];

/// The network collector's settings.
#[derive(Debug)]
pub struct Network {
    line: regex::Regex,
}

impl Network {
    /// From the merged settings: the interface prefixes (regular
    /// expressions, as in diamond) become one pattern.
    pub fn new(s: &Settings) -> Result<Network, Error> {
        let interfaces = s.list(
            "interfaces",
            &["eth", "bond", "em", "p1p", "eno", "enp", "ens", "enx"],
        )?;
        let greed = if s.bool("greedy", true)? { r"\S*" } else { "" };
        // ASCII classes: Unicode \d, \w and \s would make this pattern's
        // automaton (and the agent's memory) many times larger.
        let counters = r"(?-u:(\d+)\s*(\w+)\s*(\d+)\s*(\d+)\s*(\d+)\s*(\d+)\s*(\d+)\s*(\d+)\s*(\d+)\s*(\w+)\s*(\d+)\s*(\d+)\s*(\d+)\s*(\d+)\s*(\d+)\s*(\d+))";
        let pattern = format!(
            r"^(?-u:\s)*((?:{}){greed}):(?-u:\s)*{counters}",
            interfaces.join("|")
        );
        let line = regex::Regex::new(&pattern)
            .map_err(|e| Error::config(format!("[collectors.network] interfaces: {e}")))?;
        Ok(Network { line })
    }

    /// One round.
    pub fn collect(&mut self, host: &Host, base: &mut Base) -> Result<(), Error> {
        let text = host.read_proc_of_host("net/dev")?;
        let byte = Unit::byte();
        // A device listed twice keeps its last line, at its first place.
        let mut devices: Vec<(String, Vec<i128>)> = Vec::new();
        for line in text.lines() {
            let Some(caps) = self.line.captures(line) else {
                continue;
            };
            let device = caps[1].to_string();
            let Some(values) = (2..18)
                .map(|i| caps[i].parse::<i128>().ok())
                .collect::<Option<Vec<_>>>()
            else {
                continue;
            };
            match devices.iter_mut().find(|(d, _)| *d == device) {
                Some(slot) => slot.1 = values,
                None => devices.push((device, values)),
            }
        }
        for (device, values) in devices {
            for (field, value) in FIELDS.iter().zip(values) {
                let name = format!("{device}.{field}");
                let Some(rate) = base.counter(&name, value, MAX_COUNTER, true) else {
                    continue;
                };
                if field.ends_with("_bytes") {
                    for unit in base.byte_units.clone() {
                        let converted = units::convert(rate, &byte, &unit);
                        base.publish(name.replace("bytes", &unit.name), converted, 2);
                    }
                } else {
                    base.publish(name, rate, 0);
                }
            }
        }
        Ok(())
    }
}

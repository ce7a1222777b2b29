//! diamond's TCPCollector: the `Tcp` and `TcpExt` counters of
//! `/proc/net/snmp` and `/proc/net/netstat`, as rates per second, except
//! the gauges (`CurrEstab`, `MaxConn`), published as read.

use super::base::Base;
use super::settings::Settings;
use super::Host;
use crate::error::Error;

/// Settings beyond the common ones.
pub const KEYS: &[&str] = &["allowed_names", "gauges"];

const ALLOWED: &[&str] = &[
    "ListenOverflows",
    "ListenDrops",
    "TCPLoss",
    "TCPTimeouts",
    "TCPFastRetrans",
    "TCPLostRetransmit",
    "TCPForwardRetrans",
    "TCPSlowStartRetrans",
    "CurrEstab",
    "TCPAbortOnMemory",
    "TCPBacklogDrop",
    "AttemptFails",
    "EstabResets",
    "InErrs",
    "ActiveOpens",
    "PassiveOpens",
];

/// The TCP collector's settings.
#[derive(Debug)]
pub struct Tcp {
    /// Empty: every counter.
    allowed: Vec<String>,
    gauges: Vec<String>,
}

impl Tcp {
    /// From the merged settings.
    pub fn new(s: &Settings) -> Result<Tcp, Error> {
        Ok(Tcp {
            allowed: s.list("allowed_names", ALLOWED)?,
            gauges: s.list("gauges", &["CurrEstab", "MaxConn"])?,
        })
    }

    /// One round.
    pub fn collect(&mut self, host: &Host, base: &mut Base) -> Result<(), Error> {
        let mut metrics: Vec<(String, String)> = Vec::new();
        let mut failure = None;
        for file in ["net/netstat", "net/snmp"] {
            let text = match host.read_proc_of_host(file) {
                Ok(t) => t,
                Err(e) => {
                    failure = Some(e);
                    continue;
                }
            };
            // The first line starting "Tcp" is the header, the next its values.
            let mut lines = text.lines().skip_while(|l| !l.starts_with("Tcp"));
            let (Some(header), Some(data)) = (lines.next(), lines.next()) else {
                continue;
            };
            for (name, value) in header
                .split_whitespace()
                .zip(data.split_whitespace())
                .skip(1)
            {
                match metrics.iter_mut().find(|(n, _)| n == name) {
                    Some(slot) => slot.1 = value.to_string(),
                    None => metrics.push((name.to_string(), value.to_string())),
                }
            }
        }
        if metrics.is_empty() {
            if let Some(e) = failure {
                return Err(e);
            }
        }
        for (name, value) in metrics {
            if !self.allowed.is_empty() && !self.allowed.contains(&name) {
                continue;
            }
            let Ok(value) = value.parse::<i128>() else {
                continue;
            };
            if self.gauges.contains(&name) {
                base.publish(name, value as f64, 0);
            } else if let Some(rate) = base.counter(&name, value, 0, true) {
                // diamond's publish_counter: no rollover bound.
                base.publish(name, rate, 0);
            }
        }
        Ok(())
    }
}

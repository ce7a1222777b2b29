//! diamond's SockstatCollector: sockets in use from `/proc/net/sockstat`
//! and `sockstat6`, IPv4 and IPv6 added together.

use std::sync::LazyLock;

use super::base::Base;
use super::Host;
use crate::error::Error;

/// Settings beyond the common ones.
pub const KEYS: &[&str] = &[];

/// The published keys, in order.
const KEYS_OUT: &[&str] = &[
    "used",
    "tcp_inuse",
    "tcp_orphan",
    "tcp_tw",
    "tcp_alloc",
    "tcp_mem",
    "udp_inuse",
    "udp_mem",
];

static LINE: LazyLock<regex::Regex> = LazyLock::new(|| {
    regex::Regex::new(concat!(
        r"^(?:sockets: used (?P<used>[0-9]+)?",
        r"|(?:TCP|TCP6): inuse (?P<tcp_inuse>[0-9]+)",
        r"(?: orphan (?P<tcp_orphan>[0-9]+) tw (?P<tcp_tw>[0-9]+) alloc (?P<tcp_alloc>[0-9]+) mem (?P<tcp_mem>[0-9]+))?",
        r"|(?:UDP|UDP6): inuse (?P<udp_inuse>[0-9]+)(?: mem (?P<udp_mem>[0-9]+))?)"
    ))
    .expect("sockstat pattern compiles")
});

/// One round.
pub fn collect(host: &Host, base: &mut Base) -> Result<(), Error> {
    let mut sums: [Option<i64>; 8] = [None; 8];
    let mut read_any = None;
    for file in ["net/sockstat", "net/sockstat6"] {
        let text = match host.read_proc_of_host(file) {
            Ok(t) => t,
            Err(e) => {
                read_any.get_or_insert(Err(e));
                continue;
            }
        };
        read_any = Some(Ok(()));
        for line in text.lines() {
            let Some(caps) = LINE.captures(line) else {
                continue;
            };
            for (i, key) in KEYS_OUT.iter().enumerate() {
                if let Some(v) = caps.name(key).and_then(|m| m.as_str().parse::<i64>().ok()) {
                    *sums[i].get_or_insert(0) += v;
                }
            }
        }
    }
    for (key, sum) in KEYS_OUT.iter().zip(sums) {
        if let Some(sum) = sum {
            base.publish(*key, sum as f64, 0);
        }
    }
    read_any.unwrap_or(Ok(()))
}

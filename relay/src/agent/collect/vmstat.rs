//! diamond's VMStatCollector: paging and swapping counters from
//! `/proc/vmstat` as rates per second.

use super::base::{Base, MAX_COUNTER};
use super::Host;
use crate::error::Error;

/// Settings beyond the common ones.
pub const KEYS: &[&str] = &[];

const FIELDS: &[&str] = &[
    "pgfault",
    "pgmajfault",
    "pgpgin",
    "pgpgout",
    "pswpin",
    "pswpout",
];

/// One round.
pub fn collect(host: &Host, base: &mut Base) -> Result<(), Error> {
    let text = host.read_proc("vmstat")?;
    for line in text.lines() {
        // diamond's pattern: the name, one whitespace, digits.
        let Some((name, rest)) = line.split_once(|c: char| c.is_whitespace()) else {
            continue;
        };
        if !FIELDS.contains(&name) {
            continue;
        }
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let Ok(value) = digits.parse::<i128>() else {
            continue;
        };
        if let Some(rate) = base.counter(name, value, MAX_COUNTER, true) {
            base.publish(name, rate, 2);
        }
    }
    Ok(())
}

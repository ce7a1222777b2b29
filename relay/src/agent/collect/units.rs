//! diamond's byte units (`byte_unit = ["bit", "megabyte"]`): names as
//! diamond's convertor spells them, powers of 1024, a byte of 8 bits.

/// A byte or bit unit by the name the operator wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct Unit {
    /// As written in the config; it becomes part of metric names
    /// (`root.gigabyte_free`, `eth0.rx_bit`).
    pub name: String,
    bytes: bool,
    power: i32,
}

impl Unit {
    /// The unit named `name`, if diamond knows it.
    pub fn parse(name: &str) -> Option<Unit> {
        const BITS: [&[&str]; 9] = [
            &["bit", "b"],
            &["kilobit", "kbit", "Kibit"],
            &["megabit", "Mbit", "Mibit"],
            &["gigabit", "Gbit", "Gibit"],
            &["terabit", "Tbit", "Tibit"],
            &["petabit", "Pbit", "Pibit"],
            &["exabit", "Ebit", "Eibit"],
            &["zettabit", "Zbit", "Zibit"],
            &["yottabit", "Ybit", "Yibit"],
        ];
        const BYTES: [&[&str]; 9] = [
            &["byte", "B"],
            &["kilobyte", "kB", "KiB"],
            &["megabyte", "MB", "MiB", "Mbyte"],
            &["gigabyte", "GB", "GiB"],
            &["terabyte", "TB", "TiB"],
            &["petabyte", "PB", "PiB"],
            &["exabyte", "EB", "EiB"],
            &["zettabyte", "ZB", "ZiB"],
            &["yottabyte", "YB", "YiB"],
        ];
        let find = |table: &[&[&str]; 9]| table.iter().position(|names| names.contains(&name));
        let (bytes, power) = match (find(&BITS), find(&BYTES)) {
            (Some(p), _) => (false, p),
            (_, Some(p)) => (true, p),
            _ => return None,
        };
        Some(Unit {
            name: name.to_string(),
            bytes,
            power: power as i32,
        })
    }

    /// A byte.
    pub fn byte() -> Unit {
        Unit::parse("byte").expect("byte is a unit")
    }

    /// A kilobyte, as /proc counts memory (`kB`).
    pub fn kilobyte() -> Unit {
        Unit::parse("kB").expect("kB is a unit")
    }

    /// `value` of this unit in bits (in diamond's order of operations, so
    /// results agree to the last bit).
    fn to_bits(&self, value: f64) -> f64 {
        let scaled = value * 1024f64.powi(self.power);
        if self.bytes {
            scaled * 8.0
        } else {
            scaled
        }
    }

    fn bits_to(&self, bits: f64) -> f64 {
        let base = if self.bytes { bits / 8.0 } else { bits };
        base / 1024f64.powi(self.power)
    }
}

/// `value` in `from` expressed in `to`.
pub fn convert(value: f64, from: &Unit, to: &Unit) -> f64 {
    to.bits_to(from.to_bits(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_as_diamond() {
        let u = |n| Unit::parse(n).unwrap();
        assert_eq!(convert(1.0, &u("kB"), &u("byte")), 1024.0);
        assert_eq!(convert(1024.0, &u("byte"), &u("kilobit")), 8.0);
        assert_eq!(convert(3.0, &u("MiB"), &u("kilobyte")), 3072.0);
        assert_eq!(convert(1.0, &u("byte"), &u("bit")), 8.0);
        assert!(Unit::parse("furlong").is_none());
    }
}

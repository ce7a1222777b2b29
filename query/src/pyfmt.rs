//! Python's number formatting (`repr(float)`, `%g`, `%.Ng`, `%f`), so the
//! `graunt whisper` tools print exactly what the `whisper-*.py` scripts print.

/// Splits Rust's scientific form (`-1.25e-7`) into sign, digits and exponent.
fn sci_parts(s: &str) -> (bool, String, i32) {
    let (mantissa, exp) = s.split_once('e').unwrap_or((s, "0"));
    let negative = mantissa.starts_with('-');
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    (negative, digits, exp.parse().unwrap_or(0))
}

fn non_finite(v: f64) -> Option<String> {
    if v.is_nan() {
        Some("nan".into())
    } else if v.is_infinite() {
        Some(if v > 0.0 { "inf" } else { "-inf" }.into())
    } else {
        None
    }
}

/// Python's exponent suffix: `e+16`, `e-05`.
fn exponent(exp: i32) -> String {
    format!("e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs())
}

/// `repr(x)` for a Python float: the shortest digits that round-trip,
/// positional between 1e-4 and 1e16, always with a `.0` or an exponent.
pub fn float_repr(v: f64) -> String {
    if let Some(s) = non_finite(v) {
        return s;
    }
    let (negative, digits, exp) = sci_parts(&format!("{v:e}"));
    let sign = if negative { "-" } else { "" };
    if (-4..16).contains(&exp) {
        let body = if exp < 0 {
            format!("0.{}{digits}", "0".repeat((-exp - 1) as usize))
        } else {
            let point = exp as usize + 1;
            if digits.len() <= point {
                format!("{digits}{}.0", "0".repeat(point - digits.len()))
            } else {
                format!("{}.{}", &digits[..point], &digits[point..])
            }
        };
        format!("{sign}{body}")
    } else {
        let mantissa = if digits.len() > 1 {
            format!("{}.{}", &digits[..1], &digits[1..])
        } else {
            digits
        };
        format!("{sign}{mantissa}{}", exponent(exp))
    }
}

/// Python's `'%.{precision}g' % v`.
pub fn format_g(v: f64, precision: usize) -> String {
    if let Some(s) = non_finite(v) {
        return s;
    }
    let p = precision.max(1);
    let (_, _, exp) = sci_parts(&format!("{:.*e}", p - 1, v));
    let strip = |s: String| -> String {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    };
    if exp >= -4 && (exp as i64) < p as i64 {
        strip(format!("{:.*}", (p as i64 - 1 - exp as i64) as usize, v))
    } else {
        let s = format!("{:.*e}", p - 1, v);
        let (mantissa, _) = s.split_once('e').unwrap_or((&s, ""));
        format!("{}{}", strip(mantissa.to_string()), exponent(exp))
    }
}

/// Python's `'%f' % v`.
pub fn format_f(v: f64) -> String {
    format_fixed(v, 6)
}

/// Python's `'%.Nf' % v`.
pub fn format_fixed(v: f64, precision: usize) -> String {
    non_finite(v).unwrap_or_else(|| format!("{v:.precision$}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repr_matches_python() {
        for (v, want) in [
            (1.0, "1.0"),
            (0.5, "0.5"),
            (-0.0, "-0.0"),
            (1e16, "1e+16"),
            (1.5e-5, "1.5e-05"),
            (0.0001, "0.0001"),
            (123456789012345.6, "123456789012345.6"),
            (0.30000001192092896, "0.30000001192092896"),
            (1e100, "1e+100"),
            (-2.5e-300, "-2.5e-300"),
            (f64::NAN, "nan"),
            (f64::NEG_INFINITY, "-inf"),
        ] {
            assert_eq!(float_repr(v), want, "{v:e}");
        }
    }

    #[test]
    fn percent_g_matches_python() {
        assert_eq!(format_g(0.5, 6), "0.5");
        assert_eq!(format_g(0.0, 6), "0");
        assert_eq!(format_g(0.30000001192092896, 6), "0.3");
        assert_eq!(format_g(1e-5, 6), "1e-05");
        assert_eq!(format_g(123456789.0, 6), "1.23457e+08");
        assert_eq!(format_g(1.0, 35), "1");
        assert_eq!(format_g(0.1, 35), "0.1000000000000000055511151231257827");
        assert_eq!(
            format_g(1e40, 35),
            "1.0000000000000000303786028427003667e+40"
        );
        assert_eq!(format_g(-0.0, 35), "-0");
        assert_eq!(format_f(1.5), "1.500000");
        assert_eq!(format_f(f64::NAN), "nan");
    }
}

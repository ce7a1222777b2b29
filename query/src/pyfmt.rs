//! Python's number formatting (`repr(float)`, `%g`, `%.Ng`, `%f`), so the
//! `graunt whisper` tools print exactly what the `whisper-*.py` scripts
//! print, and `repr(str)` (carbon hashes it; graphite-web stores it).

/// Python's `repr()` of a str: single quotes unless the text holds one and
/// no double quote; `\\`, `\n`, `\r`, `\t` and the quote escaped; what
/// Python does not print as it is (controls, the Unicode spaces and format
/// characters other than the ASCII space) as `\xhh`, `\uhhhh` or
/// `\Uhhhhhhhh`.
pub fn repr_str(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if !printable(c) => {
                let n = c as u32;
                if n < 0x100 {
                    out.push_str(&format!("\\x{n:02x}"));
                } else if n < 0x10000 {
                    out.push_str(&format!("\\u{n:04x}"));
                } else {
                    out.push_str(&format!("\\U{n:08x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// Python's `str.isprintable()` for one character, for the characters
/// metric names and event texts meet: not a control, not a Unicode space or
/// line/paragraph separator other than ' ', not a common format character.
fn printable(c: char) -> bool {
    if c == ' ' {
        return true;
    }
    !(c.is_control()
        || matches!(
            c,
            '\u{a0}'
                | '\u{ad}'
                | '\u{1680}'
                | '\u{180e}'
                | '\u{2000}'..='\u{200f}'
                | '\u{2028}'..='\u{202f}'
                | '\u{205f}'..='\u{2064}'
                | '\u{2066}'..='\u{206f}'
                | '\u{3000}'
                | '\u{feff}'
                | '\u{fff9}'..='\u{fffb}'
        ))
}

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
    fn strings_repr_as_python() {
        assert_eq!(repr_str("a"), "'a'");
        assert_eq!(repr_str("it's"), "\"it's\"");
        assert_eq!(repr_str("'\""), "'\\'\"'");
        assert_eq!(repr_str("a\u{0}b\tc"), "'a\\x00b\\tc'");
        assert_eq!(repr_str("x\u{85}\u{a0}é\u{2028}"), "'x\\x85\\xa0é\\u2028'");
    }

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

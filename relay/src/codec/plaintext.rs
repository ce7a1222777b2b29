//! Carbon's plaintext protocol: one `name value timestamp` per line, fields
//! separated by any whitespace, `\n` or `\r\n` endings. As carbon: the
//! timestamp may be fractional (truncated) and `-1` means "now"; graunt also
//! takes rrdtool's `N` for now.

use super::{check, parse_float, Point, RecordError, TimeBounds};

/// Parses one line (without its `\n`; a trailing `\r` is ignored).
pub fn parse_line(line: &[u8], bounds: &TimeBounds) -> Result<Point, RecordError> {
    let line = std::str::from_utf8(line).map_err(|_| RecordError::NotUtf8)?;
    let mut fields = line.split_ascii_whitespace();
    let (Some(name), Some(value), Some(timestamp), None) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err(RecordError::Fields);
    };
    let value = parse_float(value).ok_or(RecordError::Value)?;
    let timestamp = if timestamp == "N" {
        bounds.now
    } else {
        let ts = parse_float(timestamp).ok_or(RecordError::Timestamp)?;
        if !ts.is_finite() {
            return Err(RecordError::TimestampRange);
        }
        // Carbon compares int(ts) with -1, so -1.5 is "now" too.
        let ts = ts.trunc() as i64;
        if ts == -1 {
            bounds.now
        } else {
            ts
        }
    };
    check(name, value, timestamp, bounds)
}

/// Splits a buffer into complete lines, calling `f` for each; returns how many
/// bytes were consumed (the rest is an incomplete line awaiting more bytes).
pub fn for_each_line(buf: &[u8], mut f: impl FnMut(&[u8])) -> usize {
    let mut start = 0;
    while let Some(pos) = memchr(b'\n', &buf[start..]) {
        f(&buf[start..start + pos]);
        start += pos + 1;
    }
    start
}

fn memchr(needle: u8, haystack: &[u8]) -> Option<usize> {
    haystack.iter().position(|&b| b == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use graunt_storage::metric::NameError;

    const NOW: i64 = 1_700_000_000;

    fn parse(line: &str) -> Result<Point, RecordError> {
        parse_line(line.as_bytes(), &TimeBounds::new(NOW, 3600))
    }

    fn point(name: &str, value: f64, ts: i64) -> Result<Point, RecordError> {
        Ok(Point {
            name: name.into(),
            value,
            timestamp: ts,
        })
    }

    #[test]
    fn good_lines() {
        assert_eq!(
            parse("a.b.c 1 1699999990"),
            point("a.b.c", 1.0, 1_699_999_990)
        );
        assert_eq!(
            parse("a.b.c 1.5e3 1699999990.9\r"),
            point("a.b.c", 1500.0, 1_699_999_990)
        );
        assert_eq!(parse("  a\t-2\t-1  "), point("a", -2.0, NOW));
        assert_eq!(parse("a 2 N"), point("a", 2.0, NOW));
        assert_eq!(
            parse("a 1_000 1699999990"),
            point("a", 1000.0, 1_699_999_990)
        );
    }

    #[test]
    fn bad_lines() {
        assert_eq!(parse("a 1"), Err(RecordError::Fields));
        assert_eq!(parse("a 1 2 3"), Err(RecordError::Fields));
        assert_eq!(parse(""), Err(RecordError::Fields));
        assert_eq!(parse("a x 1699999990"), Err(RecordError::Value));
        assert_eq!(parse("a nan 1699999990"), Err(RecordError::NonFinite));
        assert_eq!(parse("a inf 1699999990"), Err(RecordError::NonFinite));
        assert_eq!(parse("a 1 yesterday"), Err(RecordError::Timestamp));
        assert_eq!(parse("a 1 0"), Err(RecordError::TimestampRange));
        assert_eq!(parse("a 1 -5"), Err(RecordError::TimestampRange));
        assert_eq!(parse("a 1 99999999999"), Err(RecordError::TimestampRange));
        assert_eq!(parse("a 1 1700003601"), Err(RecordError::TimestampRange));
        assert_eq!(
            parse("a..b 1 1699999990"),
            Err(RecordError::Name(NameError::EmptyNode))
        );
        assert_eq!(
            parse("a/b 1 1699999990"),
            Err(RecordError::Name(NameError::Slash))
        );
        assert_eq!(
            parse_line(b"a\xff 1 1699999990", &TimeBounds::new(NOW, 0)),
            Err(RecordError::NotUtf8)
        );
    }

    #[test]
    fn splits_lines_and_keeps_the_partial_one() {
        let mut lines = Vec::new();
        let used = for_each_line(b"a 1 2\nb 3 4\r\nc 5", |l| lines.push(l.to_vec()));
        assert_eq!(lines, vec![b"a 1 2".to_vec(), b"b 3 4\r".to_vec()]);
        assert_eq!(used, 13);
    }
}

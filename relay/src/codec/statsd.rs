//! The statsd line protocol as etsy statsd 0.9 reads it: `key:value|type`
//! with an optional `|@rate` and `|#tag:v,…`, several `value|type` groups per
//! key (`k:1|c:20|ms`) and several lines per datagram. A pure function over
//! bytes: samples out, malformed groups counted, never an error for a packet.

use std::borrow::Cow;

/// What a sample updates.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind<'a> {
    /// `c` (and any type etsy does not know): adds `value / rate`.
    Counter,
    /// `ms` (and `h`): one timing, counting `1 / rate`.
    Timer,
    /// `g`: sets the gauge, or moves it when the value is signed.
    Gauge {
        /// The value started with `+` or `-`.
        signed: bool,
    },
    /// `s`: a member of a set.
    Set(&'a str),
}

/// One parsed `value|type` group.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample<'a> {
    /// The sanitized metric key (tags appended as `;k=v`).
    pub key: Cow<'a, str>,
    /// What it updates.
    pub kind: Kind<'a>,
    /// The number (0 for sets).
    pub value: f64,
    /// The sample rate (1 unless `|@rate`).
    pub rate: f64,
}

/// How lines are read.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Rewrite keys as etsy does (whitespace to `_`, `/` to `-`, drop the rest).
    pub sanitize: bool,
    /// Longer lines are malformed.
    pub max_line_length: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            sanitize: true,
            max_line_length: 8192,
        }
    }
}

/// What one datagram held.
#[derive(Debug, Default)]
pub struct Packet<'a> {
    /// The good samples, in order.
    pub samples: Vec<Sample<'a>>,
    /// Non-empty lines seen (etsy's `metrics_received`).
    pub lines: usize,
    /// Malformed groups (etsy's `bad_lines_seen`).
    pub bad: usize,
}

/// JavaScript's `Number(text)` as etsy applies it: surrounding whitespace
/// ignored, decimal, exponent, `Infinity`, `0x`/`0o`/`0b` integers; `None`
/// for NaN. (An empty string is 0 in JavaScript; callers check for it.)
pub fn js_number(text: &str) -> Option<f64> {
    let t = text.trim_matches(|c: char| c.is_whitespace() || c == '\u{feff}');
    if t.is_empty() {
        return Some(0.0);
    }
    let radix = |prefix: &str, radix: u32| {
        t.strip_prefix(prefix)
            .or_else(|| t.strip_prefix(&prefix.to_uppercase()))
            .filter(|d| !d.is_empty())
            .map(|d| u128::from_str_radix(d, radix).ok().map(|v| v as f64))
    };
    for (prefix, r) in [("0x", 16), ("0o", 8), ("0b", 2)] {
        if let Some(v) = radix(prefix, r) {
            return v;
        }
    }
    let (sign, body) = match t.as_bytes()[0] {
        b'+' => (1.0, &t[1..]),
        b'-' => (-1.0, &t[1..]),
        _ => (1.0, t),
    };
    if body == "Infinity" {
        return Some(sign * f64::INFINITY);
    }
    // Digits, at most one point, an optional exponent: what Rust's parser
    // also takes, less its "inf"/"nan" spellings and with "5." and ".5".
    let bytes = body.as_bytes();
    let mut i = 0;
    let digits = |i: &mut usize| {
        let s = *i;
        while *i < bytes.len() && bytes[*i].is_ascii_digit() {
            *i += 1;
        }
        *i - s
    };
    let mut n = digits(&mut i);
    if i < bytes.len() && bytes[i] == b'.' {
        i += 1;
        n += digits(&mut i);
    }
    if n == 0 {
        return None;
    }
    if i < bytes.len() && (bytes[i] == b'e' || bytes[i] == b'E') {
        i += 1;
        if i < bytes.len() && (bytes[i] == b'+' || bytes[i] == b'-') {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return None;
        }
    }
    if i != bytes.len() {
        return None;
    }
    let text = body.strip_suffix('.').unwrap_or(body);
    text.parse::<f64>().ok().map(|v| sign * v)
}

/// etsy's `isNumber`: non-empty and not NaN.
fn is_number(text: &str) -> bool {
    !text.is_empty() && js_number(text).is_some()
}

/// etsy's key sanitizing: runs of whitespace to `_`, `/` to `-`, then only
/// `[a-zA-Z_\-0-9.;=]` kept.
pub fn sanitize_key(key: &str) -> Cow<'_, str> {
    let clean = key
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b';' | b'='));
    if clean {
        return Cow::Borrowed(key);
    }
    let mut out = String::with_capacity(key.len());
    let mut in_space = false;
    for c in key.chars() {
        if c.is_whitespace() {
            if !in_space {
                out.push('_');
            }
            in_space = true;
            continue;
        }
        in_space = false;
        match c {
            '/' => out.push('-'),
            c if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ';' | '=') => {
                out.push(c)
            }
            _ => {}
        }
    }
    Cow::Owned(out)
}

/// Parses one datagram.
pub fn parse_packet<'a>(data: &'a [u8], options: &Options) -> Packet<'a> {
    let mut packet = Packet::default();
    for raw in data.split(|&b| b == b'\n') {
        if raw.is_empty() {
            continue;
        }
        packet.lines += 1;
        if raw.len() > options.max_line_length {
            packet.bad += 1;
            continue;
        }
        let Ok(line) = std::str::from_utf8(raw) else {
            packet.bad += 1;
            continue;
        };
        parse_line(line, options, &mut packet);
    }
    packet
}

fn parse_line<'a>(line: &'a str, options: &Options, packet: &mut Packet<'a>) {
    let (body, tags) = match line.split_once("|#") {
        Some((body, tags)) => (body, Some(tags).filter(|t| !t.is_empty())),
        None => (line, None),
    };
    let mut bits = body.split(':');
    let raw_key = bits.next().unwrap_or("");
    let key: Cow<'a, str> = match tags {
        None => Cow::Borrowed(raw_key),
        Some(tags) => {
            let mut k = raw_key.to_string();
            for tag in tags.split(',') {
                k.push(';');
                // JavaScript's replace() changes the first occurrence only.
                k.push_str(&tag.replacen(';', "_", 1).replacen(':', "=", 1));
            }
            Cow::Owned(k)
        }
    };
    let key = if options.sanitize {
        match key {
            Cow::Borrowed(k) => sanitize_key(k),
            Cow::Owned(k) => Cow::Owned(sanitize_key(&k).into_owned()),
        }
    } else {
        key
    };
    let groups: Vec<&'a str> = bits.collect();
    if key.is_empty() {
        // etsy would keep a metric named "": graunt refuses it.
        packet.bad += groups.len().max(1);
        return;
    }
    if groups.is_empty() {
        // A bare key is a `1` with no type: malformed.
        packet.bad += 1;
        return;
    }
    for group in groups {
        match parse_group(group) {
            Some((kind, value, rate)) => packet.samples.push(Sample {
                key: key.clone(),
                kind,
                value,
                rate,
            }),
            None => packet.bad += 1,
        }
    }
}

/// One `value|type[|@rate]` group, as etsy's `is_valid_packet` judges it.
fn parse_group(group: &str) -> Option<(Kind<'_>, f64, f64)> {
    let mut fields = group.split('|');
    let value = fields.next().unwrap_or("");
    let kind = fields.next()?;
    let rate_field = fields.next();
    let rate = match rate_field {
        None => 1.0,
        Some(r) => {
            let number = r.strip_prefix('@').filter(|n| !n.is_empty())?;
            if !is_number(number) || number.starts_with('-') {
                return None;
            }
            // etsy then reads the leading digits and points only.
            let end = number
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(number.len());
            js_number(&number[..end]).filter(|_| end > 0)?
        }
    };
    let kind = match kind.trim() {
        "s" => {
            return Some((
                Kind::Set(if value.is_empty() { "0" } else { value }),
                0.0,
                rate,
            ))
        }
        "g" => {
            if !is_number(value) {
                return None;
            }
            Kind::Gauge {
                signed: value.starts_with(['+', '-']),
            }
        }
        "ms" | "h" => {
            if !is_number(value) || js_number(value)? < 0.0 {
                return None;
            }
            Kind::Timer
        }
        _ => {
            if !is_number(value) {
                return None;
            }
            Kind::Counter
        }
    };
    Some((kind, js_number(value)?, rate))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Packet<'_> {
        parse_packet(text.as_bytes(), &Options::default())
    }

    #[test]
    fn numbers_as_javascript_reads_them() {
        for (t, v) in [
            ("1", Some(1.0)),
            (" 2.5 ", Some(2.5)),
            ("1e3", Some(1000.0)),
            (".5", Some(0.5)),
            ("5.", Some(5.0)),
            ("-3", Some(-3.0)),
            ("+4", Some(4.0)),
            ("0x10", Some(16.0)),
            ("Infinity", Some(f64::INFINITY)),
            ("abc", None),
            ("1e", None),
            ("inf", None),
            ("nan", None),
            ("1_0", None),
        ] {
            assert_eq!(js_number(t), v, "{t}");
        }
    }

    #[test]
    fn lines_groups_and_bad_input() {
        let p = parse("a:1|c\nb:2|ms|@0.5\n\nc:+3|g\nd:x|s\nmixed:1|c:20|ms");
        assert_eq!((p.lines, p.bad, p.samples.len()), (5, 0, 6));
        assert_eq!(p.samples[1].rate, 0.5);
        assert_eq!(p.samples[2].kind, Kind::Gauge { signed: true });
        assert_eq!(p.samples[3].kind, Kind::Set("x"));
        let p = parse("foo\nfoo:bar|c\nfoo:1|zz\nfoo:1|c@x\n:1|c\nfoo:1|c|@x\nfoo:-1|ms\nok:1|c");
        assert_eq!(p.bad, 5, "{:?}", p.samples);
        // `foo:1|zz` is a counter for etsy; `foo:1|c@x` too (type "c@x").
        assert_eq!(p.samples.len(), 3);
        assert_eq!(p.samples[2].key, "ok");
    }

    #[test]
    fn keys_are_sanitized_and_tagged() {
        let p = parse("weird key/with spaces#and!chars:1|c");
        assert_eq!(p.samples[0].key, "weird_key-with_spacesandchars");
        let p = parse("req:1|c|#env:prod,role:web");
        assert_eq!(p.samples[0].key, "req;env=prod;role=web");
        let bad = [0xff, b':', b'1', b'|', b'c'];
        assert_eq!(parse_packet(&bad, &Options::default()).bad, 1);
    }
}

//! Python's `json.dumps` as graphite-web calls it, for answers that must
//! match it byte for byte: `", "`/`": "` separators (or `indent=2` with
//! sorted keys when `pretty`), ASCII-only strings, floats as `repr`, and
//! graphite-web's spellings of NaN (`null`) and infinity (`1e9999`).

use graunt_query::pyfmt::float_repr;
use serde_json::Value;

/// Stands in for +infinity, which a JSON value cannot hold.
pub const INFINITY: &str = "graunt:infinity:1e9999";
/// Stands in for -infinity.
pub const NEG_INFINITY: &str = "graunt:infinity:-1e9999";
/// Stands in for NaN, which graphite-web writes as `null`.
pub const NAN: &str = "graunt:nan";

/// A float as a JSON value, non-finite ones as their stand-ins.
pub fn float(v: f64) -> Value {
    if v.is_nan() {
        Value::from(NAN)
    } else if v == f64::INFINITY {
        Value::from(INFINITY)
    } else if v == f64::NEG_INFINITY {
        Value::from(NEG_INFINITY)
    } else {
        Value::from(v)
    }
}

/// Python's `json.dumps(value, indent=2)` (keys in their own order).
pub fn write_indented(out: &mut String, value: &Value) {
    write(out, value, true, false, 0, true);
}

/// Writes `value` as Python's `json.dumps(value)` (or with `indent=2, sort_keys=True` when
/// `pretty`): `", "`/`": "` separators, ASCII-only strings, floats as
/// `repr`, infinity as graphite-web's `1e9999`.
pub fn write_py_json(out: &mut String, value: &Value, pretty: bool, depth: usize) {
    write(out, value, pretty, pretty, depth, true);
}

/// [`write_py_json`] for answers made of user text (events): every string
/// is written as it is, the non-finite stand-ins included.
pub fn write_py_json_text(out: &mut String, value: &Value) {
    write(out, value, false, false, 0, false);
}

fn write(
    out: &mut String,
    value: &Value,
    indent: bool,
    sort_keys: bool,
    depth: usize,
    sentinels: bool,
) {
    let pretty = indent;
    let newline = |out: &mut String, depth: usize| {
        out.push('\n');
        out.push_str(&"  ".repeat(depth));
    };
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => out.push_str(&i.to_string()),
            (_, Some(u), _) => out.push_str(&u.to_string()),
            (_, _, Some(f)) => out.push_str(&float_repr(f)),
            _ => out.push_str(&n.to_string()),
        },
        Value::String(s) if sentinels && s == INFINITY => out.push_str("1e9999"),
        Value::String(s) if sentinels && s == NEG_INFINITY => out.push_str("-1e9999"),
        Value::String(s) if sentinels && s == NAN => out.push_str("null"),
        Value::String(s) => {
            out.push('"');
            for c in s.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    '\t' => out.push_str("\\t"),
                    '\u{8}' => out.push_str("\\b"),
                    '\u{c}' => out.push_str("\\f"),
                    c if (c as u32) < 0x20 || (c as u32) > 0x7e => {
                        let mut buf = [0u16; 2];
                        for unit in c.encode_utf16(&mut buf) {
                            out.push_str(&format!("\\u{unit:04x}"));
                        }
                    }
                    c => out.push(c),
                }
            }
            out.push('"');
        }
        Value::Array(items) => {
            if items.is_empty() {
                out.push_str("[]");
                return;
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(if pretty { "," } else { ", " });
                }
                if pretty {
                    newline(out, depth + 1);
                }
                write(out, item, pretty, sort_keys, depth + 1, sentinels);
            }
            if pretty {
                newline(out, depth);
            }
            out.push(']');
        }
        Value::Object(map) => {
            if map.is_empty() {
                out.push_str("{}");
                return;
            }
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            if sort_keys {
                entries.sort_by(|a, b| a.0.cmp(b.0));
            }
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push_str(if pretty { "," } else { ", " });
                }
                if pretty {
                    newline(out, depth + 1);
                }
                write(
                    out,
                    &Value::String(k.clone()),
                    pretty,
                    sort_keys,
                    depth + 1,
                    false,
                );
                out.push_str(": ");
                write(out, v, pretty, sort_keys, depth + 1, sentinels);
            }
            if pretty {
                newline(out, depth);
            }
            out.push('}');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_like_python_json_dumps() {
        let v = serde_json::json!({"b": [1, 2.5, "é\n", NAN], "a": {}, "c": []});
        let mut out = String::new();
        write_py_json(&mut out, &v, false, 0);
        assert_eq!(
            out,
            r#"{"b": [1, 2.5, "\u00e9\n", null], "a": {}, "c": []}"#
        );
        let mut out = String::new();
        write_py_json(&mut out, &v, true, 0);
        assert_eq!(
            out,
            "{\n  \"a\": {},\n  \"b\": [\n    1,\n    2.5,\n    \"\\u00e9\\n\",\n    null\n  ],\n  \"c\": []\n}"
        );
    }
}

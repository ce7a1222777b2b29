//! A reader for carbon's INI files (`storage-schemas.conf`,
//! `storage-aggregation.conf`), following Python's `configparser` as carbon
//! uses it: sections in file order, case-insensitive keys, `=` or `:`,
//! `#`/`;` comment lines, indented continuation lines, `[DEFAULT]` inherited,
//! `%%` for a literal `%`.
//!
//! Written here rather than taken from an INI crate because regexes such as
//! `^carbon\.` must come through untouched (rust-ini unescapes backslashes)
//! and carbon's precise rules (strict duplicates, interpolation) are small.

use std::fmt;

/// One `[section]` with its options, keys lowercased, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// The name between the brackets.
    pub name: String,
    /// `(key, value)` pairs, defaults from `[DEFAULT]` included.
    pub options: Vec<(String, String)>,
}

impl Section {
    /// The value of `key` (case-insensitive), if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        let key = key.to_ascii_lowercase();
        self.options
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// A line of the file that configparser would refuse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for ConfError {}

/// Undoes configparser's basic interpolation for the only form carbon files use.
fn interpolate(value: &str, line: usize) -> Result<String, ConfError> {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '%' {
            if chars.peek() == Some(&'%') {
                chars.next();
            } else {
                return Err(ConfError {
                    line,
                    message: format!(
                        "'%' must be written '%%' (configparser interpolation) in {value:?}"
                    ),
                });
            }
        }
        out.push(c);
    }
    Ok(out)
}

/// `(key, value, line)` as read, before defaults and interpolation.
type RawOption = (String, String, usize);

/// Parses an INI text into its sections, in order.
pub fn parse(text: &str) -> Result<Vec<Section>, ConfError> {
    let mut defaults: Vec<RawOption> = Vec::new();
    let mut sections: Vec<(String, Vec<RawOption>)> = Vec::new();
    let mut in_default = false;
    // Indentation of the current option line, for continuation lines.
    let mut option_indent: Option<usize> = None;

    for (n, raw) in text.lines().enumerate() {
        let line_no = n + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
            if trimmed.is_empty() {
                option_indent = None;
            }
            continue;
        }
        let indent = raw.len() - raw.trim_start().len();
        if option_indent.is_some_and(|base| indent > base) {
            let target = if in_default {
                defaults.last_mut()
            } else {
                sections.last_mut().and_then(|s| s.1.last_mut())
            };
            if let Some((_, value, _)) = target {
                value.push('\n');
                value.push_str(trimmed);
                continue;
            }
        }
        if let Some(rest) = trimmed.strip_prefix('[') {
            let Some(end) = rest.rfind(']') else {
                return Err(ConfError {
                    line: line_no,
                    message: format!("unterminated section header {trimmed:?}"),
                });
            };
            let name = rest[..end].to_string();
            option_indent = None;
            if name == "DEFAULT" {
                in_default = true;
                continue;
            }
            if sections.iter().any(|(s, _)| *s == name) {
                return Err(ConfError {
                    line: line_no,
                    message: format!("section [{name}] appears twice"),
                });
            }
            in_default = false;
            sections.push((name, Vec::new()));
            continue;
        }
        let Some(split) = trimmed.find(['=', ':']) else {
            return Err(ConfError {
                line: line_no,
                message: format!("expected `key = value` or a [section], found {trimmed:?}"),
            });
        };
        let key = trimmed[..split].trim().to_ascii_lowercase();
        let value = trimmed[split + 1..].trim().to_string();
        let options = if in_default {
            &mut defaults
        } else {
            match sections.last_mut() {
                Some((_, options)) => options,
                None => {
                    return Err(ConfError {
                        line: line_no,
                        message: format!("{key:?} is set before any [section] header"),
                    })
                }
            }
        };
        if options.iter().any(|(k, _, _)| *k == key) {
            return Err(ConfError {
                line: line_no,
                message: format!("option {key:?} is set twice in one section"),
            });
        }
        options.push((key, value, line_no));
        option_indent = Some(indent);
    }

    sections
        .into_iter()
        .map(|(name, options)| {
            let mut merged = Vec::new();
            for (k, v, line) in options.iter().chain(
                defaults
                    .iter()
                    .filter(|(k, _, _)| !options.iter().any(|o| o.0 == *k)),
            ) {
                merged.push((k.clone(), interpolate(v, *line)?));
            }
            Ok(Section {
                name,
                options: merged,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_carbon_schemas() {
        let text = "# comment\n[carbon]\npattern = ^carbon\\.\nretentions = 60:90d\n\n\
                    [Default_1min]\n  ; indented comment\nPattern: .*\nRETENTIONS = 60s:1d,\n    5m:30d\n";
        let s = parse(text).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].name, "carbon");
        assert_eq!(s[0].get("pattern"), Some("^carbon\\."));
        assert_eq!(s[1].name, "Default_1min");
        assert_eq!(s[1].get("retentions"), Some("60s:1d,\n5m:30d"));
    }

    #[test]
    fn defaults_and_percent() {
        let s = parse("[DEFAULT]\nxfilesfactor = 0\n[a]\npattern = 100%%\n").unwrap();
        assert_eq!(s[0].get("xFilesFactor"), Some("0"));
        assert_eq!(s[0].get("pattern"), Some("100%"));
        assert!(parse("[a]\npattern = 5%\n")
            .unwrap_err()
            .message
            .contains("%%"));
    }

    #[test]
    fn rejects_what_configparser_rejects() {
        assert_eq!(parse("pattern = x\n").unwrap_err().line, 1);
        assert!(parse("[a]\n[a]\n").unwrap_err().message.contains("twice"));
        assert!(parse("[a]\nx=1\nX=2\n")
            .unwrap_err()
            .message
            .contains("twice"));
        assert!(parse("[a]\njunk\n")
            .unwrap_err()
            .message
            .contains("key = value"));
    }
}

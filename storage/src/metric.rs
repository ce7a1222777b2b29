//! Metric names as graunt accepts them, and where their files live.
//!
//! A name is dot-separated nodes; `a.b.c` is stored as `a/b/c.wsp` under the
//! data directory, as carbon does. Names that could escape the directory or
//! make unusable paths are refused: empty nodes (`a..b`, leading or trailing
//! dots), `/`, `\`, NUL and other control characters, nodes `.` or `..`
//! after splitting, and names over 1 KiB. A tagged name (`a.b;tag=value`,
//! [`crate::tags`]) is normalised as carbon does and stored where carbon
//! puts it, under `_tagged/` by the hash of its name.

use std::fmt;
use std::path::{Path, PathBuf};

/// Longest accepted name, in bytes.
pub const MAX_NAME_LEN: usize = 1024;

/// Why a metric name was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameError {
    /// The name is empty.
    Empty,
    /// Longer than [`MAX_NAME_LEN`] bytes.
    TooLong,
    /// Two dots in a row, or a dot at either end.
    EmptyNode,
    /// `/` or `\`, which would nest or escape directories.
    Slash,
    /// NUL or another control character.
    Control,
    /// A tagged name carbon would not parse (or, where a normalised one
    /// is wanted, one that is not).
    Tagged(crate::tags::TagError),
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NameError::Empty => "empty metric name",
            NameError::TooLong => "metric name longer than 1024 bytes",
            NameError::EmptyNode => "metric name has an empty node (`..`, or a dot at either end)",
            NameError::Slash => "metric name contains `/` or `\\`",
            NameError::Control => "metric name contains NUL or a control character",
            NameError::Tagged(e) => return write!(f, "invalid tagged name: {e}"),
        })
    }
}

impl std::error::Error for NameError {}

/// Checks a metric name (see the module docs for the rules); a tagged name
/// must be normalised.
pub fn validate_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong);
    }
    if name.bytes().any(|b| matches!(b, 0..=0x1f | 0x7f)) {
        return Err(NameError::Control);
    }
    if let Some((metric, _)) = name.split_once(';') {
        // Tag values may hold anything carbon allows: the file is named
        // by the name's hash.
        check_nodes(metric)?;
        let normal = crate::tags::TaggedSeries::parse(name)
            .map_err(NameError::Tagged)?
            .path();
        if normal != name {
            return Err(NameError::Tagged(crate::tags::TagError(format!(
                "{name} is not normalised: {normal}"
            ))));
        }
        return Ok(());
    }
    check_nodes(name)
}

fn check_nodes(name: &str) -> Result<(), NameError> {
    let bytes = name.as_bytes();
    if bytes.is_empty() {
        return Err(NameError::Empty);
    }
    if bytes[0] == b'.' || bytes[bytes.len() - 1] == b'.' || name.contains("..") {
        return Err(NameError::EmptyNode);
    }
    if name.contains(['/', '\\']) {
        return Err(NameError::Slash);
    }
    Ok(())
}

/// Checks a name as a receiver takes it and normalises it as carbon-cache
/// does (`TaggedSeries.parse(name).path` for every name): tags sorted
/// (`b;z=1;a=2` → `b;a=2;z=1`), OpenMetrics' `b{a="2"}` → `b;a=2`, `b;name=c`
/// → `b`, and leading `~` dropped (`~b` → `b`).
pub fn normalize_name(name: &str) -> Result<std::borrow::Cow<'_, str>, NameError> {
    let tagged = name.contains(';') || (name.ends_with("\"}") && name.contains('{'));
    if !tagged {
        let plain = name.trim_start_matches('~');
        validate_name(plain)?;
        return Ok(if plain.len() == name.len() {
            std::borrow::Cow::Borrowed(name)
        } else {
            std::borrow::Cow::Owned(plain.to_string())
        });
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong);
    }
    if name.bytes().any(|b| matches!(b, 0..=0x1f | 0x7f)) {
        return Err(NameError::Control);
    }
    let normal = crate::tags::TaggedSeries::parse(name)
        .map_err(NameError::Tagged)?
        .path();
    if normal.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong);
    }
    // Normal by construction: only the metric's nodes are left to check.
    match normal.split_once(';') {
        Some((metric, _)) => check_nodes(metric)?,
        None => check_nodes(&normal)?,
    }
    Ok(if normal == name {
        std::borrow::Cow::Borrowed(name)
    } else {
        std::borrow::Cow::Owned(normal)
    })
}

/// The whisper file of a (valid) metric under `root`: `a.b.c` → `root/a/b/c.wsp`;
/// a tagged one's `_tagged/…` file (the hashed name carbon writes by
/// default, or a readable name carbon wrote with `TAG_HASH_FILENAMES =
/// False` if only that exists).
pub fn metric_path(root: &Path, name: &str) -> PathBuf {
    if crate::tags::is_tagged(name) {
        let hashed = crate::tags::hashed_path(root, name);
        // A readable name holding `/` would nest directories (or, leading,
        // leave the tree): only the hashed file is looked for then.
        if !hashed.exists() && !name.contains('/') {
            let readable = crate::tags::readable_path(root, name);
            if readable.exists() {
                return readable;
            }
        }
        return hashed;
    }
    let mut path = root.to_path_buf();
    let mut nodes = name.split('.').peekable();
    while let Some(node) = nodes.next() {
        if nodes.peek().is_some() {
            path.push(node);
        } else {
            path.push(format!("{node}.wsp"));
        }
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_graphite_names() {
        for name in [
            "a",
            "servers.web-1.cpu.user",
            "a.b_c.D:E.f%20",
            "stats.timers.x.upper_90",
            "ü.ñ",
        ] {
            assert_eq!(validate_name(name), Ok(()), "{name}");
        }
    }

    #[test]
    fn refuses_what_could_escape_or_break() {
        assert_eq!(validate_name(""), Err(NameError::Empty));
        assert_eq!(validate_name("a..b"), Err(NameError::EmptyNode));
        assert_eq!(validate_name(".a"), Err(NameError::EmptyNode));
        assert_eq!(validate_name("a."), Err(NameError::EmptyNode));
        assert_eq!(validate_name(".."), Err(NameError::EmptyNode));
        assert_eq!(validate_name("a/../../etc"), Err(NameError::EmptyNode));
        assert_eq!(validate_name("a/b"), Err(NameError::Slash));
        assert_eq!(validate_name("a\\b"), Err(NameError::Slash));
        assert_eq!(validate_name("a\0b"), Err(NameError::Control));
        assert_eq!(validate_name("a;tag=1"), Ok(()));
        assert!(matches!(
            validate_name("a;z=1;b=2"),
            Err(NameError::Tagged(_))
        ));
        assert_eq!(normalize_name("a;z=1;b=2").unwrap(), "a;b=2;z=1");
        assert_eq!(normalize_name("a;name=b").unwrap(), "a");
        assert_eq!(normalize_name("a{b=\"c/d\"}").unwrap(), "a;b=c/d");
        assert!(matches!(normalize_name("a;b="), Err(NameError::Tagged(_))));
        assert!(matches!(
            normalize_name("a..b;c=d"),
            Err(NameError::EmptyNode)
        ));
        assert_eq!(validate_name(&"x".repeat(1025)), Err(NameError::TooLong));
        assert_eq!(validate_name(&"x".repeat(1024)), Ok(()));
    }

    #[test]
    fn paths_follow_carbon() {
        assert_eq!(
            metric_path(Path::new("/d"), "a.b.c"),
            PathBuf::from("/d/a/b/c.wsp")
        );
        assert_eq!(
            metric_path(Path::new("/d"), "load"),
            PathBuf::from("/d/load.wsp")
        );
    }
}

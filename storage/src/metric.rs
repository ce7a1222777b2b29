//! Metric names as graunt accepts them, and where their files live.
//!
//! A name is dot-separated nodes; `a.b.c` is stored as `a/b/c.wsp` under the
//! data directory, as carbon does. Names that could escape the directory or
//! make unusable paths are refused: empty nodes (`a..b`, leading or trailing
//! dots), `/`, `\`, NUL and other control characters, nodes `.` or `..`
//! after splitting, and names over 1 KiB.

use std::fmt;
use std::path::{Path, PathBuf};

/// Longest accepted name, in bytes.
pub const MAX_NAME_LEN: usize = 1024;

/// Why a metric name was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    /// A `;tag=value` suffix: tagged series are not stored yet.
    Tagged,
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NameError::Empty => "empty metric name",
            NameError::TooLong => "metric name longer than 1024 bytes",
            NameError::EmptyNode => "metric name has an empty node (`..`, or a dot at either end)",
            NameError::Slash => "metric name contains `/` or `\\`",
            NameError::Control => "metric name contains NUL or a control character",
            NameError::Tagged => "tagged metric names (`name;tag=value`) are not supported yet",
        })
    }
}

impl std::error::Error for NameError {}

/// Checks a metric name (see the module docs for the rules).
pub fn validate_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong);
    }
    let bytes = name.as_bytes();
    if bytes[0] == b'.' || bytes[bytes.len() - 1] == b'.' || name.contains("..") {
        return Err(NameError::EmptyNode);
    }
    for &b in bytes {
        match b {
            b'/' | b'\\' => return Err(NameError::Slash),
            0..=0x1f | 0x7f => return Err(NameError::Control),
            b';' => return Err(NameError::Tagged),
            _ => {}
        }
    }
    Ok(())
}

/// The whisper file of a (valid) metric under `root`: `a.b.c` → `root/a/b/c.wsp`.
pub fn metric_path(root: &Path, name: &str) -> PathBuf {
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
        assert_eq!(validate_name("a;tag=1"), Err(NameError::Tagged));
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

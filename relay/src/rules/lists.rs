//! carbon's whitelist and blacklist files (`whitelist.conf`,
//! `blacklist.conf`): one regular expression per line, searched anywhere in
//! the metric name; `#` at the very start of a line makes it a comment.

use super::RuleError;

/// A list of patterns, as carbon's `RegexList`.
#[derive(Debug, Clone, Default)]
pub struct RegexList {
    patterns: Vec<regex::Regex>,
}

impl RegexList {
    /// Parses a list file's text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<RegexList, RuleError> {
        let mut patterns = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let pattern = line.trim();
            // carbon tests the unstripped line for '#'.
            if line.starts_with('#') || pattern.is_empty() {
                continue;
            }
            let re = regex::Regex::new(pattern)
                .map_err(|e| RuleError::new(file, n + 1, format!("{pattern:?}: {e}")))?;
            patterns.push(re);
        }
        Ok(RegexList { patterns })
    }

    /// Whether the list has no patterns (an empty whitelist admits all).
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether a pattern matches somewhere in `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.patterns.iter().any(|p| p.is_match(name))
    }
}

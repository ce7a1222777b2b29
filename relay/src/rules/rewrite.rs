//! carbon's rewrite rules (`rewrite-rules.conf`): `[pre]` and `[post]`
//! sections of `regex = replacement` lines, each rule substituted over the
//! whole name in order, replacements in Python's `re.sub` syntax (`\1`,
//! `\g<name>`).

use super::RuleError;

/// One rule.
#[derive(Debug, Clone)]
pub struct RewriteRule {
    regex: regex::Regex,
    /// The replacement in the regex crate's syntax.
    replacement: String,
}

impl RewriteRule {
    /// `pattern` and a Python replacement.
    pub fn new(pattern: &str, replacement: &str) -> Result<RewriteRule, String> {
        Ok(RewriteRule {
            regex: regex::Regex::new(pattern).map_err(|e| format!("{pattern:?}: {e}"))?,
            replacement: python_replacement(replacement)?,
        })
    }

    /// `name` with every match replaced.
    pub fn apply(&self, name: &str) -> String {
        self.regex
            .replace_all(name, self.replacement.as_str())
            .into_owned()
    }
}

/// The `[pre]` and `[post]` rule sets.
#[derive(Debug, Clone, Default)]
pub struct RewriteRules {
    /// Applied before aggregation.
    pub pre: Vec<RewriteRule>,
    /// Applied after aggregation.
    pub post: Vec<RewriteRule>,
}

impl RewriteRules {
    /// Parses a rules file's text; `file` names it in errors. A section
    /// named again starts over, as in carbon; sections other than `pre`
    /// and `post` are read and never applied.
    pub fn parse(text: &str, file: &str) -> Result<RewriteRules, RuleError> {
        let mut rules = RewriteRules::default();
        let mut section: Option<String> = None;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            if line.starts_with('[') && line.ends_with(']') {
                let name = line[1..line.len() - 1].to_lowercase();
                match name.as_str() {
                    "pre" => rules.pre.clear(),
                    "post" => rules.post.clear(),
                    _ => {}
                }
                section = Some(name);
            } else if let Some((pattern, replacement)) = line.split_once('=') {
                let rule = RewriteRule::new(pattern.trim(), replacement.trim())
                    .map_err(|e| RuleError::new(file, n + 1, e))?;
                match section.as_deref() {
                    Some("pre") => rules.pre.push(rule),
                    Some("post") => rules.post.push(rule),
                    _ => {}
                }
            } else {
                return Err(RuleError::new(
                    file,
                    n + 1,
                    format!("{line:?} is neither a [section] nor pattern = replacement"),
                ));
            }
        }
        Ok(rules)
    }
}

/// A Python `re.sub` replacement in the regex crate's syntax: `\1`,
/// `\g<1>` and `\g<name>` become `${1}` and `${name}`, `\n`-style escapes
/// their characters, `\\` a backslash, `$` a literal `$`; any other
/// backslash stays as written.
pub fn python_replacement(repl: &str) -> Result<String, String> {
    let mut out = String::with_capacity(repl.len());
    let mut chars = repl.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '$' => out.push_str("$$"),
            '\\' => match chars.next() {
                None => return Err(format!("replacement {repl:?} ends in a lone backslash")),
                Some('\\') => out.push('\\'),
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some('r') => out.push('\r'),
                Some('f') => out.push('\x0c'),
                Some('v') => out.push('\x0b'),
                Some('a') => out.push('\x07'),
                Some('b') => out.push('\x08'),
                Some('g') => {
                    if chars.next() != Some('<') {
                        return Err(format!(
                            "replacement {repl:?}: \\g must be followed by <group>"
                        ));
                    }
                    let name: String = chars.by_ref().take_while(|&c| c != '>').collect();
                    if name.is_empty() {
                        return Err(format!("replacement {repl:?}: empty \\g<>"));
                    }
                    out.push_str(&format!("${{{name}}}"));
                }
                Some(d) if d.is_ascii_digit() && d != '0' => {
                    let mut group = d.to_string();
                    if let Some(&d2) = chars.peek() {
                        if d2.is_ascii_digit() {
                            group.push(d2);
                            chars.next();
                        }
                    }
                    out.push_str(&format!("${{{group}}}"));
                }
                Some(other) if other.is_ascii_alphabetic() || other == '0' => {
                    return Err(format!("replacement {repl:?}: bad escape \\{other}"));
                }
                Some(other) => {
                    out.push('\\');
                    out.push(other);
                }
            },
            c => out.push(c),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_replacements_translate() {
        assert_eq!(python_replacement(r"\1.x").unwrap(), "${1}.x");
        assert_eq!(
            python_replacement(r"\g<host>_\g<2>").unwrap(),
            "${host}_${2}"
        );
        assert_eq!(python_replacement(r"a$b\\c\.").unwrap(), r"a$$b\c\.");
        assert!(python_replacement(r"\q").is_err());
        let r = RewriteRule::new(r"^servers\.([^.]+)\.", r"hosts.\1.").unwrap();
        assert_eq!(r.apply("servers.web1.cpu"), "hosts.web1.cpu");
    }
}

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

/// Rules applied in order to a name, each to what the ones before made of
/// it. One pass of a set of every pattern tells which rules can match, so
/// a name pays for the rules that change it, not for every rule.
#[derive(Debug, Clone, Default)]
pub struct RuleChain {
    rules: Vec<RewriteRule>,
    set: Option<regex::RegexSet>,
}

impl RuleChain {
    fn new(rules: Vec<RewriteRule>) -> RuleChain {
        let set = (!rules.is_empty()).then(|| {
            regex::RegexSet::new(rules.iter().map(|r| r.regex.as_str()))
                .expect("each pattern compiled alone")
        });
        RuleChain { rules, set }
    }

    /// Whether there are no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// `name` after every rule, borrowed when none changed it.
    pub fn apply<'a>(&self, name: &'a str) -> std::borrow::Cow<'a, str> {
        use std::borrow::Cow;
        let Some(set) = &self.set else {
            return Cow::Borrowed(name);
        };
        let mut name: Cow<'a, str> = Cow::Borrowed(name);
        let mut matches = set.matches(&name);
        for (i, rule) in self.rules.iter().enumerate() {
            if !matches.matched(i) {
                continue;
            }
            if let Cow::Owned(changed) = rule.regex.replace_all(&name, rule.replacement.as_str()) {
                name = Cow::Owned(changed);
                matches = set.matches(&name);
            }
        }
        name
    }
}

/// The `[pre]` and `[post]` rule sets.
#[derive(Debug, Clone, Default)]
pub struct RewriteRules {
    /// Applied before aggregation.
    pub pre: RuleChain,
    /// Applied after aggregation.
    pub post: RuleChain,
}

impl RewriteRules {
    /// Parses a rules file's text; `file` names it in errors. A section
    /// named again starts over, as in carbon; sections other than `pre`
    /// and `post` are read and never applied.
    pub fn parse(text: &str, file: &str) -> Result<RewriteRules, RuleError> {
        let (mut pre, mut post) = (Vec::new(), Vec::new());
        let mut section: Option<String> = None;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            if line.starts_with('[') && line.ends_with(']') {
                let name = line[1..line.len() - 1].to_lowercase();
                match name.as_str() {
                    "pre" => pre.clear(),
                    "post" => post.clear(),
                    _ => {}
                }
                section = Some(name);
            } else if let Some((pattern, replacement)) = line.split_once('=') {
                let rule = RewriteRule::new(pattern.trim(), replacement.trim())
                    .map_err(|e| RuleError::new(file, n + 1, e))?;
                match section.as_deref() {
                    Some("pre") => pre.push(rule),
                    Some("post") => post.push(rule),
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
        Ok(RewriteRules {
            pre: RuleChain::new(pre),
            post: RuleChain::new(post),
        })
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

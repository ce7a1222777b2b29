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
        let regex = regex::Regex::new(pattern).map_err(|e| format!("{pattern:?}: {e}"))?;
        let (replacement, refs) = python_replacement_refs(replacement)?;
        // Python raises on a group the pattern lacks (carbon then drops
        // every point the rule matches): refused here instead.
        for r in refs {
            let known = match r.parse::<usize>() {
                Ok(n) => n < regex.captures_len(),
                Err(_) => regex.capture_names().flatten().any(|n| n == r),
            };
            if !known {
                return Err(format!(
                    "replacement refers to group {r}, which {pattern:?} does not have"
                ));
            }
        }
        Ok(RewriteRule { regex, replacement })
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
    fn new(rules: Vec<RewriteRule>) -> Result<RuleChain, String> {
        let set = match rules.is_empty() {
            true => None,
            false => Some(
                regex::RegexSet::new(rules.iter().map(|r| r.regex.as_str()))
                    .map_err(|e| format!("the patterns together: {e}"))?,
            ),
        };
        Ok(RuleChain { rules, set })
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
            pre: RuleChain::new(pre).map_err(|e| RuleError::new(file, 0, e))?,
            post: RuleChain::new(post).map_err(|e| RuleError::new(file, 0, e))?,
        })
    }
}

/// A Python `re.sub` replacement in the regex crate's syntax: `\1`,
/// `\g<1>` and `\g<name>` become `${1}` and `${name}`, `\n`-style escapes
/// their characters, `\\` a backslash, `$` a literal `$`; any other
/// backslash stays as written.
pub fn python_replacement(repl: &str) -> Result<String, String> {
    python_replacement_refs(repl).map(|(out, _)| out)
}

/// [`python_replacement`] and the groups it refers to.
fn python_replacement_refs(repl: &str) -> Result<(String, Vec<String>), String> {
    let mut out = String::with_capacity(repl.len());
    let mut refs = Vec::new();
    let mut chars = repl.chars().peekable();
    let octal = |c: Option<&char>| c.is_some_and(|c| ('0'..='7').contains(c));
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
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('>') => break,
                            Some(c) => name.push(c),
                            None => {
                                return Err(format!("replacement {repl:?}: \\g<{name} lacks its >"))
                            }
                        }
                    }
                    if name.is_empty() {
                        return Err(format!("replacement {repl:?}: empty \\g<>"));
                    }
                    out.push_str(&format!("${{{name}}}"));
                    refs.push(name);
                }
                // Python: \0 and three octal digits are a character.
                Some('0') => {
                    let mut code = 0u32;
                    for _ in 0..2 {
                        if octal(chars.peek()) {
                            code = code * 8 + chars.next().and_then(|c| c.to_digit(8)).unwrap_or(0);
                        }
                    }
                    out.push(char::from_u32(code).unwrap_or('\0'));
                }
                Some(d) if d.is_ascii_digit() => {
                    let mut group = d.to_string();
                    if let Some(&d2) = chars.peek() {
                        if d2.is_ascii_digit() {
                            group.push(d2);
                            chars.next();
                            if ('0'..='7').contains(&d)
                                && ('0'..='7').contains(&d2)
                                && octal(chars.peek())
                            {
                                let d3 = chars.next().unwrap_or('0');
                                let code =
                                    u32::from_str_radix(&format!("{d}{d2}{d3}"), 8).unwrap_or(0);
                                out.push(char::from_u32(code).unwrap_or('?'));
                                continue;
                            }
                        }
                    }
                    out.push_str(&format!("${{{group}}}"));
                    refs.push(group);
                }
                Some(other) if other.is_ascii_alphabetic() => {
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
    Ok((out, refs))
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
        assert_eq!(python_replacement(r"\101\0x").unwrap(), "A\0x");
        assert!(python_replacement(r"\g<abc").is_err());
        assert!(RewriteRule::new("(a)", r"\2").is_err());
        assert!(RewriteRule::new("(?P<h>a)", r"\g<x>").is_err());
        assert!(RewriteRule::new("(?P<h>a)", r"\g<h>\g<0>\1").is_ok());
        let r = RewriteRule::new(r"^servers\.([^.]+)\.", r"hosts.\1.").unwrap();
        assert_eq!(r.apply("servers.web1.cpu"), "hosts.web1.cpu");
    }
}

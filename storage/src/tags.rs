//! Graphite 1.1's tagged series: names such as
//! `disk.used;datacenter=dc1;rack=a1` (or OpenMetrics' `disk.used{rack="a1"}`)
//! parsed, validated and normalised as carbon and graphite-web 1.1.10 do,
//! where their files live (`_tagged/…`, hashed), and tag expressions
//! (`tag=value`, `tag!=value`, `tag=~regex`, `tag!=~regex`) with their
//! rules.

use std::fmt;
use std::path::{Path, PathBuf};

use regex::Regex;
use sha2::{Digest, Sha256};

/// Why a tagged name or a tag expression was refused: graphite-web's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagError(pub String);

impl fmt::Display for TagError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TagError {}

/// A parsed tagged name: the metric, and the tags in the order they were
/// given, `name` among them (set to the metric without leading `~`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaggedSeries {
    /// The metric as written (before `;` or `{`).
    pub metric: String,
    /// `(tag, value)` in first-seen order; a repeated tag keeps its first
    /// place and its last value.
    pub tags: Vec<(String, String)>,
}

fn validate(tag: &str, value: &str) -> Result<(), TagError> {
    if tag.is_empty() {
        return Err(TagError("Tag may not be empty".into()));
    }
    if value.is_empty() {
        return Err(TagError(format!(
            "Value for tag \"{tag}\" may not be empty"
        )));
    }
    for c in [';', '!', '^', '='] {
        if tag.contains(c) {
            return Err(TagError(format!(
                "Character \"{c}\" is not allowed in tag \"{tag}\""
            )));
        }
    }
    if value.contains(';') {
        return Err(TagError(format!(
            "Character \";\" is not allowed in value \"{value}\" of tag {tag}"
        )));
    }
    if value.starts_with('~') {
        return Err(TagError(format!(
            "Tag values are not allowed to start with \"~\" in tag \"{tag}\""
        )));
    }
    Ok(())
}

impl TaggedSeries {
    /// Parses `path` in carbon's form (`metric;tag=value;…`) or, when it
    /// ends with `"}` and holds a `{`, OpenMetrics' (`metric{tag="value",…}`).
    pub fn parse(path: &str) -> Result<TaggedSeries, TagError> {
        if path.ends_with("\"}") && path.contains('{') {
            Self::parse_openmetrics(path)
        } else {
            Self::parse_carbon(path)
        }
    }

    fn finish(metric: &str, pairs: Vec<(String, String)>) -> Result<TaggedSeries, TagError> {
        let mut tags: Vec<(String, String)> = Vec::new();
        for (tag, value) in pairs {
            validate(&tag, &value)?;
            match tags.iter_mut().find(|(t, _)| *t == tag) {
                Some(slot) => slot.1 = value,
                None => tags.push((tag, value)),
            }
        }
        let name = metric.trim_start_matches('~');
        if name.is_empty() {
            return Err(TagError(format!(
                "Cannot use metric name {metric} as tag value, results in emptry string"
            )));
        }
        match tags.iter_mut().find(|(t, _)| t == "name") {
            Some(slot) => slot.1 = name.to_string(),
            None => tags.push(("name".into(), name.to_string())),
        }
        Ok(TaggedSeries {
            metric: metric.to_string(),
            tags,
        })
    }

    fn parse_carbon(path: &str) -> Result<TaggedSeries, TagError> {
        let mut segments = path.split(';');
        let metric = segments.next().unwrap_or("");
        if metric.is_empty() {
            return Err(TagError(format!(
                "Cannot parse path {path}, no metric found"
            )));
        }
        let mut pairs = Vec::new();
        for segment in segments {
            match segment.split_once('=') {
                Some((tag, value)) if !tag.is_empty() => {
                    // Checked as read, as graphite does: the first bad
                    // segment is the one named.
                    validate(tag, value)?;
                    pairs.push((tag.to_string(), value.to_string()))
                }
                _ => {
                    return Err(TagError(format!(
                        "Cannot parse path {path}, invalid segment {segment}"
                    )))
                }
            }
        }
        Self::finish(metric, pairs)
    }

    fn parse_openmetrics(path: &str) -> Result<TaggedSeries, TagError> {
        let body = &path[..path.len() - 1];
        let mut parts = body.split('{');
        let (Some(metric), Some(mut rest), None) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(TagError(format!(
                "Cannot parse path {path}, too many values to unpack (expected 2)"
            )));
        };
        if metric.is_empty() {
            return Err(TagError(format!(
                "Cannot parse path {path}, no metric found"
            )));
        }
        let mut pairs = Vec::new();
        let invalid =
            |rest: &str| TagError(format!("Cannot parse path {path}, invalid segment {rest}"));
        while !rest.is_empty() {
            // tag: a run of anything but `=`, then `="`.
            let Some(eq) = rest.find('=') else {
                return Err(invalid(rest));
            };
            let tag = &rest[..eq];
            if tag.is_empty() || !rest[eq + 1..].starts_with('"') {
                return Err(invalid(rest));
            }
            // value: `\"`, `\\` or anything but `"` and `\`, at least once.
            let value_start = eq + 2;
            let bytes = rest.as_bytes();
            let mut i = value_start;
            loop {
                match bytes.get(i) {
                    Some(b'\\') if matches!(bytes.get(i + 1), Some(b'"' | b'\\')) => i += 2,
                    Some(b'\\') | None => return Err(invalid(rest)),
                    Some(b'"') => break,
                    Some(_) => i += 1,
                }
            }
            if i == value_start {
                return Err(invalid(rest));
            }
            let value = rest[value_start..i]
                .replace("\\\"", "\"")
                .replace("\\\\", "\\");
            let after = &rest[i + 1..];
            rest = if let Some(r) = after.strip_prefix(":,") {
                r
            } else if let Some(r) = after.strip_prefix(',') {
                r
            } else if after.is_empty() {
                after
            } else {
                return Err(invalid(rest));
            };
            validate(tag, &value)?;
            pairs.push((tag.to_string(), value));
        }
        Self::finish(metric, pairs)
    }

    /// The value of `tag`, if set.
    pub fn get(&self, tag: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|(t, _)| t == tag)
            .map(|(_, v)| v.as_str())
    }

    /// The normalised name: the `name` tag, then `;tag=value` for every
    /// other tag, sorted as whole strings (as graphite's `format`).
    pub fn path(&self) -> String {
        let mut rest: Vec<String> = self
            .tags
            .iter()
            .filter(|(t, _)| t != "name")
            .map(|(t, v)| format!(";{t}={v}"))
            .collect();
        rest.sort();
        let mut out = self.get("name").unwrap_or("").to_string();
        for r in rest {
            out.push_str(&r);
        }
        out
    }
}

/// Whether a (normalised) name is tagged: it holds a `;`.
pub fn is_tagged(name: &str) -> bool {
    name.contains(';')
}

/// The sha256 of a name, in lower-case hex.
fn hash(name: &str) -> String {
    let digest = Sha256::digest(name.as_bytes());
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// The file of a tagged series as carbon writes it by default
/// (`TAG_HASH_FILENAMES`): `_tagged/<h0..3>/<h3..6>/<h>.wsp`, `h` the
/// sha256 of the normalised name.
pub fn hashed_path(root: &Path, name: &str) -> PathBuf {
    let h = hash(name);
    root.join("_tagged")
        .join(&h[0..3])
        .join(&h[3..6])
        .join(format!("{h}.wsp"))
}

/// The file of a tagged series with readable names (carbon with
/// `TAG_HASH_FILENAMES = False`): `_tagged/<h0..3>/<h3..6>/<name with `.`
/// as `_DOT_`>.wsp`.
pub fn readable_path(root: &Path, name: &str) -> PathBuf {
    let h = hash(name);
    root.join("_tagged")
        .join(&h[0..3])
        .join(&h[3..6])
        .join(format!("{}.wsp", name.replace('.', "_DOT_")))
}

/// The name in a readable `_tagged` file name (`None` for a hashed one).
pub fn decode_file_name(file_stem: &str) -> Option<String> {
    let name = file_stem.replace("_DOT_", ".");
    (is_tagged(&name) && hash(&name) != file_stem).then_some(name)
}

/// A tag expression's operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `tag=value`
    Eq,
    /// `tag!=value`
    Ne,
    /// `tag=~regex`
    Match,
    /// `tag!=~regex`
    NotMatch,
}

/// One tag expression of `seriesByTag` and `/tags/findSeries`.
#[derive(Debug, Clone)]
pub struct TagExpr {
    /// The tag.
    pub tag: String,
    /// The operator.
    pub op: Op,
    /// The value, or the regex as written.
    pub value: String,
    /// For regex operators: the spec anchored at the start (`^(spec)`
    /// unless it starts with `^`), searched (graphite's SQL `REGEXP`).
    search: Option<Regex>,
    /// The same, matched from the start only (Python's `re.match`).
    at_start: Option<Regex>,
}

impl TagExpr {
    /// Parses `tag<op>spec` (`^([^;!=]+)(!?=~?)([^;]*)$`).
    pub fn parse(expr: &str) -> Result<TagExpr, TagError> {
        let invalid = || TagError(format!("Invalid tagspec {expr}"));
        let tag_end = expr.find([';', '!', '=']).ok_or_else(invalid)?;
        let tag = &expr[..tag_end];
        if tag.is_empty() {
            return Err(invalid());
        }
        let rest = &expr[tag_end..];
        let (op, spec) = if let Some(s) = rest.strip_prefix("!=~") {
            (Op::NotMatch, s)
        } else if let Some(s) = rest.strip_prefix("!=") {
            (Op::Ne, s)
        } else if let Some(s) = rest.strip_prefix("=~") {
            (Op::Match, s)
        } else if let Some(s) = rest.strip_prefix('=') {
            (Op::Eq, s)
        } else {
            return Err(invalid());
        };
        if spec.contains(';') {
            return Err(invalid());
        }
        let (search, at_start) = match op {
            Op::Match | Op::NotMatch => {
                let anchored = if spec.starts_with('^') {
                    spec.to_string()
                } else {
                    format!("^({spec})")
                };
                let compile = |p: &str| {
                    Regex::new(p)
                        .map_err(|e| TagError(format!("invalid regular expression in {expr}: {e}")))
                };
                (
                    Some(compile(&anchored)?),
                    Some(compile(&format!("\\A(?:{anchored})"))?),
                )
            }
            _ => (None, None),
        };
        Ok(TagExpr {
            tag: tag.to_string(),
            op,
            value: spec.to_string(),
            search,
            at_start,
        })
    }

    /// Whether a series without the tag passes (it is taken as `""`): such
    /// an expression only filters; at least one other must select.
    pub fn matches_empty(&self) -> bool {
        match self.op {
            Op::Eq => self.value.is_empty(),
            Op::Ne => !self.value.is_empty(),
            Op::Match => self.matches_at_start(""),
            Op::NotMatch => !self.matches_at_start(""),
        }
    }

    fn matches_at_start(&self, value: &str) -> bool {
        self.at_start.as_ref().is_some_and(|r| r.is_match(value))
    }

    /// Whether a value of the tag selects the series, for an expression
    /// that does not match the empty string (graphite's SQL side).
    pub fn selects(&self, value: &str) -> bool {
        match self.op {
            Op::Eq => value == self.value,
            // Only `tag!=` selects: the tag is present.
            Op::Ne => self.value.is_empty() || value != self.value,
            Op::Match => self.search.as_ref().is_some_and(|r| r.is_match(value)),
            Op::NotMatch => !self.search.as_ref().is_some_and(|r| r.is_match(value)),
        }
    }

    /// Whether a series with `value` for the tag (`None`: without it)
    /// passes, for an expression that matches the empty string
    /// (graphite's Python-side filter).
    pub fn filters(&self, value: Option<&str>) -> bool {
        let v = value.unwrap_or("");
        match self.op {
            Op::Eq => v == self.value,
            Op::Ne => v != self.value,
            Op::Match => self.matches_at_start(v),
            Op::NotMatch => !self.matches_at_start(v),
        }
    }
}

/// Parses expressions and checks that one selects: graphite's rule.
pub fn parse_exprs<S: AsRef<str>>(exprs: &[S]) -> Result<Vec<TagExpr>, TagError> {
    let parsed: Vec<TagExpr> = exprs
        .iter()
        .map(|e| TagExpr::parse(e.as_ref()))
        .collect::<Result<_, _>>()?;
    if !parsed.iter().any(|e| !e.matches_empty()) {
        return Err(TagError(
            "At least one tagspec must not match the empty string".into(),
        ));
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(p: &str) -> Result<String, String> {
        TaggedSeries::parse(p).map(|s| s.path()).map_err(|e| e.0)
    }

    #[test]
    fn names_normalise_as_graphite() {
        assert_eq!(
            norm("cpu.load;host=a;dc=x").unwrap(),
            "cpu.load;dc=x;host=a"
        );
        assert_eq!(norm("a;b=c;b=d").unwrap(), "a;b=d");
        assert_eq!(
            norm("m;a.b=1;a=2;A=3;a_=4").unwrap(),
            "m;A=3;a.b=1;a=2;a_=4"
        );
        assert_eq!(norm("a;name=b").unwrap(), "a");
        assert_eq!(norm("~x.y;z=1").unwrap(), "x.y;z=1");
        assert_eq!(norm("a;t=v=w").unwrap(), "a;t=v=w");
        assert_eq!(
            norm("disk{dc=\"eu\",host=\"h.1\"}").unwrap(),
            "disk;dc=eu;host=h.1"
        );
        assert_eq!(norm("a{b=\"x\\\"y\",c=\"1\"}").unwrap(), "a;b=x\"y;c=1");
        assert_eq!(norm("a;b=c{d=\"e\"}").unwrap(), "a;b=c;d=e");
        assert_eq!(
            norm("a;b=c;").unwrap_err(),
            "Cannot parse path a;b=c;, invalid segment "
        );
        assert_eq!(
            norm(";b=c").unwrap_err(),
            "Cannot parse path ;b=c, no metric found"
        );
        assert_eq!(
            norm("a;b=").unwrap_err(),
            "Value for tag \"b\" may not be empty"
        );
        assert_eq!(
            norm("a;b^=c").unwrap_err(),
            "Character \"^\" is not allowed in tag \"b^\""
        );
        assert_eq!(
            norm("a;b=~c").unwrap_err(),
            "Tag values are not allowed to start with \"~\" in tag \"b\""
        );
        assert!(norm("a{b=\"\"}").is_err());
        assert_eq!(
            norm("a;b=~x;c").unwrap_err(),
            "Tag values are not allowed to start with \"~\" in tag \"b\""
        );
        assert!(norm("a{b=\"c\"d=\"e\"}").is_err());
    }

    #[test]
    fn files_live_where_carbon_puts_them() {
        let root = Path::new("/d");
        assert_eq!(
            hashed_path(root, "cpu.load;dc=x;host=a"),
            Path::new("/d/_tagged/9bf/fe0/9bffe068be88567f39e1fc8873e4256cae63e294da033ae37ee2cefc510af385.wsp")
        );
        assert_eq!(
            readable_path(root, "some.metric;tag1=value2;tag2=value.2"),
            Path::new("/d/_tagged/eff/aae/some_DOT_metric;tag1=value2;tag2=value_DOT_2.wsp")
        );
        assert_eq!(
            decode_file_name("cpu_DOT_load;dc=x;host=a").as_deref(),
            Some("cpu.load;dc=x;host=a")
        );
        assert_eq!(
            decode_file_name("9bffe068be88567f39e1fc8873e4256cae63e294da033ae37ee2cefc510af385"),
            None
        );
    }

    #[test]
    fn expressions_follow_graphites_rules() {
        let e = TagExpr::parse("a==b").unwrap();
        assert_eq!(
            (e.tag.as_str(), e.op, e.value.as_str()),
            ("a", Op::Eq, "=b")
        );
        let e = TagExpr::parse("a~=b").unwrap();
        assert_eq!(e.tag, "a~");
        assert!(TagExpr::parse("=b").is_err());
        assert_eq!(TagExpr::parse("").unwrap_err().0, "Invalid tagspec ");
        for only_filters in ["host!=a", "dc=", "host!=~a", "name=~.*", "dc=~x|"] {
            assert_eq!(
                parse_exprs(&[only_filters]).unwrap_err().0,
                "At least one tagspec must not match the empty string",
                "{only_filters}"
            );
        }
        assert!(parse_exprs(&["name=~.+"]).is_ok());
        assert!(parse_exprs(&["t!="]).is_ok());
        let e = TagExpr::parse("host=~^a|c").unwrap();
        assert!(e.selects("ca") && e.selects("a") && e.selects("bc"));
        let e = TagExpr::parse("host=~a").unwrap();
        assert!(e.selects("ab") && !e.selects("ba"));
        let e = TagExpr::parse("host!=~^a|c").unwrap();
        assert!(!e.filters(Some("ab")) && !e.filters(Some("cb")) && e.filters(Some("bc")));
    }
}

//! Carbon's storage rules: `storage-schemas.conf` picks a new metric's
//! retentions, `storage-aggregation.conf` its aggregation method and
//! xFilesFactor. The first section whose `pattern` regex is found anywhere in
//! the name (Python's unanchored `re.search`) wins; carbon's fallbacks apply
//! when none does.

use regex::Regex;

use crate::conf::{self, Section};
use crate::whisper::{parse_retention, validate_archive_list, AggregationMethod, Retention};

/// The schema graunt uses when no `storage-schemas.conf` is given: carbon's
/// example for its own metrics, and 10 s for a day, 1 min for 10 days, 1 h
/// for 400 days and 1 d for 10 years for everything else.
pub const EMBEDDED_SCHEMAS: &str = "\
[carbon]
pattern = ^carbon\\.
retentions = 60:90d

[default]
pattern = .*
retentions = 10s:1d,1m:10d,1h:400d,1d:10y
";

/// The aggregation rules used when no `storage-aggregation.conf` is given.
pub const EMBEDDED_AGGREGATION: &str = "\
[default]
pattern = .*
xFilesFactor = 0.5
aggregationMethod = average
";

/// A storage rule file that cannot be used as written.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// The INI syntax itself.
    #[error("{0}")]
    Syntax(#[from] conf::ConfError),
    /// A section missing what carbon requires.
    #[error("section [{section}]: {message}")]
    Section {
        /// Section name.
        section: String,
        /// What to fix.
        message: String,
    },
}

/// Which names a rule applies to.
#[derive(Debug, Clone)]
enum Matcher {
    All,
    Pattern(Regex),
}

impl Matcher {
    fn from_section(section: &Section) -> Result<Self, SchemaError> {
        let err = |message: String| SchemaError::Section {
            section: section.name.clone(),
            message,
        };
        if section.get("match-all").is_some_and(|v| !v.is_empty()) {
            return Ok(Matcher::All);
        }
        match section.get("pattern") {
            Some(p) => Regex::new(p).map(Matcher::Pattern).map_err(|e| {
                err(format!(
                    "pattern {p:?} is not a valid regular expression: {e}"
                ))
            }),
            None if section.get("list").is_some() => {
                Err(err("`list` rules are not supported; use a `pattern`".into()))
            }
            None => Err(err("needs a `pattern` (or `match-all = true`)".into())),
        }
    }

    fn matches(&self, metric: &str) -> bool {
        match self {
            Matcher::All => true,
            Matcher::Pattern(re) => re.is_match(metric),
        }
    }
}

/// One `[section]` of `storage-schemas.conf`.
#[derive(Debug, Clone)]
pub struct Schema {
    /// Section name.
    pub name: String,
    matcher: Matcher,
    /// Archives, most precise first.
    pub retentions: Vec<Retention>,
}

/// The parsed `storage-schemas.conf`.
#[derive(Debug, Clone)]
pub struct Schemas {
    rules: Vec<Schema>,
    fallback: Schema,
    /// Sections carbon would skip (an archive list whisper refuses), with why;
    /// the caller logs them as carbon does.
    pub warnings: Vec<String>,
}

impl Schemas {
    /// Parses a `storage-schemas.conf` text.
    pub fn parse(text: &str) -> Result<Self, SchemaError> {
        let mut rules = Vec::new();
        let mut warnings = Vec::new();
        for section in conf::parse(text)? {
            let err = |message: String| SchemaError::Section {
                section: section.name.clone(),
                message,
            };
            let matcher = Matcher::from_section(&section)?;
            let retentions = section
                .get("retentions")
                .ok_or_else(|| err("needs `retentions`".into()))?;
            let mut archives = retentions
                .split(',')
                .map(parse_retention)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| err(format!("retentions {retentions:?}: {e}")))?;
            if let Err(e) = validate_archive_list(&mut archives) {
                warnings.push(format!("Invalid schemas found in {}: {e}", section.name));
                continue;
            }
            rules.push(Schema {
                name: section.name.clone(),
                matcher,
                retentions: archives,
            });
        }
        // carbon's defaultSchema: a minute for a week, for names no rule matches.
        let fallback = Schema {
            name: "default".into(),
            matcher: Matcher::All,
            retentions: vec![Retention {
                seconds_per_point: 60,
                points: 60 * 24 * 7,
            }],
        };
        Ok(Schemas {
            rules,
            fallback,
            warnings,
        })
    }

    /// The embedded default ([`EMBEDDED_SCHEMAS`]).
    pub fn embedded() -> Self {
        Self::parse(EMBEDDED_SCHEMAS).expect("the embedded schemas parse")
    }

    /// The schema a new file for `metric` is created with.
    pub fn matching(&self, metric: &str) -> &Schema {
        self.rules
            .iter()
            .find(|s| s.matcher.matches(metric))
            .unwrap_or(&self.fallback)
    }

    /// The rules in file order.
    pub fn rules(&self) -> &[Schema] {
        &self.rules
    }
}

/// One `[section]` of `storage-aggregation.conf`.
#[derive(Debug, Clone)]
pub struct AggregationRule {
    /// Section name.
    pub name: String,
    matcher: Matcher,
    /// xFilesFactor if the section sets one.
    pub x_files_factor: Option<f64>,
    /// Method if the section sets one.
    pub method: Option<AggregationMethod>,
}

/// The parsed `storage-aggregation.conf`.
#[derive(Debug, Clone)]
pub struct Aggregations {
    rules: Vec<AggregationRule>,
    /// Sections carbon skips (an xFilesFactor that is not a number).
    pub warnings: Vec<String>,
}

impl Aggregations {
    /// Parses a `storage-aggregation.conf` text.
    pub fn parse(text: &str) -> Result<Self, SchemaError> {
        let mut rules = Vec::new();
        let mut warnings = Vec::new();
        for section in conf::parse(text)? {
            let err = |message: String| SchemaError::Section {
                section: section.name.clone(),
                message,
            };
            let x_files_factor = match section.get("xfilesfactor") {
                None => None,
                Some(v) => match v.parse::<f64>() {
                    Ok(x) if (0.0..=1.0).contains(&x) => Some(x),
                    Ok(x) => return Err(err(format!("xFilesFactor {x} must be between 0 and 1"))),
                    Err(_) => {
                        warnings.push(format!("Invalid schemas found in {}.", section.name));
                        continue;
                    }
                },
            };
            let method = section
                .get("aggregationmethod")
                .map(|m| m.parse::<AggregationMethod>())
                .transpose()
                .map_err(|e| {
                    err(format!(
                        "{e} (one of average, sum, last, max, min, avg_zero, absmax, absmin)"
                    ))
                })?;
            let matcher = Matcher::from_section(&section)?;
            rules.push(AggregationRule {
                name: section.name.clone(),
                matcher,
                x_files_factor,
                method,
            });
        }
        Ok(Aggregations { rules, warnings })
    }

    /// The embedded default ([`EMBEDDED_AGGREGATION`]).
    pub fn embedded() -> Self {
        Self::parse(EMBEDDED_AGGREGATION).expect("the embedded aggregation rules parse")
    }

    /// xFilesFactor and method for a new file for `metric`: the first matching
    /// rule, with whisper's defaults (0.5, average) for what it leaves unset.
    pub fn matching(&self, metric: &str) -> (f64, AggregationMethod) {
        let rule = self.rules.iter().find(|r| r.matcher.matches(metric));
        (
            rule.and_then(|r| r.x_files_factor).unwrap_or(0.5),
            rule.and_then(|r| r.method)
                .unwrap_or(AggregationMethod::Average),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: u32, p: u32) -> Retention {
        Retention {
            seconds_per_point: s,
            points: p,
        }
    }

    #[test]
    fn first_match_wins_and_search_is_unanchored() {
        let s = Schemas::parse(
            "[stats]\npattern = counters\nretentions = 10s:6h,1m:7d\n[all]\npattern = .*\nretentions = 60:1440\n",
        )
        .unwrap();
        assert_eq!(s.matching("stats.counters.x").name, "stats");
        assert_eq!(
            s.matching("stats.counters.x").retentions,
            vec![r(10, 2160), r(60, 10080)]
        );
        assert_eq!(s.matching("foo").retentions, vec![r(60, 1440)]);
    }

    #[test]
    fn fallback_is_carbons_default_and_bad_lists_are_skipped() {
        let s = Schemas::parse("[bad]\npattern = x\nretentions = 60:10,60:20\n").unwrap();
        assert_eq!(s.warnings.len(), 1);
        assert_eq!(s.matching("x").retentions, vec![r(60, 10080)]);
    }

    #[test]
    fn embedded_defaults() {
        let s = Schemas::embedded();
        assert_eq!(
            s.matching("carbon.agents.a.cpu").retentions,
            vec![r(60, 129600)]
        );
        assert_eq!(
            s.matching("servers.web1.load").retentions,
            vec![r(10, 8640), r(60, 14400), r(3600, 9600), r(86400, 3650)]
        );
        assert_eq!(
            Aggregations::embedded().matching("x"),
            (0.5, AggregationMethod::Average)
        );
    }

    #[test]
    fn aggregation_rules() {
        let a = Aggregations::parse(
            "[min]\npattern = \\.min$\nxFilesFactor = 0.1\naggregationMethod = min\n\
             [count]\npattern = \\.count$\naggregationMethod = sum\n[odd]\npattern=x\nxFilesFactor = abc\n",
        )
        .unwrap();
        assert_eq!(a.matching("a.b.min"), (0.1, AggregationMethod::Min));
        assert_eq!(a.matching("a.count"), (0.5, AggregationMethod::Sum));
        assert_eq!(a.matching("x"), (0.5, AggregationMethod::Average));
        assert_eq!(a.warnings.len(), 1);
        assert!(Aggregations::parse("[a]\npattern=x\naggregationMethod = median\n").is_err());
        assert!(Schemas::parse("[a]\nretentions = 60:10\n")
            .unwrap_err()
            .to_string()
            .contains("pattern"));
    }
}

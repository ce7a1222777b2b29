//! carbon-aggregator's rules (`aggregation-rules.conf`): lines
//! `output_template (frequency) = method input_pattern`, where `<field>`
//! captures one node and `<<field>>` several, and the output names the
//! fields. Every matching point goes into its output's buffer, one per
//! `frequency`-aligned interval; every `frequency` seconds (from the
//! buffer's creation, as carbon's timer) each interval that got values
//! since is sent with the method over all of its values, and intervals
//! older than 5 × frequency are let go. Methods: sum, avg, min, max, count,
//! p50, p75, p80, p90, p95, p99, p999 (carbon's interpolated percentiles).

use std::collections::{BTreeMap, HashMap};

use super::RuleError;
use crate::codec::Point;

/// carbon's `MAX_AGGREGATION_INTERVALS`.
const MAX_INTERVALS: i64 = 5;

/// How an interval's values become one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Method {
    /// Their sum.
    Sum,
    /// Their mean.
    Avg,
    /// The least.
    Min,
    /// The greatest.
    Max,
    /// How many.
    Count,
    /// The percentile at this fraction, interpolated between ranks.
    Percentile(f64),
}

impl Method {
    /// carbon's method names.
    pub fn parse(name: &str) -> Option<Method> {
        Some(match name {
            "sum" => Method::Sum,
            "avg" => Method::Avg,
            "min" => Method::Min,
            "max" => Method::Max,
            "count" => Method::Count,
            "p50" => Method::Percentile(0.50),
            "p75" => Method::Percentile(0.75),
            "p80" => Method::Percentile(0.80),
            "p90" => Method::Percentile(0.90),
            "p95" => Method::Percentile(0.95),
            "p99" => Method::Percentile(0.99),
            "p999" => Method::Percentile(0.999),
            _ => return None,
        })
    }

    /// The method over `values` (not empty), in carbon's order of
    /// operations.
    pub fn apply(self, values: &[f64]) -> f64 {
        let sum = || values.iter().fold(0.0, |a, v| a + v);
        match self {
            Method::Sum => sum(),
            Method::Avg => sum() / values.len() as f64,
            Method::Min => values.iter().copied().fold(f64::INFINITY, f64::min),
            Method::Max => values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            Method::Count => values.len() as f64,
            Method::Percentile(factor) => {
                let mut sorted = values.to_vec();
                sorted.sort_by(f64::total_cmp);
                let rank = factor * (sorted.len() - 1) as f64;
                let (left, right) = (rank.floor(), rank.ceil());
                if left == right {
                    sorted[left as usize]
                } else {
                    sorted[left as usize] * (right - rank) + sorted[right as usize] * (rank - left)
                }
            }
        }
    }
}

/// A piece of an output template.
#[derive(Debug, Clone)]
enum Piece {
    Text(String),
    Field(String),
}

/// One rule.
#[derive(Debug, Clone)]
pub struct AggregationRule {
    input: regex::Regex,
    output: Vec<Piece>,
    /// Its method.
    pub method: Method,
    /// Seconds per interval.
    pub frequency: i64,
}

impl AggregationRule {
    /// One line of the file.
    pub fn parse(line: &str) -> Result<AggregationRule, String> {
        let (left, right) = line
            .split_once('=')
            .ok_or("want: output_template (frequency) = method input_pattern")?;
        let left: Vec<&str> = left.split_whitespace().collect();
        let right: Vec<&str> = right.split_whitespace().collect();
        let (&[output, frequency], &[method, input]) = (left.as_slice(), right.as_slice()) else {
            return Err("want: output_template (frequency) = method input_pattern".into());
        };
        let frequency: i64 = frequency
            .trim_start_matches('(')
            .trim_end_matches(')')
            .parse()
            .map_err(|_| {
                format!("frequency {frequency:?}: want a whole number of seconds in parentheses")
            })?;
        if !(1..=315_360_000).contains(&frequency) {
            return Err(format!(
                "frequency {frequency}: want from 1 second to 10 years"
            ));
        }
        let method = Method::parse(method).ok_or_else(|| {
            format!("method {method:?}: use sum, avg, min, max, count, p50, p75, p80, p90, p95, p99 or p999")
        })?;
        let pattern = input_regex(input)?;
        // re.match anchors the whole pattern at the start, alternatives too.
        let input = regex::Regex::new(&format!("^(?:{pattern})"))
            .map_err(|e| format!("input pattern {input:?}: {e}"))?;
        let output = template(output);
        for piece in &output {
            if let Piece::Field(f) = piece {
                if !input.capture_names().flatten().any(|n| n == f) {
                    // carbon raises on every matching point and loses it.
                    return Err(format!(
                        "output field <{f}> is not captured by the input pattern"
                    ));
                }
            }
        }
        Ok(AggregationRule {
            input,
            output,
            method,
            frequency,
        })
    }

    /// The output `name` goes to under this rule, if it matches.
    pub fn output_for(&self, name: &str) -> Option<String> {
        let caps = self.input.captures(name)?;
        let mut out = String::new();
        for piece in &self.output {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Field(f) => out.push_str(caps.name(f).map_or("", |m| m.as_str())),
            }
        }
        Some(out)
    }
}

/// carbon's translation of an input pattern, node by node: `<<f>>` any
/// text, `<f>` one node's text, `*` a whole node, `*` inside a node any of
/// its text; what surrounds a field is regex as written.
fn input_regex(input: &str) -> Result<String, String> {
    let parts = input
        .split('.')
        .map(|part| {
            if let (Some(i), Some(j)) = (part.find("<<"), part.find(">>")) {
                if j < i + 2 {
                    return Err(format!("node {part:?}: >> before <<"));
                }
                return Ok(format!(
                    "{}(?P<{}>.+?){}",
                    &part[..i],
                    &part[i + 2..j],
                    &part[j + 2..]
                ));
            }
            Ok(match (part.find('<'), part.find('>')) {
                (Some(i), Some(j)) if j > i => {
                    format!(
                        "{}(?P<{}>[^.]+?){}",
                        &part[..i],
                        &part[i + 1..j],
                        &part[j + 1..]
                    )
                }
                _ if part == "*" => "[^.]+".to_string(),
                _ => part.replace('*', "[^.]*"),
            })
        })
        .collect::<Result<Vec<String>, String>>()?;
    Ok(format!("{}$", parts.join("\\.")))
}

/// An output template's text and `<field>`s.
fn template(output: &str) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let mut rest = output;
    while let Some(i) = rest.find('<') {
        let Some(j) = rest[i..].find('>') else { break };
        if i > 0 {
            pieces.push(Piece::Text(rest[..i].to_string()));
        }
        pieces.push(Piece::Field(rest[i + 1..i + j].to_string()));
        rest = &rest[i + j + 1..];
    }
    if !rest.is_empty() {
        pieces.push(Piece::Text(rest.to_string()));
    }
    pieces
}

/// The rules of a file, in order.
#[derive(Debug, Clone, Default)]
pub struct AggregationRules {
    /// In file order.
    pub rules: Vec<AggregationRule>,
    /// Every input pattern: one pass finds the rules a name matches.
    set: Option<regex::RegexSet>,
}

impl AggregationRules {
    /// Parses a rules file's text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<AggregationRules, RuleError> {
        let mut rules = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            rules.push(
                AggregationRule::parse(line)
                    .map_err(|e| RuleError::new(file, n + 1, format!("{line:?}: {e}")))?,
            );
        }
        let set = match rules.is_empty() {
            true => None,
            false => Some(
                regex::RegexSet::new(rules.iter().map(|r| r.input.as_str())).map_err(|e| {
                    RuleError::new(file, 0, format!("the input patterns together: {e}"))
                })?,
            ),
        };
        Ok(AggregationRules { rules, set })
    }

    /// The rules `name` matches, in file order.
    fn matching<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a AggregationRule> + 'a {
        let hits: Vec<usize> = self
            .set
            .as_ref()
            .map(|s| s.matches(name).into_iter().collect())
            .unwrap_or_default();
        hits.into_iter().map(move |i| &self.rules[i])
    }
}

#[derive(Debug)]
struct Interval {
    values: Vec<f64>,
    active: bool,
}

#[derive(Debug)]
struct Buffer {
    frequency: i64,
    method: Method,
    intervals: BTreeMap<i64, Interval>,
    /// When its next compute is due (carbon's timer runs every
    /// `frequency` from the buffer's creation).
    due: i64,
}

impl Buffer {
    /// carbon's `compute_value` at `now`: active intervals sent, old ones
    /// let go. Answers whether the buffer is now empty.
    fn compute(&mut self, name: &str, now: i64, out: &mut Vec<Point>) -> bool {
        let current = now - now.rem_euclid(self.frequency);
        let threshold = current - MAX_INTERVALS * self.frequency;
        for (&interval, buf) in self.intervals.iter_mut() {
            if buf.active {
                out.push(Point {
                    name: name.to_string(),
                    timestamp: interval,
                    value: self.method.apply(&buf.values),
                });
                buf.active = false;
            }
        }
        self.intervals.retain(|&interval, _| interval >= threshold);
        self.intervals.is_empty()
    }
}

/// The aggregator's buffers under a set of rules.
#[derive(Debug, Default)]
pub struct Aggregator {
    buffers: HashMap<String, Buffer>,
}

impl Aggregator {
    /// Puts `point` into the buffer of every output a rule gives it, at
    /// `now`; answers whether one of those outputs is the point's own name
    /// (carbon then does not forward it).
    pub fn input(&mut self, rules: &AggregationRules, point: &Point, now: i64) -> bool {
        let mut own = false;
        for rule in rules.matching(&point.name) {
            let Some(output) = rule.output_for(&point.name) else {
                continue;
            };
            own |= output == point.name;
            let buffer = self.buffers.entry(output).or_insert_with(|| Buffer {
                frequency: rule.frequency,
                method: rule.method,
                intervals: BTreeMap::new(),
                due: now + rule.frequency,
            });
            let interval = point.timestamp - point.timestamp.rem_euclid(buffer.frequency);
            let slot = buffer
                .intervals
                .entry(interval)
                .or_insert_with(|| Interval {
                    values: Vec::new(),
                    active: true,
                });
            slot.values.push(point.value);
            slot.active = true;
        }
        own
    }

    /// The aggregates due at `now`.
    pub fn tick(&mut self, now: i64) -> Vec<Point> {
        let mut out = Vec::new();
        self.buffers.retain(|name, b| {
            if b.due > now {
                return true;
            }
            while b.due <= now {
                b.due += b.frequency;
            }
            !b.compute(name, now, &mut out)
        });
        out
    }

    /// Every buffer's compute at `now`, due or not (a drain at shutdown,
    /// and tests).
    pub fn flush(&mut self, now: i64) -> Vec<Point> {
        let mut out = Vec::new();
        self.buffers
            .retain(|name, b| !b.compute(name, now, &mut out));
        out
    }

    /// The outputs with buffers.
    pub fn outputs(&self) -> Vec<&str> {
        self.buffers.keys().map(String::as_str).collect()
    }

    /// Values held, over every buffer.
    pub fn len(&self) -> usize {
        self.buffers
            .values()
            .flat_map(|b| b.intervals.values())
            .map(|i| i.values.len())
            .sum()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.buffers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_translate_as_carbons() {
        let r = AggregationRule::parse("<env>.all.<m> (60) = sum <env>.*.<m>").unwrap();
        assert_eq!(
            r.output_for("prod.web1.load").as_deref(),
            Some("prod.all.load")
        );
        assert_eq!(r.output_for("prod.web1.load.x"), None);
        let r = AggregationRule::parse("deep.<rest>.total (60) = sum deep.<<rest>>.part*").unwrap();
        assert_eq!(
            r.output_for("deep.a.b.part3").as_deref(),
            Some("deep.a.b.total")
        );
        assert!(AggregationRule::parse("x.<nope> (60) = sum y.*").is_err());
        assert!(AggregationRule::parse("x (60) = median y.*").is_err());
        assert!(AggregationRule::parse("x 60 = sum").is_err());
        // carbon slices an empty name here and fails; a panic must not.
        assert!(AggregationRule::parse("x (60) = sum a>>b<<c.y").is_err());
        assert!(AggregationRule::parse("x (0) = sum a.*").is_err());
        // re.match anchors every alternative.
        let r = AggregationRule::parse("x (60) = sum a|b").unwrap();
        assert_eq!(r.output_for("zb").as_deref(), None);
    }

    #[test]
    fn percentiles_interpolate() {
        let v = [5.0, 1.0, 9.0, 3.0];
        assert_eq!(Method::Percentile(0.5).apply(&v), 4.0);
        assert_eq!(Method::Count.apply(&v), 4.0);
        assert_eq!(Method::Avg.apply(&v), 4.5);
    }
}

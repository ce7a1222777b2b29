//! Routing and fences: which destinations a metric goes to (relay rules,
//! then the hash ring), and what a tenant's listener may accept (its
//! namespaces, a freshness window, a rate).

use std::time::Instant;

use regex::Regex;

use graunt_cluster::hashing::{Destination, Ring};

/// A carbon relay rule: names matching `pattern` go to all of `targets`;
/// evaluation stops at the first match unless `continue_matching`.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Regular expression searched in the name (carbon's `re.search`).
    pub pattern: Regex,
    /// Indexes into the router's destinations.
    pub targets: Vec<usize>,
    /// Keep evaluating later rules after a match.
    pub continue_matching: bool,
}

/// A relay rule as configured, its destinations by name: resolved to
/// indexes ([`RuleSpec::resolve`]) against the destinations of the moment
/// (a followed cluster's members change).
#[derive(Debug, Clone)]
pub struct RuleSpec {
    /// Regular expression searched in the name.
    pub pattern: Regex,
    /// Where matches go.
    pub targets: Vec<Destination>,
    /// Keep evaluating later rules after a match.
    pub continue_matching: bool,
}

impl RuleSpec {
    /// The rule over `destinations`, with the targets not among them
    /// (returned second); `None` when no target is left.
    pub fn resolve(&self, destinations: &[Destination]) -> (Option<Rule>, Vec<&Destination>) {
        let mut targets = Vec::new();
        let mut missing = Vec::new();
        for t in &self.targets {
            match destinations.iter().position(|d| d == t) {
                Some(i) => targets.push(i),
                None => missing.push(t),
            }
        }
        let rule = (!targets.is_empty()).then(|| Rule {
            pattern: self.pattern.clone(),
            targets,
            continue_matching: self.continue_matching,
        });
        (rule, missing)
    }
}

/// Rules first, then the ring for whatever no rule took.
#[derive(Debug, Clone)]
pub struct Router {
    ring: Ring,
    rules: Vec<Rule>,
    /// The ring's destinations, then those only rules send to.
    destinations: Vec<Destination>,
}

impl Router {
    /// A router over `ring` with `rules` (indexes into the ring's destinations).
    pub fn new(ring: Ring, rules: Vec<Rule>) -> Router {
        Router::with_extra(ring, Vec::new(), rules)
    }

    /// A router over `ring` and `extra` destinations that only rules send
    /// to (outside a followed cluster, say a legacy carbon-cache); rule
    /// targets index the ring's destinations followed by `extra`.
    pub fn with_extra(ring: Ring, extra: Vec<Destination>, rules: Vec<Rule>) -> Router {
        let mut destinations = ring.destinations().to_vec();
        destinations.extend(
            extra
                .into_iter()
                .filter(|d| !ring.destinations().contains(d)),
        );
        Router {
            ring,
            rules,
            destinations,
        }
    }

    /// Every destination.
    pub fn destinations(&self) -> &[Destination] {
        &self.destinations
    }

    /// Where `name` goes, each destination once, in order.
    pub fn route(&self, name: &str) -> Vec<usize> {
        let mut out: Vec<usize> = Vec::new();
        for rule in &self.rules {
            if rule.pattern.is_match(name) {
                for &t in &rule.targets {
                    if !out.contains(&t) {
                        out.push(t);
                    }
                }
                if !rule.continue_matching {
                    return out;
                }
            }
        }
        if out.is_empty() {
            return self.ring.route(name);
        }
        out
    }
}

/// Why a tenant refused a point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Outside the tenant's namespaces.
    Namespace,
    /// Older than `max_age`.
    Stale,
    /// Further ahead than `max_future`.
    Future,
    /// Over the tenant's rate.
    Rate,
}

impl Refusal {
    /// Label for counters.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::Namespace => "namespace",
            Refusal::Stale => "stale",
            Refusal::Future => "future",
            Refusal::Rate => "rate",
        }
    }
}

/// A tenant's fence.
#[derive(Debug, Clone)]
pub struct Fence {
    /// Name prefixes allowed (`cust.acme.`); empty allows every name.
    pub namespaces: Vec<String>,
    /// Seconds a timestamp may lag the clock.
    pub max_age: i64,
    /// Seconds a timestamp may lead the clock.
    pub max_future: i64,
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl Fence {
    /// A fence; `rate` points per second, 0 for none.
    pub fn new(namespaces: Vec<String>, max_age: i64, max_future: i64, rate: f64) -> Fence {
        Fence {
            namespaces,
            max_age,
            max_future,
            rate,
            tokens: rate.max(1.0),
            last: Instant::now(),
        }
    }

    /// Whether `other` admits the same points (namespaces, window, rate).
    pub fn same_rules(&self, other: &Fence) -> bool {
        self.namespaces == other.namespaces
            && self.max_age == other.max_age
            && self.max_future == other.max_future
            && self.rate == other.rate
    }

    /// Checks one point at clock `now` (epoch seconds).
    pub fn check(&mut self, name: &str, timestamp: i64, now: i64) -> Result<(), Refusal> {
        if !self.namespaces.is_empty()
            && !self.namespaces.iter().any(|p| name.starts_with(p.as_str()))
        {
            return Err(Refusal::Namespace);
        }
        if timestamp < now.saturating_sub(self.max_age) {
            return Err(Refusal::Stale);
        }
        if timestamp > now.saturating_add(self.max_future) {
            return Err(Refusal::Future);
        }
        if self.rate > 0.0 {
            let t = Instant::now();
            self.tokens = (self.tokens + t.duration_since(self.last).as_secs_f64() * self.rate)
                .min(self.rate.max(1.0));
            self.last = t;
            if self.tokens < 1.0 {
                return Err(Refusal::Rate);
            }
            self.tokens -= 1.0;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use graunt_cluster::hashing::Method;

    #[test]
    fn rules_before_the_ring() {
        let dests: Vec<Destination> = ["a:1", "b:1", "c:1"]
            .iter()
            .map(|d| Destination::parse(d).unwrap())
            .collect();
        let ring = Ring::new(Method::CarbonCh, dests, 1, true).unwrap();
        let rules = vec![
            Rule {
                pattern: Regex::new(r"^carbon\.").unwrap(),
                targets: vec![2],
                continue_matching: true,
            },
            Rule {
                pattern: Regex::new(r"relays").unwrap(),
                targets: vec![0, 1],
                continue_matching: false,
            },
        ];
        let router = Router::new(ring, rules);
        assert_eq!(router.route("carbon.relays.x"), vec![2, 0, 1]);
        assert_eq!(router.route("carbon.agents.x"), vec![2]);
        assert_eq!(router.route("servers.a").len(), 1);
    }

    #[test]
    fn fences() {
        let mut f = Fence::new(vec!["cust.acme.".into()], 3600, 60, 0.0);
        assert_eq!(f.check("cust.acme.a", 1000, 1000), Ok(()));
        assert_eq!(f.check("cust.other.a", 1000, 1000), Err(Refusal::Namespace));
        assert_eq!(
            f.check("cust.acme.a", 1000 - 3601, 1000),
            Err(Refusal::Stale)
        );
        assert_eq!(f.check("cust.acme.a", 1061, 1000), Err(Refusal::Future));
        let mut r = Fence::new(vec![], 10, 10, 2.0);
        assert!(r.check("a", 0, 0).is_ok() && r.check("a", 0, 0).is_ok());
        assert_eq!(r.check("a", 0, 0), Err(Refusal::Rate));
    }
}

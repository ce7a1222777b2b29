//! carbon's rule files on incoming points, in carbon's order: the blacklist
//! and the whitelist (`blacklist.conf`, `whitelist.conf`, with carbon's
//! `USE_WHITELIST`), the `[pre]` rewrite rules, carbon-aggregator's rules
//! (`aggregation-rules.conf`: matching points feed aggregates, and are
//! passed on too with `forward_all`), then the `[post]` rewrite rules
//! (`rewrite-rules.conf`); aggregates take no rewrite rules, as carbon's
//! pipeline for generated points. The files are looked at again when they
//! change (every 10 s, as carbon does) and at once after SIGHUP; a file
//! that does not parse is refused, logged, and the rules in force stay.
//!
//! ```text
//! receivers ─▶ LiveRules::current().apply ─▶ node store / relay fence and router
//! ```

pub mod aggregate;
pub mod lists;
pub mod rewrite;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use serde::Deserialize;

use self::aggregate::{AggregationRules, Aggregator};
use self::lists::RegexList;
use self::rewrite::RewriteRules;
use crate::codec::Point;
use crate::error::Error;

/// A rule file that cannot be used: which, where, why.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{file}, line {line}: {message}")]
pub struct RuleError {
    file: String,
    line: usize,
    message: String,
}

impl RuleError {
    fn new(file: &str, line: usize, message: impl Into<String>) -> RuleError {
        RuleError {
            file: file.to_string(),
            line,
            message: message.into(),
        }
    }
}

/// The rule files a node or relay reads, by the config keys carbon's
/// operators know.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleFiles {
    /// `rewrite-rules.conf` [none].
    pub rewrite_rules: Option<PathBuf>,
    /// `whitelist.conf`, used with `use_whitelist` [none].
    pub whitelist: Option<PathBuf>,
    /// `blacklist.conf`, used with `use_whitelist` [none].
    pub blacklist: Option<PathBuf>,
    /// carbon's `USE_WHITELIST`: apply both lists [false].
    pub use_whitelist: Option<bool>,
    /// carbon-aggregator's `aggregation-rules.conf` [none].
    pub aggregation_rules: Option<PathBuf>,
    /// carbon's `FORWARD_ALL`: received points are passed on besides the
    /// aggregates [true]; false passes on aggregates only.
    pub forward_all: Option<bool>,
}

impl RuleFiles {
    /// Whether any rule is configured.
    pub fn any(&self) -> bool {
        self.rewrite_rules.is_some()
            || self.use_whitelist == Some(true)
            || self.aggregation_rules.is_some()
    }

    /// The files in use, in a fixed order: rewrite, aggregation, white,
    /// black.
    fn slots(&self) -> [Option<&Path>; 4] {
        let lists = self.use_whitelist == Some(true);
        [
            self.rewrite_rules.as_deref(),
            self.aggregation_rules.as_deref(),
            self.whitelist.as_deref().filter(|_| lists),
            self.blacklist.as_deref().filter(|_| lists),
        ]
    }

    fn paths(&self) -> Vec<&Path> {
        self.slots().into_iter().flatten().collect()
    }
}

/// What the rules did to a batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Points a blacklist pattern matched.
    pub blacklisted: u64,
    /// Points no whitelist pattern matched.
    pub not_whitelisted: u64,
    /// Points a rewrite made into an invalid name.
    pub invalid: u64,
    /// Points that fed an aggregate and were not passed on.
    pub aggregated: u64,
}

/// One reading of the rule files.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    whitelist: RegexList,
    blacklist: RegexList,
    rewrite: RewriteRules,
    aggregation: AggregationRules,
    forward_all: bool,
}

impl Rules {
    /// Reads every configured file; a missing file is an empty one (as in
    /// carbon), a file that does not parse an error.
    pub fn read(files: &RuleFiles) -> Result<Rules, Error> {
        let text = |p: &Path| -> Result<String, Error> {
            match std::fs::read_to_string(p) {
                Ok(t) => Ok(t),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    tracing::warn!(file = %p.display(), "rule file missing: no rules from it");
                    Ok(String::new())
                }
                Err(e) => Err(Error::io(format!("cannot read {}", p.display()), e)),
            }
        };
        let bad = |e: RuleError| Error::config(format!("{e} (the file is refused; fix the line)"));
        let mut rules = Rules {
            forward_all: files.forward_all.unwrap_or(true),
            ..Rules::default()
        };
        if let Some(p) = &files.aggregation_rules {
            rules.aggregation =
                AggregationRules::parse(&text(p)?, &p.display().to_string()).map_err(bad)?;
        }
        if let Some(p) = &files.rewrite_rules {
            rules.rewrite =
                RewriteRules::parse(&text(p)?, &p.display().to_string()).map_err(bad)?;
        }
        if files.use_whitelist == Some(true) {
            if let Some(p) = &files.whitelist {
                rules.whitelist =
                    RegexList::parse(&text(p)?, &p.display().to_string()).map_err(bad)?;
            }
            if let Some(p) = &files.blacklist {
                rules.blacklist =
                    RegexList::parse(&text(p)?, &p.display().to_string()).map_err(bad)?;
            }
        }
        Ok(rules)
    }

    /// Rules from texts (tests, and checking a file before use).
    pub fn from_texts(rewrite: &str, whitelist: &str, blacklist: &str) -> Result<Rules, RuleError> {
        Ok(Rules {
            rewrite: RewriteRules::parse(rewrite, "rewrite-rules.conf")?,
            whitelist: RegexList::parse(whitelist, "whitelist.conf")?,
            blacklist: RegexList::parse(blacklist, "blacklist.conf")?,
            aggregation: AggregationRules::default(),
            forward_all: true,
        })
    }

    /// Whether `name` passes the lists.
    pub fn admits(&self, name: &str) -> Result<(), Refusal> {
        if self.blacklist.contains(name) {
            return Err(Refusal::Blacklisted);
        }
        if !self.whitelist.is_empty() && !self.whitelist.contains(name) {
            return Err(Refusal::NotWhitelisted);
        }
        Ok(())
    }

    /// `name` after the `[pre]` and `[post]` rules.
    pub fn rewrite(&self, name: &str) -> String {
        self.rewrite
            .post
            .apply(&self.rewrite.pre.apply(name))
            .into_owned()
    }

    /// Whether these rules change nothing.
    pub fn is_empty(&self) -> bool {
        self.whitelist.is_empty()
            && self.blacklist.is_empty()
            && self.rewrite.pre.is_empty()
            && self.rewrite.post.is_empty()
            && self.aggregation.rules.is_empty()
    }

    /// Filters and renames `points` in place (no aggregation).
    pub fn apply(&self, points: &mut Vec<Point>) -> Outcome {
        let mut outcome = Outcome::default();
        if !self.is_empty() {
            self.admit_and_pre(points, &mut outcome);
            self.post(points, &mut outcome);
        }
        outcome
    }

    /// The lists, then the `[pre]` rules; a name a rule made invalid
    /// drops its point.
    fn admit_and_pre(&self, points: &mut Vec<Point>, outcome: &mut Outcome) {
        points.retain_mut(|p| {
            match self.admits(&p.name) {
                Err(Refusal::Blacklisted) => outcome.blacklisted += 1,
                Err(Refusal::NotWhitelisted) => outcome.not_whitelisted += 1,
                Ok(()) => return rename(&self.rewrite.pre, p, outcome),
            }
            false
        });
    }

    /// The `[post]` rules; a name a rule made invalid drops its point.
    fn post(&self, points: &mut Vec<Point>, outcome: &mut Outcome) {
        points.retain_mut(|p| rename(&self.rewrite.post, p, outcome));
    }
}

/// `p` renamed by `chain`; false (counted) when the new name is invalid.
fn rename(chain: &rewrite::RuleChain, p: &mut Point, outcome: &mut Outcome) -> bool {
    if let std::borrow::Cow::Owned(renamed) = chain.apply(&p.name) {
        match graunt_storage::metric::normalize_name(&renamed) {
            Ok(name) => p.name = name.into_owned(),
            Err(_) => {
                outcome.invalid += 1;
                return false;
            }
        }
    }
    true
}

/// Why the lists refused a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A blacklist pattern matched.
    Blacklisted,
    /// No whitelist pattern matched.
    NotWhitelisted,
}

/// Bumped by [`reload_all`] (SIGHUP): every [`LiveRules`] looks at its
/// files on its next use.
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// Makes every [`LiveRules`] look at its files again.
pub fn reload_all() {
    GENERATION.fetch_add(1, Ordering::Relaxed);
}

/// How often unchanged files are looked at (carbon: 10 s).
const CHECK_EVERY: Duration = Duration::from_secs(10);

/// The rules in force, re-read when their files change.
pub struct LiveRules {
    files: RuleFiles,
    current: RwLock<Arc<Rules>>,
    check: Mutex<Check>,
    /// carbon-aggregator's buffers; emptied when the rules are read again,
    /// as carbon does.
    aggregator: Mutex<Aggregator>,
}

struct Check {
    at: Instant,
    generation: u64,
    stamps: Vec<Option<SystemTime>>,
}

impl LiveRules {
    /// Reads the files; an error names the file and line.
    pub fn load(files: RuleFiles) -> Result<Arc<LiveRules>, Error> {
        let rules = Rules::read(&files)?;
        let stamps = stamps(&files);
        Ok(Arc::new(LiveRules {
            files,
            current: RwLock::new(Arc::new(rules)),
            aggregator: Mutex::new(Aggregator::default()),
            check: Mutex::new(Check {
                at: Instant::now(),
                generation: GENERATION.load(Ordering::Relaxed),
                stamps,
            }),
        }))
    }

    /// The rules in force, after looking at the files if it is time (every
    /// 10 s, or after SIGHUP).
    pub fn current(&self) -> Arc<Rules> {
        let generation = GENERATION.load(Ordering::Relaxed);
        let check = match self.check.try_lock() {
            Ok(c) => Some(c),
            Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        };
        if let Some(mut check) = check {
            if check.generation != generation || check.at.elapsed() >= CHECK_EVERY {
                let forced = check.generation != generation;
                check.generation = generation;
                check.at = Instant::now();
                let now = stamps(&self.files);
                if forced || now != check.stamps {
                    // Aggregation buffers are emptied only when the
                    // aggregation rules change, as in carbon.
                    let aggregation_changed =
                        self.files.aggregation_rules.is_some() && now.get(1) != check.stamps.get(1);
                    check.stamps = now;
                    self.reread(aggregation_changed);
                }
            }
        }
        self.rules_now()
    }

    /// Filters, renames and aggregates `points` under the rules in force.
    /// Only feeding the aggregator holds its lock, so receivers run the
    /// lists and rewrites side by side.
    pub fn process(&self, points: &mut Vec<Point>) -> Outcome {
        let rules = self.current();
        if rules.aggregation.rules.is_empty() {
            return rules.apply(points);
        }
        let mut outcome = Outcome::default();
        rules.admit_and_pre(points, &mut outcome);
        let now = crate::net::unix_now();
        let mut keep = vec![true; points.len()];
        {
            let mut agg = self.aggregator.lock().unwrap_or_else(|e| e.into_inner());
            // The rules the buffers were made under: a reload swaps them
            // and empties the buffers while holding this lock.
            let rules = self.rules_now();
            for (p, keep) in points.iter().zip(keep.iter_mut()) {
                // carbon passes a point on only with FORWARD_ALL, and never
                // the input of an aggregate of its own name.
                let own = agg.input(&rules.aggregation, p, now);
                if own || !rules.forward_all {
                    *keep = false;
                    outcome.aggregated += 1;
                }
            }
        }
        let mut keep = keep.into_iter();
        points.retain(|_| keep.next().unwrap_or(true));
        rules.post(points, &mut outcome);
        outcome
    }

    fn rules_now(&self) -> Arc<Rules> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The aggregates due at `now`; none without rules. As carbon's
    /// pipeline for generated points, they take no rewrite rules.
    pub fn tick(&self, now: i64) -> Vec<Point> {
        self.emit(|agg| agg.tick(now))
    }

    /// Every aggregate held, due or not (at shutdown).
    pub fn flush(&self, now: i64) -> Vec<Point> {
        self.emit(|agg| agg.flush(now))
    }

    fn emit(&self, take: impl FnOnce(&mut Aggregator) -> Vec<Point>) -> Vec<Point> {
        let rules = self.current();
        if rules.aggregation.rules.is_empty() {
            return Vec::new();
        }
        let mut points = take(&mut self.aggregator.lock().unwrap_or_else(|e| e.into_inner()));
        points.retain_mut(|p| match graunt_storage::metric::normalize_name(&p.name) {
            Ok(name) => {
                if let std::borrow::Cow::Owned(n) = name {
                    p.name = n;
                }
                true
            }
            Err(_) => false,
        });
        points
    }

    /// carbon-aggregator's timers until `shutdown`: each second, the
    /// aggregates due go to `deliver`; at shutdown every aggregate held
    /// goes (carbon loses them).
    pub async fn emit_aggregates(
        self: Arc<Self>,
        mut shutdown: crate::shutdown::Shutdown,
        deliver: impl Fn(Vec<Point>),
    ) {
        let mut every = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = every.tick() => {}
                _ = shutdown.recv() => {
                    let points = self.flush(crate::net::unix_now());
                    if !points.is_empty() {
                        deliver(points);
                    }
                    return;
                }
            }
            let points = self.tick(crate::net::unix_now());
            if !points.is_empty() {
                deliver(points);
            }
        }
    }

    /// Whether aggregation rules are configured (a ticker is needed).
    pub fn aggregates(&self) -> bool {
        self.files.aggregation_rules.is_some()
    }

    fn reread(&self, aggregation_changed: bool) {
        match Rules::read(&self.files) {
            Ok(rules) => {
                // Swapped under the aggregator's lock: no batch feeds new
                // buffers under the old rules.
                let mut agg = self.aggregator.lock().unwrap_or_else(|e| e.into_inner());
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(rules);
                if aggregation_changed {
                    *agg = Aggregator::default();
                }
                drop(agg);
                tracing::info!(files = ?self.files.paths(), "rule files read again");
            }
            Err(e) => tracing::error!(error = %e, "rule file refused; the rules in force stay"),
        }
    }
}

/// Each slot's modification time (index 1: the aggregation rules).
fn stamps(files: &RuleFiles) -> Vec<Option<SystemTime>> {
    files
        .slots()
        .into_iter()
        .map(|p| p.and_then(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(name: &str) -> Point {
        Point {
            name: name.into(),
            timestamp: 1,
            value: 1.0,
        }
    }

    #[test]
    fn lists_then_rewrites_in_carbons_order() {
        let rules = Rules::from_texts(
            "[pre]\n^old\\. = new.\n[post]\n\\.tmp$ = \n",
            "^new\\.\n^old\\.\n",
            "secret\n",
        )
        .unwrap();
        let mut points = vec![
            point("old.a.tmp"),
            point("old.secret"),
            point("other.b"),
            point("new.c"),
        ];
        let outcome = rules.apply(&mut points);
        let names: Vec<_> = points.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["new.a", "new.c"]);
        assert_eq!(outcome.blacklisted, 1);
        assert_eq!(outcome.not_whitelisted, 1);
    }

    #[test]
    fn a_rewrite_to_an_invalid_name_drops_the_point() {
        let rules = Rules::from_texts("[pre]\n.* = \n", "", "").unwrap();
        let mut points = vec![point("a.b")];
        assert_eq!(rules.apply(&mut points).invalid, 1);
        assert!(points.is_empty());
    }

    #[test]
    fn a_pre_rewrite_to_an_invalid_name_never_reaches_the_aggregator() {
        let dir = tempfile::tempdir().unwrap();
        let (rewrite, aggregation) = (dir.path().join("rw.conf"), dir.path().join("agg.conf"));
        std::fs::write(&rewrite, "[pre]\n^bad\\. = bad..\n").unwrap();
        std::fs::write(&aggregation, "all.<m> (60) = sum <x>.<m>\n").unwrap();
        let live = LiveRules::load(RuleFiles {
            rewrite_rules: Some(rewrite),
            aggregation_rules: Some(aggregation),
            ..RuleFiles::default()
        })
        .unwrap();
        let mut points = vec![point("bad.m"), point("good.m")];
        let outcome = live.process(&mut points);
        assert_eq!((outcome.invalid, points.len()), (1, 1));
        let sums = live.flush(100);
        assert_eq!(sums.len(), 1);
        assert_eq!((sums[0].name.as_str(), sums[0].value), ("all.m", 1.0));
    }

    #[test]
    fn a_bad_line_names_its_file_and_line() {
        let e = Rules::from_texts("[pre]\nok = fine\n(unclosed = x\n", "", "").unwrap_err();
        assert!(e.to_string().contains("rewrite-rules.conf, line 3"), "{e}");
    }
}

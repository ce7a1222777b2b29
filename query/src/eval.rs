//! Evaluating a parsed target over a data source: path expressions become
//! the series they match (sorted by name, as graphite-web returns them),
//! calls go to [`crate::functions`], literals stay literals.

mod folds;

use crate::fold::{Fetched, Fold};
use crate::functions;
use crate::parser::{self, Expr};
use crate::series::Series;

/// Where series come from: one node's store ([`crate::source::StoreSource`])
/// or a whole cluster (graunt-cluster's source). Shared across the threads
/// one request fetches with.
pub trait Source: Sync {
    /// Every node (branches and leaves) matching a graphite path
    /// expression, sorted.
    fn find_nodes(&self, pattern: &str) -> Result<Vec<graunt_storage::find::Node>, EvalError>;

    /// Metric paths (leaves) matching a graphite path expression, sorted.
    fn find_leaves(&self, pattern: &str) -> Result<Vec<String>, EvalError> {
        Ok(crate::source::leaves(self.find_nodes(pattern)?))
    }

    /// Answers a question about tagged series (graphite-web's tag
    /// database); a source without tags knows none.
    fn tags(
        &self,
        q: &graunt_storage::tagindex::TagQuery,
    ) -> Result<graunt_storage::tagindex::TagAnswer, EvalError> {
        use graunt_storage::tagindex::{TagAnswer, TagQuery};
        Ok(match q {
            TagQuery::FindSeries { .. } => TagAnswer::Series(Vec::new()),
            TagQuery::Tags { .. } => TagAnswer::Tags(Vec::new()),
            TagQuery::TagValues { .. } => TagAnswer::Values(None),
            TagQuery::AutoTags { .. }
            | TagQuery::AutoValues { .. }
            | TagQuery::DelSeries { .. } => TagAnswer::Names(Vec::new()),
        })
    }

    /// Parts of the data that could not be read (a peer down or slow), each
    /// as `(who, why)`: the answer is partial when this is not empty.
    fn partial(&self) -> Vec<(String, String)> {
        Vec::new()
    }
    /// The series of one metric over `[from, until]`, or `None` if it has
    /// no data there.
    fn fetch(
        &self,
        path: &str,
        from: i64,
        until: i64,
        now: i64,
    ) -> Result<Option<Series>, EvalError>;

    /// The members of a [`Fold`] in groups (each path in one group): per
    /// group, the series as [`Source::fetch_many`] answers them, or, where
    /// the source can do it exactly, the fold of every one of them (a
    /// cluster folds on each member and sends one series per member and
    /// group).
    fn fetch_folds(
        &self,
        fold: Fold,
        groups: &[Vec<String>],
        from: i64,
        until: i64,
        now: i64,
    ) -> Result<Vec<Fetched>, EvalError> {
        let _ = fold;
        let fetched = self.fetch_many(&groups.concat(), from, until, now)?;
        Ok(Fetched::per_group(fetched, groups.iter().map(Vec::len)))
    }

    /// The series of many metrics (in order), fetched in parallel on the
    /// shared worker pool: each file read is a syscall-bound few tens of
    /// microseconds, and a thousand of them dominate a big query. A source
    /// over several machines overrides this to make one call per machine.
    fn fetch_many(
        &self,
        paths: &[String],
        from: i64,
        until: i64,
        now: i64,
    ) -> Result<Vec<Option<Series>>, EvalError> {
        read_each(paths, |p| self.fetch(p, from, until, now))
    }
}

/// `read` of each item, in order, on the shared worker pool when there are
/// enough of them to be worth it (each a syscall-bound file read).
pub(crate) fn read_each<T: Sync, R: Send>(
    items: &[T],
    read: impl Fn(&T) -> Result<R, EvalError> + Sync + Send,
) -> Result<Vec<R>, EvalError> {
    use rayon::prelude::*;
    if items.len() < 64 {
        return items.iter().map(&read).collect();
    }
    items.par_iter().with_min_len(32).map(&read).collect()
}

/// One request's evaluation context. Functions that look outside the
/// request's range (`timeShift`, `movingAverage`, …) evaluate their argument
/// again in a copy with other times ([`Context::with_range`]); the request's
/// shared state (stacks, bounds) goes along.
#[derive(Clone)]
pub struct Context<'a> {
    /// The data.
    pub source: &'a dyn Source,
    /// Range start, epoch seconds.
    pub from: i64,
    /// Range end, epoch seconds.
    pub until: i64,
    /// The request's "now".
    pub now: i64,
    /// The request's time zone (`tz`), for functions that align to days.
    pub tz: jiff::tz::TimeZone,
    /// Most series one request may fetch (a bound against huge globs).
    pub max_series: usize,
    /// Most datapoints one request may fetch.
    pub max_points: usize,
    /// Deepest call nesting a target may have.
    pub max_depth: usize,
    /// The request's `xFilesFactor` (graphite-web's default 0): the share of
    /// known values consolidation and aggregation need.
    pub x_files_factor: f64,
    /// The request's `template[name]=value` parameters.
    pub templates: Vec<(String, String)>,
    /// The events `events()` counts (none unless the caller gives them).
    pub events: std::sync::Arc<graunt_storage::events::Events>,
    state: std::rc::Rc<State>,
}

/// What one request's evaluations share.
#[derive(Default)]
struct State {
    /// `stacked`'s running totals by stack name.
    stacks: std::cell::RefCell<std::collections::HashMap<String, Vec<f64>>>,
    /// `setXFilesFactor` changes the request's factor for what follows.
    x_files_factor: std::cell::Cell<Option<f64>>,
    /// Series and points fetched so far.
    fetched: std::cell::Cell<(usize, usize)>,
}

impl<'a> Context<'a> {
    /// A context over `[from, until]` with default bounds, UTC and xFilesFactor 0.
    pub fn new(source: &'a dyn Source, from: i64, until: i64, now: i64) -> Self {
        Context {
            source,
            from,
            until,
            now,
            tz: jiff::tz::TimeZone::UTC,
            max_series: 100_000,
            max_points: 100_000_000,
            max_depth: parser::MAX_DEPTH,
            x_files_factor: 0.0,
            templates: Vec::new(),
            events: Default::default(),
            state: Default::default(),
        }
    }

    /// The same request over other times.
    pub fn with_range(&self, from: i64, until: i64) -> Self {
        let mut c = self.clone();
        c.from = from;
        c.until = until;
        c
    }

    /// The request's xFilesFactor, as `setXFilesFactor` may have changed it.
    pub fn xff(&self) -> f64 {
        self.state
            .x_files_factor
            .get()
            .unwrap_or(self.x_files_factor)
    }

    pub(crate) fn set_xff(&self, x: f64) {
        self.state.x_files_factor.set(Some(x));
    }

    pub(crate) fn stacks(
        &self,
    ) -> std::cell::RefMut<'_, std::collections::HashMap<String, Vec<f64>>> {
        self.state.stacks.borrow_mut()
    }

    /// Charges points a function generates (bucket and generator functions
    /// size their output by the range, not by what was fetched).
    pub(crate) fn charge_points(&self, points: usize) -> Result<(), EvalError> {
        let (series, total) = self.state.fetched.get();
        let total = total.saturating_add(points);
        self.state.fetched.set((series, total));
        if total > self.max_points {
            return Err(EvalError::TooManyPoints(self.max_points));
        }
        Ok(())
    }

    fn count_fetch(&self, points: usize) -> Result<(), EvalError> {
        let (series, total) = self.state.fetched.get();
        let (series, total) = (series + 1, total + points);
        self.state.fetched.set((series, total));
        if series > self.max_series {
            return Err(EvalError::TooManySeries(self.max_series));
        }
        if total > self.max_points {
            return Err(EvalError::TooManyPoints(self.max_points));
        }
        Ok(())
    }
}

/// An evaluated argument or result.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A list of series.
    Series(Vec<Series>),
    /// A list of series lists (what `mapSeries` returns for `reduceSeries`).
    SeriesLists(Vec<Vec<Series>>),
    /// An integer literal.
    Int(i64),
    /// A float literal.
    Float(f64),
    /// A string literal.
    Str(String),
    /// A boolean literal.
    Bool(bool),
    /// `None`.
    None,
}

/// Why a target could not be evaluated; each maps to an HTTP 400 (or 413 for
/// a bound) naming the problem.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EvalError {
    /// The target does not parse.
    #[error("{0}")]
    Parse(#[from] parser::ParseError),
    /// No function of that name.
    #[error("unknown function {0:?}")]
    UnknownFunction(String),
    /// Wrong argument count or type.
    #[error("{function}: {message}")]
    Argument {
        /// The function.
        function: String,
        /// What is wrong.
        message: String,
    },
    /// More series than `max_series`.
    #[error("the request matches more than {0} series; narrow the target")]
    TooManySeries(usize),
    /// More datapoints than `max_points`.
    #[error("the request needs more than {0} datapoints; narrow the target or the time range")]
    TooManyPoints(usize),
    /// The store failed.
    #[error("storage error: {0}")]
    Storage(String),
    /// A tag expression or name graphite-web would refuse.
    #[error("{0}")]
    Tags(String),
}

/// Parses and evaluates one target into series.
pub fn evaluate_target(ctx: &Context<'_>, target: &str) -> Result<Vec<Series>, EvalError> {
    let expr = parser::parse_with_depth(target, ctx.max_depth)?;
    match evaluate(ctx, &expr)? {
        Value::Series(s) => Ok(s),
        other => Err(EvalError::Argument {
            function: "target".into(),
            message: format!("{target:?} evaluates to {}, not to series", other.kind()),
        }),
    }
}

impl Value {
    /// What kind of value this is, for error messages.
    pub fn kind(&self) -> String {
        match self {
            Value::Series(_) => "a series list".into(),
            Value::SeriesLists(_) => "a list of series lists".into(),
            Value::Int(i) => format!("the integer {i}"),
            Value::Float(f) => format!("the number {f}"),
            Value::Str(s) => format!("the string {s:?}"),
            Value::Bool(b) => format!("the boolean {b}"),
            Value::None => "None".into(),
        }
    }
}

/// Evaluates an expression.
pub fn evaluate(ctx: &Context<'_>, expr: &Expr) -> Result<Value, EvalError> {
    Ok(match expr {
        Expr::Path(pattern) => Value::Series(fetch_path(ctx, pattern)?),
        Expr::Call(call) if call.name == "seriesByTag" => Value::Series(series_by_tag(ctx, call)?),
        Expr::Call(call) if call.name == "template" => {
            let (inner, replacements) = template(ctx, call)?;
            evaluate(ctx, &substitute(&inner, &replacements))?
        }
        Expr::Call(call) => {
            if let Some(value) = folds::evaluate(ctx, call)? {
                return Ok(value);
            }
            let args = call
                .args
                .iter()
                .map(|a| evaluate(ctx, a))
                .collect::<Result<Vec<_>, _>>()?;
            let kwargs = call
                .kwargs
                .iter()
                .map(|(k, v)| Ok((k.clone(), evaluate(ctx, v)?)))
                .collect::<Result<Vec<_>, EvalError>>()?;
            functions::call(ctx, Some(call), &call.name, args, kwargs)?
        }
        Expr::Int(i) => Value::Int(*i),
        Expr::Float(f) => Value::Float(*f),
        Expr::Str(s) => Value::Str(s.clone()),
        Expr::Bool(b) => Value::Bool(*b),
        Expr::None => Value::None,
    })
}

/// A literal as a template replacement.
#[derive(Debug, Clone)]
enum Replacement {
    Int(i64),
    Float(f64),
    Str(String),
}

impl Replacement {
    fn text(&self) -> String {
        match self {
            Replacement::Int(i) => i.to_string(),
            Replacement::Float(f) => crate::pyfmt::float_repr(*f),
            Replacement::Str(s) => s.clone(),
        }
    }
}

/// `template(expr, 1, x="b")`: the inner expression and its replacements
/// (keyword ones, then `$1`, `$2`, …, then the request's `template[...]`).
fn template(
    ctx: &Context<'_>,
    call: &parser::Call,
) -> Result<(Expr, Vec<(String, Replacement)>), EvalError> {
    let bad = |m: &str| EvalError::Argument {
        function: "template".into(),
        message: m.into(),
    };
    let inner = match call.args.first() {
        Some(e @ (Expr::Call(_) | Expr::Path(_))) => e.clone(),
        _ => return Err(bad("the first argument must be a series expression")),
    };
    let literal = |e: &Expr| match e {
        Expr::Int(i) => Ok(Replacement::Int(*i)),
        Expr::Float(f) => Ok(Replacement::Float(*f)),
        Expr::Str(s) => Ok(Replacement::Str(s.clone())),
        _ => Err(bad(
            "invalid template() syntax, only string/numeric arguments are allowed",
        )),
    };
    let mut out: Vec<(String, Replacement)> = Vec::new();
    let mut set = |k: String, v: Replacement| match out.iter_mut().find(|(n, _)| *n == k) {
        Some(slot) => slot.1 = v,
        None => out.push((k, v)),
    };
    for (k, v) in &call.kwargs {
        set(k.clone(), literal(v)?);
    }
    for (i, v) in call.args.iter().enumerate().skip(1) {
        set(i.to_string(), literal(v)?);
    }
    for (k, v) in &ctx.templates {
        set(k.clone(), Replacement::Str(v.clone()));
    }
    Ok((inner, out))
}

/// Applies template replacements to the path expressions of `expr`: a path
/// that is exactly `$name` becomes the value itself, others get `$name`
/// replaced in their text.
fn substitute(expr: &Expr, replacements: &[(String, Replacement)]) -> Expr {
    match expr {
        Expr::Path(p) => {
            let mut text = p.clone();
            for (name, value) in replacements {
                let var = format!("${name}");
                if text == var {
                    return match value {
                        Replacement::Int(i) => Expr::Int(*i),
                        Replacement::Float(f) => Expr::Float(*f),
                        Replacement::Str(s) => {
                            let numeric = !s.is_empty()
                                && s.trim_start_matches('-')
                                    .chars()
                                    .all(|c| c.is_ascii_digit() || c == '.');
                            match s.parse::<f64>() {
                                Ok(f) if numeric => Expr::Float(f),
                                _ => Expr::Str(s.clone()),
                            }
                        }
                    };
                }
                text = text.replace(&var, &value.text());
            }
            Expr::Path(text)
        }
        Expr::Call(c) => {
            let mut c = c.clone();
            c.args = c.args.iter().map(|a| substitute(a, replacements)).collect();
            c.kwargs = c
                .kwargs
                .iter()
                .map(|(k, v)| (k.clone(), substitute(v, replacements)))
                .collect();
            Expr::Call(c)
        }
        other => other.clone(),
    }
}

/// The metric paths a path expression finds, within the request's bound.
fn find_paths(ctx: &Context<'_>, pattern: &str) -> Result<Vec<String>, EvalError> {
    let paths = ctx.source.find_leaves(pattern)?;
    if paths.len() > ctx.max_series {
        return Err(EvalError::TooManySeries(ctx.max_series));
    }
    Ok(paths)
}

fn fetch_path(ctx: &Context<'_>, pattern: &str) -> Result<Vec<Series>, EvalError> {
    let paths = find_paths(ctx, pattern)?;
    let fetched = fetch_all(ctx, &paths)?;
    finish_fetch(ctx, pattern, fetched)
}

/// The series fetched for a path expression, counted against the
/// request's bounds, named after it, sorted by name.
fn finish_fetch(
    ctx: &Context<'_>,
    pattern: &str,
    fetched: Vec<Option<Series>>,
) -> Result<Vec<Series>, EvalError> {
    let mut out = Vec::with_capacity(fetched.len());
    for mut s in fetched.into_iter().flatten() {
        ctx.count_fetch(s.values.len())?;
        s.path_expression = pattern.to_string();
        s.x_files_factor = ctx.xff();
        out.push(s);
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// graphite-web's `seriesByTag("tag=value", …)`: the series its string
/// arguments select (other arguments are ignored, as there), fetched, named
/// by their names, the call's text as their path expression, sorted.
fn series_by_tag(ctx: &Context<'_>, call: &parser::Call) -> Result<Vec<Series>, EvalError> {
    let exprs: Vec<String> = call
        .args
        .iter()
        .filter_map(|a| match a {
            Expr::Str(s) => Some(s.clone()),
            _ => None,
        })
        .collect();
    let q = graunt_storage::tagindex::TagQuery::FindSeries { exprs };
    let paths = match ctx.source.tags(&q)? {
        graunt_storage::tagindex::TagAnswer::Series(p) => p,
        _ => Vec::new(),
    };
    if paths.len() > ctx.max_series {
        return Err(EvalError::TooManySeries(ctx.max_series));
    }
    let mut out = Vec::with_capacity(paths.len());
    for mut s in fetch_all(ctx, &paths)?.into_iter().flatten() {
        ctx.count_fetch(s.values.len())?;
        s.path_expression = call.text.clone();
        s.x_files_factor = ctx.xff();
        out.push(s);
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Fetches many paths through the source (in parallel, or one call per
/// machine for a cluster).
fn fetch_all(ctx: &Context<'_>, paths: &[String]) -> Result<Vec<Option<Series>>, EvalError> {
    ctx.source.fetch_many(paths, ctx.from, ctx.until, ctx.now)
}

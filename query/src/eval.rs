//! Evaluating a parsed target over a data source: path expressions become
//! the series they match (sorted by name, as graphite-web returns them),
//! calls go to [`crate::functions`], literals stay literals.

use crate::functions;
use crate::parser::{self, Expr};
use crate::series::Series;

/// Where series come from: the node's store today, peers later.
pub trait Source {
    /// Metric paths (leaves) matching a graphite path expression, sorted.
    fn find_leaves(&self, pattern: &str) -> Result<Vec<String>, EvalError>;
    /// The series of one metric over `[from, until]`, or `None` if it has
    /// no data there.
    fn fetch(
        &self,
        path: &str,
        from: i64,
        until: i64,
        now: i64,
    ) -> Result<Option<Series>, EvalError>;
}

/// One request's evaluation context.
pub struct Context<'a> {
    /// The data.
    pub source: &'a dyn Source,
    /// Range start, epoch seconds.
    pub from: i64,
    /// Range end, epoch seconds.
    pub until: i64,
    /// The request's "now".
    pub now: i64,
    /// Most series one request may fetch (a bound against huge globs).
    pub max_series: usize,
    /// The request's `xFilesFactor` (graphite-web's default 0): the share of
    /// known values consolidation and aggregation need.
    pub x_files_factor: f64,
}

/// An evaluated argument or result.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A list of series.
    Series(Vec<Series>),
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
    /// The store failed.
    #[error("storage error: {0}")]
    Storage(String),
}

/// Parses and evaluates one target into series.
pub fn evaluate_target(ctx: &Context<'_>, target: &str) -> Result<Vec<Series>, EvalError> {
    let expr = parser::parse(target)?;
    match evaluate(ctx, &expr)? {
        Value::Series(s) => Ok(s),
        other => Err(EvalError::Argument {
            function: "target".into(),
            message: format!("{target:?} evaluates to {other:?}, not to series"),
        }),
    }
}

/// Evaluates an expression.
pub fn evaluate(ctx: &Context<'_>, expr: &Expr) -> Result<Value, EvalError> {
    Ok(match expr {
        Expr::Path(pattern) => Value::Series(fetch_path(ctx, pattern)?),
        Expr::Call(call) => {
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
            functions::call(ctx, call, args, kwargs)?
        }
        Expr::Int(i) => Value::Int(*i),
        Expr::Float(f) => Value::Float(*f),
        Expr::Str(s) => Value::Str(s.clone()),
        Expr::Bool(b) => Value::Bool(*b),
        Expr::None => Value::None,
    })
}

fn fetch_path(ctx: &Context<'_>, pattern: &str) -> Result<Vec<Series>, EvalError> {
    let paths = ctx.source.find_leaves(pattern)?;
    if paths.len() > ctx.max_series {
        return Err(EvalError::TooManySeries(ctx.max_series));
    }
    let mut out = Vec::with_capacity(paths.len());
    for path in paths {
        if let Some(mut s) = ctx.source.fetch(&path, ctx.from, ctx.until, ctx.now)? {
            s.path_expression = pattern.to_string();
            s.x_files_factor = ctx.x_files_factor;
            out.push(s);
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

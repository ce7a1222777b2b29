//! graphite-web 1.1.10's render functions, by every name it accepts, with
//! its argument rules, None handling and the series names and tags it builds.
//! Arguments are bound to the parameters graphite-web declares (its
//! `/functions` catalog) and converted as its `validateParams` converts them;
//! each family lives in its own file. Aggregation methods (`aggregate`),
//! series plumbing (`helpers`) and `summarize`'s bucketing (`buckets`) are
//! their own modules because several families use them; families never
//! import each other.

pub(crate) mod aggregate;
mod alias;
mod buckets;
pub mod catalog;
mod combine;
mod filter;
mod graph;
mod group;
mod helpers;
mod shift;
mod transform;
mod window;

pub(crate) use combine::wildcard_key;
pub(crate) use group::apply_callback;
pub(crate) use helpers::agg_key;

use crate::eval::{Context, EvalError, Value};
use crate::parser::Call;
use crate::pyfmt::float_repr;
use crate::series::Series;

type Kwargs = Vec<(String, Value)>;
type Out = Result<Vec<Series>, EvalError>;

/// Functions graphite-web 1.1.10 lists that graunt does not implement.
pub const UNIMPLEMENTED: &[&str] = &[];

/// Every function name graunt answers (graphite-web's list less
/// [`UNIMPLEMENTED`]), sorted.
pub fn names() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = catalog::PARAMS
        .keys()
        .map(String::as_str)
        .filter(|n| !UNIMPLEMENTED.contains(n))
        .collect();
    names.sort_unstable();
    names
}

pub(crate) fn arg_err(function: &str, message: impl Into<String>) -> EvalError {
    EvalError::Argument {
        function: function.to_string(),
        message: message.into(),
    }
}

/// Python's `str()` of an argument, as graphite-web stores it in tags.
pub(crate) fn py_str(v: &Value) -> String {
    match v {
        Value::Int(i) => i.to_string(),
        Value::Float(f) => float_repr(*f),
        Value::Str(s) => s.clone(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::None => "None".into(),
        Value::Series(_) | Value::SeriesLists(_) => "[...]".into(),
    }
}

/// Python's `'%d' % v`.
pub(crate) fn py_d(v: f64) -> String {
    if v.is_finite() {
        format!("{}", v.trunc() as i64)
    } else {
        float_repr(v)
    }
}

/// One call's arguments, bound to the function's declared parameters.
pub(crate) struct Args<'a> {
    pub function: &'a str,
    params: &'static [catalog::Param],
    slots: Vec<Option<Value>>,
    rest: Vec<Value>,
}

/// graphite-web's conversion of one argument for its parameter: `Ok(None)`
/// when it stays as given, `Ok(Some(v))` when converted (only scalars are),
/// `Err(())` when it does not fit.
fn convert(param: &catalog::Param, v: &Value) -> Result<Option<Value>, ()> {
    if *v == Value::None {
        return Ok(None);
    }
    if !param.options.is_empty() {
        let listed = param.options.iter().any(|o| match (v, o) {
            (Value::Str(s), serde_json::Value::String(o)) => s == o,
            (Value::Int(i), serde_json::Value::Number(n)) => n.as_f64() == Some(*i as f64),
            (Value::Float(f), serde_json::Value::Number(n)) => n.as_f64() == Some(*f),
            _ => false,
        });
        if !listed {
            return Err(());
        }
    }
    Ok(match (param.kind.as_str(), v) {
        ("float", Value::Int(i)) => Some(Value::Float(*i as f64)),
        ("float", Value::Bool(b)) => Some(Value::Float(if *b { 1.0 } else { 0.0 })),
        ("float", Value::Str(s)) => Some(Value::Float(s.trim().parse::<f64>().map_err(|_| ())?)),
        ("float", Value::Float(_)) => None,
        ("integer" | "node", Value::Int(_)) => None,
        ("integer" | "node", Value::Bool(b)) => Some(Value::Int(*b as i64)),
        ("integer" | "node", Value::Str(s)) => {
            Some(Value::Int(s.trim().parse::<i64>().map_err(|_| ())?))
        }
        ("intOrInf", Value::Int(_)) => None,
        ("intOrInf", Value::Str(s)) => match s.trim().parse::<i64>() {
            Ok(i) => Some(Value::Int(i)),
            Err(_) if s.trim().parse::<f64>() == Ok(f64::INFINITY) => {
                Some(Value::Float(f64::INFINITY))
            }
            Err(_) => return Err(()),
        },
        ("intOrInf", Value::Float(f)) if *f == f64::INFINITY => None,
        ("boolean", Value::Bool(_)) => None,
        ("boolean", Value::Str(s)) => match s.to_ascii_lowercase().as_str() {
            "true" => Some(Value::Bool(true)),
            "false" => Some(Value::Bool(false)),
            _ => return Err(()),
        },
        ("boolean", Value::Int(i)) if *i == 0 || *i == 1 => Some(Value::Bool(*i == 1)),
        ("boolean", Value::Float(f)) if *f == 0.0 || *f == 1.0 => Some(Value::Bool(*f == 1.0)),
        ("boolean", Value::Series(s)) => Some(Value::Bool(!s.is_empty())),
        ("interval", Value::Str(s)) => {
            crate::time::parse_offset(s).map_err(|_| ())?;
            None
        }
        ("seriesList", Value::Series(_)) => None,
        ("seriesLists", Value::SeriesLists(_)) => None,
        (
            "float" | "integer" | "node" | "intOrInf" | "boolean" | "interval" | "seriesList"
            | "seriesLists",
            _,
        ) => return Err(()),
        _ => None,
    })
}

impl<'a> Args<'a> {
    /// Binds positional and keyword arguments as graphite-web's
    /// `validateParams` does; conversions apply only if every argument is
    /// valid (graphite-web otherwise calls the function with them as given).
    fn bind(function: &'a str, args: Vec<Value>, kwargs: Kwargs) -> Result<Self, EvalError> {
        let params: &'static [catalog::Param] = catalog::PARAMS
            .get(function)
            .map(Vec::as_slice)
            .ok_or_else(|| EvalError::UnknownFunction(function.to_string()))?;
        if args.len() + kwargs.len() > params.len() && !params.last().is_some_and(|p| p.multiple) {
            return Err(arg_err(
                function,
                format!(
                    "too many arguments: it takes at most {} ({})",
                    params.len(),
                    params
                        .iter()
                        .map(|p| p.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        // Arguments as given, by parameter index, and their conversions;
        // series lists are never copied.
        let mut given: Vec<(usize, Value, Option<Value>)> = Vec::new();
        let mut valid = true;
        let positional = args.len();
        let last = params.len().saturating_sub(1);
        for (i, v) in args.into_iter().enumerate() {
            let index = i.min(last);
            let converted = convert(&params[index], &v).unwrap_or_else(|()| {
                valid = false;
                None
            });
            given.push((index, v, converted));
        }
        for (name, v) in kwargs {
            match params
                .iter()
                .position(|p| p.name == name || p.py_name == name)
            {
                Some(i) if i >= positional && !given.iter().any(|(j, _, _)| *j == i) => {
                    let converted = convert(&params[i], &v).unwrap_or_else(|()| {
                        valid = false;
                        None
                    });
                    given.push((i, v, converted));
                }
                Some(_) => {
                    return Err(arg_err(function, format!("argument {name} is given twice")))
                }
                None => {
                    return Err(arg_err(
                        function,
                        format!("unexpected keyword argument {name}"),
                    ))
                }
            }
        }
        // Conversions apply only if every argument fits, as graphite-web
        // otherwise calls the function with them as given.
        let mut slots: Vec<Option<Value>> = vec![None; params.len()];
        let mut rest = Vec::new();
        for (i, v, converted) in given {
            let v = if valid { converted.unwrap_or(v) } else { v };
            if params[i].multiple {
                rest.push(v);
            } else {
                slots[i] = Some(v);
            }
        }
        for (i, p) in params.iter().enumerate() {
            let missing = if p.multiple {
                rest.is_empty()
            } else {
                slots[i].is_none()
            };
            // A missing variadic list is an empty one, as in Python; a
            // "required" argument with a Python default takes the default.
            if p.required && missing && !p.multiple && !p.has_default {
                return Err(arg_err(
                    function,
                    format!("missing required argument {} ({})", p.name, p.kind),
                ));
            }
        }
        Ok(Args {
            function,
            params,
            slots,
            rest,
        })
    }

    /// The parameter by graphite-web's or the Python function's name.
    fn index(&self, name: &str) -> Option<usize> {
        self.params
            .iter()
            .position(|p| p.name == name || p.py_name == name)
    }

    /// The argument, if given and not `None`.
    pub fn get(&self, name: &str) -> Option<&Value> {
        let i = self.index(name)?;
        if self.params[i].multiple {
            return self.rest.first();
        }
        self.slots[i].as_ref().filter(|v| **v != Value::None)
    }

    fn take(&mut self, name: &str) -> Option<Value> {
        let i = self.index(name)?;
        if self.params[i].multiple {
            return (!self.rest.is_empty()).then(|| self.rest.remove(0));
        }
        self.slots[i].take().filter(|v| *v != Value::None)
    }

    fn wrong(&self, name: &str, what: &str, v: &Value) -> EvalError {
        arg_err(
            self.function,
            format!("argument {name} must be {what}, not {}", v.kind()),
        )
    }

    fn missing(&self, name: &str, what: &str) -> EvalError {
        arg_err(self.function, format!("missing argument {name} ({what})"))
    }

    /// A series list argument.
    pub fn series(&mut self, name: &str) -> Result<Vec<Series>, EvalError> {
        match self.take(name) {
            Some(Value::Series(s)) => Ok(s),
            Some(v) => Err(self.wrong(name, "a series list", &v)),
            None => Err(self.missing(name, "a series list")),
        }
    }

    /// An optional series list argument.
    pub fn opt_series(&mut self, name: &str) -> Result<Option<Vec<Series>>, EvalError> {
        match self.take(name) {
            Some(Value::Series(s)) => Ok(Some(s)),
            Some(v) => Err(self.wrong(name, "a series list", &v)),
            None => Ok(None),
        }
    }

    /// Every value of a `multiple` series-list parameter.
    pub fn series_lists(&mut self) -> Result<Vec<Vec<Series>>, EvalError> {
        std::mem::take(&mut self.rest)
            .into_iter()
            .map(|v| match v {
                Value::Series(s) => Ok(s),
                Value::None => Ok(Vec::new()),
                other => Err(arg_err(
                    self.function,
                    format!("every argument must be a series list, not {}", other.kind()),
                )),
            })
            .collect()
    }

    /// Every value of the `multiple` parameter, as given.
    pub fn rest(&mut self) -> Vec<Value> {
        std::mem::take(&mut self.rest)
    }

    /// A number argument (ints and floats alike).
    pub fn float(&mut self, name: &str) -> Result<f64, EvalError> {
        self.opt_float(name)?
            .ok_or_else(|| self.missing(name, "a number"))
    }

    /// An optional number argument.
    pub fn opt_float(&mut self, name: &str) -> Result<Option<f64>, EvalError> {
        match self.get(name).cloned() {
            None => Ok(None),
            Some(Value::Int(i)) => Ok(Some(i as f64)),
            Some(Value::Float(f)) => Ok(Some(f)),
            Some(Value::Bool(b)) => Ok(Some(if b { 1.0 } else { 0.0 })),
            Some(v) => Err(self.wrong(name, "a number", &v)),
        }
    }

    /// A number argument with a default.
    pub fn float_or(&mut self, name: &str, default: f64) -> Result<f64, EvalError> {
        Ok(self.opt_float(name)?.unwrap_or(default))
    }

    /// An integer argument (a float is truncated, as Python's `int()`).
    pub fn int(&mut self, name: &str) -> Result<i64, EvalError> {
        self.opt_int(name)?
            .ok_or_else(|| self.missing(name, "an integer"))
    }

    /// An optional integer argument.
    pub fn opt_int(&mut self, name: &str) -> Result<Option<i64>, EvalError> {
        match self.get(name).cloned() {
            None => Ok(None),
            Some(Value::Int(i)) => Ok(Some(i)),
            Some(Value::Float(f)) if f.is_finite() => Ok(Some(f.trunc() as i64)),
            Some(Value::Bool(b)) => Ok(Some(b as i64)),
            Some(v) => Err(self.wrong(name, "an integer", &v)),
        }
    }

    /// An integer argument with a default.
    pub fn int_or(&mut self, name: &str, default: i64) -> Result<i64, EvalError> {
        Ok(self.opt_int(name)?.unwrap_or(default))
    }

    /// A string argument.
    pub fn string(&mut self, name: &str) -> Result<String, EvalError> {
        self.opt_string(name)?
            .ok_or_else(|| self.missing(name, "a string"))
    }

    /// An optional string argument.
    pub fn opt_string(&mut self, name: &str) -> Result<Option<String>, EvalError> {
        match self.get(name).cloned() {
            None => Ok(None),
            Some(Value::Str(s)) => Ok(Some(s)),
            Some(v) => Err(self.wrong(name, "a string", &v)),
        }
    }

    /// A string argument with a default.
    pub fn string_or(&mut self, name: &str, default: &str) -> Result<String, EvalError> {
        Ok(self
            .opt_string(name)?
            .unwrap_or_else(|| default.to_string()))
    }

    /// A flag, read with Python's truthiness.
    pub fn bool_or(&mut self, name: &str, default: bool) -> bool {
        match self.get(name) {
            None => default,
            Some(Value::Bool(b)) => *b,
            Some(Value::Int(i)) => *i != 0,
            Some(Value::Float(f)) => *f != 0.0,
            Some(Value::Str(s)) => !s.is_empty(),
            Some(Value::Series(s)) => !s.is_empty(),
            Some(Value::SeriesLists(s)) => !s.is_empty(),
            Some(Value::None) => false,
        }
    }

    /// The argument as given (for tags that print it).
    pub fn raw(&self, name: &str) -> Option<Value> {
        self.get(name).cloned()
    }
}

/// Calls a function by name with evaluated arguments. `raw` is the call as
/// written, for functions that evaluate their first argument again over
/// other times.
pub fn call(
    ctx: &Context<'_>,
    raw: Option<&Call>,
    name: &str,
    args: Vec<Value>,
    kwargs: Kwargs,
) -> Result<Value, EvalError> {
    if UNIMPLEMENTED.contains(&name) {
        return Err(arg_err(
            name,
            "not implemented in graunt (see the README's list)",
        ));
    }
    let mut a = Args::bind(name, args, kwargs)?;
    let a = &mut a;
    if name == "map" || name == "mapSeries" {
        return Ok(Value::SeriesLists(group::map_series(a)?));
    }
    let out = combine::call(ctx, raw, name, a)
        .or_else(|| group::call(ctx, name, a))
        .or_else(|| transform::call(ctx, name, a))
        .or_else(|| filter::call(ctx, name, a))
        .or_else(|| alias::call(ctx, name, a))
        .or_else(|| window::call(ctx, raw, name, a))
        .or_else(|| shift::call(ctx, raw, name, a))
        .or_else(|| graph::call(ctx, name, a))
        .unwrap_or_else(|| Err(EvalError::UnknownFunction(name.to_string())))?;
    Ok(Value::Series(out))
}

/// Evaluates the call's first argument again over `[from, until]`, as
/// graphite-web's `evaluateTarget(newContext, requestContext['args'][0])`.
pub(crate) fn refetch(
    ctx: &Context<'_>,
    raw: Option<&Call>,
    function: &str,
    from: i64,
    until: i64,
) -> Out {
    let Some(first) = raw.and_then(|c| c.args.first()) else {
        return Err(arg_err(
            function,
            "needs its series as the first positional argument",
        ));
    };
    match crate::eval::evaluate(&ctx.with_range(from, until), first)? {
        Value::Series(s) => Ok(s),
        other => Err(arg_err(
            function,
            format!(
                "the first argument must be a series list, not {}",
                other.kind()
            ),
        )),
    }
}

/// Parses an interval such as `1h` or `-5min` into seconds, as graphite's
/// `parseTimeOffset` (months are 30 days, years 365).
pub(crate) fn offset_seconds(function: &str, s: &str) -> Result<i64, EvalError> {
    crate::time::parse_offset(s)
        .map(|d| d.as_secs())
        .map_err(|e| arg_err(function, e))
}

/// Python's `sorted()` key comparison for floats (NaN compares as equal).
pub(crate) fn cmp_f64(a: f64, b: f64) -> std::cmp::Ordering {
    a.partial_cmp(&b).unwrap_or(std::cmp::Ordering::Equal)
}

/// Python's `list[:n]`: a negative `n` keeps all but the last `|n|`.
pub(crate) fn py_truncate<T>(list: &mut Vec<T>, n: i64) {
    let keep = if n >= 0 {
        n as usize
    } else {
        list.len().saturating_sub(n.unsigned_abs() as usize)
    };
    list.truncate(keep);
}

/// An integer argument given as an int or an integral float (Python's
/// `1 == 1.0`).
pub(crate) fn as_index(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        Value::Float(f) if f.fract() == 0.0 && f.is_finite() => Some(*f as i64),
        _ => None,
    }
}

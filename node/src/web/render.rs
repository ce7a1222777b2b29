//! `/render`: targets evaluated over the requested range, answered in
//! graphite-web's formats: JSON (`[{"target", "tags", "datapoints"}]`, with
//! `maxDataPoints`, `noNullPoints`, `pretty` and `jsonp` as graphite-web
//! applies them), csv, raw, pickle (what graphite-web cluster peers read),
//! dygraph and rickshaw. Bad targets, times and parameters are a 400 naming
//! the problem; a request past a bound is a 413.

use axum::extract::{Extension, Form, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use graunt_query::eval::{evaluate_target, Context, EvalError};
use graunt_query::pyfmt::float_repr;
use graunt_query::series::Series;
use graunt_query::time;
use jiff::Timestamp;

use super::auth::Identity;
use super::params::{param, Params};
use super::Api;
use graunt_query::eval::Source;

fn bad_request(message: impl Into<String>) -> Response {
    (StatusCode::BAD_REQUEST, message.into()).into_response()
}

/// GET `/render?target=…`.
pub async fn render(
    State(api): State<Api>,
    Extension(who): Extension<Identity>,
    Query(params): Query<Params>,
) -> Response {
    respond(api, who, params).await
}

/// POST `/render` with a form body (Grafana's way), query string merged in.
pub async fn render_post(
    State(api): State<Api>,
    Extension(who): Extension<Identity>,
    Query(mut params): Query<Params>,
    Form(body): Form<Params>,
) -> Response {
    params.extend(body);
    respond(api, who, params).await
}

async fn respond(api: Api, who: Identity, params: Params) -> Response {
    let local = super::find::is_local(&params);
    let Some(slot) = api.renders.enter().await else {
        return (StatusCode::SERVICE_UNAVAILABLE, "the node is stopping").into_response();
    };
    match tokio::task::spawn_blocking(move || {
        let _slot = slot;
        let source = api.open(local, &who);
        // Events are the estate's: a tenant's `events()` counts none.
        let events = match who.namespaces {
            Some(_) => Default::default(),
            None => api.events.current(),
        };
        let mut response = answer(&api, &*source, &params, events);
        let partial = source.partial();
        if !partial.is_empty() {
            let text: Vec<String> = partial
                .iter()
                .map(|(peer, why)| format!("{peer}: {why}"))
                .collect();
            if let Ok(v) = axum::http::HeaderValue::from_str(&text.join("; ")) {
                response.headers_mut().insert("x-graunt-partial", v);
            }
        }
        response
    })
    .await
    {
        Ok(response) => response,
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("render failed: {e}"),
        )
            .into_response(),
    }
}

/// The request's `tz`; an unknown zone falls back to UTC, as graphite-web
/// falls back to its `TIME_ZONE`.
fn request_tz(params: &Params) -> jiff::tz::TimeZone {
    param(params, "tz")
        .and_then(|name| time::time_zone(name).ok())
        .unwrap_or(jiff::tz::TimeZone::UTC)
}

/// The time range of a request, as graphite-web reads `from`, `until`, `now`, `tz`.
fn range(params: &Params) -> Result<(i64, i64, i64), String> {
    let tz = request_tz(params);
    let clock = Timestamp::now();
    let now = match param(params, "now") {
        Some(s) => time::parse(s, &tz, clock).map_err(|e| format!("now: {e}"))?,
        None => clock,
    };
    let until = time::parse(param(params, "until").unwrap_or("now"), &tz, now)
        .map_err(|e| format!("until: {e}"))?;
    let from = time::parse(param(params, "from").unwrap_or("-1d"), &tz, now)
        .map_err(|e| format!("from: {e}"))?;
    let (from, until) = (from.as_second(), until.as_second());
    if from >= until {
        return Err(format!("from ({from}) must be before until ({until})"));
    }
    Ok((from, until, now.as_second()))
}

fn answer(
    api: &Api,
    source: &dyn Source,
    params: &Params,
    events: std::sync::Arc<graunt_storage::events::Events>,
) -> Response {
    // graphite-web: `rawData` means raw, an explicit `format` wins.
    let format = match (param(params, "format"), param(params, "rawData")) {
        (Some(f), _) => f,
        (None, Some(_)) => "raw",
        (None, None) => "png",
    };
    // `pickle` as a bare parameter asks for pickle, unless `format` says otherwise.
    let format = match (
        param(params, "format"),
        params.iter().any(|(k, _)| k == "pickle"),
    ) {
        (None, true) => "pickle",
        _ => format,
    };
    if !matches!(
        format,
        "json" | "csv" | "raw" | "pickle" | "dygraph" | "rickshaw" | "png" | "svg"
    ) {
        return bad_request(format!(
            "format={format} is not supported; use format=png, svg, json, csv, raw, pickle, dygraph or rickshaw"
        ));
    }
    let graph_options = if matches!(format, "png" | "svg") {
        match super::graph::GraphOptions::parse(params, request_tz(params)) {
            Ok(o) => Some(o),
            Err(e) => return bad_request(e),
        }
    } else {
        None
    };
    let (from, until, now) = match range(params) {
        Ok(r) => r,
        Err(e) => return bad_request(e),
    };
    let tz = request_tz(params);
    // graphite-web takes maxDataPoints only when it is all digits.
    let max_points = match param(params, "maxDataPoints")
        .filter(|m| !m.is_empty() && m.bytes().all(|b| b.is_ascii_digit()))
        .map(str::parse::<usize>)
    {
        None => None,
        Some(Ok(n)) if n >= 1 => Some(n),
        Some(_) => return bad_request("maxDataPoints must be a positive number"),
    };
    let x_files_factor = match param(params, "xFilesFactor").map(str::parse::<f64>) {
        None => 0.0,
        Some(Ok(x)) if x.is_finite() => x,
        Some(_) => return bad_request("xFilesFactor must be a number"),
    };
    let mut ctx = Context::new(source, from, until, now);
    ctx.events = events;
    ctx.tz = tz.clone();
    ctx.max_series = api.limits.max_series;
    ctx.max_points = api.limits.max_points;
    ctx.max_depth = api.limits.max_depth;
    ctx.x_files_factor = x_files_factor;
    ctx.templates = params
        .iter()
        .filter_map(|(k, v)| {
            let name = k.strip_prefix("template[")?.strip_suffix(']')?;
            Some((name.to_string(), v.clone()))
        })
        .collect();
    let mut series = Vec::new();
    for (_, target) in params
        .iter()
        .filter(|(k, _)| k == "target" || k == "target[]")
    {
        if target.trim().is_empty() {
            continue;
        }
        match evaluate_target(&ctx, target) {
            Ok(s) => series.extend(s),
            Err(e @ (EvalError::TooManySeries(_) | EvalError::TooManyPoints(_))) => {
                return (StatusCode::PAYLOAD_TOO_LARGE, format!("{target:?}: {e}")).into_response()
            }
            Err(e) => return bad_request(format!("Invalid target {target:?}: {e}")),
        }
    }
    let pretty = param(params, "pretty").is_some_and(|p| !p.is_empty());
    let body = match format {
        "csv" => return ([(header::CONTENT_TYPE, "text/csv")], csv(&series, &tz)).into_response(),
        "raw" => return ([(header::CONTENT_TYPE, "text/plain")], raw(&series)).into_response(),
        "pickle" => {
            return (
                [(header::CONTENT_TYPE, "application/pickle")],
                pickle(&series),
            )
                .into_response()
        }
        "png" | "svg" => {
            let options = graph_options.expect("parsed above for images");
            return if format == "png" {
                match super::graph::png(&series, &options) {
                    Ok(bytes) => ([(header::CONTENT_TYPE, "image/png")], bytes).into_response(),
                    Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
                }
            } else {
                match super::graph::svg(&series, &options) {
                    Ok(text) => ([(header::CONTENT_TYPE, "image/svg+xml")], text).into_response(),
                    Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
                }
            };
        }
        "dygraph" => dygraph(&series),
        "rickshaw" => rickshaw(&series, pretty),
        _ => json(
            &mut series,
            max_points,
            param(params, "noNullPoints").is_some(),
            pretty,
        ),
    };
    match param(params, "jsonp") {
        Some(callback) => (
            [(header::CONTENT_TYPE, "text/javascript")],
            format!("{callback}({body})"),
        )
            .into_response(),
        None => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
    }
}

/// Python's `repr` of a value as graphite-web's raw format prints it.
fn py_value(v: Option<f64>) -> String {
    v.map_or_else(|| "None".to_string(), float_repr)
}

/// graphite-web's `renderViewRaw`: `name,start,end,step|v1,v2,…` per series.
fn raw(series: &[Series]) -> String {
    let mut out = String::new();
    for s in series {
        let values: Vec<String> = s.points().into_iter().map(py_value).collect();
        out.push_str(&format!(
            "{},{},{},{}|{}\n",
            s.name,
            s.start,
            s.end,
            s.step,
            values.join(",")
        ));
    }
    out
}

/// A CSV field as Python's `csv` module (excel dialect) writes it.
fn csv_field(field: &str) -> String {
    if field.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_string()
    }
}

/// graphite-web's `renderViewCsv`: one `name,YYYY-mm-dd HH:MM:SS,value` row
/// per value, times in the request's zone (stepping by the raw step, as it does).
fn csv(series: &[Series], tz: &jiff::tz::TimeZone) -> String {
    let mut out = String::new();
    for s in series {
        for (i, v) in s.points().into_iter().enumerate() {
            let ts = s.start + i as i64 * s.step;
            let when = Timestamp::from_second(ts)
                .map(|t| {
                    t.to_zoned(tz.clone())
                        .strftime("%Y-%m-%d %H:%M:%S")
                        .to_string()
                })
                .unwrap_or_default();
            let value = v.map(float_repr).unwrap_or_default();
            out.push_str(&format!("{},{},{}\r\n", csv_field(&s.name), when, value));
        }
    }
    out
}

/// graphite-web's `renderViewPickle`: each series' `getInfo()`, pickled.
fn pickle(series: &[Series]) -> Vec<u8> {
    use serde_pickle::{HashableValue as K, Value as V};
    let infos: Vec<V> = series
        .iter()
        .map(|s| {
            let values = s
                .points()
                .into_iter()
                .map(|v| v.map_or(V::None, V::F64))
                .collect();
            let consolidation = match s.consolidation {
                graunt_query::series::Consolidation::Average => "average",
                graunt_query::series::Consolidation::AvgZero => "avg_zero",
                graunt_query::series::Consolidation::Sum => "sum",
                graunt_query::series::Consolidation::Max => "max",
                graunt_query::series::Consolidation::Min => "min",
                graunt_query::series::Consolidation::First => "first",
                graunt_query::series::Consolidation::Last => "last",
            };
            let entries = [
                ("name", V::String(s.name.clone())),
                ("start", V::I64(s.start)),
                ("end", V::I64(s.end)),
                ("step", V::I64(s.step)),
                ("values", V::List(values)),
                ("pathExpression", V::String(s.path_expression.clone())),
                ("valuesPerPoint", V::I64(s.values_per_point as i64)),
                ("consolidationFunc", V::String(consolidation.into())),
                ("xFilesFactor", V::F64(s.x_files_factor)),
            ];
            V::Dict(
                entries
                    .into_iter()
                    .map(|(k, v)| (K::String(k.into()), v))
                    .collect(),
            )
        })
        .collect();
    serde_pickle::value_to_vec(&V::List(infos), serde_pickle::SerOptions::new()).unwrap_or_default()
}

/// A value as graphite-web's dygraph format writes it.
fn dygraph_value(v: Option<f64>) -> String {
    match v {
        None => "null".into(),
        Some(v) if v.is_nan() => "null".into(),
        Some(v) if v == f64::INFINITY => "Infinity".into(),
        Some(v) if v == f64::NEG_INFINITY => "-Infinity".into(),
        Some(v) => float_repr(v),
    }
}

/// graphite-web's `renderViewDygraph`: `{"labels" : [...], "data" : [[t000, v, …], …]}`,
/// rows from the first series' times.
fn dygraph(series: &[Series]) -> String {
    let Some(first) = series.first() else {
        return "{}".into();
    };
    let mut rows: Vec<Vec<String>> = (first.start..first.end)
        .step_by(first.step.max(1) as usize)
        .map(|t| vec![format!("{t}000")])
        .collect();
    let mut labels = vec![serde_json::Value::from("Time")];
    for s in series {
        labels.push(serde_json::Value::from(s.name.clone()));
        for (i, v) in s.points().into_iter().enumerate() {
            if let Some(row) = rows.get_mut(i) {
                row.push(dygraph_value(v));
            }
        }
    }
    let mut label_text = String::new();
    super::pyjson::write_py_json(&mut label_text, &serde_json::Value::Array(labels), false, 0);
    let lines: Vec<String> = rows.iter().map(|r| format!("[{}]", r.join(", "))).collect();
    format!(
        "{{\"labels\" : {label_text}, \"data\" : [{}]}}",
        lines.join(", ")
    )
}

/// graphite-web's `renderViewRickshaw`: `[{"target", "datapoints": [{"x", "y"}]}]`.
fn rickshaw(series: &[Series], pretty: bool) -> String {
    use serde_json::{json, Value};
    let out: Vec<Value> = series
        .iter()
        .map(|s| {
            let points: Vec<Value> = (s.start..s.end)
                .step_by(s.step.max(1) as usize)
                .zip(s.points())
                .map(|(x, y)| {
                    let mut m = serde_json::Map::new();
                    m.insert("x".into(), Value::from(x));
                    m.insert("y".into(), y.map_or(Value::Null, super::pyjson::float));
                    Value::Object(m)
                })
                .collect();
            json!({"target": s.name, "datapoints": points})
        })
        .collect();
    let mut text = String::new();
    if pretty {
        super::pyjson::write_indented(&mut text, &Value::Array(out));
    } else {
        super::pyjson::write_py_json(&mut text, &Value::Array(out), false, 0);
    }
    text
}

/// graphite-web's `renderViewJson`.
fn json(series: &mut [Series], max_points: Option<usize>, no_nulls: bool, pretty: bool) -> String {
    if series.iter().all(|s| s.values.is_empty()) {
        return "[]".into();
    }
    let start = series.iter().map(|s| s.start).min().unwrap_or(0);
    let end = series.iter().map(|s| s.end).max().unwrap_or(0);
    let time_range = (end - start) as f64;
    let mut out = Vec::new();
    let mut pretty_items = Vec::new();
    for s in series.iter_mut() {
        if let Some(max) = max_points {
            if max == 1 {
                s.values_per_point = s.values.len().max(1);
            } else {
                let points = time_range / s.step as f64;
                if (max as f64) < points {
                    let per_point = (points / max as f64).ceil() as i64;
                    let seconds = per_point * s.step;
                    // graphite-web nudges the start so buckets stay put between refreshes.
                    let nudge = seconds + s.start.rem_euclid(s.step) - s.start.rem_euclid(seconds);
                    s.start += nudge;
                    let lose = (nudge / s.step) as usize;
                    if lose > 1 {
                        s.values.drain(..(lose - 1).min(s.values.len()));
                    }
                    s.values_per_point = per_point as usize;
                }
            }
        }
        if pretty {
            let datapoints: Vec<serde_json::Value> = s
                .datapoints()
                .into_iter()
                .filter(|(v, _)| !no_nulls || v.is_some_and(|v| !v.is_nan()))
                .map(|(v, t)| {
                    serde_json::Value::Array(vec![
                        v.map_or(serde_json::Value::Null, super::pyjson::float),
                        t.into(),
                    ])
                })
                .collect();
            if no_nulls && datapoints.is_empty() {
                continue;
            }
            let mut m = serde_json::Map::new();
            m.insert("target".into(), s.name.clone().into());
            m.insert("tags".into(), serde_json::Value::Object(s.tags.clone()));
            m.insert("datapoints".into(), serde_json::Value::Array(datapoints));
            pretty_items.push(serde_json::Value::Object(m));
            continue;
        }
        let points: Vec<String> = s
            .datapoints()
            .into_iter()
            .filter(|(v, _)| !no_nulls || v.is_some_and(|v| !v.is_nan()))
            .map(|(v, t)| {
                let v = match v {
                    None => "null".to_string(),
                    Some(v) if v.is_nan() => "null".to_string(),
                    Some(v) if v.is_infinite() => {
                        if v > 0.0 { "1e9999" } else { "-1e9999" }.to_string()
                    }
                    Some(v) => float_repr(v),
                };
                format!("[{v}, {t}]")
            })
            .collect();
        if no_nulls && points.is_empty() {
            continue;
        }
        // As Python's json.dumps writes them: ", "/": " separators, ASCII only.
        let mut tags = String::new();
        super::pyjson::write_py_json(
            &mut tags,
            &serde_json::Value::Object(s.tags.clone()),
            false,
            0,
        );
        let mut target = String::new();
        super::pyjson::write_py_json(
            &mut target,
            &serde_json::Value::from(s.name.clone()),
            false,
            0,
        );
        out.push(format!(
            "{{\"target\": {target}, \"tags\": {tags}, \"datapoints\": [{}]}}",
            points.join(", ")
        ));
    }
    if pretty {
        // graphite-web's json.dumps(indent=2): keys in their order, not sorted.
        let mut text = String::new();
        super::pyjson::write_indented(&mut text, &serde_json::Value::Array(pretty_items));
        return text;
    }
    format!("[{}]", out.join(", "))
}

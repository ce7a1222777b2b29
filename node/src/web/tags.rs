//! graphite-web 1.1.10's tag API over the node's (or the cluster's) tag
//! index, with its parameter names, answers and errors: `/tags` and
//! `/tags/<tag>` (`filter`, `limit`), `/tags/findSeries` (`expr`, repeated),
//! `/tags/tagSeries`, `/tags/tagMultiSeries`, `/tags/delSeries` (`path`),
//! `/tags/autoComplete/tags` (`expr`, `tagPrefix`, `limit`) and
//! `/tags/autoComplete/values` (`tag`, `expr`, `valuePrefix`, `limit`); GET
//! and, where graphite-web takes it, POST with a form (what Grafana sends).

use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use graunt_storage::tagindex::{TagAnswer, TagQuery};
use serde_json::{json, Map, Value};

use super::auth::Identity;
use super::params::{param, Params};
use super::Api;

/// graphite-web's `TAGDB_AUTOCOMPLETE_LIMIT`.
const AUTOCOMPLETE_LIMIT: i64 = 100;

fn answer(value: &Value, params: &Params) -> Response {
    answer_partial(value, params, &[])
}

/// An answer; one missing some members' part names them in
/// `X-Graunt-Partial`, as `/render` does.
fn answer_partial(value: &Value, params: &Params, partial: &[(String, String)]) -> Response {
    let pretty = param(params, "pretty").is_some_and(|p| !p.is_empty());
    let mut out = String::new();
    super::pyjson::write_py_json(&mut out, value, pretty, 0);
    let mut response = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        out,
    )
        .into_response();
    if !partial.is_empty() {
        let text: Vec<String> = partial
            .iter()
            .map(|(p, why)| format!("{p}: {why}"))
            .collect();
        if let Ok(v) = axum::http::HeaderValue::from_str(&text.join("; ")) {
            response.headers_mut().insert("x-graunt-partial", v);
        }
    }
    response
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let mut out = String::new();
    super::pyjson::write_py_json_text(&mut out, &json!({ "error": message.into() }));
    (status, [(header::CONTENT_TYPE, "application/json")], out).into_response()
}

fn not_allowed() -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        "",
    )
        .into_response()
}

/// Every value of `key` (or, when there is none, of `key[]`).
fn all(params: &Params, key: &str) -> Vec<String> {
    let pick = |k: &str| -> Vec<String> {
        params
            .iter()
            .filter(|(p, _)| p == k)
            .map(|(_, v)| v.clone())
            .collect()
    };
    let plain = pick(key);
    if plain.is_empty() {
        pick(&format!("{key}[]"))
    } else {
        plain
    }
}

/// Python's `int(limit)`, with its error.
fn int(text: &str) -> Result<i64, Box<Response>> {
    text.trim().parse::<i64>().map_err(|_| {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            format!("invalid literal for int() with base 10: '{text}'"),
        ))
    })
}

/// `[:limit]` as Python slices.
fn slice<T>(mut list: Vec<T>, limit: Option<i64>) -> Vec<T> {
    match limit {
        None => list,
        Some(n) if n >= 0 => {
            list.truncate(n as usize);
            list
        }
        Some(n) => {
            let keep = list.len().saturating_sub(n.unsigned_abs() as usize);
            list.truncate(keep);
            list
        }
    }
}

/// Peers left out of an answer, as `/render` names them.
type Partial = Vec<(String, String)>;

/// Runs a question over the request's source on a blocking thread; the
/// peers left out come back beside the answer.
async fn ask(
    api: &Api,
    who: &Identity,
    params: &Params,
    q: TagQuery,
) -> Result<(TagAnswer, Partial), Box<Response>> {
    let local = super::find::is_local(params);
    let (api, who) = (api.clone(), who.clone());
    let run = move || {
        let source = api.open(local, &who);
        source.tags(&q).map(|a| (a, source.partial()))
    };
    match tokio::task::spawn_blocking(run).await {
        Ok(Ok(a)) => Ok(a),
        Ok(Err(e)) => Err(Box::new(error(StatusCode::BAD_REQUEST, e.to_string()))),
        Err(e) => Err(Box::new(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            e.to_string(),
        ))),
    }
}

/// The request's parameters: the query string, then a POSTed form (the
/// body's value wins where one is read).
fn merged(method: &Method, headers: &HeaderMap, mut params: Params, body: &[u8]) -> Params {
    if method == Method::POST {
        let ct = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        params.extend(super::form::fields(ct, body));
    }
    params
}

/// `/tags` and `/tags/`: `[{"id", "tag"}, …]`.
pub async fn list(
    method: Method,
    State(api): State<Api>,
    Extension(who): Extension<Identity>,
    Query(params): Query<Params>,
) -> Response {
    if method != Method::GET {
        return not_allowed();
    }
    let limit = match param(&params, "limit").filter(|l| !l.is_empty()).map(int) {
        Some(Err(e)) => return *e,
        Some(Ok(n)) => Some(n),
        None => None,
    };
    let q = TagQuery::Tags {
        filter: param(&params, "filter")
            .filter(|f| !f.is_empty())
            .map(String::from),
    };
    let (tags, partial) = match ask(&api, &who, &params, q).await {
        Ok((TagAnswer::Tags(t), p)) => (t, p),
        Ok((_, p)) => (Vec::new(), p),
        Err(e) => return *e,
    };
    // SQL's LIMIT: a negative one is none.
    let tags = slice(tags, limit.filter(|&n| n >= 0));
    let list: Vec<Value> = tags
        .into_iter()
        .map(|(tag, id)| json!({ "id": id, "tag": tag }))
        .collect();
    answer_partial(&Value::Array(list), &params, &partial)
}

/// `/tags/<tag>`: `{"id", "tag", "values": [{"id", "value", "count"}]}`,
/// or `null` for a tag never seen.
pub async fn details(
    method: Method,
    State(api): State<Api>,
    Extension(who): Extension<Identity>,
    Path(tag): Path<String>,
    Query(params): Query<Params>,
) -> Response {
    if method != Method::GET {
        return not_allowed();
    }
    let limit = match param(&params, "limit").filter(|l| !l.is_empty()).map(int) {
        Some(Err(e)) => return *e,
        Some(Ok(n)) => Some(n),
        None => None,
    };
    let q = TagQuery::TagValues {
        tag: tag.clone(),
        filter: param(&params, "filter")
            .filter(|f| !f.is_empty())
            .map(String::from),
    };
    let (values, partial) = match ask(&api, &who, &params, q).await {
        Ok((TagAnswer::Values(v), p)) => (v, p),
        Ok((_, p)) => (None, p),
        Err(e) => return *e,
    };
    let Some((id, values)) = values else {
        return answer_partial(&Value::Null, &params, &partial);
    };
    let values: Vec<Value> = slice(values, limit.filter(|&n| n >= 0))
        .into_iter()
        .map(|(value, id, series)| json!({ "id": id, "value": value, "count": series.len() }))
        .collect();
    let mut m = Map::new();
    m.insert("id".into(), id.into());
    m.insert("tag".into(), tag.into());
    m.insert("values".into(), Value::Array(values));
    answer_partial(&Value::Object(m), &params, &partial)
}

/// `/tags/findSeries`: the series the `expr`s select, sorted.
pub async fn find_series(
    State(api): State<Api>,
    Extension(who): Extension<Identity>,
    method: Method,
    headers: HeaderMap,
    Query(params): Query<Params>,
    body: Bytes,
) -> Response {
    let params = merged(&method, &headers, params, &body);
    let exprs = all(&params, "expr");
    if exprs.is_empty() {
        return error(StatusCode::BAD_REQUEST, "no tag expressions specified");
    }
    match ask(&api, &who, &params, TagQuery::FindSeries { exprs }).await {
        Ok((TagAnswer::Series(s), p)) => answer_partial(&json!(s), &params, &p),
        Ok((_, p)) => answer_partial(&json!([]), &params, &p),
        Err(e) => *e,
    }
}

/// `/tags/autoComplete/tags`.
pub async fn autocomplete_tags(
    State(api): State<Api>,
    Extension(who): Extension<Identity>,
    method: Method,
    headers: HeaderMap,
    Query(params): Query<Params>,
    body: Bytes,
) -> Response {
    let params = merged(&method, &headers, params, &body);
    let limit = match param(&params, "limit").map(int).transpose() {
        Ok(l) => l,
        Err(e) => return *e,
    };
    let q = TagQuery::AutoTags {
        exprs: all(&params, "expr"),
        prefix: param(&params, "tagPrefix").unwrap_or("").to_string(),
        limit: limit.unwrap_or(AUTOCOMPLETE_LIMIT).max(0) as usize,
    };
    names(&api, &who, &params, q, limit).await
}

/// `/tags/autoComplete/values`.
pub async fn autocomplete_values(
    State(api): State<Api>,
    Extension(who): Extension<Identity>,
    method: Method,
    headers: HeaderMap,
    Query(params): Query<Params>,
    body: Bytes,
) -> Response {
    let params = merged(&method, &headers, params, &body);
    let Some(tag) = param(&params, "tag").filter(|t| !t.is_empty()) else {
        return error(StatusCode::BAD_REQUEST, "no tag specified");
    };
    let limit = match param(&params, "limit").map(int).transpose() {
        Ok(l) => l,
        Err(e) => return *e,
    };
    let q = TagQuery::AutoValues {
        tag: tag.to_string(),
        exprs: all(&params, "expr"),
        prefix: param(&params, "valuePrefix").unwrap_or("").to_string(),
        limit: limit.unwrap_or(AUTOCOMPLETE_LIMIT).max(0) as usize,
    };
    names(&api, &who, &params, q, limit).await
}

async fn names(
    api: &Api,
    who: &Identity,
    params: &Params,
    q: TagQuery,
    limit: Option<i64>,
) -> Response {
    match ask(api, who, params, q).await {
        Ok((TagAnswer::Names(n), p)) => answer_partial(&json!(slice(n, limit)), params, &p),
        Ok((_, p)) => answer_partial(&json!([]), params, &p),
        Err(e) => *e,
    }
}

/// What the write endpoints share: a tenant's login is refused (the index
/// spans every tenant), the parameters read, and the `path`s (repeated, or
/// `path[]`), refused with `none` when there are none.
fn posted_paths(
    who: &Identity,
    method: &Method,
    headers: &HeaderMap,
    params: Params,
    body: &[u8],
    none: &str,
) -> Result<(Params, Vec<String>), Box<Response>> {
    if who.namespaces.is_some() {
        return Err(Box::new(error(
            StatusCode::FORBIDDEN,
            "a tenant's login cannot change the tag index",
        )));
    }
    let params = merged(method, headers, params, body);
    let paths: Vec<String> = all(&params, "path")
        .into_iter()
        .filter(|p| !p.is_empty())
        .collect();
    if paths.is_empty() {
        return Err(Box::new(error(StatusCode::BAD_REQUEST, none)));
    }
    Ok((params, paths))
}

/// `POST /tags/tagSeries` (`path`): indexes it, answers its normalised name.
pub async fn tag_series(
    State(api): State<Api>,
    Extension(who): Extension<Identity>,
    method: Method,
    headers: HeaderMap,
    Query(params): Query<Params>,
    body: Bytes,
) -> Response {
    let (params, paths) =
        match posted_paths(&who, &method, &headers, params, &body, "no path specified") {
            Ok(p) => p,
            Err(e) => return *e,
        };
    // graphite-web reads one `path`, the last given.
    let path = paths.last().map_or("", String::as_str);
    match api.sources.store().tags.tag_series(path) {
        Ok(normal) => answer(&json!(normal), &params),
        Err(e) => error(StatusCode::BAD_REQUEST, e.to_string()),
    }
}

/// `POST /tags/tagMultiSeries` (`path`, repeated): as carbon registers its
/// series; answers the normalised names in order.
pub async fn tag_multi_series(
    State(api): State<Api>,
    Extension(who): Extension<Identity>,
    method: Method,
    headers: HeaderMap,
    Query(params): Query<Params>,
    body: Bytes,
) -> Response {
    let (params, paths) =
        match posted_paths(&who, &method, &headers, params, &body, "no paths specified") {
            Ok(p) => p,
            Err(e) => return *e,
        };
    // Every good name is indexed even when one is bad (carbon does not
    // retry a batch); the first bad one is named.
    let index = &api.sources.store().tags;
    let mut out = Vec::with_capacity(paths.len());
    let mut refused = None;
    for p in &paths {
        match index.tag_series(p) {
            Ok(n) => out.push(n),
            Err(e) => {
                refused.get_or_insert(e);
            }
        }
    }
    match refused {
        Some(e) => error(StatusCode::BAD_REQUEST, e.to_string()),
        None => answer(&json!(out), &params),
    }
}

/// `POST /tags/delSeries` (`path`, repeated): forgets the series (their
/// files stay), on every member of a cluster; answers `true`.
pub async fn del_series(
    State(api): State<Api>,
    Extension(who): Extension<Identity>,
    method: Method,
    headers: HeaderMap,
    Query(params): Query<Params>,
    body: Bytes,
) -> Response {
    let (params, paths) =
        match posted_paths(&who, &method, &headers, params, &body, "no path specified") {
            Ok(p) => p,
            Err(e) => return *e,
        };
    match ask(&api, &who, &params, TagQuery::DelSeries { paths }).await {
        Ok((_, p)) => answer_partial(&json!(true), &params, &p),
        Err(e) => *e,
    }
}

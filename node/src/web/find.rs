//! `/metrics/find`: the metric tree, as graphite-web answers it in its
//! `treejson` (default), `completer`, `json` and `nodelist` formats.

use axum::extract::{Extension, Form, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::auth::Identity;
use super::params::{param, Params};
use super::Api;

/// GET `/metrics/find?query=…`.
pub async fn find(
    State(api): State<Api>,
    Extension(who): Extension<Identity>,
    Query(params): Query<Params>,
) -> Response {
    answer(api, who, params).await
}

/// POST `/metrics/find` with a form body.
pub async fn find_post(
    State(api): State<Api>,
    Extension(who): Extension<Identity>,
    Query(mut params): Query<Params>,
    Form(body): Form<Params>,
) -> Response {
    params.extend(body);
    answer(api, who, params).await
}

async fn answer(api: Api, who: Identity, params: Params) -> Response {
    let Some(query) = param(&params, "query").map(str::to_string) else {
        return (
            StatusCode::BAD_REQUEST,
            "Missing required parameter 'query'",
        )
            .into_response();
    };
    if query.is_empty() {
        return (
            StatusCode::BAD_REQUEST,
            "Required parameter 'query' is empty",
        )
            .into_response();
    }
    let format = param(&params, "format").unwrap_or("treejson").to_string();
    let wildcards = param(&params, "wildcards").is_some_and(|w| w != "0");
    let leaves_only = param(&params, "leavesOnly").is_some_and(|w| w != "0");
    let mut pattern = query.clone();
    if format == "completer" {
        pattern = pattern.replace("..", "*.");
        if !pattern.ends_with('*') {
            pattern.push('*');
        }
    }
    let local = is_local(&params);
    let store = api.sources.store().clone();
    let found =
        tokio::task::spawn_blocking(move || api.open(local, &who).find_nodes(&pattern)).await;
    let nodes = match found {
        Ok(Ok(nodes)) => nodes,
        Ok(Err(e)) => return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    };
    let mut nodes: Vec<_> = nodes
        .into_iter()
        .filter(|n| !leaves_only || n.is_leaf)
        .collect();
    // graphite-web sorts matches by name only (ties keep the finder's order).
    nodes.sort_by(|a, b| a.name().cmp(b.name()));
    let base = query
        .rsplit_once('.')
        .map(|(b, _)| format!("{b}."))
        .unwrap_or_default();
    let body = match format.as_str() {
        "treejson" => {
            // graphite-web's tree_json: one entry per name (first wins),
            // branches before leaves, and a `*` entry when asked for.
            let node = |text: &str, leaf: bool| {
                let l = i32::from(leaf);
                json!({"text": text, "id": format!("{base}{text}"), "allowChildren": 1 - l, "expandable": 1 - l, "leaf": l})
            };
            let mut seen = std::collections::HashSet::new();
            let (mut branches, mut leaves) = (Vec::new(), Vec::new());
            for n in &nodes {
                if seen.insert(n.name().to_string()) {
                    if n.is_leaf {
                        leaves.push(node(n.name(), true));
                    } else {
                        branches.push(node(n.name(), false));
                    }
                }
            }
            let mut items = Vec::new();
            if wildcards && nodes.len() > 1 {
                items.push(node("*", nodes.iter().all(|n| n.is_leaf)));
            }
            items.extend(branches);
            items.extend(leaves);
            serde_json::Value::Array(items)
        }
        "completer" => {
            let mut metrics: Vec<serde_json::Value> = nodes
                .iter()
                .map(|n| {
                    let path = if n.is_leaf { n.path.clone() } else { format!("{}.", n.path) };
                    json!({"path": path, "name": n.name(), "is_leaf": if n.is_leaf { "1" } else { "0" }})
                })
                .collect();
            if wildcards && metrics.len() > 1 {
                metrics.push(json!({"name": "*"}));
            }
            json!({"metrics": metrics})
        }
        "json" => {
            // graphite-web's json_nodes: sorted by path, leaves with the
            // interval their file covers (now - maxRetention to its mtime).
            let found: Vec<(String, bool)> =
                nodes.iter().map(|n| (n.path.clone(), n.is_leaf)).collect();
            let items = tokio::task::spawn_blocking(move || {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64());
                let mut items: Vec<serde_json::Value> = found
                    .into_iter()
                    .map(|(path, leaf)| {
                        if leaf {
                            let (start, end) = interval(&store, &path, now);
                            json!({"path": path, "is_leaf": true, "intervals": [{"start": start, "end": end}]})
                        } else {
                            json!({"path": path, "is_leaf": false})
                        }
                    })
                    .collect();
                items.sort_by(|a, b| a["path"].as_str().cmp(&b["path"].as_str()));
                items
            })
            .await
            .unwrap_or_default();
            serde_json::Value::Array(items)
        }
        "nodelist" => {
            // graphite-web's nodes_by_position: the distinct nodes at
            // `position` (Python's index: -1, the default, is the last).
            let position = match param(&params, "position").map(str::parse::<i64>) {
                None => -1,
                Some(Ok(p)) => p,
                Some(Err(_)) => {
                    return (
                        StatusCode::BAD_REQUEST,
                        format!(
                            "Invalid int value {:?} for param position",
                            param(&params, "position").unwrap_or_default()
                        ),
                    )
                        .into_response()
                }
            };
            let mut found = std::collections::BTreeSet::new();
            for n in &nodes {
                let parts: Vec<&str> = n.path.split('.').collect();
                let at = if position < 0 {
                    parts.len() as i64 + position
                } else {
                    position
                };
                match usize::try_from(at).ok().and_then(|i| parts.get(i)) {
                    Some(part) => {
                        found.insert(part.to_string());
                    }
                    None => {
                        return (
                            StatusCode::BAD_REQUEST,
                            format!(
                                "position {position} is out of range for {} ({} nodes)",
                                n.path,
                                parts.len()
                            ),
                        )
                            .into_response()
                    }
                }
            }
            json!({ "nodes": found })
        }
        other => {
            return (
                StatusCode::BAD_REQUEST,
                format!("Invalid value for 'format': {other}"),
            )
                .into_response()
        }
    };
    (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn json_response(body: serde_json::Value, jsonp: Option<&str>) -> Response {
    match jsonp {
        Some(cb) => (
            [(header::CONTENT_TYPE, "text/javascript")],
            format!("{cb}({body})"),
        )
            .into_response(),
        None => (
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response(),
    }
}

/// GET or POST `/metrics/expand?query=…`: the paths each query matches,
/// merged and sorted (or per query with `groupByExpr=1`).
pub async fn expand(
    State(api): State<Api>,
    Extension(who): Extension<Identity>,
    Query(params): Query<Params>,
) -> Response {
    expand_answer(api, who, params).await
}

/// POST `/metrics/expand` with a form body.
pub async fn expand_post(
    State(api): State<Api>,
    Extension(who): Extension<Identity>,
    Query(mut params): Query<Params>,
    Form(body): Form<Params>,
) -> Response {
    params.extend(body);
    expand_answer(api, who, params).await
}

async fn expand_answer(api: Api, who: Identity, params: Params) -> Response {
    let queries: Vec<String> = params
        .iter()
        .filter(|(k, _)| k == "query")
        .map(|(_, v)| v.clone())
        .collect();
    let group = param(&params, "groupByExpr").is_some_and(|v| v != "0");
    let leaves_only = param(&params, "leavesOnly").is_some_and(|v| v != "0");
    let jsonp = param(&params, "jsonp").map(str::to_string);
    let local = is_local(&params);
    let found = tokio::task::spawn_blocking(move || {
        let source = api.open(local, &who);
        queries
            .into_iter()
            .map(|q| {
                let nodes = source.find_nodes(&q)?;
                let paths: std::collections::BTreeSet<String> = nodes
                    .into_iter()
                    .filter(|n| n.is_leaf || !leaves_only)
                    .map(|n| n.path)
                    .collect();
                Ok((q, paths))
            })
            .collect::<Result<Vec<_>, graunt_query::eval::EvalError>>()
    })
    .await;
    let found = match found {
        Ok(Ok(f)) => f,
        Ok(Err(e)) => return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    };
    let results = if group {
        serde_json::Value::Object(found.into_iter().map(|(q, p)| (q, json!(p))).collect())
    } else {
        let all: std::collections::BTreeSet<String> =
            found.into_iter().flat_map(|(_, p)| p).collect();
        json!(all)
    };
    json_response(json!({ "results": results }), jsonp.as_deref())
}

/// The time a leaf's data covers, as graphite-web's whisper reader gives
/// it: from `now` less the file's longest retention to the file's last
/// change (a series only in the cache, or on a peer: its schema's
/// retention, to now).
fn interval(store: &graunt_storage::store::Store, path: &str, now: f64) -> (f64, f64) {
    let file = store.path_of(path);
    let on_disk = std::fs::metadata(&file).ok().and_then(|meta| {
        let retention = graunt_storage::whisper::WhisperFile::open(&file)
            .ok()?
            .header()
            .max_retention;
        let mtime = meta
            .modified()
            .ok()?
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?
            .as_secs_f64();
        let start = now - f64::from(retention);
        Some((start, mtime.max(start)))
    });
    on_disk.unwrap_or_else(|| {
        let retention = store
            .rules_for(path)
            .0
            .iter()
            .map(|r| r.retention())
            .max()
            .unwrap_or(0);
        (now - retention as f64, now)
    })
}

/// `/metrics/index.json`: every metric path, sorted.
pub async fn index(
    State(api): State<Api>,
    Extension(who): Extension<Identity>,
    Query(params): Query<Params>,
) -> Response {
    let local = is_local(&params);
    let leaves = tokio::task::spawn_blocking(move || api.open(local, &who).find_nodes("**")).await;
    match leaves {
        Ok(Ok(nodes)) => {
            let paths: std::collections::BTreeSet<String> = nodes
                .into_iter()
                .filter(|n| n.is_leaf)
                .map(|n| n.path)
                .collect();
            json_response(json!(paths), param(&params, "jsonp"))
        }
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// graphite-web's `local=1`: this node's data only (what peers ask).
pub fn is_local(params: &Params) -> bool {
    param(params, "local").is_some_and(|l| l != "0" && !l.is_empty())
}

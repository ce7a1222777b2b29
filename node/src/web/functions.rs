//! `/functions` and `/functions/<name>`: graphite-web's function catalog,
//! which Grafana reads to offer functions in its query editor. The catalog
//! is graphite-web 1.1.10's own (see graunt-query's `catalog`), less what
//! graunt does not implement, written byte for byte as graphite-web's
//! `json.dumps` writes it (`pretty`, `grouped`, `group`, `type=pie`).

use std::sync::LazyLock;

use axum::extract::{Path, Query};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use graunt_query::functions::{catalog, UNIMPLEMENTED};
use serde_json::{Map, Value};

use super::params::{param, Params};
use super::pyjson::{write_py_json, INFINITY};

fn load(text: &str) -> Map<String, Value> {
    let text = text.replace(": 1e9999", &format!(": \"{INFINITY}\""));
    serde_json::from_str(&text).expect("the embedded function catalog is valid JSON")
}

/// The series functions graunt serves, in graphite-web's order.
static SERIES: LazyLock<Map<String, Value>> = LazyLock::new(|| {
    let mut all = load(catalog::FUNCTIONS_JSON);
    all.retain(|name, _| !UNIMPLEMENTED.contains(&name.as_str()));
    all
});

static PIE: LazyLock<Map<String, Value>> = LazyLock::new(|| load(catalog::PIE_FUNCTIONS_JSON));

fn json_response(status: StatusCode, value: &Value, params: &Params) -> Response {
    let pretty = param(params, "pretty").is_some_and(|p| !p.is_empty());
    let mut out = String::new();
    write_py_json(&mut out, value, pretty, 0);
    (status, [(header::CONTENT_TYPE, "application/json")], out).into_response()
}

/// `GET /functions`.
pub async fn list(Query(params): Query<Params>) -> Response {
    let funcs = if param(&params, "type") == Some("pie") {
        &*PIE
    } else {
        &*SERIES
    };
    let grouped = param(&params, "grouped")
        .is_some_and(|g| matches!(g.to_lowercase().as_str(), "1" | "true"));
    let group = param(&params, "group");
    let mut result = Map::new();
    for (name, info) in funcs.iter() {
        let info_group = info["group"].as_str().unwrap_or("Ungrouped");
        if group.is_some_and(|g| g != info_group) {
            continue;
        }
        if grouped {
            let entry = result
                .entry(info_group.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(m) = entry {
                m.insert(name.clone(), info.clone());
            }
        } else {
            result.insert(name.clone(), info.clone());
        }
    }
    json_response(StatusCode::OK, &Value::Object(result), &params)
}

/// `GET /functions/<name>`.
pub async fn details(Path(name): Path<String>, Query(params): Query<Params>) -> Response {
    let funcs = if param(&params, "type") == Some("pie") {
        &*PIE
    } else {
        &*SERIES
    };
    match funcs.get(&name) {
        Some(info) => json_response(StatusCode::OK, info, &params),
        None => json_response(
            StatusCode::NOT_FOUND,
            &serde_json::json!({"error": format!("Function not found: {name}")}),
            &params,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalog_reads_back_as_graphite_wrote_it() {
        let mut out = String::new();
        write_py_json(
            &mut out,
            &Value::Object(load(catalog::FUNCTIONS_JSON)),
            false,
            0,
        );
        assert!(
            out == catalog::FUNCTIONS_JSON,
            "the catalog does not read back byte for byte"
        );
    }
}

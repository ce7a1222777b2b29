//! Dashboards saved on the node, with graphite-web's endpoints so its
//! clients keep working: `POST /dashboard/save/<name>` (form field `state`,
//! a JSON document), `GET /dashboard/load/<name>`, `GET /dashboard/find?query=`
//! and `POST /dashboard/delete/<name>`. Each dashboard is one JSON file under
//! `<data_dir>/dashboards/`.

use std::collections::HashMap;
use std::path::PathBuf;

use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Form;
use serde_json::{json, Value};

use super::auth::Identity;
use super::Api;

/// The largest dashboard state kept, bytes.
const MAX_STATE: usize = 1 << 20;

/// Dashboards kept, at most (a bound on what clients can make the node store).
const MAX_DASHBOARDS: usize = 10_000;

/// Where `who`'s dashboards are: `<data_dir>/dashboards/`, or for a tenant
/// its own `<data_dir>/dashboards/@<user>/` (a dashboard name cannot hold
/// `@`, so the two never meet).
fn dir(api: &Api, who: &Identity) -> PathBuf {
    let all = api.sources.store().config.data_dir.join("dashboards");
    match (&who.namespaces, &who.user) {
        (Some(_), Some(user)) => all.join(format!("@{user}")),
        _ => all,
    }
}

/// Whether `name` is a dashboard name: graphite-web allows free text, but a
/// name here is a file name, so it is kept to letters, digits, `.`, `-`,
/// `_` and spaces, and at most 128 characters.
fn valid(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ' '))
}

fn error(status: StatusCode, message: String) -> Response {
    (status, axum::Json(json!({ "error": message }))).into_response()
}

fn bad_name(name: &str) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        format!(
            "invalid dashboard name {name:?}: use up to 128 letters, digits, '.', '-', '_' or spaces"
        ),
    )
}

/// `POST /dashboard/save/<name>` with `state=<json>`.
pub async fn save(
    State(api): State<Api>,
    Extension(who): Extension<Identity>,
    Path(name): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if !valid(&name) {
        return bad_name(&name);
    }
    let Some(state) = form.get("state").cloned() else {
        return error(
            StatusCode::BAD_REQUEST,
            "missing form field 'state' (the dashboard as JSON)".into(),
        );
    };
    if state.len() > MAX_STATE {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "dashboard state is {} bytes; at most {MAX_STATE}",
                state.len()
            ),
        );
    }
    if let Err(e) = serde_json::from_str::<Value>(&state) {
        return error(
            StatusCode::BAD_REQUEST,
            format!("dashboard state is not JSON: {e}"),
        );
    }
    let dir = dir(&api, &who);
    let result = tokio::task::spawn_blocking(move || -> std::io::Result<bool> {
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{name}.json"));
        if !path.exists() && std::fs::read_dir(&dir)?.count() >= MAX_DASHBOARDS {
            return Ok(false);
        }
        // Written whole then renamed: a reader never sees half a dashboard.
        let tmp = dir.join(format!(".{name}.json.tmp"));
        std::fs::write(&tmp, state.as_bytes())?;
        std::fs::rename(&tmp, &path)?;
        Ok(true)
    })
    .await;
    match result {
        Ok(Ok(true)) => axum::Json(json!({ "success": true })).into_response(),
        Ok(Ok(false)) => error(
            StatusCode::INSUFFICIENT_STORAGE,
            format!("{MAX_DASHBOARDS} dashboards already saved; delete some first"),
        ),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "cannot save a dashboard");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot save the dashboard: {e}"),
            )
        }
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "save task failed".into()),
    }
}

/// `GET /dashboard/load/<name>`: `{"state": …}`.
pub async fn load(
    State(api): State<Api>,
    Extension(who): Extension<Identity>,
    Path(name): Path<String>,
) -> Response {
    if !valid(&name) {
        return bad_name(&name);
    }
    let path = dir(&api, &who).join(format!("{name}.json"));
    match tokio::fs::read_to_string(&path).await {
        Ok(text) => match serde_json::from_str::<Value>(&text) {
            Ok(state) => axum::Json(json!({ "state": state })).into_response(),
            Err(e) => error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("dashboard file {} is damaged: {e}", path.display()),
            ),
        },
        Err(_) => error(
            StatusCode::NOT_FOUND,
            format!("Dashboard '{name}' does not exist. "),
        ),
    }
}

/// `POST /dashboard/delete/<name>`.
pub async fn delete(
    State(api): State<Api>,
    Extension(who): Extension<Identity>,
    Path(name): Path<String>,
) -> Response {
    if !valid(&name) {
        return bad_name(&name);
    }
    match tokio::fs::remove_file(dir(&api, &who).join(format!("{name}.json"))).await {
        Ok(()) => axum::Json(json!({ "success": true })).into_response(),
        Err(_) => error(
            StatusCode::NOT_FOUND,
            format!("Dashboard '{name}' does not exist. "),
        ),
    }
}

/// `GET /dashboard/find?query=`: names containing each word of the query
/// (case-insensitive), sorted, as graphite-web answers.
pub async fn find(
    State(api): State<Api>,
    Extension(who): Extension<Identity>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let words: Vec<String> = q
        .get("query")
        .map(|s| s.split_whitespace().map(str::to_lowercase).collect())
        .unwrap_or_default();
    let mut names: Vec<String> = match std::fs::read_dir(dir(&api, &who)) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let n = e.file_name().into_string().ok()?;
                let n = n.strip_suffix(".json")?;
                valid(n).then(|| n.to_string())
            })
            .filter(|n| {
                let lower = n.to_lowercase();
                words.iter().all(|w| lower.contains(w))
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    let list: Vec<Value> = names.into_iter().map(|n| json!({ "name": n })).collect();
    axum::Json(json!({ "dashboards": list })).into_response()
}

#[cfg(test)]
mod tests {
    use super::valid;

    #[test]
    fn names_stay_inside_the_directory() {
        assert!(valid("ops overview"));
        assert!(valid("web-1.load_v2"));
        for bad in ["", "..", ".hidden", "a/b", "a\\b", "a\0b", &"x".repeat(129)] {
            assert!(!valid(bad), "{bad:?}");
        }
    }
}

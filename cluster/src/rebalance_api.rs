//! The `/cluster/` routes of rebalance and repair: a peer's copy of a series
//! coming in, each member's [`Status`], repairs asked of every member, and
//! a member set draining before it leaves.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use graunt_storage::store::Store;
use serde::Deserialize;
use serde_json::json;

use crate::api::failed;
use crate::member::ClusterNode;
use crate::rebalance::{Rebalancer, Status};
use crate::Request;

#[derive(Clone)]
struct Moves {
    node: Arc<ClusterNode>,
    store: Arc<Store>,
    rebalancer: Arc<Rebalancer>,
}

/// The routes, with their state (the caller adds the credential check).
pub fn routes(node: Arc<ClusterNode>, store: Arc<Store>, rebalancer: Arc<Rebalancer>) -> Router {
    Router::new()
        .route(
            "/cluster/series",
            // A whole whisper file: a year at one minute is 6 MB.
            post(receive).layer(axum::extract::DefaultBodyLimit::max(64 << 20)),
        )
        .route("/cluster/series/list", get(list))
        .route("/cluster/rebalance/self", get(own_status))
        .route("/cluster/rebalance", get(all_status))
        .route("/cluster/repair/self", post(repair_self))
        .route("/cluster/repair", post(repair_all))
        .route("/cluster/drain", post(drain))
        .with_state(Moves {
            node,
            store,
            rebalancer,
        })
}

#[derive(Deserialize)]
struct SeriesQuery {
    name: String,
}

/// A peer's copy of a series: taken as a new file or filled into ours.
async fn receive(State(m): State<Moves>, Query(q): Query<SeriesQuery>, body: Bytes) -> Response {
    let store = m.store.clone();
    let name = q.name.clone();
    match tokio::task::spawn_blocking(move || crate::rebalance::receive(&store, &name, &body)).await
    {
        Ok(Ok(filled)) => Json(json!({ "series": q.name, "filled": filled })).into_response(),
        Ok(Err(e)) => failed(StatusCode::BAD_REQUEST, e),
        Err(e) => failed(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

/// Every series this member holds (files and cache), sorted.
async fn list(State(m): State<Moves>) -> Response {
    let store = m.store.clone();
    match tokio::task::spawn_blocking(move || crate::rebalance::held_series(&store)).await {
        Ok(names) => Json(names).into_response(),
        Err(e) => failed(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

async fn own_status(State(m): State<Moves>) -> Response {
    Json(m.rebalancer.status()).into_response()
}

/// Every member's status (a member that does not answer is named with why).
async fn all_status(State(m): State<Moves>) -> Response {
    let answers = ask_members(&m, "GET", "/cluster/rebalance/self").await;
    let nodes: Vec<serde_json::Value> = answers
        .into_iter()
        .map(|(id, answer)| match answer {
            Ok(v) => v,
            Err(e) => json!({ "node": id, "error": e }),
        })
        .collect();
    Json(json!({ "nodes": nodes })).into_response()
}

#[derive(Deserialize)]
struct RepairQuery {
    #[serde(default)]
    prefix: String,
}

/// Asks this member to repair the series under `prefix` it owns.
async fn repair_self(State(m): State<Moves>, Query(q): Query<RepairQuery>) -> Response {
    let before = m.rebalancer.request_repair(q.prefix);
    Json(json!({ "node": m.node.me.id, "repairs_done": before })).into_response()
}

/// Asks every member for a repair; answers each one's count of finished
/// repairs before it (the repair is done once every count has grown).
async fn repair_all(State(m): State<Moves>, Query(q): Query<RepairQuery>) -> Response {
    let mut path = String::from("/cluster/repair/self");
    if !q.prefix.is_empty() {
        let mut u = reqwest::Url::parse("http://x/").expect("a valid URL");
        u.query_pairs_mut().append_pair("prefix", &q.prefix);
        path.push('?');
        path.push_str(u.query().unwrap_or_default());
    }
    let answers = ask_members(&m, "POST", &path).await;
    let mut nodes = Vec::new();
    for (id, answer) in answers {
        match answer {
            Ok(v) => nodes.push(v),
            Err(e) => {
                return failed(
                    StatusCode::BAD_GATEWAY,
                    format!("node {id} did not take the repair: {e}"),
                )
            }
        }
    }
    Json(json!({ "nodes": nodes })).into_response()
}

/// Calls `path` on every member, this one included, in parallel.
async fn ask_members(
    m: &Moves,
    method: &str,
    path: &str,
) -> Vec<(u64, Result<serde_json::Value, String>)> {
    let state = m.node.state.state().await;
    let calls = state.members.values().map(|member| {
        let url = m.node.transport.url(&member.http, path);
        let call = match method {
            "GET" => m.node.get(&url),
            _ => m.node.call(method, &url, &serde_json::Value::Null),
        };
        let id = member.id;
        async move {
            let answer = async {
                let resp = call
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                let status = resp.status();
                let text = resp.text().await.map_err(|e| e.to_string())?;
                if !status.is_success() {
                    return Err(format!("{status}: {text}"));
                }
                serde_json::from_str(&text).map_err(|e| e.to_string())
            }
            .await;
            (id, answer)
        }
    });
    crate::api::futures_join(calls).await
}

#[derive(Deserialize)]
struct Drain {
    id: u64,
}

/// Marks a member draining: the ring leaves it out, so relays stop sending
/// to it and every member (it too) moves its series to their new owners.
async fn drain(State(m): State<Moves>, crate::api::Body(d): crate::api::Body<Drain>) -> Response {
    if let Some(r) = crate::api::to_leader(&m.node, "/cluster/drain", &json!({ "id": d.id })).await
    {
        return r;
    }
    let state = m.node.state.state().await;
    let Some(member) = state.members.get(&d.id) else {
        return failed(
            StatusCode::NOT_FOUND,
            format!("node {} is not a member", d.id),
        );
    };
    if state.members.values().filter(|x| !x.draining).count() <= 1 && !member.draining {
        return failed(
            StatusCode::CONFLICT,
            "the last member that takes series cannot drain",
        );
    }
    let mut member = member.clone();
    member.draining = true;
    match m.node.write(Request::SetMember(member)).await {
        Ok(version) => Json(json!({ "draining": d.id, "version": version })).into_response(),
        Err(e) => failed(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

impl Status {
    /// The status as Prometheus text (`graunt_rebalance_*`).
    pub fn prometheus(&self) -> String {
        let mut out = String::new();
        let mut one = |name: &str, kind: &str, help: &str, value: u64| {
            out.push_str(&format!(
                "# HELP graunt_rebalance_{name} {help}\n# TYPE graunt_rebalance_{name} {kind}\ngraunt_rebalance_{name} {value}\n"
            ));
        };
        one(
            "pending_series",
            "gauge",
            "Series left in the rebalance or repair under way.",
            self.pending_series,
        );
        one(
            "pending_bytes",
            "gauge",
            "Bytes of the series left in the pass under way.",
            self.pending_bytes,
        );
        one(
            "moved_series_total",
            "counter",
            "Series pushed to every owner that needed them.",
            self.moved_series,
        );
        one(
            "moved_bytes_total",
            "counter",
            "Bytes pushed to other members.",
            self.moved_bytes,
        );
        one(
            "failed_series_total",
            "counter",
            "Series that could not be pushed (tried again later).",
            self.failed_series,
        );
        one(
            "deleted_series_total",
            "counter",
            "Local copies deleted once their new owners took them.",
            self.deleted_series,
        );
        one(
            "repairs_total",
            "counter",
            "Repair passes finished.",
            self.repairs_done,
        );
        one(
            "balanced",
            "gauge",
            "1 when the local series are placed by the current ring.",
            u64::from(self.balanced),
        );
        out
    }
}

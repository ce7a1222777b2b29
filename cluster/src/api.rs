//! `/cluster/…` on the node's HTTP port: raft RPC (`raft/append`,
//! `raft/vote`, `raft/snapshot`), the admin API `graunt cluster` talks to
//! (`init`, `join`, `leave`, `status`, `state`, `schemas`, `tenants`,
//! `write`), and the local reads peers fan out to (`find`, `fetch`), as a
//! router the node merges into its HTTP port. A request that does not parse
//! is a 400; 503 means no leader is known yet (retry); 502 that the leader
//! could not be reached or refused.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRequest, Query, Request as HttpRequest, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Json;
use axum::Router;
use graunt_query::eval::Source;
use graunt_query::source::StoreSource;
use graunt_storage::store::Store;
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::json;

use crate::member::{ClusterNode, WriteError};
use crate::{Member, NodeId, Request, TypeConfig};

/// A JSON body whose rejection (not JSON, wrong fields) is a 400 that says
/// why, where axum would answer 415 or 422.
pub(crate) struct Body<T>(pub(crate) T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = Response;

    async fn from_request(req: HttpRequest, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Body(v)),
            Err(e) => Err(failed(StatusCode::BAD_REQUEST, e.body_text())),
        }
    }
}

/// A membership change or write raft refused: 503 when this node is no
/// longer the leader (a new one is being elected: retry), 409 when the
/// change conflicts with the membership (one in progress, an unknown
/// learner), 500 when raft has stopped.
fn raft_failed(e: &ClientWriteFailure, what: String) -> Response {
    use openraft::error::{ClientWriteError, RaftError};
    let status = match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        RaftError::APIError(ClientWriteError::ChangeMembershipError(_)) => StatusCode::CONFLICT,
        RaftError::Fatal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    failed(status, format!("{what}: {e}"))
}

/// What raft's writes and membership changes fail with.
type ClientWriteFailure = openraft::error::RaftError<
    NodeId,
    openraft::error::ClientWriteError<NodeId, openraft::BasicNode>,
>;

/// A change that could not be replicated: 503 while no leader is known,
/// 502 when the leader could not be reached or refused it.
fn write_failed(e: WriteError) -> Response {
    let status = match e {
        WriteError::NoLeader(_) => StatusCode::SERVICE_UNAVAILABLE,
        WriteError::Unreachable { .. } | WriteError::Refused { .. } => StatusCode::BAD_GATEWAY,
    };
    failed(status, e)
}

#[derive(Clone)]
struct App {
    node: Arc<ClusterNode>,
    store: Arc<Store>,
}

/// The cluster routes, to merge into the node's router.
pub fn routes(
    node: Arc<ClusterNode>,
    store: Arc<Store>,
    rebalancer: Arc<crate::rebalance::Rebalancer>,
) -> Router {
    let moves = crate::rebalance_api::routes(node.clone(), store.clone(), rebalancer);
    Router::new()
        .route("/cluster/raft/append", post(append))
        .route("/cluster/raft/vote", post(vote))
        .route("/cluster/raft/snapshot", post(snapshot))
        .route("/cluster/self", get(me))
        .route("/cluster/init", post(init))
        .route("/cluster/join", post(join))
        .route("/cluster/leave", post(leave))
        .route("/cluster/write", post(write))
        .route("/cluster/state", get(state))
        .route("/cluster/status", get(status))
        .route("/cluster/schemas", get(schemas).put(set_schemas))
        .route("/cluster/tenants", get(tenants).put(set_tenants))
        .route("/cluster/find", get(find))
        .route("/cluster/tags", post(tags))
        .route(
            "/cluster/fetch",
            // A render of many series asks for all their names at once.
            post(fetch).layer(axum::extract::DefaultBodyLimit::max(64 << 20)),
        )
        .route(
            "/cluster/fold",
            post(fold).layer(axum::extract::DefaultBodyLimit::max(64 << 20)),
        )
        .route(
            "/cluster/folds",
            post(folds).layer(axum::extract::DefaultBodyLimit::max(64 << 20)),
        )
        .route(
            "/cluster/slots",
            post(slots).layer(axum::extract::DefaultBodyLimit::max(64 << 20)),
        )
        .with_state(App {
            node: node.clone(),
            store,
        })
        .merge(moves)
        .layer(axum::middleware::from_fn_with_state(node, authenticate))
}

/// Refuses a call without a valid credential (401, counted) when the
/// cluster has a secret. The body is read here (bounded as the largest
/// route's) because the credential covers it.
async fn authenticate(
    State(node): State<Arc<ClusterNode>>,
    request: HttpRequest,
    next: axum::middleware::Next,
) -> Response {
    let Some(secret) = &node.secret else {
        return next.run(request).await;
    };
    let refuse = || {
        node.metrics.unauthorized.inc();
        failed(
            StatusCode::UNAUTHORIZED,
            "this cluster needs its secret: give the member, relay or `graunt cluster` the same --cluster-secret-file / --secret-file",
        )
    };
    // No body is read for a caller without a credential of the right shape
    // and time.
    let plausible = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(crate::secret::ClusterSecret::plausible);
    if !plausible {
        return refuse();
    }
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 64 << 20).await else {
        return failed(StatusCode::PAYLOAD_TOO_LARGE, "request body too large");
    };
    let valid = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|h| {
            let target = parts
                .uri
                .path_and_query()
                .map_or(parts.uri.path(), |p| p.as_str());
            secret.verify(h, parts.method.as_str(), target, &bytes)
        });
    if !valid {
        return refuse();
    }
    next.run(HttpRequest::from_parts(
        parts,
        axum::body::Body::from(bytes),
    ))
    .await
}

pub(crate) fn failed(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (status, Json(json!({ "error": message.to_string() }))).into_response()
}

async fn append(
    State(app): State<App>,
    Body(req): Body<AppendEntriesRequest<TypeConfig>>,
) -> Response {
    Json(app.node.raft.append_entries(req).await).into_response()
}

async fn vote(State(app): State<App>, Body(req): Body<VoteRequest<NodeId>>) -> Response {
    Json(app.node.raft.vote(req).await).into_response()
}

async fn snapshot(
    State(app): State<App>,
    Body(req): Body<InstallSnapshotRequest<TypeConfig>>,
) -> Response {
    Json(app.node.raft.install_snapshot(req).await).into_response()
}

async fn me(State(app): State<App>) -> Response {
    Json(app.node.me.clone()).into_response()
}

/// Starts a cluster of this one node (once; later nodes `join`).
async fn init(State(app): State<App>) -> Response {
    let me = app.node.me.clone();
    let members = crate::initial_membership(std::slice::from_ref(&me));
    if let Err(e) = app.node.raft.initialize(members).await {
        return failed(StatusCode::CONFLICT, format!("cannot initialize: {e}"));
    }
    // The new leader is elected within a moment; the member record follows.
    for _ in 0..50 {
        if app.node.raft.current_leader().await == Some(me.id) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    match app.node.write(Request::SetMember(me)).await {
        Ok(version) => Json(json!({ "initialized": true, "version": version })).into_response(),
        Err(e) => write_failed(e),
    }
}

/// Forwards an admin request to the leader when this node is not it.
pub(crate) async fn to_leader(
    node: &ClusterNode,
    path: &str,
    body: &serde_json::Value,
) -> Option<Response> {
    if node.raft.current_leader().await == Some(node.me.id) {
        return None;
    }
    let Some(leader) = node.leader_http() else {
        return Some(failed(
            StatusCode::SERVICE_UNAVAILABLE,
            "no leader elected yet; retry in a moment",
        ));
    };
    let resp = node
        .call("POST", &node.transport.url(&leader, path), body)
        .send()
        .await;
    Some(match resp {
        Ok(r) => {
            let status =
                StatusCode::from_u16(r.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            let text = r.text().await.unwrap_or_default();
            (status, [("content-type", "application/json")], text).into_response()
        }
        Err(e) => failed(
            StatusCode::BAD_GATEWAY,
            format!("cannot reach the leader at {leader}: {e}"),
        ),
    })
}

/// Adds a node: as a learner first (it catches up), then as a voter, then
/// its member record.
async fn join(State(app): State<App>, Body(member): Body<Member>) -> Response {
    let body = serde_json::to_value(&member).unwrap_or_default();
    if let Some(r) = to_leader(&app.node, "/cluster/join", &body).await {
        return r;
    }
    let raft = &app.node.raft;
    if let Err(e) = raft
        .add_learner(member.id, crate::raft_node(&member.http), true)
        .await
    {
        return raft_failed(&e, format!("cannot add node {} as a learner", member.id));
    }
    let voters: BTreeSet<NodeId> = {
        let m = raft.metrics().borrow().clone();
        let mut v: BTreeSet<NodeId> = m.membership_config.membership().voter_ids().collect();
        v.insert(member.id);
        v
    };
    if let Err(e) = raft.change_membership(voters, false).await {
        return raft_failed(&e, format!("cannot make node {} a voter", member.id));
    }
    match app.node.write(Request::SetMember(member)).await {
        Ok(version) => Json(json!({ "joined": true, "version": version })).into_response(),
        Err(e) => write_failed(e),
    }
}

#[derive(Deserialize)]
struct Leave {
    id: NodeId,
}

/// Removes a node from the voters and the members.
async fn leave(State(app): State<App>, Body(leave): Body<Leave>) -> Response {
    if let Some(r) = to_leader(&app.node, "/cluster/leave", &json!({ "id": leave.id })).await {
        return r;
    }
    let raft = &app.node.raft;
    let voters: BTreeSet<NodeId> = {
        let m = raft.metrics().borrow().clone();
        m.membership_config
            .membership()
            .voter_ids()
            .filter(|v| *v != leave.id)
            .collect()
    };
    if voters.is_empty() {
        return failed(StatusCode::CONFLICT, "the last member cannot leave");
    }
    if let Err(e) = raft.change_membership(voters, false).await {
        return raft_failed(&e, format!("cannot remove node {}", leave.id));
    }
    match app.node.write(Request::RemoveMember(leave.id)).await {
        Ok(version) => Json(json!({ "left": true, "version": version })).into_response(),
        Err(e) => write_failed(e),
    }
}

async fn write(State(app): State<App>, Body(request): Body<Request>) -> Response {
    match app.node.raft.client_write(request).await {
        Ok(r) => Json(r.data).into_response(),
        Err(e) => raft_failed(&e, "cannot apply the change".into()),
    }
}

async fn state(State(app): State<App>) -> Response {
    Json(app.node.state.state().await).into_response()
}

/// Leader, term, members with their health, the ring.
async fn status(State(app): State<App>) -> Response {
    let m = app.node.raft.metrics().borrow().clone();
    let state = app.node.state.state().await;
    let voters: BTreeSet<NodeId> = m.membership_config.membership().voter_ids().collect();
    let checks = state
        .members
        .values()
        .cloned()
        .collect::<Vec<_>>()
        .into_iter()
        .map(|member| {
            let call = app
                .node
                .get(&app.node.transport.url(&member.http, "/cluster/self"));
            async move {
                let up = call
                    .timeout(Duration::from_millis(800))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                (member, up)
            }
        });
    let members: Vec<serde_json::Value> = futures_join(checks)
        .await
        .into_iter()
        .map(|(member, up)| {
            json!({
                "id": member.id,
                "http": member.http,
                "pickle": member.pickle,
                "voter": voters.contains(&member.id),
                "health": if up { "up" } else { "down" },
            })
        })
        .collect();
    Json(json!({
        "id": app.node.me.id,
        "leader": m.current_leader,
        "term": m.current_term,
        "state": format!("{:?}", m.state),
        "members": members,
        "ring": state.ring,
        "version": state.version,
    }))
    .into_response()
}

/// Runs futures concurrently (a handful: one per member).
pub(crate) async fn futures_join<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        if let Ok(v) = h.await {
            out.push(v);
        }
    }
    out
}

async fn schemas(State(app): State<App>) -> Response {
    let s = app.node.state.state().await;
    Json(json!({ "schemas": s.schemas, "aggregation": s.aggregation })).into_response()
}

#[derive(Deserialize)]
struct SetSchemas {
    schemas: String,
    aggregation: Option<String>,
    #[serde(default)]
    apply_to_existing: bool,
}

async fn set_schemas(State(app): State<App>, Body(body): Body<SetSchemas>) -> Response {
    // Refused here, with carbon's parser's message, rather than on every node.
    if let Err(e) = graunt_storage::schema::Schemas::parse(&body.schemas) {
        return failed(StatusCode::BAD_REQUEST, format!("storage-schemas: {e}"));
    }
    if let Some(a) = &body.aggregation {
        if let Err(e) = graunt_storage::schema::Aggregations::parse(a) {
            return failed(StatusCode::BAD_REQUEST, format!("storage-aggregation: {e}"));
        }
    }
    let request = Request::SetSchemas {
        schemas: body.schemas,
        aggregation: body.aggregation,
        apply_to_existing: body.apply_to_existing,
    };
    match app.node.write(request).await {
        Ok(version) => Json(json!({ "version": version })).into_response(),
        Err(e) => write_failed(e),
    }
}

async fn tenants(State(app): State<App>) -> Response {
    Json(json!({ "tenants": app.node.state.state().await.tenants })).into_response()
}

#[derive(Deserialize)]
struct SetTenants {
    tenants: String,
}

async fn set_tenants(State(app): State<App>, Body(body): Body<SetTenants>) -> Response {
    if let Err(e) = toml::from_str::<toml::Table>(&body.tenants) {
        return failed(
            StatusCode::BAD_REQUEST,
            format!("tenants are not TOML: {e}"),
        );
    }
    match app.node.write(Request::SetTenants(body.tenants)).await {
        Ok(version) => Json(json!({ "version": version })).into_response(),
        Err(e) => write_failed(e),
    }
}

#[derive(Deserialize)]
struct FindQuery {
    query: String,
}

/// This node's own matches: `[[path, is_leaf], …]`.
/// A peer's question to this node's tag index alone.
async fn tags(
    State(app): State<App>,
    Body(q): Body<graunt_storage::tagindex::TagQuery>,
) -> Response {
    let store = app.store.clone();
    match tokio::task::spawn_blocking(move || store.tags.answer(&q)).await {
        Ok(Ok(answer)) => Json(answer).into_response(),
        Ok(Err(e)) => failed(StatusCode::BAD_REQUEST, e),
        Err(e) => failed(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

async fn find(State(app): State<App>, Query(q): Query<FindQuery>) -> Response {
    let store = app.store.clone();
    let found = tokio::task::spawn_blocking(move || StoreSource(store).find_nodes(&q.query)).await;
    match found {
        Ok(Ok(nodes)) => {
            let list: Vec<(String, bool)> =
                nodes.into_iter().map(|n| (n.path, n.is_leaf)).collect();
            Json(list).into_response()
        }
        Ok(Err(e)) => failed(StatusCode::BAD_REQUEST, e),
        Err(e) => failed(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

#[derive(Deserialize)]
struct FoldBody {
    fold: String,
    paths: Vec<String>,
    from: i64,
    until: i64,
    now: i64,
}

/// The fold of this node's own copies of some paths, or the copies
/// themselves when they do not fold exactly (`crate::fold::encode`). What
/// askers of the previous version call; this one asks `/cluster/folds`.
async fn fold(State(app): State<App>, Body(body): Body<FoldBody>) -> Response {
    let FoldBody {
        fold,
        paths,
        from,
        until,
        now,
    } = body;
    let range = (from, until, now);
    fold_groups(app, fold, vec![paths], range, false, |answers| {
        answers.first().map(crate::fold::encode).unwrap_or_default()
    })
    .await
}

#[derive(Deserialize)]
struct FoldsBody {
    fold: String,
    groups: Vec<Vec<String>>,
    from: i64,
    until: i64,
    now: i64,
    /// The asker folds groups of fractions by parts of the range
    /// (`/cluster/slots`): answer those `Inexact` rather than with series.
    #[serde(default)]
    refuse_inexact: bool,
}

/// [`fold`] for each of several groups of paths, in one read
/// (`crate::fold::encode_groups`).
async fn folds(State(app): State<App>, Body(body): Body<FoldsBody>) -> Response {
    let range = (body.from, body.until, body.now);
    fold_groups(
        app,
        body.fold,
        body.groups,
        range,
        body.refuse_inexact,
        crate::fold::encode_groups,
    )
    .await
}

fn parse_fold(fold: &str) -> Result<graunt_query::fold::Fold, String> {
    graunt_query::fold::Fold::parse(fold)
        .ok_or_else(|| format!("unknown fold {fold:?} (sum, average, min, max or count)"))
}

/// Reads the paths of `groups` and answers each group's fold, encoded.
async fn fold_groups(
    app: App,
    fold: String,
    groups: Vec<Vec<String>>,
    (from, until, now): (i64, i64, i64),
    refuse_inexact: bool,
    encode: fn(&[crate::fold::Answer]) -> Vec<u8>,
) -> Response {
    let fold = match parse_fold(&fold) {
        Ok(fold) => fold,
        Err(why) => return failed(StatusCode::BAD_REQUEST, why),
    };
    let store = app.store.clone();
    let answered = tokio::task::spawn_blocking(move || {
        let source = StoreSource(store);
        let range = (from, until, now);
        crate::fold::answer_share(fold, &source, &groups, range, refuse_inexact)
            .map(|answers| encode(&answers))
    })
    .await;
    octets(answered)
}

#[derive(Deserialize)]
struct SlotsBody {
    fold: String,
    groups: Vec<Vec<String>>,
    from: i64,
    until: i64,
    now: i64,
    /// This member's part of the range (`crate::slots::parts`).
    part: crate::window::Window,
}

/// Each group folded over this member's part of the range, every series of
/// it, in order (`crate::slots`): its own copies read here, the others'
/// part asked of their holders. `crate::fold::encode_groups`' form.
async fn slots(State(app): State<App>, Body(body): Body<SlotsBody>) -> Response {
    let fold = match parse_fold(&body.fold) {
        Ok(fold) => fold,
        Err(why) => return failed(StatusCode::BAD_REQUEST, why),
    };
    let state = app.node.state.state().await;
    let handle = tokio::runtime::Handle::current();
    let answered = tokio::task::spawn_blocking(move || {
        let source =
            crate::source::ClusterSource::new(StoreSource(app.store), &app.node, &state, handle)
                .for_part(body.part);
        let range = (body.from, body.until, body.now);
        crate::slots::fold_part(&source, fold, &body.groups, range)
            .map(|answers| crate::fold::encode_groups(&answers))
    })
    .await;
    octets(answered)
}

#[derive(Deserialize)]
struct FetchBody {
    paths: Vec<String>,
    from: i64,
    until: i64,
    now: i64,
    /// For each path, the only slots wanted (`crate::window`), if any.
    #[serde(default)]
    windows: Vec<Option<crate::window::Window>>,
}

/// This node's own data for some paths, in `wire::encode`'s form
/// (paths it does not have are left out).
async fn fetch(State(app): State<App>, Body(body): Body<FetchBody>) -> Response {
    let store = app.store.clone();
    let fetched = tokio::task::spawn_blocking(move || {
        let source = StoreSource(store);
        let range = (body.from, body.until, body.now);
        source
            .fetch_windows(&body.paths, range, &body.windows)
            .map(|series| crate::wire::encode(series.iter().flatten()))
    })
    .await;
    octets(fetched)
}

/// A member's binary answer read on a blocking thread, or a 500 naming
/// what failed (the asker then asks the other holders).
fn octets(
    answered: Result<Result<Vec<u8>, graunt_query::eval::EvalError>, tokio::task::JoinError>,
) -> Response {
    match answered {
        Ok(Ok(bytes)) => ([("content-type", "application/octet-stream")], bytes).into_response(),
        Ok(Err(e)) => failed(StatusCode::INTERNAL_SERVER_ERROR, e),
        Err(e) => failed(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

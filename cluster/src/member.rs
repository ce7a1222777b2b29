//! A running cluster member ([`ClusterNode`]): its raft member and state,
//! changes forwarded to the leader, the start-up bootstrap (init or join),
//! and storage rules that follow the replicated schemas.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use graunt_storage::schema::{Aggregations, Schemas};
use graunt_storage::store::Store;

use crate::secret::ClusterSecret;
use crate::transport::Transport;
use crate::{Member, Raft, Request, StateMachine};

/// Why a change could not be replicated.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// No leader is known, or the leader is this node and refused.
    #[error("no leader to take the change: {0}")]
    NoLeader(String),
    /// The leader could not be reached.
    #[error("cannot reach the leader at {leader}: {source}")]
    Unreachable {
        /// Its HTTP address.
        leader: String,
        /// Why.
        source: reqwest::Error,
    },
    /// The leader answered with an error.
    #[error("the leader at {leader} refused the change: {body}")]
    Refused {
        /// Its HTTP address.
        leader: String,
        /// What it said.
        body: String,
    },
}

/// A running cluster member.
pub struct ClusterNode {
    /// This node.
    pub me: Member,
    /// Its raft member.
    pub raft: Raft,
    /// Its copy of the state.
    pub state: StateMachine,
    /// For peers and forwarding to the leader.
    pub client: reqwest::Client,
    /// How long a read waits for a peer.
    pub peer_timeout: Duration,
    /// Its metrics.
    pub metrics: Arc<crate::metrics::ClusterMetrics>,
    /// The cluster's secret: calls to peers carry it, calls from them must.
    pub secret: Option<ClusterSecret>,
    /// Plain HTTP or HTTPS to peers.
    pub transport: Transport,
    /// Peers of an earlier version (they answered 404 to `/cluster/slots`)
    /// and when that was seen: while one is, sums of fractions are read as
    /// series, as that version does, instead of failing a fold by parts
    /// first (`crate::source`).
    pub(crate) older_peers: crate::source::OlderPeers,
    /// Where raft runs (kept as long as the member).
    _runtime: crate::RaftRuntime,
}

impl ClusterNode {
    /// Starts the raft member with its state under `<data_dir>/raft`.
    pub async fn start(
        me: Member,
        data_dir: &std::path::Path,
        peer_timeout: Duration,
        secret: Option<ClusterSecret>,
        transport: Transport,
    ) -> Result<Arc<ClusterNode>, crate::StartError> {
        let (raft, state, runtime) = crate::start(
            me.id,
            &data_dir.join("raft"),
            secret.clone(),
            transport.clone(),
        )
        .await?;
        let client = transport
            .client(Duration::from_secs(10))
            .map_err(|e| crate::StartError::Raft(format!("cannot build the HTTP client: {e}")))?;
        Ok(Arc::new(ClusterNode {
            me,
            raft,
            state,
            client,
            peer_timeout,
            metrics: Arc::new(crate::metrics::ClusterMetrics::new()),
            secret,
            transport,
            older_peers: Default::default(),
            _runtime: runtime,
        }))
    }

    /// A signed JSON call to a peer.
    pub fn call<T: serde::Serialize + ?Sized>(
        &self,
        method: &str,
        url: &str,
        body: &T,
    ) -> reqwest::RequestBuilder {
        crate::secret::json_call(&self.client, self.secret.as_ref(), method, url, body)
    }

    /// A signed GET to a peer.
    pub fn get(&self, url: &str) -> reqwest::RequestBuilder {
        crate::secret::get(&self.client, self.secret.as_ref(), url)
    }

    /// The leader's HTTP address, if one is known.
    pub fn leader_http(&self) -> Option<String> {
        let m = self.raft.metrics().borrow().clone();
        let id = m.current_leader?;
        m.membership_config
            .membership()
            .get_node(&id)
            .map(|n| n.addr.clone())
    }

    /// Replicates a change: applied here if this node leads, else sent to
    /// the leader.
    pub async fn write(&self, request: Request) -> Result<u64, WriteError> {
        self.submit(request).await.map(|r| r.version)
    }

    /// Replicates a change as [`ClusterNode::write`] and answers what
    /// applying it answered (its log index among it).
    pub async fn submit(&self, request: Request) -> Result<crate::Response, WriteError> {
        match self.raft.client_write(request.clone()).await {
            Ok(r) => Ok(r.data),
            Err(e) => {
                let leader = e
                    .forward_to_leader()
                    .and_then(|f| f.leader_node.as_ref().map(|n| n.addr.clone()))
                    .or_else(|| self.leader_http())
                    .filter(|l| *l != self.me.http)
                    .ok_or_else(|| WriteError::NoLeader(e.to_string()))?;
                let url = self.transport.url(&leader, "/cluster/write");
                let resp = self
                    .call("POST", &url, &request)
                    .send()
                    .await
                    .map_err(|source| WriteError::Unreachable {
                        leader: leader.clone(),
                        source,
                    })?;
                let status = resp.status();
                let body = resp.text().await.unwrap_or_default();
                match serde_json::from_str::<crate::Response>(&body) {
                    Ok(r) if status.is_success() => Ok(r),
                    _ => Err(WriteError::Refused { leader, body }),
                }
            }
        }
    }
}

/// Keeps the store's rules equal to the cluster's schemas: applied to the
/// files created from then on, as carbon does after a config change.
pub async fn follow_schemas(
    node: Arc<ClusterNode>,
    store: Arc<Store>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut changes = node.state.subscribe();
    let mut applied: Option<(Option<String>, Option<String>)> = None;
    loop {
        let state = changes.borrow_and_update().clone();
        let wanted = (state.schemas.clone(), state.aggregation.clone());
        if wanted.0.is_some() && applied.as_ref() != Some(&wanted) {
            let schemas = wanted.0.as_deref().map(Schemas::parse);
            let aggregations = match wanted.1.as_deref() {
                Some(a) => Aggregations::parse(a).map(Some),
                None => Ok(None),
            };
            match (schemas, aggregations) {
                (Some(Ok(s)), Ok(a)) => {
                    store.set_schemas(s);
                    if let Some(a) = a {
                        store.set_aggregations(a);
                    }
                    tracing::info!(
                        version = state.version,
                        "storage schemas from the cluster applied"
                    );
                }
                (Some(Err(e)), _) | (_, Err(e)) => {
                    tracing::error!(error = %e, "the cluster's schemas do not parse; keeping the current ones")
                }
                _ => {}
            }
            applied = Some(wanted);
        }
        tokio::select! {
            r = changes.changed() => if r.is_err() { return },
            _ = &mut shutdown => return,
        }
    }
}

/// Forms or joins the cluster on start, for deployments with no operator
/// at hand: with `init`, a node whose raft state is empty starts the
/// cluster; with `join` seeds, a node that is not yet a member asks each
/// seed in turn (retrying until one takes it). Either is a no-op once the
/// node is a member, so restarts change nothing.
pub async fn bootstrap(
    node: Arc<ClusterNode>,
    init: bool,
    join: Vec<String>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    if init {
        match node.raft.is_initialized().await {
            Ok(false) => {
                let members = crate::initial_membership(std::slice::from_ref(&node.me));
                match node.raft.initialize(members).await {
                    Ok(()) => tracing::info!("cluster initialized with this node"),
                    Err(e) => tracing::warn!(error = %e, "cannot initialize the cluster"),
                }
            }
            Ok(true) => {}
            Err(e) => tracing::error!(error = %e, "raft stopped"),
        }
        // The member record, once this node leads (or someone else has it).
        for _ in 0..300 {
            if node.state.state().await.members.contains_key(&node.me.id) {
                return;
            }
            if node.raft.current_leader().await == Some(node.me.id) {
                match node.write(Request::SetMember(node.me.clone())).await {
                    Ok(_) => return,
                    Err(e) => tracing::warn!(error = %e, "cannot record this node as a member yet"),
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                _ = &mut shutdown => return,
            }
        }
        return;
    }
    if join.is_empty() {
        return;
    }
    let mut wait = Duration::from_millis(500);
    loop {
        if node.state.state().await.members.contains_key(&node.me.id) {
            return;
        }
        for seed in &join {
            let resp = node
                .call("POST", &node.transport.url(seed, "/cluster/join"), &node.me)
                .send()
                .await;
            match resp {
                Ok(r) if r.status().is_success() => {
                    tracing::info!(via = %seed, "joined the cluster");
                    return;
                }
                Ok(r) => {
                    let body = r.text().await.unwrap_or_default();
                    tracing::info!(via = %seed, answer = %body, "not joined yet; retrying");
                }
                Err(e) => tracing::info!(via = %seed, error = %e, "seed unreachable; retrying"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = &mut shutdown => return,
        }
        wait = (wait * 2).min(Duration::from_secs(5));
    }
}

//! Wiring a node into its cluster: the addresses it advertises, its raft
//! member, the tasks that bootstrap it, keep its schemas current and keep
//! its series on their owners, and the cluster's events for the web API.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use graunt_cluster::member::{self, ClusterNode};
use graunt_cluster::rebalance::Rebalancer;
use graunt_cluster::Request;
use graunt_relay::shutdown::Shutdown;
use graunt_storage::events::{Events, NewEvent};
use graunt_storage::store::Store;
use tokio::net::TcpListener;

use super::config::ClusterSettings;
use crate::web::events::{BookFuture, EventBook};

/// The address peers reach a listener at: as given, or the bound one. A
/// wildcard bind is not an address peers can use; the host name is
/// (containers resolve each other's by name).
fn advertised(
    given: &Option<String>,
    bound: Option<SocketAddr>,
    what: &str,
) -> anyhow::Result<String> {
    given
        .clone()
        .or_else(|| {
            let b = bound?;
            if b.ip().is_unspecified() {
                let host = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
                Some(format!("{}:{}", host.trim(), b.port()))
            } else {
                Some(b.to_string())
            }
        })
        .with_context(|| format!("a cluster member needs its {what} address"))
}

/// Starts the raft member and the tasks that bootstrap it (init or join)
/// and apply the cluster's schemas to the store.
pub async fn start(
    c: &ClusterSettings,
    http: &TcpListener,
    pickle: Option<SocketAddr>,
    store: &Arc<Store>,
    tasks: &mut tokio::task::JoinSet<()>,
    shutdown: &Shutdown,
) -> anyhow::Result<(Arc<ClusterNode>, Arc<Rebalancer>)> {
    let me = graunt_cluster::Member {
        id: c.id,
        http: advertised(&c.advertise_http, http.local_addr().ok(), "HTTP")?,
        pickle: advertised(&c.advertise_pickle, pickle, "pickle")?,
        draining: false,
    };
    tracing::info!(id = me.id, http = %me.http, pickle = %me.pickle, "cluster member");
    if c.secret.is_none() {
        tracing::warn!("THIS CLUSTER HAS NO SECRET: anyone who reaches the HTTP port can join a node, replace the schemas or read raft's log; set cluster_secret_file (--cluster-secret-file) on every member, relay and `graunt cluster --secret-file`");
    }
    let node = ClusterNode::start(
        me,
        &store.config.data_dir,
        c.peer_timeout,
        c.secret.clone(),
        c.transport.clone(),
    )
    .await?;
    let mut s = shutdown.clone();
    tasks.spawn(member::follow_schemas(
        node.clone(),
        store.clone(),
        async move { s.recv().await },
    ));
    let rebalancer = Rebalancer::new(node.clone(), store.clone(), c.rebalance.clone());
    let mut s = shutdown.clone();
    tasks.spawn(rebalancer.clone().run(async move { s.recv().await }));
    let mut s = shutdown.clone();
    tasks.spawn(member::bootstrap(
        node.clone(),
        c.init,
        c.join.clone(),
        async move { s.recv().await },
    ));
    Ok((node, rebalancer))
}

/// The cluster's events, as graphite-web's events API keeps them: changes go
/// through raft (forwarded to the leader), reads are this member's copy.
pub struct ClusterEvents {
    node: Arc<ClusterNode>,
    events: tokio::sync::watch::Receiver<Arc<Events>>,
}

impl ClusterEvents {
    /// The events of `node`'s cluster.
    pub fn new(node: Arc<ClusterNode>) -> ClusterEvents {
        let events = node.state.events();
        ClusterEvents { node, events }
    }

    /// Replicates `request`, then waits (a bounded while) until this member
    /// has applied it, so a read after a write on the same node sees it.
    async fn change(&self, request: Request) -> Result<(), String> {
        let response = self
            .node
            .submit(request)
            .await
            .map_err(|e| format!("the cluster did not take the event change: {e}"))?;
        let mut events = self.events.clone();
        let applied = events.wait_for(|e| e.applied >= Some(response.index));
        // The leader applied it; a follower catches up within a heartbeat
        // or two. Past the bound the change is still made, only not yet seen here.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), applied).await;
        Ok(())
    }
}

impl EventBook for ClusterEvents {
    fn current(&self) -> Arc<Events> {
        self.events.borrow().clone()
    }

    fn add(&self, event: NewEvent) -> BookFuture<'_, ()> {
        Box::pin(self.change(Request::AddEvent(event)))
    }

    fn delete(&self, id: u64) -> BookFuture<'_, ()> {
        Box::pin(self.change(Request::DeleteEvent(id)))
    }
}

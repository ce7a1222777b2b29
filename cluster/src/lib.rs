//! graunt-cluster: the raft-replicated cluster state (members, ring
//! settings, schemas, tenants) on openraft, and what a node does as a
//! member of it.
//!
//! - [`start`], [`LogStore`], [`StateMachine`], [`Network`]: the raft member
//!   with its durable log and state on disk and its RPC client over the
//!   nodes' HTTP ports.
//! - [`member::ClusterNode`]: a running member (changes forwarded to the
//!   leader, bootstrap, schemas followed by the store); [`api::routes`]: the
//!   raft RPC server, the admin API and the peer reads under `/cluster/`.
//! - [`hashing`]: carbon's hash rings; [`ring::of_members`]: the ring over
//!   the members that relays and reads use.
//! - [`source::ClusterSources`]: reads for the whole cluster as graunt-query
//!   sources (fan-out to peers, replica merge, partial answers);
//!   [`fold`]: a member's side of aggregations folded where the data is;
//!   [`wire`]: series as members send them, read as they arrive;
//!   [`window`]: the slots a copy lacks, asked of the other holders.
//! - [`metrics::ClusterMetrics`]: `graunt_cluster_*` on the node's `/metrics`.
//! - [`secret::ClusterSecret`]: the credential every call between members,
//!   relays and `graunt cluster` carries.
//!
//! ```text
//! /render ─▶ ClusterSource ─┬─▶ own store
//!                           └─▶ peers' /cluster/find, /cluster/fetch ─▶ merge copies
//!                                      /cluster/folds ─▶ combine folded parts
//! graunt cluster … ─▶ /cluster/{init,join,…} ─▶ raft ─▶ StateMachine ─▶ relays, schemas
//! ```

pub mod api;
pub mod fold;
pub mod hashing;
mod log_store;
pub mod member;
pub mod metrics;
mod network;
pub mod rebalance;
mod rebalance_api;
pub mod ring;
pub mod secret;
pub mod slots;
pub mod source;
mod state;
mod state_machine;
pub mod transport;
pub mod window;
pub mod wire;

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::Path;
use std::sync::Arc;

pub use log_store::LogStore;
pub use network::Network;
pub use openraft;
pub use state::{ClusterState, Member, Request, Response, RingSettings};
pub use state_machine::StateMachine;

/// A member's raft id.
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// graunt's raft types: requests change [`ClusterState`].
    pub TypeConfig:
        D = Request,
        R = Response,
);

/// A running raft member.
pub type Raft = openraft::Raft<TypeConfig>;

/// Errors starting raft.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The raft directory could not be opened.
    #[error("cannot open the cluster state in {dir}: {source}")]
    Storage {
        /// The directory.
        dir: String,
        /// Why.
        source: std::io::Error,
    },
    /// openraft refused to start.
    #[error("cannot start raft: {0}")]
    Raft(String),
}

/// The runtime raft runs on: two threads of its own (the log's fsync
/// blocks one), so heartbeats and votes are not queued behind ingest and
/// queries on the node's runtime (under a saturating load they missed the
/// 250 ms an AppendEntries had).
pub struct RaftRuntime(Option<tokio::runtime::Runtime>);

impl RaftRuntime {
    fn new() -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("graunt-raft")
            .enable_all()
            .build()?;
        Ok(RaftRuntime(Some(runtime)))
    }
}

impl Drop for RaftRuntime {
    fn drop(&mut self) {
        // Dropped from async code at shutdown, where a blocking drop panics.
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// Starts this node's raft member with its state in `dir`, on a runtime of
/// its own (keep the [`RaftRuntime`] as long as the member). Heartbeats
/// every 500 ms (an AppendEntries may take as long), elections after 2–4 s
/// of silence: a lost leader is replaced within a few seconds.
pub async fn start(
    id: NodeId,
    dir: &Path,
    secret: Option<secret::ClusterSecret>,
    transport: transport::Transport,
) -> Result<(Raft, StateMachine, RaftRuntime), StartError> {
    let storage = |source| StartError::Storage {
        dir: dir.display().to_string(),
        source,
    };
    let log = LogStore::open(&dir.join("log")).map_err(storage)?;
    let sm = StateMachine::open(&dir.join("state")).map_err(storage)?;
    let config = openraft::Config {
        cluster_name: "graunt".into(),
        heartbeat_interval: 500,
        election_timeout_min: 2000,
        election_timeout_max: 4000,
        ..Default::default()
    };
    let config = Arc::new(
        config
            .validate()
            .map_err(|e| StartError::Raft(e.to_string()))?,
    );
    let runtime = RaftRuntime::new()
        .map_err(|e| StartError::Raft(format!("cannot start raft's runtime: {e}")))?;
    let Some(handle) = runtime.0.as_ref().map(|r| r.handle().clone()) else {
        return Err(StartError::Raft("the raft runtime is gone".into()));
    };
    // Raft::new spawns raft's tasks where it runs: on raft's runtime.
    let network = Network::new(secret, transport);
    let state = sm.clone();
    let raft = handle
        .spawn(async move { Raft::new(id, config, network, log, state).await })
        .await
        .map_err(|e| StartError::Raft(e.to_string()))?
        .map_err(|e| StartError::Raft(e.to_string()))?;
    Ok((raft, sm, runtime))
}

/// The raft node record for a member: its HTTP address.
pub fn raft_node(http: &str) -> openraft::BasicNode {
    openraft::BasicNode {
        addr: http.to_string(),
    }
}

/// The members as openraft's initial membership.
pub fn initial_membership(members: &[Member]) -> BTreeMap<NodeId, openraft::BasicNode> {
    members.iter().map(|m| (m.id, raft_node(&m.http))).collect()
}

#[cfg(test)]
mod tests {
    use openraft::testing::{StoreBuilder, Suite};
    use openraft::StorageError;

    use super::*;

    struct OnDisk;

    impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for OnDisk {
        async fn build(
            &self,
        ) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<NodeId>> {
            let dir = tempfile::tempdir().expect("a temp dir");
            let log = LogStore::open(&dir.path().join("log")).expect("open the log");
            let sm = StateMachine::open(&dir.path().join("state")).expect("open the state");
            Ok((dir, log, sm))
        }
    }

    /// openraft's own conformance suite for log stores and state machines.
    #[test]
    fn the_store_passes_openraft_suite() {
        Suite::test_all(OnDisk).unwrap();
    }

    #[tokio::test]
    async fn the_log_survives_reopening() {
        use openraft::storage::RaftLogStorage;
        use openraft::{CommittedLeaderId, LogId, Vote};
        let dir = tempfile::tempdir().unwrap();
        let mut log = LogStore::open(dir.path()).unwrap();
        log.save_vote(&Vote::new(3, 1)).await.unwrap();
        let id = LogId::new(CommittedLeaderId::new(3, 1), 7);
        log.save_committed(Some(id)).await.unwrap();
        drop(log);
        let mut log = LogStore::open(dir.path()).unwrap();
        assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(3, 1)));
        assert_eq!(log.read_committed().await.unwrap(), Some(id));
    }
}

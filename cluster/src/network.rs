//! Raft RPC over the nodes' HTTP ports: JSON `POST`s to
//! `/cluster/raft/{append,vote,snapshot}`, answered by the node's handlers
//! with openraft's own result types.

use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::secret::ClusterSecret;
use crate::transport::Transport;
use crate::{NodeId, TypeConfig};

/// Makes a connection per peer; one HTTP client shared by all.
#[derive(Debug, Clone)]
pub struct Network {
    client: reqwest::Client,
    secret: Option<ClusterSecret>,
    transport: Transport,
}

impl Network {
    /// Calls signed with `secret`, if the cluster has one, over `transport`.
    pub fn new(secret: Option<ClusterSecret>, transport: Transport) -> Network {
        Network {
            client: transport.client(Duration::from_secs(3)).unwrap_or_default(),
            secret,
            transport,
        }
    }
}

/// The connection to one peer.
pub struct Connection {
    client: reqwest::Client,
    secret: Option<ClusterSecret>,
    transport: Transport,
    target: NodeId,
    addr: String,
}

impl Connection {
    async fn call<Req, Resp, E>(
        &self,
        path: &str,
        req: &Req,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let url = self
            .transport
            .url(&self.addr, &format!("/cluster/raft/{path}"));
        let call = crate::secret::json_call(&self.client, self.secret.as_ref(), "POST", &url, req);
        let resp = call.send().await.map_err(|e| {
            if e.is_connect() {
                RPCError::Unreachable(Unreachable::new(&e))
            } else {
                RPCError::Network(NetworkError::new(&e))
            }
        })?;
        let result: Result<Resp, RaftError<NodeId, E>> = resp
            .json()
            .await
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Connection {
        Connection {
            client: self.client.clone(),
            secret: self.secret.clone(),
            transport: self.transport.clone(),
            target,
            addr: node.addr.clone(),
        }
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        req: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call("append", &req).await
    }

    async fn install_snapshot(
        &mut self,
        req: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call("snapshot", &req).await
    }

    async fn vote(
        &mut self,
        req: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call("vote", &req).await
    }
}

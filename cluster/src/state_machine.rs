//! The durable state machine: [`ClusterState`] with the raft bookkeeping
//! (last applied entry, membership), written to `state.json` after every
//! apply, snapshots as that same JSON. Changes are published on a watch
//! channel, so the node and relays act on them as they land.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, Entry, EntryPayload, LogId, RaftSnapshotBuilder, SnapshotMeta, StorageError,
    StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{watch, RwLock};

use crate::log_store::{read_json, write_json};
use crate::state::{ClusterState, Response};
use crate::{NodeId, TypeConfig};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Data {
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
    state: ClusterState,
}

/// The last snapshot: its metadata and bytes.
type StoredSnapshot = (SnapshotMeta<NodeId, BasicNode>, Vec<u8>);

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    data: RwLock<Data>,
    snapshot: RwLock<Option<StoredSnapshot>>,
    changes: watch::Sender<ClusterState>,
}

/// A node's copy of the cluster state.
#[derive(Debug, Clone)]
pub struct StateMachine {
    inner: Arc<Inner>,
}

impl StateMachine {
    /// Opens the state kept in `dir` (empty on first start).
    pub fn open(dir: &Path) -> std::io::Result<StateMachine> {
        std::fs::create_dir_all(dir)?;
        let data: Data = read_json(dir, "state.json")?.unwrap_or_default();
        let (changes, _) = watch::channel(data.state.clone());
        Ok(StateMachine {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                data: RwLock::new(data),
                snapshot: RwLock::new(None),
                changes,
            }),
        })
    }

    /// The state as applied here.
    pub async fn state(&self) -> ClusterState {
        self.inner.data.read().await.state.clone()
    }

    /// A receiver that sees every new state.
    pub fn subscribe(&self) -> watch::Receiver<ClusterState> {
        self.inner.changes.subscribe()
    }

    async fn save(&self, data: &Data) -> Result<(), StorageError<NodeId>> {
        write_json(&self.inner.dir, "state.json", data)
            .map_err(|e| StorageIOError::write_state_machine(&e).into())
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let data = self.inner.data.read().await;
        let bytes =
            serde_json::to_vec(&data.state).map_err(|e| StorageIOError::read_state_machine(&e))?;
        let id = match data.last_applied {
            Some(l) => format!("{}-{}", l.leader_id, l.index),
            None => "empty".into(),
        };
        let meta = SnapshotMeta {
            last_log_id: data.last_applied,
            last_membership: data.membership.clone(),
            snapshot_id: id,
        };
        drop(data);
        *self.inner.snapshot.write().await = Some((meta.clone(), bytes.clone()));
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>), StorageError<NodeId>>
    {
        let data = self.inner.data.read().await;
        Ok((data.last_applied, data.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
    {
        let mut data = self.inner.data.write().await;
        let mut out = Vec::new();
        for entry in entries {
            data.last_applied = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => out.push(Response {
                    version: data.state.version,
                }),
                EntryPayload::Normal(ref request) => out.push(data.state.apply(request)),
                EntryPayload::Membership(ref m) => {
                    data.membership = StoredMembership::new(Some(entry.log_id), m.clone());
                    out.push(Response {
                        version: data.state.version,
                    });
                }
            }
        }
        self.save(&data).await?;
        self.inner.changes.send_replace(data.state.clone());
        Ok(out)
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let bytes = snapshot.into_inner();
        let state: ClusterState = serde_json::from_slice(&bytes)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        let mut data = self.inner.data.write().await;
        *data = Data {
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
            state,
        };
        self.save(&data).await?;
        self.inner.changes.send_replace(data.state.clone());
        *self.inner.snapshot.write().await = Some((meta.clone(), bytes));
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        Ok(self
            .inner
            .snapshot
            .read()
            .await
            .as_ref()
            .map(|(meta, bytes)| Snapshot {
                meta: meta.clone(),
                snapshot: Box::new(Cursor::new(bytes.clone())),
            }))
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }
}

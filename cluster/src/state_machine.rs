//! The durable state machine: [`ClusterState`] with the raft bookkeeping
//! (last applied entry, membership), written to `state.json` after every
//! apply, and the cluster's events in `events.json` (written first, with
//! the index of the last event change, so a change replayed after a crash
//! between the two files is not applied twice). Snapshots are the state's
//! JSON with the events beside it. Changes are published on watch
//! channels, so the node and relays act on them as they land.

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
use graunt_storage::events::Events;

use crate::state::{ClusterState, Request, Response};
use crate::{NodeId, TypeConfig};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Data {
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
    state: ClusterState,
    #[serde(skip)]
    events: Arc<Events>,
}

/// A snapshot's body: the state's JSON object with the events under
/// `events` beside its fields (a snapshot from before events has none).
/// Built and split through `serde_json::Value`: serde's `flatten` cannot
/// read the members' numeric map keys back.
fn snapshot_bytes(state: &ClusterState, events: &Events) -> Result<Vec<u8>, serde_json::Error> {
    let mut body = serde_json::to_value(state)?;
    if let serde_json::Value::Object(m) = &mut body {
        m.insert("events".into(), serde_json::to_value(events)?);
    }
    serde_json::to_vec(&body)
}

fn read_snapshot(bytes: &[u8]) -> Result<(ClusterState, Events), serde_json::Error> {
    let mut body: serde_json::Value = serde_json::from_slice(bytes)?;
    let events = match body.as_object_mut().and_then(|m| m.remove("events")) {
        Some(e) => serde_json::from_value(e)?,
        None => Events::default(),
    };
    Ok((serde_json::from_value(body)?, events))
}

/// The last snapshot: its metadata and bytes.
type StoredSnapshot = (SnapshotMeta<NodeId, BasicNode>, Vec<u8>);

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    data: RwLock<Data>,
    snapshot: RwLock<Option<StoredSnapshot>>,
    changes: watch::Sender<ClusterState>,
    events: watch::Sender<Arc<Events>>,
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
        let mut data: Data = read_json(dir, "state.json")?.unwrap_or_default();
        data.events = Arc::new(Events::load(&dir.join("events.json"))?);
        let (changes, _) = watch::channel(data.state.clone());
        let (events, _) = watch::channel(data.events.clone());
        Ok(StateMachine {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                data: RwLock::new(data),
                snapshot: RwLock::new(None),
                changes,
                events,
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

    /// The cluster's events as applied here, and each change to them.
    pub fn events(&self) -> watch::Receiver<Arc<Events>> {
        self.inner.events.subscribe()
    }

    async fn save_events(&self, data: &Data) -> Result<(), StorageError<NodeId>> {
        data.events
            .save(&self.inner.dir.join("events.json"))
            .map_err(|e| StorageIOError::write_state_machine(&e).into())
    }

    async fn save(&self, data: &Data) -> Result<(), StorageError<NodeId>> {
        write_json(&self.inner.dir, "state.json", data)
            .map_err(|e| StorageIOError::write_state_machine(&e).into())
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let data = self.inner.data.read().await;
        let bytes = snapshot_bytes(&data.state, &data.events)
            .map_err(|e| StorageIOError::read_state_machine(&e))?;
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
        let mut events_changed = false;
        for entry in entries {
            data.last_applied = Some(entry.log_id);
            let index = entry.log_id.index;
            let mut response = Response {
                version: data.state.version,
                index,
            };
            match entry.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(Request::AddEvent(ref new)) => {
                    if data.events.applied < Some(index) {
                        let events = Arc::make_mut(&mut data.events);
                        events.add(new.clone());
                        events.applied = Some(index);
                        events_changed = true;
                    }
                }
                EntryPayload::Normal(Request::DeleteEvent(id)) => {
                    if data.events.applied < Some(index) {
                        let events = Arc::make_mut(&mut data.events);
                        events.remove(id);
                        events.applied = Some(index);
                        events_changed = true;
                    }
                }
                EntryPayload::Normal(ref request) => {
                    response = data.state.apply(request);
                    response.index = index;
                }
                EntryPayload::Membership(ref m) => {
                    data.membership = StoredMembership::new(Some(entry.log_id), m.clone());
                }
            }
            out.push(response);
        }
        if events_changed {
            self.save_events(&data).await?;
        }
        self.save(&data).await?;
        self.inner.changes.send_replace(data.state.clone());
        if events_changed {
            self.inner.events.send_replace(data.events.clone());
        }
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
        let (state, mut events) = read_snapshot(&bytes)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        events.applied = meta.last_log_id.map(|l| l.index);
        let mut data = self.inner.data.write().await;
        *data = Data {
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
            state,
            events: Arc::new(events),
        };
        self.save_events(&data).await?;
        self.save(&data).await?;
        self.inner.changes.send_replace(data.state.clone());
        self.inner.events.send_replace(data.events.clone());
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Member, Request};
    use graunt_storage::events::NewEvent;

    /// A snapshot with members and events reads back whole, and one from
    /// before events (the state alone) reads with none.
    #[test]
    fn snapshots_with_members_and_events_read_back() {
        let mut state = ClusterState::default();
        state.apply(&Request::SetMember(Member {
            id: 1,
            http: "a:8080".into(),
            pickle: "a:2004".into(),
            draining: false,
        }));
        let mut events = Events::default();
        events.add(NewEvent {
            when_us: 1,
            what: "deploy".into(),
            data: String::new(),
            tags: Some("web".into()),
        });
        let (s, e) = read_snapshot(&snapshot_bytes(&state, &events).unwrap()).unwrap();
        assert_eq!((s, e), (state.clone(), events));
        let (s, e) = read_snapshot(&serde_json::to_vec(&state).unwrap()).unwrap();
        assert_eq!((s, e.len()), (state, 0));
    }
}

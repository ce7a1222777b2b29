//! The replicated cluster state and the requests that change it: members
//! (id, HTTP and pickle addresses), the ring settings relays route by, the
//! storage schemas and aggregation rules nodes create files with, the
//! tenants of the relays, and graphite-web's events (kept beside the state
//! by the state machine, so relays polling the state do not carry them).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One node of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Its raft id.
    pub id: u64,
    /// `host:port` of its HTTP API (queries, admin, raft RPC).
    pub http: String,
    /// `host:port` of its pickle receiver (where relays send).
    pub pickle: String,
    /// Leaving: no series are placed on it, and it moves its own to their
    /// other owners before it is removed (`graunt cluster leave`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub draining: bool,
}

impl Member {
    /// The member as a relay destination, `host:port:instance` with the id
    /// as instance (stable across address changes of other members).
    pub fn destination(&self) -> String {
        format!("{}:{}", self.pickle, self.id)
    }
}

/// How relays place metrics on members.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingSettings {
    /// `carbon_ch`, `fnv1a_ch` or `jump_fnv1a_ch`.
    pub method: String,
    /// Copies of each metric.
    pub replication: usize,
}

impl Default for RingSettings {
    fn default() -> Self {
        RingSettings {
            method: "carbon_ch".into(),
            replication: 2,
        }
    }
}

/// Everything the cluster agrees on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    /// Members by id.
    pub members: BTreeMap<u64, Member>,
    /// Ring settings.
    pub ring: RingSettings,
    /// `storage-schemas.conf` text, if set through the cluster.
    pub schemas: Option<String>,
    /// `storage-aggregation.conf` text, if set through the cluster.
    pub aggregation: Option<String>,
    /// The relays' tenants, as the `[[tenant]]` tables of a relay config.
    pub tenants: Option<String>,
    /// Bumped by each schema change asked to apply to existing files:
    /// members resize their files to the schemas when it moves.
    #[serde(default)]
    pub schemas_applied: u64,
    /// Bumped by every applied change: a cheap "has anything changed".
    pub version: u64,
}

/// A change to the state, replicated through the raft log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// Adds or updates a member.
    SetMember(Member),
    /// Removes a member.
    RemoveMember(u64),
    /// Sets the ring settings.
    SetRing(RingSettings),
    /// Sets the storage schemas (and optionally aggregation rules).
    SetSchemas {
        /// `storage-schemas.conf` text.
        schemas: String,
        /// `storage-aggregation.conf` text.
        aggregation: Option<String>,
        /// Resize existing files to them too.
        #[serde(default)]
        apply_to_existing: bool,
    },
    /// Sets the tenants.
    SetTenants(String),
    /// Adds an event (graphite-web's `POST /events/`) for the whole cluster.
    AddEvent(graunt_storage::events::NewEvent),
    /// Removes an event by id.
    DeleteEvent(u64),
}

/// What applying a request answers: the state's new version.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// [`ClusterState::version`] after the change.
    pub version: u64,
    /// The raft log index of the change (a member that has applied it
    /// has its effect: reads after a write wait for it).
    #[serde(default)]
    pub index: u64,
}

impl ClusterState {
    /// Applies one request.
    pub fn apply(&mut self, request: &Request) -> Response {
        match request {
            Request::SetMember(m) => {
                self.members.insert(m.id, m.clone());
            }
            Request::RemoveMember(id) => {
                self.members.remove(id);
            }
            Request::SetRing(r) => self.ring = r.clone(),
            Request::SetSchemas {
                schemas,
                aggregation,
                apply_to_existing,
            } => {
                if *apply_to_existing {
                    self.schemas_applied += 1;
                }
                self.schemas = Some(schemas.clone());
                if aggregation.is_some() {
                    self.aggregation = aggregation.clone();
                }
            }
            Request::SetTenants(t) => self.tenants = Some(t.clone()),
            // Events are not the ring's or the schemas' business: the state
            // machine keeps them, and the version stays.
            Request::AddEvent(_) | Request::DeleteEvent(_) => {
                return Response {
                    version: self.version,
                    index: 0,
                }
            }
        }
        self.version += 1;
        Response {
            version: self.version,
            index: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_change_the_state_and_its_version() {
        let mut s = ClusterState::default();
        let m = Member {
            id: 2,
            http: "10.0.0.2:8080".into(),
            pickle: "10.0.0.2:2004".into(),
            draining: false,
        };
        assert_eq!(s.apply(&Request::SetMember(m.clone())).version, 1);
        assert_eq!(s.members[&2].destination(), "10.0.0.2:2004:2");
        s.apply(&Request::SetSchemas {
            schemas: "[a]\npattern = .*\nretentions = 1m:1d\n".into(),
            aggregation: None,
            apply_to_existing: false,
        });
        s.apply(&Request::RemoveMember(2));
        assert!(s.members.is_empty());
        assert_eq!(s.version, 3);
    }
}

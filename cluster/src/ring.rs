//! The ring a cluster routes by, built from its replicated members and
//! ring settings: what relays following the cluster and the cluster read
//! source use to find a series' owners.

use crate::hashing::{Destination, Method, Ring};
use crate::{ClusterState, Member};

/// The ring the cluster's relays route by, over its members (each member
/// one destination, its id as instance) but those draining before they
/// leave.
pub fn of_members(state: &ClusterState) -> Option<(Ring, Vec<Member>)> {
    let members: Vec<Member> = state
        .members
        .values()
        .filter(|m| !m.draining)
        .cloned()
        .collect();
    let destinations: Vec<Destination> = members
        .iter()
        .filter_map(|m| Destination::parse(&m.destination()).ok())
        .collect();
    if destinations.len() != members.len() || members.is_empty() {
        return None;
    }
    let method = Method::parse(&state.ring.method).ok()?;
    // Members are distinct nodes even on one host: copies go to distinct
    // members, not distinct hosts.
    let ring = Ring::new(method, destinations, state.ring.replication.max(1), false).ok()?;
    Some((ring, members))
}

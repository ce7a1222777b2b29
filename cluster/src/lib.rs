//! graunt-cluster: the raft-replicated cluster state (members, ring settings,
//! schemas, tenants) and its admin API types. It sits on `graunt-storage` and
//! below the relay and the node; the openraft wiring arrives with the cluster
//! issue, and until then a graunt node is a single machine.

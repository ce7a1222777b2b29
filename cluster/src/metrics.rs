//! The cluster's own metrics (`graunt_cluster_*`), served on the node's
//! `/metrics` beside the node's: raft's term, leader and membership read at
//! scrape time, and counters of the reads this node fanned out to its peers.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

/// Counters and gauges of one member.
pub struct ClusterMetrics {
    registry: Registry,
    /// Calls to peers' `/cluster/find` and `/cluster/fetch`, by peer and
    /// outcome (`ok`, `failed`).
    pub peer_calls: IntCounterVec,
    /// Reads answered without some peer (`X-Graunt-Partial`).
    pub partial_reads: IntCounter,
    /// Calls to `/cluster/*` refused for a missing or wrong credential.
    pub unauthorized: IntCounter,
    /// Aggregations asked of the members as folds, by outcome: `folded`
    /// (every member sent one folded series), `parts` (fractions, folded
    /// by parts of the range, `crate::slots`) or `series` (some sent their
    /// series: a copy with a hole, a peer down or of an older version).
    pub folds: IntCounterVec,
    term: IntGauge,
    leader: IntGauge,
    members: IntGauge,
    voters: IntGauge,
}

impl Default for ClusterMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl ClusterMetrics {
    /// Registers every metric.
    pub fn new() -> ClusterMetrics {
        let registry =
            Registry::new_custom(Some("graunt_cluster".into()), None).expect("a valid prefix");
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("a valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("registered once");
            g
        };
        let term = gauge("raft_term", "The raft term this member is in");
        let leader = gauge("raft_leader", "The leader's id, 0 when none is known");
        let members = gauge("members", "Members in the replicated state");
        let voters = gauge("voters", "Voting members in raft's membership");
        let peer_calls = IntCounterVec::new(
            Opts::new(
                "peer_calls_total",
                "Calls to peers for cluster reads, by peer and outcome",
            ),
            &["peer", "outcome"],
        )
        .expect("a valid metric");
        let partial_reads =
            IntCounter::new("partial_reads_total", "Reads answered without some peer")
                .expect("a valid metric");
        registry
            .register(Box::new(peer_calls.clone()))
            .expect("registered once");
        registry
            .register(Box::new(partial_reads.clone()))
            .expect("registered once");
        let unauthorized = IntCounter::new(
            "unauthorized_total",
            "Calls to /cluster/* refused for a missing or wrong cluster credential",
        )
        .expect("a valid metric");
        registry
            .register(Box::new(unauthorized.clone()))
            .expect("registered once");
        let folds = IntCounterVec::new(
            Opts::new(
                "folds_total",
                "Aggregations asked of the members as folds, by outcome (folded, parts, series)",
            ),
            &["outcome"],
        )
        .expect("a valid metric");
        registry
            .register(Box::new(folds.clone()))
            .expect("registered once");
        ClusterMetrics {
            registry,
            peer_calls,
            partial_reads,
            unauthorized,
            folds,
            term,
            leader,
            members,
            voters,
        }
    }

    /// The Prometheus text, with raft's figures read now.
    pub async fn render(&self, node: &crate::member::ClusterNode) -> String {
        let m = node.raft.metrics().borrow().clone();
        self.term.set(m.current_term as i64);
        self.leader.set(m.current_leader.unwrap_or(0) as i64);
        self.voters
            .set(m.membership_config.membership().voter_ids().count() as i64);
        self.members
            .set(node.state.state().await.members.len() as i64);
        let mut out = String::new();
        let _ = TextEncoder::new().encode_utf8(&self.registry.gather(), &mut out);
        out
    }
}

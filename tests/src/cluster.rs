//! A whole cluster in the test process: [`TestCluster::start`] starts `n`
//! in-process members on port 0 that form the cluster themselves (the first
//! with `--cluster-init`, the others `--cluster-join` through it), and
//! returns once every member is a voter that the others see up.

use std::path::Path;
use std::time::Duration;

use crate::node::{wait_for, Node};

/// A running in-process cluster.
pub struct TestCluster {
    /// Its members, node `i + 1` at index `i`.
    pub nodes: Vec<Node>,
}

impl TestCluster {
    /// Starts `n` members with data under `dir/n<id>` and `extra` flags of
    /// `graunt serve` each (say `--schemas FILE`), and waits until they
    /// form one cluster of `n` voters.
    pub fn start(dir: &Path, n: usize, extra: &[&str]) -> TestCluster {
        assert!(n > 0, "a cluster has members");
        let mut nodes: Vec<Node> = Vec::with_capacity(n);
        for id in 1..=n {
            let mut args: Vec<String> = ["--node-id", &id.to_string(), "--peer-timeout", "1"]
                .iter()
                .map(|s| s.to_string())
                .collect();
            match nodes.first() {
                None => args.push("--cluster-init".into()),
                Some(first) => {
                    args.push("--cluster-join".into());
                    args.push(first.addr("http").to_string());
                }
            }
            args.extend(extra.iter().map(|s| s.to_string()));
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            nodes.push(Node::start(&dir.join(format!("n{id}")), &args));
        }
        let cluster = TestCluster { nodes };
        cluster.wait_for_members(n);
        cluster
    }

    /// Waits until every running member's status lists `n` members, all up
    /// and voting, with a leader.
    pub fn wait_for_members(&self, n: usize) {
        for node in &self.nodes {
            wait_for(Duration::from_secs(30), "the cluster to form", || {
                let status = self.status(node)?;
                let members = status["members"].as_array()?;
                let ready = status["leader"].is_u64()
                    && members.len() == n
                    && members
                        .iter()
                        .all(|m| m["health"] == "up" && m["voter"] == true);
                ready.then_some(())
            });
        }
    }

    /// A member's `/cluster/status`, if it answers.
    pub fn status(&self, node: &Node) -> Option<serde_json::Value> {
        let (code, body) = node.http_request("/cluster/status");
        (code == 200)
            .then(|| serde_json::from_str(&body).ok())
            .flatten()
    }

    /// The members' HTTP addresses, in id order.
    pub fn http(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| n.addr("http").to_string())
            .collect()
    }

    /// Stops every member cleanly.
    pub fn stop(self) {
        for n in self.nodes {
            n.stop(Duration::from_secs(30));
        }
    }
}

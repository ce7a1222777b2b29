//! A whole cluster in the test process: [`TestCluster::start`] starts `n`
//! in-process members on port 0 that form the cluster themselves (the first
//! with `--cluster-init`, the others `--cluster-join` through it), all with
//! one cluster secret, and returns once every member is a voter that the
//! others see up.

use std::path::{Path, PathBuf};
use std::time::Duration;

use graunt_cluster::secret::ClusterSecret;

use crate::node::{wait_for, Node};
use crate::tls::Pki;

/// A running in-process cluster.
pub struct TestCluster {
    /// Its members, node `i + 1` at index `i`.
    pub nodes: Vec<Node>,
    /// The file holding its secret (`--cluster-secret-file`,
    /// `cluster_secret_file`, `graunt cluster --secret-file`).
    pub secret_file: PathBuf,
    secret: ClusterSecret,
}

impl TestCluster {
    /// Starts `n` members with data under `dir/n<id>` and `extra` flags of
    /// `graunt serve` each (say `--schemas FILE`), and waits until they
    /// form one cluster of `n` voters.
    pub fn start(dir: &Path, n: usize, extra: &[&str]) -> TestCluster {
        TestCluster::start_with(dir, n, extra, None)
    }

    /// [`TestCluster::start`] with TLS: each member's HTTP and pickle
    /// listeners carry a certificate from `pki`, and members call each
    /// other over HTTPS trusting its CA.
    pub fn start_tls(dir: &Path, n: usize, extra: &[&str], pki: &Pki) -> TestCluster {
        TestCluster::start_with(dir, n, extra, Some(pki))
    }

    fn start_with(dir: &Path, n: usize, extra: &[&str], pki: Option<&Pki>) -> TestCluster {
        assert!(n > 0, "a cluster has members");
        let secret_file = dir.join("cluster.secret");
        std::fs::write(&secret_file, "a test cluster's secret, long enough\n")
            .expect("write the secret");
        let secret = ClusterSecret::read(&secret_file).expect("a valid secret");
        let mut nodes: Vec<Node> = Vec::with_capacity(n);
        for id in 1..=n {
            // Peers time out after 1 s (tests that stop members want
            // answers fast) unless `extra` sets its own.
            let timeout = if extra.contains(&"--peer-timeout") {
                None
            } else {
                Some("1")
            };
            let mut args: Vec<String> = [
                "--node-id",
                &id.to_string(),
                "--cluster-secret-file",
                &secret_file.display().to_string(),
            ]
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
            if let Some(t) = timeout {
                args.extend(["--peer-timeout".to_string(), t.to_string()]);
            }
            args.extend(extra.iter().map(|s| s.to_string()));
            let data_dir = dir.join(format!("n{id}"));
            match pki {
                None => {
                    let args: Vec<&str> = args.iter().map(String::as_str).collect();
                    nodes.push(Node::start(&data_dir, &args));
                }
                Some(pki) => {
                    let issued = pki.localhost(&format!("node{id}"));
                    for (flag, path) in [
                        ("--tls-cert-file", &issued.cert),
                        ("--tls-key-file", &issued.key),
                        ("--tls-ca-file", &pki.ca_file),
                    ] {
                        args.push(flag.into());
                        args.push(path.display().to_string());
                    }
                    let args: Vec<&str> = args.iter().map(String::as_str).collect();
                    nodes.push(Node::start_tls(&data_dir, &args, &pki.ca_file));
                }
            }
        }
        let cluster = TestCluster {
            nodes,
            secret_file,
            secret,
        };
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
        let (code, body) = self.get(node, "/cluster/status");
        (code == 200)
            .then(|| serde_json::from_str(&body).ok())
            .flatten()
    }

    /// A GET of a `/cluster/…` path with the cluster's credential.
    pub fn get(&self, node: &Node, path: &str) -> (u16, String) {
        let auth = self.secret.sign("GET", path, b"");
        let (code, _, body) = node.http_raw("GET", path, None, &[("Authorization", &auth)]);
        (code, String::from_utf8_lossy(&body).into_owned())
    }

    /// The flags a member started by hand needs to be one of them.
    pub fn member_flags(&self) -> Vec<String> {
        vec![
            "--cluster-secret-file".into(),
            self.secret_file.display().to_string(),
        ]
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

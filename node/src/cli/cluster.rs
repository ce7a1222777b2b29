//! `graunt cluster …`: the admin client. Every command talks to one node's
//! HTTP port (`--node host:port`); changes are forwarded to the leader.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::{json, Value};

/// `graunt cluster` and its options.
#[derive(Debug, Args)]
pub struct ClusterArgs {
    /// File holding the cluster's secret (the members' --cluster-secret-file).
    #[arg(long, global = true)]
    secret_file: Option<PathBuf>,
    /// CA bundle (PEM) the nodes' certificates chain to: call them over
    /// HTTPS (the members' `[tls] ca_file`).
    #[arg(long, global = true)]
    ca_file: Option<PathBuf>,
    #[command(subcommand)]
    command: ClusterCommand,
}

/// The secret calls are signed with, read once.
static SECRET: std::sync::OnceLock<Option<graunt_cluster::secret::ClusterSecret>> =
    std::sync::OnceLock::new();

/// Plain HTTP or HTTPS to the nodes, chosen once.
static TRANSPORT: std::sync::OnceLock<graunt_cluster::transport::Transport> =
    std::sync::OnceLock::new();

/// `graunt cluster` subcommands.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Start a cluster of one node (run once; add the others with `join`).
    Init(NodeArg),
    /// Add a node: `--node` is the new node, `--via` any member.
    Join {
        #[command(flatten)]
        node: NodeArg,
        /// host:port of any member of the cluster.
        #[arg(long)]
        via: String,
    },
    /// Remove a node by id: first its series move to their other owners
    /// (it drains), then it leaves.
    Leave {
        #[command(flatten)]
        node: NodeArg,
        /// The id of the node that leaves.
        #[arg(long)]
        id: u64,
        /// Remove it at once, leaving its series behind (a dead node).
        #[arg(long)]
        no_drain: bool,
    },
    /// Series moving to their owners after membership changes.
    #[command(subcommand)]
    Rebalance(RebalanceCommand),
    /// Fill replicas' gaps from each other: every member pushes the series
    /// it owns to their other owners, which keep what they have.
    Repair {
        #[command(flatten)]
        node: NodeArg,
        /// Only series whose names start with this.
        #[arg(long, default_value = "")]
        prefix: String,
        /// Wait until every member has finished.
        #[arg(long)]
        wait: bool,
    },
    /// Leader, term, members and their health, the ring.
    Status {
        #[command(flatten)]
        node: NodeArg,
        /// Print the JSON answer.
        #[arg(long)]
        json: bool,
    },
    /// Storage schemas every node creates files with.
    #[command(subcommand)]
    Schemas(SchemasCommand),
    /// Tenants of the relays that follow the cluster.
    #[command(subcommand)]
    Tenants(TenantsCommand),
}

/// The node a command talks to.
#[derive(Debug, Args)]
pub struct NodeArg {
    /// host:port of a node's HTTP API [127.0.0.1:8080].
    #[arg(long, default_value = "127.0.0.1:8080")]
    node: String,
}

/// `graunt cluster rebalance …`.
#[derive(Debug, Subcommand)]
pub enum RebalanceCommand {
    /// Per member: series and bytes pending, moved, failed, deleted.
    Status {
        #[command(flatten)]
        node: NodeArg,
        /// Print the JSON answer.
        #[arg(long)]
        json: bool,
    },
}

/// `graunt cluster schemas …`.
#[derive(Debug, Subcommand)]
pub enum SchemasCommand {
    /// Print the cluster's storage-schemas.conf (and aggregation rules).
    Get(NodeArg),
    /// Replace them from carbon's files; nodes use them for new files.
    Set {
        #[command(flatten)]
        node: NodeArg,
        /// A storage-schemas.conf.
        #[arg(long)]
        schemas: PathBuf,
        /// A storage-aggregation.conf.
        #[arg(long)]
        aggregation: Option<PathBuf>,
        /// Resize existing files to the new retentions too, in the
        /// background (whisper-resize's migration; `graunt cluster
        /// rebalance status` shows it).
        #[arg(long)]
        apply_to_existing: bool,
    },
}

/// `graunt cluster tenants …`.
#[derive(Debug, Subcommand)]
pub enum TenantsCommand {
    /// Print the tenants (relay `[[tenant]]` tables).
    Get(NodeArg),
    /// Replace them from a TOML file of `[[tenant]]` tables.
    Set {
        #[command(flatten)]
        node: NodeArg,
        /// The TOML file.
        #[arg(long)]
        file: PathBuf,
    },
}

/// Runs a `graunt cluster` command.
pub fn run(args: ClusterArgs) -> ExitCode {
    let secret = match args
        .secret_file
        .as_deref()
        .map(graunt_cluster::secret::ClusterSecret::read)
    {
        None => None,
        Some(Ok(s)) => Some(s),
        Some(Err(e)) => {
            eprintln!("graunt cluster: {e}");
            return ExitCode::FAILURE;
        }
    };
    let _ = SECRET.set(secret);
    let transport = match args.ca_file.as_deref() {
        None => graunt_cluster::transport::Transport::plain(),
        Some(ca) => match graunt_cluster::transport::Transport::tls(ca) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("graunt cluster: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let _ = TRANSPORT.set(transport);
    let command = args.command;
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .and_then(|rt| rt.block_on(execute(command)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("graunt cluster: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn call(method: &str, node: &str, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
    let transport = TRANSPORT.get().cloned().unwrap_or_default();
    let client = transport.client(Duration::from_secs(60))?;
    let url = transport.url(node, path);
    let secret = SECRET.get().and_then(Option::as_ref);
    let request = match (method, body) {
        ("GET", _) => graunt_cluster::secret::get(&client, secret, &url),
        (m, Some(b)) => graunt_cluster::secret::json_call(&client, secret, m, &url, &b),
        (m, None) => graunt_cluster::secret::json_call(&client, secret, m, &url, &Value::Null),
    };
    let resp = request.send().await.with_context(|| {
        format!("cannot reach {node}: is `graunt serve --node-id …` running there?")
    })?;
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text.clone()));
    if !status.is_success() {
        let message = value["error"].as_str().map(str::to_string).unwrap_or(text);
        anyhow::bail!("{node} answered {status}: {message}");
    }
    Ok(value)
}

async fn execute(command: ClusterCommand) -> anyhow::Result<()> {
    match command {
        ClusterCommand::Init(n) => {
            call("POST", &n.node, "/cluster/init", None).await?;
            println!("cluster started on {}", n.node);
        }
        ClusterCommand::Join { node, via } => {
            let me = call("GET", &node.node, "/cluster/self", None).await?;
            call("POST", &via, "/cluster/join", Some(me.clone())).await?;
            println!("node {} ({}) joined", me["id"], node.node);
        }
        ClusterCommand::Leave { node, id, no_drain } => {
            if !no_drain {
                let before = counters(&node.node, "rebalances_done").await?;
                call(
                    "POST",
                    &node.node,
                    "/cluster/drain",
                    Some(json!({ "id": id })),
                )
                .await?;
                println!("node {id} is draining: its series move to their other owners");
                wait_for_passes(&node.node, "rebalances_done", &before).await?;
            }
            call(
                "POST",
                &node.node,
                "/cluster/leave",
                Some(json!({ "id": id })),
            )
            .await?;
            println!("node {id} left");
        }
        ClusterCommand::Status { node, json } => {
            let s = call("GET", &node.node, "/cluster/status", None).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                println!(
                    "leader: {}  term: {}  ring: {} replication {}",
                    s["leader"],
                    s["term"],
                    s["ring"]["method"].as_str().unwrap_or("?"),
                    s["ring"]["replication"]
                );
                for m in s["members"].as_array().into_iter().flatten() {
                    println!(
                        "  {:>4}  {:<22} pickle {:<22} {:<5} {}",
                        m["id"],
                        m["http"].as_str().unwrap_or(""),
                        m["pickle"].as_str().unwrap_or(""),
                        m["health"].as_str().unwrap_or(""),
                        if m["voter"].as_bool() == Some(true) {
                            "voter"
                        } else {
                            "learner"
                        }
                    );
                }
            }
        }
        ClusterCommand::Rebalance(RebalanceCommand::Status { node, json }) => {
            let s = call("GET", &node.node, "/cluster/rebalance", None).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                println!(
                    "{:>5}  {:<9} {:>8} {:>14} {:>8} {:>14} {:>7} {:>8}",
                    "node",
                    "job",
                    "pending",
                    "pending bytes",
                    "moved",
                    "moved bytes",
                    "failed",
                    "deleted"
                );
                for n in s["nodes"].as_array().into_iter().flatten() {
                    match n["error"].as_str() {
                        Some(e) => println!("{:>5}  unreachable: {e}", n["node"]),
                        None => println!(
                            "{:>5}  {:<9} {:>8} {:>14} {:>8} {:>14} {:>7} {:>8}",
                            n["node"],
                            n["job"].as_str().unwrap_or("?"),
                            n["pending_series"],
                            n["pending_bytes"],
                            n["moved_series"],
                            n["moved_bytes"],
                            n["failed_series"],
                            n["deleted_series"]
                        ),
                    }
                }
            }
        }
        ClusterCommand::Repair { node, prefix, wait } => {
            let path = if prefix.is_empty() {
                "/cluster/repair".to_string()
            } else {
                format!("/cluster/repair?prefix={}", query_escape(&prefix))
            };
            let answer = call("POST", &node.node, &path, None).await?;
            let before: std::collections::BTreeMap<u64, u64> = answer["nodes"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|n| Some((n["node"].as_u64()?, n["repairs_done"].as_u64()?)))
                .collect();
            println!("repair asked of {} members", before.len());
            if wait {
                wait_for_passes(&node.node, "repairs_done", &before).await?;
            }
        }
        ClusterCommand::Schemas(SchemasCommand::Get(n)) => {
            let s = call("GET", &n.node, "/cluster/schemas", None).await?;
            match s["schemas"].as_str() {
                Some(text) => print!("{text}"),
                None => println!("# no schemas set through the cluster: nodes use their own"),
            }
            if let Some(a) = s["aggregation"].as_str() {
                println!("\n# storage-aggregation.conf\n{a}");
            }
        }
        ClusterCommand::Schemas(SchemasCommand::Set {
            node,
            schemas,
            aggregation,
            apply_to_existing,
        }) => {
            let text = std::fs::read_to_string(&schemas)
                .with_context(|| format!("cannot read {}", schemas.display()))?;
            let agg = match &aggregation {
                Some(p) => Some(
                    std::fs::read_to_string(p)
                        .with_context(|| format!("cannot read {}", p.display()))?,
                ),
                None => None,
            };
            let r = call(
                "PUT",
                &node.node,
                "/cluster/schemas",
                Some(json!({
                    "schemas": text,
                    "aggregation": agg,
                    "apply_to_existing": apply_to_existing
                })),
            )
            .await?;
            println!("schemas set (cluster version {})", r["version"]);
            if apply_to_existing {
                println!("existing files are resized in the background: see `graunt cluster rebalance status`");
            }
        }
        ClusterCommand::Tenants(TenantsCommand::Get(n)) => {
            let s = call("GET", &n.node, "/cluster/tenants", None).await?;
            println!(
                "{}",
                s["tenants"]
                    .as_str()
                    .unwrap_or("# no tenants set through the cluster")
            );
        }
        ClusterCommand::Tenants(TenantsCommand::Set { node, file }) => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let r = call(
                "PUT",
                &node.node,
                "/cluster/tenants",
                Some(json!({ "tenants": text })),
            )
            .await?;
            println!("tenants set (cluster version {})", r["version"]);
        }
    }
    Ok(())
}

/// Each member's count `field` (`rebalances_done`, `repairs_done`).
async fn counters(node: &str, field: &str) -> anyhow::Result<std::collections::BTreeMap<u64, u64>> {
    let s = call("GET", node, "/cluster/rebalance", None).await?;
    Ok(s["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| Some((n["node"].as_u64()?, n[field].as_u64()?)))
        .collect())
}

/// Waits until every member in `before` has finished another pass (its
/// `field` grew), saying every 10 s what is left.
async fn wait_for_passes(
    node: &str,
    field: &str,
    before: &std::collections::BTreeMap<u64, u64>,
) -> anyhow::Result<()> {
    let mut said = std::time::Instant::now();
    loop {
        let s = call("GET", node, "/cluster/rebalance", None).await?;
        let nodes: Vec<&Value> = s["nodes"].as_array().into_iter().flatten().collect();
        let waiting: Vec<u64> = before
            .iter()
            .filter(|(id, done)| {
                !nodes.iter().any(|n| {
                    n["node"].as_u64() == Some(**id)
                        && n[field].as_u64().is_some_and(|d| d > **done)
                })
            })
            .map(|(id, _)| *id)
            .collect();
        if waiting.is_empty() {
            println!("done");
            return Ok(());
        }
        if said.elapsed() > Duration::from_secs(10) {
            let pending: u64 = nodes
                .iter()
                .filter_map(|n| n["pending_series"].as_u64())
                .sum();
            let failed: u64 = nodes
                .iter()
                .filter_map(|n| n["failed_series"].as_u64())
                .sum();
            println!(
                "waiting for nodes {waiting:?}: {pending} series pending, {failed} failed so far"
            );
            said = std::time::Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `value` for a URL query.
fn query_escape(value: &str) -> String {
    let mut u = reqwest::Url::parse("http://x/").expect("a valid URL");
    u.query_pairs_mut().append_pair("v", value);
    u.query()
        .unwrap_or_default()
        .trim_start_matches("v=")
        .to_string()
}

/// `graunt health`: a GET that must answer 200 within 3 s.
pub fn health(url: &str, ca_file: Option<&std::path::Path>) -> ExitCode {
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| {
            rt.block_on(async {
                let transport = match ca_file {
                    Some(ca) => {
                        graunt_cluster::transport::Transport::tls(ca).map_err(anyhow::Error::msg)?
                    }
                    None => graunt_cluster::transport::Transport::plain(),
                };
                let client = transport.client(Duration::from_secs(3))?;
                let r = client.get(url).send().await?;
                anyhow::ensure!(r.status().is_success(), "{url} answered {}", r.status());
                Ok(())
            })
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("graunt health: {e:#}");
            ExitCode::FAILURE
        }
    }
}

//! A relay that follows a cluster: its destinations, hash method and
//! replication come from the cluster's state (any member's `/cluster/state`),
//! looked at every `cluster_poll_interval`; when the membership changes the
//! ring is rebuilt and new members get queues and senders, with no restart.
//! Queues of members that left drain to them while they still answer. The
//! relay's `[[rule]]`s come first, resolved against each new membership.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use graunt_cluster::hashing::Destination;
use graunt_cluster::secret::ClusterSecret;
use graunt_cluster::transport::Transport;
use graunt_cluster::ClusterState;

use super::config::QueueConfig;
use super::make_outbound;
use super::pipeline::{Pipeline, Routing};
use crate::route::{Router, RuleSpec};
use crate::shutdown::Shutdown;

/// Asks the nodes, in turn, for the cluster's state.
async fn fetch_state(
    client: &reqwest::Client,
    secret: Option<&ClusterSecret>,
    transport: &Transport,
    nodes: &[String],
) -> Option<ClusterState> {
    for node in nodes {
        let url = transport.url(node, "/cluster/state");
        let Ok(resp) = graunt_cluster::secret::get(client, secret, &url)
            .send()
            .await
        else {
            continue;
        };
        if let Ok(state) = resp.json::<ClusterState>().await {
            if !state.members.is_empty() {
                return Some(state);
            }
        }
    }
    None
}

fn client(transport: &Transport) -> reqwest::Client {
    transport.client(Duration::from_secs(2)).unwrap_or_default()
}

/// The relay's own rules and the destinations outside the cluster they
/// may send to.
#[derive(Debug, Clone, Default)]
pub(super) struct OwnRules {
    /// `[[rule]]`s, destinations by name.
    pub rules: Vec<RuleSpec>,
    /// `destinations`: outside the cluster, only for rules.
    pub extra: Vec<Destination>,
}

/// The router over the cluster's members (and the relay's extra
/// destinations), the rules first. A rule target that names no member (it
/// left, or the name is wrong) is left out with a warning; a rule with no
/// target left is skipped, so its names follow the ring rather than vanish.
fn router(state: &ClusterState, own: &OwnRules) -> Option<Router> {
    let (ring, _) = graunt_cluster::ring::of_members(state)?;
    // Only destinations some rule sends to get a queue and a sender.
    let extra: Vec<Destination> = own
        .extra
        .iter()
        .filter(|d| own.rules.iter().any(|r| r.targets.contains(d)))
        .cloned()
        .collect();
    let probe = Router::with_extra(ring.clone(), extra.clone(), Vec::new());
    let mut rules = Vec::new();
    for spec in &own.rules {
        let (rule, missing) = spec.resolve(probe.destinations());
        if !missing.is_empty() {
            let names: Vec<String> = missing.iter().map(|d| d.display()).collect();
            tracing::warn!(
                pattern = %spec.pattern,
                missing = ?names,
                "a rule names destinations that are neither members (host:port:id as the cluster lists them) nor in destinations; sending to the rest"
            );
        }
        rules.extend(rule);
    }
    Some(Router::with_extra(ring, extra, rules))
}

/// The first router, once some node answers with members (waiting for the
/// cluster to form, saying so every few seconds); `None` if shutdown came
/// first.
pub(super) async fn first_router(
    nodes: &[String],
    secret: Option<&ClusterSecret>,
    transport: &Transport,
    own: &OwnRules,
    mut shutdown: Shutdown,
) -> Option<Router> {
    let client = client(transport);
    let mut said = Instant::now();
    loop {
        if let Some(r) = fetch_state(&client, secret, transport, nodes)
            .await
            .as_ref()
            .and_then(|s| router(s, own))
        {
            return Some(r);
        }
        if said.elapsed() > Duration::from_secs(5) {
            tracing::warn!(nodes = ?nodes, "waiting for the cluster's state (no member answers yet; run `graunt cluster init`?)");
            said = Instant::now();
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = shutdown.recv() => return None,
        }
    }
}

/// What following the cluster needs.
pub(super) struct Following {
    /// Nodes' HTTP addresses from the config.
    pub nodes: Vec<String>,
    /// Signs the calls, when the cluster has a secret.
    pub secret: Option<ClusterSecret>,
    /// Plain HTTP or HTTPS to the nodes.
    pub transport: Transport,
    /// Between looks at the state.
    pub interval: Duration,
    /// Whose routing is swapped.
    pub pipeline: Arc<Pipeline>,
    /// How new members' queues are made.
    pub queues: QueueConfig,
    /// Where new members' senders run.
    pub senders: Arc<Mutex<tokio::task::JoinSet<()>>>,
    /// The senders' own stop signal.
    pub senders_shutdown: Shutdown,
    /// The relay's rules.
    pub own: OwnRules,
}

/// Follows the cluster until shutdown.
pub(super) async fn follow(f: Following, mut shutdown: Shutdown) {
    let Following {
        nodes,
        secret,
        transport,
        interval,
        pipeline,
        queues,
        senders,
        senders_shutdown,
        own,
    } = f;
    let client = client(&transport);
    let mut version = None;
    let mut learned: Vec<String> = Vec::new();
    loop {
        tokio::select! {
            biased;
            _ = shutdown.recv() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        // Members learned from the state are asked too: the configured
        // nodes may be the ones that are down.
        let mut ask = nodes.clone();
        ask.extend(learned.iter().filter(|m| !nodes.contains(m)).cloned());
        let Some(state) = fetch_state(&client, secret.as_ref(), &transport, &ask).await else {
            continue;
        };
        learned = state.members.values().map(|m| m.http.clone()).collect();
        if version == Some(state.version) {
            continue;
        }
        let started = Instant::now();
        let Some(router) = router(&state, &own) else {
            tracing::error!(
                version = state.version,
                "the cluster's ring settings are unusable; keeping the current ring"
            );
            version = Some(state.version);
            continue;
        };
        let current = pipeline.routing();
        let mut outbound = Vec::new();
        let mut added = 0;
        for d in router.destinations() {
            match current.outbound.iter().find(|o| o.destination == *d) {
                Some(o) => outbound.push(o.clone()),
                None => match make_outbound(&queues, d) {
                    Ok(o) => {
                        let (run, s) = (o.clone(), senders_shutdown.clone());
                        senders
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .spawn(async move { run.run(s, Duration::from_secs(10)).await });
                        outbound.push(o);
                        added += 1;
                    }
                    Err(e) => {
                        tracing::error!(destination = %d.display(), error = %e, "cannot queue for a new member; keeping the current ring");
                        outbound.clear();
                        break;
                    }
                },
            }
        }
        if outbound.len() != router.destinations().len() {
            continue;
        }
        let members = outbound.len();
        *pipeline.routing.write().unwrap_or_else(|e| e.into_inner()) =
            Arc::new(Routing { router, outbound });
        version = Some(state.version);
        tracing::info!(
            version = state.version,
            members,
            added,
            rebuild_us = started.elapsed().as_micros() as u64,
            "ring rebuilt from the cluster"
        );
    }
}

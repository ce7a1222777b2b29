//! A relay that follows a cluster: its destinations, hash method and
//! replication come from the cluster's state (any member's `/cluster/state`),
//! looked at every `cluster_poll_interval`; when the membership changes the
//! ring is rebuilt and new members get queues and senders, with no restart.
//! Queues of members that left drain to them while they still answer.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use graunt_cluster::ClusterState;
use graunt_relay::route::Router;

use super::{make_outbound, Pipeline, RelayFile, Routing};
use crate::serve::shutdown::Shutdown;

/// Asks the nodes, in turn, for the cluster's state.
async fn fetch_state(client: &reqwest::Client, nodes: &[String]) -> Option<ClusterState> {
    for node in nodes {
        let Ok(resp) = client
            .get(format!("http://{node}/cluster/state"))
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

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap_or_default()
}

fn router(state: &ClusterState) -> Option<Router> {
    crate::cluster::ring(state).map(|(ring, _)| Router::new(ring, Vec::new()))
}

/// The first router, once some node answers with members (waiting for the
/// cluster to form, saying so every few seconds).
pub(super) async fn first_router(nodes: &[String]) -> anyhow::Result<Router> {
    let client = client();
    let mut said = Instant::now();
    loop {
        if let Some(r) = fetch_state(&client, nodes).await.as_ref().and_then(router) {
            return Ok(r);
        }
        if said.elapsed() > Duration::from_secs(5) {
            tracing::warn!(nodes = ?nodes, "waiting for the cluster's state (no member answers yet; run `graunt cluster init`?)");
            said = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Follows the cluster until shutdown.
pub(super) async fn follow(
    nodes: Vec<String>,
    interval: Duration,
    pipeline: Arc<Pipeline>,
    file: RelayFile,
    senders: Arc<Mutex<tokio::task::JoinSet<()>>>,
    senders_shutdown: Shutdown,
    mut shutdown: Shutdown,
) {
    let client = client();
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
        let Some(state) = fetch_state(&client, &ask).await else {
            continue;
        };
        learned = state.members.values().map(|m| m.http.clone()).collect();
        if version == Some(state.version) {
            continue;
        }
        let started = Instant::now();
        let Some(router) = router(&state) else {
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
                None => match make_outbound(&file, d) {
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

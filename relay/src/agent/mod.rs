//! `graunt agent` as a library call: the local statsd aggregator of a
//! monitored host (what bucky does) and its host collectors (what diamond
//! does). statsd in; every flush, the aggregated metrics go to a remote
//! node or relay over carbon plaintext or pickle, under the host's name
//! prefix; each collector's round goes the same way. While the far end is down they wait in a
//! bounded buffer (oldest dropped and counted past the bound) and are sent
//! once it is back. Over pickle to a graunt node or relay, delivery is
//! acknowledged: a restart of the far end neither loses nor repeats a flush.
//!
//! ```text
//! statsd (UDP/TCP) ─▶ Aggregator ─flush─▶ Buffer ─▶ forwarder ─TCP─▶ node/relay
//! /proc, /sys ─▶ collect (diamond's collectors) ──▶ Buffer
//! ```

pub mod collect;
pub mod config;
mod forward;

use std::net::SocketAddr;
use std::sync::Arc;

pub use self::config::{AgentConfig, AgentFile, Protocol};
use crate::error::Error;
use crate::shutdown::{self, Shutdown};
use crate::statsd::listen as statsd;

/// An agent's bound statsd sockets.
pub struct Listeners(Vec<statsd::Bound>);

impl Listeners {
    /// Binds every statsd listener of `config`.
    pub async fn bind(config: &AgentConfig) -> Result<Listeners, Error> {
        Ok(Listeners(
            statsd::bind(config.listeners.clone(), "statsd").await?,
        ))
    }

    /// The UDP address of each listener, in config order.
    pub fn statsd_addrs(&self) -> Vec<SocketAddr> {
        self.0
            .iter()
            .filter_map(|b| b.udp.local_addr().ok())
            .collect()
    }
}

/// Runs an agent on bound listeners until `shutdown`; then flushes the
/// aggregators a last time and tries for `config.drain` to send what it
/// holds.
pub async fn run(config: AgentConfig, listeners: Listeners, shutdown: Shutdown) {
    let buffer = Arc::new(forward::Buffer::new(config.max_buffer));
    let sink_buffer = buffer.clone();
    // Samples the aggregator dropped are logged by the listener at each
    // flush; the agent has no metrics port to count them on.
    let sink: statsd::Sink = Arc::new(move |lines, _dropped| sink_buffer.push(lines));
    let mut tasks = tokio::task::JoinSet::new();
    for task in statsd::serve(listeners.0, sink, shutdown.clone()) {
        tasks.spawn(task);
    }
    if let Some(table) = &config.collectors {
        match collect::build(table, config.name_prefix.as_deref()) {
            Ok(collectors) => {
                let names: Vec<&str> = collectors.iter().map(|c| c.name()).collect();
                tracing::info!(collectors = ?names, host = ?config.host, "collecting host metrics");
                let collect_buffer = buffer.clone();
                let sink: collect::run::Sink = Arc::new(move |lines| collect_buffer.push(lines));
                tasks.spawn(collect::run::run(
                    collectors,
                    config.host.clone(),
                    sink,
                    shutdown.clone(),
                ));
            }
            // Checked when the config was validated; a host name that no
            // longer resolves lands here.
            Err(e) => tracing::error!(error = %e, "host collectors not started"),
        }
    }
    // The forwarder stops on its own signal, after the last flush is in the
    // buffer.
    let (stop_forwarder, forwarder_shutdown) = shutdown::channel();
    let destination = config.destination.clone();
    let forwarder = match config.protocol {
        Protocol::Pickle => tokio::spawn(forward::forward_pickle(
            destination.clone(),
            config.tls.clone(),
            buffer.clone(),
            forwarder_shutdown,
            config.drain,
        )),
        Protocol::Plaintext => tokio::spawn(forward::forward(
            destination.clone(),
            config.tls.clone(),
            config.protocol,
            buffer.clone(),
            forwarder_shutdown,
            config.drain,
        )),
    };
    tracing::info!(%destination, protocol = ?config.protocol, "ready");
    shutdown.clone().recv().await;
    tracing::info!("shutting down: last flush, then sending what is buffered");
    while tasks.join_next().await.is_some() {}
    stop_forwarder.fire();
    let _ = forwarder.await;
}

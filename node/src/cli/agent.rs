//! `graunt agent`: flags over the `--config` file, then the agent
//! ([`graunt_relay::agent`]) on listeners bound here until SIGTERM or SIGINT.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use graunt_relay::agent::{self, AgentConfig, AgentFile, Protocol};

/// `graunt agent` flags; each overrides the same setting of `--config`.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// TOML config file (see deploy/agent.toml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// statsd address, UDP [127.0.0.1:8125].
    #[arg(long)]
    statsd_addr: Option<String>,
    /// Where aggregated metrics go: host:port of a node or relay.
    #[arg(long)]
    destination: Option<String>,
    /// `plaintext` (port 2003) or `pickle` (port 2004) [plaintext].
    #[arg(long)]
    protocol: Option<String>,
    /// Prepended to every metric name, as written (e.g. `cust.acme`).
    #[arg(long)]
    name_prefix: Option<String>,
    /// More prefix parts, after `--name-prefix`; dots inside a part become `_`.
    #[arg(long = "name-prefix-part")]
    name_prefix_parts: Vec<String>,
    /// Seconds between statsd flushes [10].
    #[arg(long, value_parser = graunt_relay::duration::parse_seconds)]
    flush_interval: Option<f64>,
}

/// Runs the agent until SIGTERM/SIGINT.
pub fn run(args: AgentArgs) -> ExitCode {
    super::service::run("agent", Some(2), |shutdown| async move {
        let config = config(args)?;
        let listeners = agent::Listeners::bind(&config).await?;
        agent::run(config, listeners, shutdown).await;
        Ok(())
    })
}

/// The config file with the flags laid over it, validated.
pub(super) fn config(args: AgentArgs) -> anyhow::Result<AgentConfig> {
    Ok(AgentConfig::from_file(file(args)?)?)
}

/// The config file with the flags laid over it.
fn file(args: AgentArgs) -> Result<AgentFile, graunt_relay::Error> {
    let mut file = AgentFile::read(args.config.as_deref())?;
    if args.statsd_addr.is_some() {
        file.statsd_addr = args.statsd_addr;
    }
    if args.destination.is_some() {
        file.destination = args.destination;
    }
    if let Some(p) = args.protocol.as_deref() {
        file.protocol = Some(Protocol::parse(p)?);
    }
    if args.name_prefix.is_some() {
        file.name_prefix = args.name_prefix;
    }
    if !args.name_prefix_parts.is_empty() {
        file.name_prefix_parts = Some(args.name_prefix_parts);
    }
    if args.flush_interval.is_some() {
        file.flush_interval = args.flush_interval;
    }
    Ok(file)
}

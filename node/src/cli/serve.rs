//! `graunt serve`: flags over the `--config` file, then the node service
//! ([`crate::serve`]) on listeners bound here, until SIGTERM or SIGINT.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::serve::config::{read_file, ServeConfig};

/// `graunt serve` flags; each overrides the same setting of `--config`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// TOML config file (see deploy/graunt.toml for every setting).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Data directory (whisper files in <dir>/whisper, the log in <dir>/wal).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Plaintext address, TCP and UDP ("" turns it off).
    #[arg(long)]
    line_addr: Option<String>,
    /// Pickle address ("" turns it off).
    #[arg(long)]
    pickle_addr: Option<String>,
    /// Carbonlink address ("" turns it off).
    #[arg(long)]
    carbonlink_addr: Option<String>,
    /// HTTP address ("" turns it off).
    #[arg(long)]
    http_addr: Option<String>,
    /// carbon storage-schemas.conf.
    #[arg(long)]
    schemas: Option<PathBuf>,
    /// carbon storage-aggregation.conf.
    #[arg(long)]
    aggregation: Option<PathBuf>,
    /// statsd address, UDP ("" turns it off).
    #[arg(long)]
    statsd_addr: Option<String>,
    /// Seconds between statsd flushes.
    #[arg(long, value_parser = graunt_relay::duration::parse_seconds)]
    statsd_flush_interval: Option<f64>,
    /// Raft id of this node: makes it a cluster member (then `graunt cluster init|join`).
    #[arg(long)]
    node_id: Option<u64>,
    /// HTTP host:port other members reach this node at [the bound address].
    #[arg(long)]
    advertise_http: Option<String>,
    /// Pickle host:port relays send to [the bound address].
    #[arg(long)]
    advertise_pickle: Option<String>,
    /// Seconds a cluster read waits for a peer [2].
    #[arg(long, value_parser = graunt_relay::duration::parse_seconds)]
    peer_timeout: Option<f64>,
    /// Start a new cluster with this node if it has no cluster state yet.
    #[arg(long)]
    cluster_init: bool,
    /// Join the cluster through this member's HTTP host:port (repeatable) if not yet a member.
    #[arg(long = "cluster-join")]
    cluster_join: Vec<String>,
    /// File holding the cluster's secret (the same on every member, relay and admin).
    #[arg(long)]
    cluster_secret_file: Option<PathBuf>,
    /// TLS certificate chain (PEM) for the HTTP and pickle listeners (`[tls] cert_file`).
    #[arg(long, requires = "tls_key_file")]
    tls_cert_file: Option<PathBuf>,
    /// Its private key (PEM) (`[tls] key_file`).
    #[arg(long, requires = "tls_cert_file")]
    tls_key_file: Option<PathBuf>,
    /// CA bundle (PEM) the other members' certificates chain to (`[tls] ca_file`).
    #[arg(long)]
    tls_ca_file: Option<PathBuf>,
}

/// Runs a node until SIGTERM/SIGINT.
pub fn run(args: ServeArgs) -> ExitCode {
    super::service::run("serve", None, |shutdown| async move {
        // Thousands of clients hold connections open; the default soft
        // limit of 1024 descriptors would refuse them.
        if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
            tracing::warn!(error = %e, "cannot raise the open-file limit");
        }
        let cfg = config(args)?;
        let listeners = crate::serve::Listeners::bind(&cfg).await?;
        crate::serve::run(cfg, listeners, shutdown).await
    })
}

/// The file of `--config` with the flags laid over it, validated.
pub(super) fn config(args: ServeArgs) -> anyhow::Result<ServeConfig> {
    let mut file = read_file(args.config.as_deref())?;
    macro_rules! flag {
        ($($name:ident),*) => { $(if args.$name.is_some() { file.$name = args.$name; })* };
    }
    flag!(
        data_dir,
        line_addr,
        pickle_addr,
        carbonlink_addr,
        http_addr,
        schemas,
        aggregation,
        statsd_addr,
        statsd_flush_interval,
        node_id,
        advertise_http,
        advertise_pickle,
        peer_timeout,
        cluster_secret_file
    );
    if let (Some(cert_file), Some(key_file)) = (args.tls_cert_file, args.tls_key_file) {
        let tls = file.tls.get_or_insert_with(Default::default);
        tls.cert_file = cert_file;
        tls.key_file = key_file;
    }
    if let Some(ca) = args.tls_ca_file {
        match &mut file.tls {
            Some(tls) => tls.ca_file = Some(ca),
            None => anyhow::bail!(
                "--tls-ca-file needs --tls-cert-file and --tls-key-file (or [tls] in the config)"
            ),
        }
    }
    if args.cluster_init {
        file.cluster_init = Some(true);
    }
    if !args.cluster_join.is_empty() {
        file.cluster_join = Some(args.cluster_join);
    }
    ServeConfig::from_file(file)
}

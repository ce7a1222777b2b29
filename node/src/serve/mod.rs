//! `graunt serve`: a node. Carbon receivers (plaintext TCP/UDP, pickle),
//! carbonlink, the HTTP port, the write-back cache with its write-ahead log,
//! and the writer thread. SIGTERM or SIGINT stops the listeners, flushes the
//! whole cache into whisper and exits 0.
//!
//! ```text
//! line/udp/pickle ─▶ Ingest::accept ─▶ Store (WAL ▶ cache) ─▶ writer thread ─▶ .wsp
//! carbonlink, /metrics ◀──────────── reads of the cache and files
//! ```

mod carbonlink;
pub mod config;
mod http;
pub(crate) mod ingest;
mod line;
mod pickle;
pub(crate) mod shutdown;
mod telemetry;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use graunt_storage::store::Store;
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use self::config::{read_file, ServeConfig};
use self::ingest::Ingest;
use self::shutdown::Shutdown;
use self::telemetry::Telemetry;

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
    #[arg(long)]
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
    #[arg(long)]
    peer_timeout: Option<f64>,
    /// Start a new cluster with this node if it has no cluster state yet.
    #[arg(long)]
    cluster_init: bool,
    /// Join the cluster through this member's HTTP host:port (repeatable) if not yet a member.
    #[arg(long = "cluster-join")]
    cluster_join: Vec<String>,
}

/// Runs a node until SIGTERM/SIGINT.
pub fn run(args: ServeArgs) -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    let result = config(args).and_then(|cfg| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("graunt")
            .build()
            .context("cannot start the async runtime")?;
        runtime.block_on(serve(cfg))
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("graunt serve: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn config(args: ServeArgs) -> anyhow::Result<ServeConfig> {
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
        peer_timeout
    );
    if args.cluster_init {
        file.cluster_init = Some(true);
    }
    if !args.cluster_join.is_empty() {
        file.cluster_join = Some(args.cluster_join);
    }
    ServeConfig::from_file(file)
}

type Handler = fn(TcpStream, Arc<Ingest>, Shutdown) -> Pin<Box<dyn Future<Output = ()> + Send>>;

/// Accepts connections until shutdown, each handled on its own task, at most
/// `max_connections` at once (further clients wait in the kernel's backlog).
async fn accept_loop(
    listener: TcpListener,
    ingest: Arc<Ingest>,
    mut shutdown: Shutdown,
    protocol: &'static str,
    handler: Handler,
) {
    let permits = line::limiter(ingest.max_connections);
    // Joined at shutdown: a connection draining an acknowledging sender
    // finishes (bounded) before the node writes its cache and exits.
    let mut connections = tokio::task::JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = shutdown.recv() => break,
        };
        let stream = tokio::select! {
            biased;
            _ = shutdown.recv() => break,
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: back off, don't spin.
                    tracing::warn!(protocol, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let (ingest, shutdown) = (ingest.clone(), shutdown.clone());
        connections.spawn(async move {
            ingest.telemetry.connections.inc();
            handler(stream, ingest.clone(), shutdown).await;
            ingest.telemetry.connections.dec();
            drop(permit);
        });
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

async fn bind_tcp(addr: &str, protocol: &str) -> anyhow::Result<TcpListener> {
    let listener = TcpListener::bind(addr).await.with_context(|| {
        format!("cannot listen for {protocol} on {addr}: in use, or not an address of this host?")
    })?;
    tracing::info!(protocol, addr = %listener.local_addr()?, "listening");
    Ok(listener)
}

async fn serve(cfg: ServeConfig) -> anyhow::Result<()> {
    // Thousands of clients hold connections open; the default soft limit of
    // 1024 descriptors would refuse them.
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        tracing::warn!(error = %e, "cannot raise the open-file limit");
    }
    let data_dir = cfg.store.data_dir.clone();
    let (store, replay) = Store::open(
        cfg.store.clone(),
        cfg.schemas.clone(),
        cfg.aggregations.clone(),
    )
    .with_context(|| format!("cannot open the data directory {}", data_dir.display()))?;
    tracing::info!(
        data_dir = %data_dir.display(),
        replayed_points = replay.points,
        torn_segments = replay.torn_segments,
        "storage open"
    );

    let stop_writer = Arc::new(AtomicBool::new(false));
    let writer = {
        let (store, stop) = (store.clone(), stop_writer.clone());
        std::thread::Builder::new()
            .name("graunt-writer".into())
            .spawn(move || graunt_storage::writer::run(store, stop))
            .context("cannot start the writer thread")?
    };

    let host_prefix = format!("carbon.agents.x-{}.x", cfg.instance);
    graunt_storage::metric::validate_name(&host_prefix).map_err(|e| {
        anyhow::anyhow!(
            "instance = {:?} cannot be part of a metric name: {e}",
            cfg.instance
        )
    })?;
    let telemetry = Telemetry::new();
    let ingest = Arc::new(Ingest {
        store: store.clone(),
        telemetry: telemetry.clone(),
        max_future: cfg.max_future,
        max_line_length: cfg.max_line_length,
        max_pickle_frame: cfg.max_pickle_frame,
        idle_timeout: cfg.idle_timeout,
        max_connections: cfg.max_connections,
    });
    let (trigger, shutdown) = shutdown::channel();
    let mut tasks = tokio::task::JoinSet::new();

    if let Some(addr) = &cfg.line_addr {
        let tcp = bind_tcp(addr, "line").await?;
        let udp = UdpSocket::bind(addr)
            .await
            .with_context(|| format!("cannot listen for udp on {addr}"))?;
        tracing::info!(protocol = "udp", addr = %udp.local_addr()?, "listening");
        tasks.spawn(line::serve_tcp(tcp, ingest.clone(), shutdown.clone()));
        tasks.spawn(line::serve_udp(udp, ingest.clone(), shutdown.clone()));
    }
    let mut pickle_bound = None;
    if let Some(addr) = &cfg.pickle_addr {
        let listener = bind_tcp(addr, "pickle").await?;
        pickle_bound = Some(listener.local_addr()?);
        tasks.spawn(pickle::serve(listener, ingest.clone(), shutdown.clone()));
    }
    if let Some(addr) = &cfg.carbonlink_addr {
        tasks.spawn(carbonlink::serve(
            bind_tcp(addr, "carbonlink").await?,
            ingest.clone(),
            shutdown.clone(),
        ));
    }
    if let Some(addr) = &cfg.http_addr {
        let listener = bind_tcp(addr, "http").await?;
        let cluster = match &cfg.cluster {
            None => None,
            Some(c) => {
                let advertise =
                    |given: &Option<String>, bound: Option<std::net::SocketAddr>, what: &str| {
                        given
                            .clone()
                            .or_else(|| {
                                // A wildcard bind is not an address peers can
                                // use; the host name is (containers resolve
                                // each other's by name).
                                let b = bound?;
                                if b.ip().is_unspecified() {
                                    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                                        .ok()?;
                                    Some(format!("{}:{}", host.trim(), b.port()))
                                } else {
                                    Some(b.to_string())
                                }
                            })
                            .with_context(|| format!("a cluster member needs its {what} address"))
                    };
                let me = graunt_cluster::Member {
                    id: c.id,
                    http: advertise(&c.advertise_http, Some(listener.local_addr()?), "HTTP")?,
                    pickle: advertise(&c.advertise_pickle, pickle_bound, "pickle")?,
                };
                tracing::info!(id = me.id, http = %me.http, pickle = %me.pickle, "cluster member");
                let node =
                    crate::cluster::ClusterNode::start(me, &data_dir, c.peer_timeout).await?;
                tasks.spawn(crate::cluster::follow_schemas(
                    node.clone(),
                    store.clone(),
                    shutdown.clone(),
                ));
                tasks.spawn(crate::cluster::bootstrap(
                    node.clone(),
                    c.init,
                    c.join.clone(),
                    shutdown.clone(),
                ));
                Some(node)
            }
        };
        tasks.spawn(http::serve(
            listener,
            store.clone(),
            telemetry.clone(),
            cfg.render_limits,
            cluster,
            shutdown.clone(),
        ));
    } else if cfg.cluster.is_some() {
        anyhow::bail!("a cluster member needs its HTTP port: set http_addr");
    }
    if !cfg.statsd.is_empty() {
        let (store, telemetry) = (store.clone(), telemetry.clone());
        let sink: crate::statsd::Sink = Arc::new(move |lines| {
            let mut points = Vec::with_capacity(lines.len());
            let mut refused = 0u64;
            for l in lines {
                if graunt_storage::metric::validate_name(&l.name).is_err() || !l.value.is_finite() {
                    refused += 1;
                    continue;
                }
                points.push(graunt_storage::Datapoint {
                    name: l.name,
                    timestamp: l.timestamp,
                    value: l.value,
                });
            }
            if refused > 0 {
                telemetry.refuse_many("statsd", "name", refused);
            }
            match store.accept(&points) {
                Ok(()) => telemetry.received.inc_by(points.len() as u64),
                Err(e) => {
                    telemetry.refuse_many("statsd", "wal", points.len() as u64);
                    tracing::error!(error = %e, "cannot append statsd points to the write-ahead log");
                }
            }
        });
        for task in crate::statsd::start(cfg.statsd.clone(), sink, shutdown.clone()).await? {
            tasks.spawn(task);
        }
    }
    tasks.spawn(telemetry::report(
        telemetry.clone(),
        store.clone(),
        cfg.instance.clone(),
        cfg.self_metrics_interval,
        shutdown.clone(),
    ));
    {
        // The periodic fsync of the log.
        let (store, mut shutdown) = (store.clone(), shutdown.clone());
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = shutdown.recv() => return,
                }
                let store = store.clone();
                if let Ok(Err(e)) = tokio::task::spawn_blocking(move || store.wal.sync()).await {
                    // Linux may drop the unwritten pages after a failed fsync;
                    // say so loudly, the log may not survive a power loss.
                    tracing::error!(error = %e, "write-ahead log fsync failed");
                }
            }
        });
    }
    tracing::info!("ready");

    wait_for_signal().await?;
    tracing::info!("shutting down: closing listeners, then writing the cache to whisper");
    trigger.fire();
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;

    stop_writer.store(true, Ordering::Relaxed);
    let left = store.cache.size();
    let failed = tokio::task::spawn_blocking(move || writer.join())
        .await
        .context("writer task")?
        .map_err(|_| anyhow::anyhow!("the writer thread panicked"))?;
    store.wal.sync().context("final write-ahead log sync")?;
    tracing::info!(flushed_points = left, failed_points = failed, "stopped");
    Ok(())
}

pub(crate) async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

//! `graunt serve`, a node, as a library call: [`Listeners::bind`] binds what
//! a [`ServeConfig`] lists, [`run`] serves until its shutdown signal, then
//! writes the whole cache into whisper. Carbon receivers (plaintext TCP/UDP,
//! pickle: graunt-relay's, over the node's [`sink::StoreSink`]), statsd,
//! carbonlink, the HTTP port, the write-back cache with its write-ahead log,
//! the writer thread, schema files followed as they change and, with
//! `node_id`, the cluster member.
//!
//! ```text
//! line/udp/pickle ─▶ StoreSink::accept ─▶ Store (WAL ▶ cache) ─▶ writer thread ─▶ .wsp
//! carbonlink, /render, /metrics ◀──────── reads of the cache and files (and peers)
//! ```

mod carbonlink;
mod cluster;
pub mod config;
mod http;
mod schemas;
pub mod sink;
mod telemetry;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use graunt_relay::net::{bind_line, bind_tcp};
use graunt_relay::receive::{line, pickle};
use graunt_relay::shutdown::Shutdown;
use graunt_relay::statsd::listen as statsd;
use graunt_storage::store::Store;
use tokio::net::{TcpListener, UdpSocket};

pub use self::config::ServeConfig;
use self::sink::StoreSink;
use self::telemetry::Telemetry;

/// A node's bound sockets.
pub struct Listeners {
    line: Option<(TcpListener, Option<UdpSocket>)>,
    pickle: Option<TcpListener>,
    carbonlink: Option<TcpListener>,
    http: Option<TcpListener>,
    statsd: Vec<statsd::Bound>,
}

impl Listeners {
    /// Binds every listener of `cfg` (port 0 lets the kernel choose).
    pub async fn bind(cfg: &ServeConfig) -> anyhow::Result<Listeners> {
        // A TLS plaintext listener has no UDP side: datagrams would go
        // round the certificate check.
        let line = match (&cfg.line_addr, &cfg.tls.line) {
            (Some(addr), None) => {
                let (tcp, udp) = bind_line(addr, "line").await?;
                Some((tcp, Some(udp)))
            }
            (Some(addr), Some(_)) => Some((bind_tcp(addr, "line").await?, None)),
            (None, _) => None,
        };
        let one = |addr: &Option<String>, what: &'static str| {
            let addr = addr.clone();
            async move {
                match addr {
                    Some(a) => bind_tcp(&a, what).await.map(Some),
                    None => Ok(None),
                }
            }
        };
        let pickle = one(&cfg.pickle_addr, "pickle").await?;
        let carbonlink = one(&cfg.carbonlink_addr, "carbonlink").await?;
        let http = one(&cfg.http_addr, "http").await?;
        let statsd = statsd::bind(cfg.statsd.clone(), "statsd").await?;
        Ok(Listeners {
            line,
            pickle,
            carbonlink,
            http,
            statsd,
        })
    }

    /// Every bound address by its label in the log: `line` (TCP), `udp`,
    /// `pickle`, `carbonlink`, `http`, `statsd`, `statsd1`… and `statsdN-tcp`.
    pub fn addrs(&self) -> Vec<(String, SocketAddr)> {
        let mut out = Vec::new();
        let mut add = |label: &str, addr: std::io::Result<SocketAddr>| {
            if let Ok(a) = addr {
                out.push((label.to_string(), a));
            }
        };
        if let Some((tcp, udp)) = &self.line {
            add("line", tcp.local_addr());
            if let Some(udp) = udp {
                add("udp", udp.local_addr());
            }
        }
        for (label, l) in [
            ("pickle", &self.pickle),
            ("carbonlink", &self.carbonlink),
            ("http", &self.http),
        ] {
            if let Some(l) = l {
                add(label, l.local_addr());
            }
        }
        for b in &self.statsd {
            add(&b.label, b.udp.local_addr());
            if let Some(t) = &b.tcp {
                add(&format!("{}-tcp", b.label), t.local_addr());
            }
        }
        out
    }

    /// Where the listener labelled `protocol` (see [`Listeners::addrs`]) is bound.
    pub fn addr(&self, protocol: &str) -> Option<SocketAddr> {
        self.addrs()
            .into_iter()
            .find_map(|(l, a)| (l == protocol).then_some(a))
    }
}

/// Runs a node on bound listeners until `shutdown`; then stops the
/// listeners, writes the whole cache into whisper and syncs the log.
pub async fn run(cfg: ServeConfig, listeners: Listeners, shutdown: Shutdown) -> anyhow::Result<()> {
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
    let sink = Arc::new(StoreSink {
        store: store.clone(),
        telemetry: telemetry.clone(),
        max_future: cfg.max_future,
        rules: if cfg.rules.any() {
            Some(graunt_relay::rules::LiveRules::load(cfg.rules.clone())?)
        } else {
            None
        },
    });
    let mut tasks = tokio::task::JoinSet::new();
    if let Some(rules) = sink.rules.clone().filter(|r| r.aggregates()) {
        let store = store.clone();
        tasks.spawn(rules.emit_aggregates(shutdown.clone(), move |points| {
            if let Err(e) = tokio::task::block_in_place(|| store.accept(&points)) {
                tracing::error!(error = %e, points = points.len(), "cannot store aggregates");
            }
        }));
    }

    let pickle_bound = listeners.addr("pickle");
    if let Some((tcp, udp)) = listeners.line {
        tasks.spawn(line::serve_tcp(
            tcp,
            sink.clone(),
            cfg.limits,
            cfg.tls.line.clone(),
            shutdown.clone(),
        ));
        if let Some(udp) = udp {
            tasks.spawn(line::serve_udp(udp, sink.clone(), shutdown.clone()));
        }
    }
    if let Some(listener) = listeners.pickle {
        tasks.spawn(pickle::serve(
            listener,
            sink.clone(),
            cfg.limits,
            cfg.tls.pickle.clone(),
            shutdown.clone(),
        ));
    }
    if let Some(listener) = listeners.carbonlink {
        tasks.spawn(carbonlink::serve(
            listener,
            sink.clone(),
            cfg.limits,
            shutdown.clone(),
        ));
    }
    // A member's files give way to the cluster's schemas once it has some.
    let mut follow_schemas = None;
    if let Some(listener) = listeners.http {
        let member = match &cfg.cluster {
            None => None,
            Some(c) => Some(
                cluster::start(c, &listener, pickle_bound, &store, &mut tasks, &shutdown).await?,
            ),
        };
        follow_schemas = member.as_ref().map(|(node, _)| node.clone());
        let events: Arc<dyn crate::web::events::EventBook> = match &member {
            None => {
                let path = store.config.data_dir.join("events.json");
                Arc::new(
                    crate::web::events::LocalEvents::open(path.clone())
                        .with_context(|| format!("cannot read the events in {}", path.display()))?,
                )
            }
            Some((node, _)) => Arc::new(cluster::ClusterEvents::new(node.clone())),
        };
        tasks.spawn(http::serve(
            http::Port {
                listener,
                tls: cfg.tls.http.clone(),
            },
            store.clone(),
            telemetry.clone(),
            http::Web {
                limits: cfg.render_limits,
                auth: cfg.auth.clone(),
                events,
            },
            member,
            shutdown.clone(),
        ));
    } else if cfg.cluster.is_some() {
        anyhow::bail!("a cluster member needs its HTTP port: set http_addr");
    }
    {
        let mut s = shutdown.clone();
        tasks.spawn(schemas::follow(
            cfg.schema_files.clone(),
            store.clone(),
            follow_schemas,
            async move { s.recv().await },
        ));
    }
    if !listeners.statsd.is_empty() {
        for task in statsd::serve(listeners.statsd, statsd_sink(&sink), shutdown.clone()) {
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
    tasks.spawn(sync_log(store.clone(), shutdown.clone()));
    tracing::info!("ready");

    shutdown.clone().recv().await;
    tracing::info!("shutting down: closing listeners, then writing the cache to whisper");
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
    store.tags.sync().context("final tag index sync")?;
    tracing::info!(flushed_points = left, failed_points = failed, "stopped");
    Ok(())
}

/// Where the node's statsd flushes go: the store, names and values checked
/// as a receiver checks them, refusals and overflows counted.
fn statsd_sink(sink: &Arc<StoreSink>) -> statsd::Sink {
    let sink = sink.clone();
    Arc::new(move |lines, overflow| {
        let telemetry = &sink.telemetry;
        if overflow > 0 {
            telemetry.refuse_many("statsd", "overflow", overflow);
        }
        let mut points = Vec::with_capacity(lines.len());
        let mut refused = 0u64;
        for l in lines {
            let name = match graunt_storage::metric::normalize_name(&l.name) {
                Ok(n) if l.value.is_finite() => n.into_owned(),
                _ => {
                    refused += 1;
                    continue;
                }
            };
            points.push(graunt_storage::Datapoint {
                name,
                timestamp: l.timestamp,
                value: l.value,
            });
        }
        if refused > 0 {
            telemetry.refuse_many("statsd", "name", refused);
        }
        match sink.store.accept(&points) {
            Ok(()) => telemetry.received.inc_by(points.len() as u64),
            Err(e) => {
                telemetry.refuse_many("statsd", "wal", points.len() as u64);
                tracing::error!(error = %e, "cannot append statsd points to the write-ahead log");
            }
        }
    })
}

/// The periodic fsync of the log (`wal_sync = "periodic"`).
async fn sync_log(store: Arc<Store>, mut shutdown: Shutdown) {
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
}

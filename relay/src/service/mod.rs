//! `graunt relay`, the ingestion front, as a library call: [`Listeners::bind`]
//! binds what a [`RelayConfig`] lists, [`run`] serves until its shutdown
//! signal. Tenant listeners (plaintext TCP/UDP, pickle, statsd) check each
//! point against the tenant's fence, the router picks destinations (relay
//! rules, then the hash ring with replicas, or the cluster's ring when the
//! relay follows one), and each destination's queue sends batched pickle.
//!
//! ```text
//! tenant listeners ─▶ TenantSink (fence) ─▶ Router (rules, ring) ─▶ Outbound (journal) ─pickle─▶ nodes
//! ```

mod batches;
pub mod config;
mod follow;
pub mod journal;
mod metrics;
mod outbound;
mod pipeline;
mod reload;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use graunt_cluster::hashing::Destination;
use tokio::net::{TcpListener, UdpSocket};

use self::config::{Destinations, ListenerProtocol, QueueConfig};
pub use self::config::{RelayConfig, RelayFile};
use self::outbound::Outbound;
use self::pipeline::{Pipeline, Routing, Tenant, TenantSink};
use crate::codec::Point;
use crate::error::Error;
use crate::receive::{line, pickle, Limits};
use crate::shutdown::{self, Shutdown};
use crate::statsd::listen as statsd;
use crate::tls::TlsServer;

/// A bound TCP listener and its TLS, if it speaks TLS.
type Tcp = (TcpListener, Option<Arc<TlsServer>>);

/// One tenant's bound sockets.
struct TenantListeners {
    line: Vec<Tcp>,
    udp: Vec<UdpSocket>,
    pickle: Vec<Tcp>,
    statsd: Vec<statsd::Bound>,
}

/// A relay's bound sockets, in the config's tenant order.
pub struct Listeners {
    tenants: Vec<TenantListeners>,
    http: Option<TcpListener>,
}

impl Listeners {
    /// Binds every listener of `config` (port 0 lets the kernel choose).
    pub async fn bind(config: &RelayConfig) -> Result<Listeners, Error> {
        let mut tenants = Vec::new();
        for t in &config.tenants {
            let mut bound = TenantListeners {
                line: Vec::new(),
                udp: Vec::new(),
                pickle: Vec::new(),
                statsd: Vec::new(),
            };
            for l in &t.listeners {
                let addr = &l.addr;
                let tls = match &l.tls {
                    Some(files) => Some(TlsServer::load(files).map_err(|e| {
                        Error::config(format!("tenant {} listener {addr}: {e}", t.name))
                    })?),
                    None => None,
                };
                let label = format!("{}-{}", t.name, l.protocol.name());
                match l.protocol {
                    // A TLS listener has no UDP side: datagrams would go
                    // round the certificate check.
                    ListenerProtocol::Line if tls.is_some() => bound
                        .line
                        .push((crate::net::bind_tcp(addr, &label).await?, tls)),
                    ListenerProtocol::Line => {
                        let (tcp, udp) = crate::net::bind_line(addr, &label).await?;
                        bound.line.push((tcp, None));
                        bound.udp.push(udp);
                    }
                    ListenerProtocol::Pickle => bound
                        .pickle
                        .push((crate::net::bind_tcp(addr, &label).await?, tls)),
                    ListenerProtocol::Statsd => {
                        let one = crate::statsd::Listener {
                            addr: addr.clone(),
                            tcp: false,
                            config: t.statsd.clone(),
                        };
                        bound.statsd.extend(statsd::bind(vec![one], &label).await?);
                    }
                }
            }
            tenants.push(bound);
        }
        let http = match &config.http_addr {
            Some(addr) => Some(crate::net::bind_tcp(addr, "http").await?),
            None => None,
        };
        Ok(Listeners { tenants, http })
    }

    /// Every bound address by its label in the log: `<tenant>-line`,
    /// `<tenant>-line-udp`, `<tenant>-pickle`, `<tenant>-statsd`, `http`
    /// (the first of each; later ones of a tenant are not named).
    pub fn addrs(&self, config: &RelayConfig) -> Vec<(String, SocketAddr)> {
        let mut out = Vec::new();
        for (t, bound) in config.tenants.iter().zip(&self.tenants) {
            let name = &t.name;
            if let Some((tcp, _)) = bound.line.first() {
                out.extend(tcp.local_addr().ok().map(|a| (format!("{name}-line"), a)));
            }
            if let Some(udp) = bound.udp.first() {
                out.extend(
                    udp.local_addr()
                        .ok()
                        .map(|a| (format!("{name}-line-udp"), a)),
                );
            }
            if let Some((p, _)) = bound.pickle.first() {
                out.extend(p.local_addr().ok().map(|a| (format!("{name}-pickle"), a)));
            }
            if let Some(s) = bound.statsd.first() {
                out.extend(
                    s.udp
                        .local_addr()
                        .ok()
                        .map(|a| (format!("{name}-statsd"), a)),
                );
            }
        }
        if let Some(h) = &self.http {
            out.extend(h.local_addr().ok().map(|a| ("http".to_string(), a)));
        }
        out
    }
}

/// A destination's outbound queue: its journal when the config has a queue
/// directory, else memory.
fn make_outbound(queues: &QueueConfig, d: &Destination) -> Result<Arc<Outbound>, Error> {
    let journal = match &queues.dir {
        Some(dir) => {
            let name: String = d
                .display()
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            let journal =
                journal::Journal::open(dir.join(name), queues.max_spill_bytes, queues.sync)
                    .map_err(|e| {
                        Error::io(
                            format!("cannot open the queue directory {}", dir.display()),
                            e,
                        )
                    })?;
            if !journal.is_empty() {
                tracing::info!(destination = %d.display(), bytes = journal.bytes(), "sending again what the journal holds");
            }
            Some(journal)
        }
        None => None,
    };
    Ok(Arc::new(Outbound::new(
        d.clone(),
        queues.max_queue,
        journal,
        queues.tls.clone(),
    )))
}

/// Runs a relay on bound listeners until `shutdown`, then stops the
/// listeners, lets the statsd listeners flush, and sends what is queued (a
/// journal keeps what is not acknowledged for the next start).
pub async fn run(
    config: RelayConfig,
    listeners: Listeners,
    shutdown: Shutdown,
) -> Result<(), Error> {
    let router = match &config.destinations {
        Destinations::Cluster {
            nodes,
            secret,
            transport,
            rules,
            extra,
            ..
        } => follow::first_router(
            nodes,
            secret.as_ref(),
            transport,
            &follow::OwnRules {
                rules: rules.clone(),
                extra: extra.clone(),
            },
            shutdown.clone(),
        )
        .await
        .ok_or_else(|| Error::Cluster("stopped before the cluster answered".into()))?,
        Destinations::Fixed(router) => router.clone(),
    };
    let mut outbound: Vec<Arc<Outbound>> = Vec::new();
    for d in router.destinations() {
        outbound.push(make_outbound(&config.queues, d)?);
    }
    let pipeline = Arc::new(Pipeline {
        routing: std::sync::RwLock::new(Arc::new(Routing {
            router,
            outbound: outbound.clone(),
        })),
        stats: metrics::Stats::new(),
        rules: if config.rules.any() {
            Some(crate::rules::LiveRules::load(config.rules.clone())?)
        } else {
            None
        },
    });
    let mut tasks = tokio::task::JoinSet::new();
    if let Some(rules) = pipeline.rules.clone().filter(|r| r.aggregates()) {
        let pipeline = pipeline.clone();
        tasks.spawn(rules.emit_aggregates(shutdown.clone(), move |points| {
            pipeline.route(None, "aggregator", points)
        }));
    }
    let mut running = Vec::new();
    for (t, bound) in config.tenants.iter().zip(listeners.tenants) {
        let tenant = Arc::new(Tenant {
            name: t.name.clone(),
            fence: Mutex::new(t.fence.clone()),
            allow_pickle: t.allow_pickle.into(),
        });
        running.push(reload::Running {
            config: t.clone(),
            tenant: tenant.clone(),
        });
        let sink = Arc::new(TenantSink {
            pipeline: pipeline.clone(),
            tenant,
        });
        serve_tenant(&mut tasks, bound, sink, config.limits, &shutdown);
    }
    if let Some(path) = config.source.clone() {
        let routing = format!("{:?}", config.destinations);
        tasks.spawn(reload::follow_tenants(
            path,
            running,
            routing,
            shutdown.clone(),
        ));
    }
    // The senders stop on their own signal, after the listeners (and the
    // statsd flush) have handed over everything they took in.
    let (stop_senders, senders_shutdown) = shutdown::channel();
    let senders = Arc::new(Mutex::new(tokio::task::JoinSet::new()));
    for o in &outbound {
        let (o, s) = (o.clone(), senders_shutdown.clone());
        senders
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .spawn(async move { o.run(s, Duration::from_secs(10)).await });
    }
    if let Destinations::Cluster {
        nodes,
        poll_interval,
        secret,
        transport,
        rules,
        extra,
    } = &config.destinations
    {
        tasks.spawn(follow::follow(
            follow::Following {
                nodes: nodes.clone(),
                secret: secret.clone(),
                transport: transport.clone(),
                interval: *poll_interval,
                pipeline: pipeline.clone(),
                queues: config.queues.clone(),
                senders: senders.clone(),
                senders_shutdown: senders_shutdown.clone(),
                own: follow::OwnRules {
                    rules: rules.clone(),
                    extra: extra.clone(),
                },
            },
            shutdown.clone(),
        ));
    }
    if config.queues.dir.is_some() && config.queues.sync == journal::JournalSync::Periodic {
        tasks.spawn(sync_journals(pipeline.clone(), shutdown.clone()));
    }
    tasks.spawn(metrics::report(
        pipeline.clone(),
        config.id.clone(),
        config.self_metrics_interval,
        shutdown.clone(),
    ));
    if let Some(listener) = listeners.http {
        let p = pipeline.clone();
        let mut s = shutdown.clone();
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let p = p.clone();
                async move { metrics::text(&p) }
            }),
        );
        tasks.spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { s.recv().await })
                .await;
        });
    }
    tracing::info!(destinations = outbound.len(), "ready");
    shutdown.clone().recv().await;
    tracing::info!("shutting down: closing listeners, then sending what is queued");
    while tasks.join_next().await.is_some() {}
    stop_senders.fire();
    let mut senders = std::mem::take(&mut *senders.lock().unwrap_or_else(|e| e.into_inner()));
    while senders.join_next().await.is_some() {}
    Ok(())
}

/// Starts one tenant's listeners on the relay's tasks.
fn serve_tenant(
    tasks: &mut tokio::task::JoinSet<()>,
    bound: TenantListeners,
    sink: Arc<TenantSink>,
    limits: Limits,
    shutdown: &Shutdown,
) {
    for (tcp, tls) in bound.line {
        tasks.spawn(line::serve_tcp(
            tcp,
            sink.clone(),
            limits,
            tls,
            shutdown.clone(),
        ));
    }
    for udp in bound.udp {
        tasks.spawn(line::serve_udp(udp, sink.clone(), shutdown.clone()));
    }
    for (tcp, tls) in bound.pickle {
        tasks.spawn(pickle::serve(
            tcp,
            sink.clone(),
            limits,
            tls,
            shutdown.clone(),
        ));
    }
    if !bound.statsd.is_empty() {
        let s = sink.clone();
        let flushed: statsd::Sink = Arc::new(move |lines, dropped| {
            if dropped > 0 {
                s.pipeline.refuse(&s.tenant, "statsd_overflow", dropped);
            }
            let points = lines
                .into_iter()
                .map(|l| Point {
                    name: l.name,
                    timestamp: l.timestamp,
                    value: l.value,
                })
                .collect();
            s.pipeline.deliver(Some(&s.tenant), "statsd", points);
        });
        for task in statsd::serve(bound.statsd, flushed, shutdown.clone()) {
            tasks.spawn(task);
        }
    }
}

/// Forces every journal's appends to disk once a second
/// (`journal_sync = "periodic"`).
async fn sync_journals(pipeline: Arc<Pipeline>, mut shutdown: Shutdown) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.recv() => return,
        }
        let outbound = pipeline.routing().outbound.clone();
        let _ = tokio::task::spawn_blocking(move || {
            for o in outbound {
                o.sync();
            }
        })
        .await;
    }
}

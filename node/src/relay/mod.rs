//! `graunt relay`: the ingestion front. Tenant listeners (plaintext TCP/UDP,
//! pickle, statsd) check each point against the tenant's fence, the router
//! picks destinations (relay rules, then the hash ring with replicas), and
//! each destination's queue sends batched pickle. `graunt relay lookup`
//! prints where names go, as carbonate's carbon-lookup.
//!
//! ```text
//! tenant listeners ─▶ fence ─▶ router (rules, ring) ─▶ per-destination queue ─pickle─▶ nodes
//! ```

mod batches;
mod follow;
mod outbound;
mod spill;

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use graunt_relay::codec::plaintext::{for_each_line, parse_line};
use graunt_relay::codec::{pickle, Point, TimeBounds};
use graunt_relay::hashing::{Destination, Method, Ring};
use graunt_relay::route::{Fence, Router, Rule};
use prometheus::core::Collector;
use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};
use serde::Deserialize;
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use self::outbound::Outbound;
use crate::ack::Receiving;
use crate::serve::shutdown::{self, Shutdown};

/// `graunt relay` flags.
#[derive(Debug, Args)]
pub struct RelayArgs {
    #[command(subcommand)]
    command: Option<RelayCommand>,
    /// TOML config file (see deploy/relay.toml).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum RelayCommand {
    /// Print where names go: the name, then each destination as host:port:instance.
    Lookup(LookupArgs),
}

#[derive(Debug, Args)]
struct LookupArgs {
    /// Hashing method, instead of the config's: carbon_ch, fnv1a_ch, jump_fnv1a_ch.
    #[arg(long)]
    method: Option<String>,
    /// Copies per metric, instead of the config's.
    #[arg(long)]
    replication: Option<usize>,
    /// Destinations host:port[:instance],… instead of the config's.
    #[arg(long, value_delimiter = ',')]
    destinations: Vec<String>,
    /// Names; read from stdin when none are given.
    names: Vec<String>,
}

/// The relay's TOML file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayFile {
    /// Name in `carbon.relays.<id>.*` [host name].
    pub id: Option<String>,
    /// `/metrics` for Prometheus ["" = off].
    pub http_addr: Option<String>,
    /// carbon_ch, fnv1a_ch or jump_fnv1a_ch [carbon_ch].
    pub method: Option<String>,
    /// Copies of each metric [1].
    pub replication: Option<usize>,
    /// Copies on distinct hosts (carbon's DIVERSE_REPLICAS) [true].
    pub diverse_replicas: Option<bool>,
    /// `host:port[:instance]` of each node (pickle).
    pub destinations: Option<Vec<String>>,
    /// Points queued in memory per destination [1,000,000].
    pub max_queue: Option<usize>,
    /// Directory for queues spilled to disk (one subdirectory per
    /// destination) ["" = no spill: past `max_queue`, points are dropped].
    pub queue_dir: Option<PathBuf>,
    /// Bytes spilled per destination before new points are dropped and counted [10 GiB].
    pub max_spill_bytes: Option<u64>,
    /// Seconds between self-metrics [60].
    pub self_metrics_interval: Option<f64>,
    /// Seconds between flushes of the statsd listeners [10].
    pub statsd_flush_interval: Option<f64>,
    /// statsd aggregation settings for the statsd listeners.
    pub statsd: Option<crate::statsd::StatsdFile>,
    /// Relay rules, evaluated before the ring.
    pub rule: Option<Vec<RuleFile>>,
    /// Tenants and their listeners.
    pub tenant: Option<Vec<TenantFile>>,
    /// HTTP `host:port` of cluster nodes: destinations, ring method and
    /// replication then come from the cluster and follow its membership
    /// (`destinations`, `method`, `replication` and rules are not used).
    pub cluster: Option<Vec<String>>,
    /// Seconds between looks at the cluster's state [0.5].
    pub cluster_poll_interval: Option<f64>,
}

/// `[[rule]]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleFile {
    /// Regular expression searched in the name.
    pub pattern: String,
    /// Destinations (from `destinations`) that receive every match.
    pub destinations: Vec<String>,
    /// Keep evaluating later rules [false].
    #[serde(rename = "continue")]
    pub continue_matching: Option<bool>,
}

/// `[[tenant]]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantFile {
    /// Name in counters and logs.
    pub name: String,
    /// Name prefixes it may write (`cust.acme.`); none means any.
    pub namespaces: Option<Vec<String>>,
    /// Added to the names its statsd listeners flush (e.g. `cust.acme`).
    pub prefix: Option<String>,
    /// Accept pickle [false].
    pub allow_pickle: Option<bool>,
    /// Oldest accepted timestamp, seconds before now [86400].
    pub max_age: Option<i64>,
    /// Furthest accepted timestamp, seconds after now [600].
    pub max_future: Option<i64>,
    /// Points per second, 0 = unlimited [0].
    pub rate_limit: Option<f64>,
    /// Its listeners.
    pub listener: Vec<ListenerFile>,
}

/// `[[tenant.listener]]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerFile {
    /// `line` (TCP and UDP), `pickle` or `statsd`.
    pub protocol: String,
    /// Address.
    pub addr: String,
}

fn read_config(path: Option<&std::path::Path>) -> anyhow::Result<RelayFile> {
    match path {
        None => Ok(RelayFile::default()),
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read {}", p.display()))?;
            toml::from_str(&text).with_context(|| format!("in {}", p.display()))
        }
    }
}

fn build_router(file: &RelayFile) -> anyhow::Result<Router> {
    let destinations: Vec<Destination> = file
        .destinations
        .iter()
        .flatten()
        .map(|d| Destination::parse(d).map_err(anyhow::Error::msg))
        .collect::<anyhow::Result<_>>()?;
    if destinations.is_empty() {
        anyhow::bail!(
            "no destinations: list the nodes as destinations = [\"host:port:instance\", …]"
        );
    }
    let method =
        Method::parse(file.method.as_deref().unwrap_or("carbon_ch")).map_err(anyhow::Error::msg)?;
    let ring = Ring::new(
        method,
        destinations.clone(),
        file.replication.unwrap_or(1),
        file.diverse_replicas.unwrap_or(true),
    )
    .map_err(anyhow::Error::msg)?;
    let mut rules = Vec::new();
    for r in file.rule.iter().flatten() {
        let pattern = regex::Regex::new(&r.pattern)
            .with_context(|| format!("rule pattern {:?}", r.pattern))?;
        let targets = r
            .destinations
            .iter()
            .map(|d| {
                let want = Destination::parse(d).map_err(anyhow::Error::msg)?;
                destinations
                    .iter()
                    .position(|x| *x == want)
                    .with_context(|| format!("rule destination {d} is not in destinations"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        rules.push(Rule {
            pattern,
            targets,
            continue_matching: r.continue_matching.unwrap_or(false),
        });
    }
    Ok(Router::new(ring, rules))
}

/// Runs `graunt relay`.
pub fn run(args: RelayArgs) -> ExitCode {
    if let Some(RelayCommand::Lookup(l)) = args.command {
        return match lookup(args.config.as_deref(), l) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("graunt relay lookup: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .init();
    let result = read_config(args.config.as_deref()).and_then(|file| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?
            .block_on(relay(file))
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("graunt relay: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn lookup(config: Option<&std::path::Path>, args: LookupArgs) -> anyhow::Result<()> {
    let mut file = read_config(config)?;
    if let Some(m) = args.method {
        file.method = Some(m);
    }
    if let Some(r) = args.replication {
        file.replication = Some(r);
    }
    if !args.destinations.is_empty() {
        file.destinations = Some(args.destinations);
    }
    let router = build_router(&file)?;
    let names: Vec<String> = if args.names.is_empty() {
        std::io::stdin()
            .lock()
            .lines()
            .map_while(Result::ok)
            .collect()
    } else {
        args.names
    };
    let mut out = String::new();
    for name in names.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
        out.push_str(name);
        for i in router.route(name) {
            out.push(' ');
            out.push_str(&router.destinations()[i].display());
        }
        out.push('\n');
    }
    print!("{out}");
    Ok(())
}

/// Counters of the relay.
struct Stats {
    registry: Registry,
    received: IntCounterVec,
    refused: IntCounterVec,
    sent: IntGaugeVec,
    dropped: IntGaugeVec,
    queued: IntGaugeVec,
}

impl Stats {
    fn new() -> Stats {
        let registry = Registry::new();
        let received = IntCounterVec::new(
            Opts::new(
                "graunt_relay_received_total",
                "Points accepted, by tenant and protocol",
            ),
            &["tenant", "protocol"],
        )
        .expect("a valid metric");
        let refused = IntCounterVec::new(
            Opts::new(
                "graunt_relay_refused_total",
                "Points or records refused, by tenant and reason",
            ),
            &["tenant", "reason"],
        )
        .expect("a valid metric");
        let sent = IntGaugeVec::new(
            Opts::new("graunt_relay_sent_points", "Points sent, by destination"),
            &["destination"],
        )
        .expect("a valid metric");
        let dropped = IntGaugeVec::new(
            Opts::new(
                "graunt_relay_dropped_points",
                "Points dropped past a full queue, by destination",
            ),
            &["destination"],
        )
        .expect("a valid metric");
        let queued = IntGaugeVec::new(
            Opts::new(
                "graunt_relay_queue_points",
                "Points waiting, by destination",
            ),
            &["destination"],
        )
        .expect("a valid metric");
        for c in [&received, &refused] {
            registry
                .register(Box::new(c.clone()))
                .expect("registered once");
        }
        for g in [&sent, &dropped, &queued] {
            registry
                .register(Box::new(g.clone()))
                .expect("registered once");
        }
        Stats {
            registry,
            received,
            refused,
            sent,
            dropped,
            queued,
        }
    }
}

/// A tenant at run time.
struct Tenant {
    name: String,
    fence: Mutex<Fence>,
    allow_pickle: bool,
}

/// What every listener hands points to.
/// Where points go: the router and one outbound queue per destination (in
/// the router's order). Swapped whole when the cluster's membership changes.
struct Routing {
    router: Router,
    outbound: Vec<Arc<Outbound>>,
}

struct Pipeline {
    routing: std::sync::RwLock<Arc<Routing>>,
    stats: Stats,
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl Pipeline {
    /// Fences (when a tenant is given), routes and queues points.
    /// The routing in force.
    fn routing(&self) -> Arc<Routing> {
        self.routing
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn deliver(&self, tenant: Option<&Tenant>, protocol: &str, points: Vec<Point>) {
        let routing = self.routing();
        let mut per: Vec<Vec<Point>> = vec![Vec::new(); routing.outbound.len()];
        let now = unix_now();
        let mut accepted = 0u64;
        {
            let mut fence = tenant.map(|t| t.fence.lock().unwrap_or_else(|e| e.into_inner()));
            for p in points {
                if let (Some(f), Some(t)) = (fence.as_mut(), tenant) {
                    if let Err(r) = f.check(&p.name, p.timestamp, now) {
                        self.stats
                            .refused
                            .with_label_values(&[&t.name, r.label()])
                            .inc();
                        continue;
                    }
                }
                accepted += 1;
                let targets = routing.router.route(&p.name);
                let last = targets.len().saturating_sub(1);
                let mut p = Some(p);
                for (k, &d) in targets.iter().enumerate() {
                    let point = if k == last {
                        p.take().expect("once")
                    } else {
                        p.clone().expect("kept")
                    };
                    per[d].push(point);
                }
            }
        }
        let name = tenant.map_or("relay", |t| t.name.as_str());
        self.stats
            .received
            .with_label_values(&[name, protocol])
            .inc_by(accepted);
        for (d, points) in per.into_iter().enumerate() {
            if !points.is_empty() {
                routing.outbound[d].push(points);
            }
        }
    }

    fn refuse(&self, tenant: &Tenant, reason: &str, n: u64) {
        self.stats
            .refused
            .with_label_values(&[&tenant.name, reason])
            .inc_by(n);
    }
}

/// A destination's outbound queue, with its spill on disk when the config
/// has a queue directory.
fn make_outbound(file: &RelayFile, d: &Destination) -> anyhow::Result<Arc<Outbound>> {
    let max_queue = file.max_queue.unwrap_or(1_000_000);
    let spill = match file
        .queue_dir
        .as_ref()
        .filter(|p| !p.as_os_str().is_empty())
    {
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
            let spill =
                spill::Spill::open(dir.join(name), file.max_spill_bytes.unwrap_or(10 << 30))
                    .with_context(|| {
                        format!("cannot open the queue directory {}", dir.display())
                    })?;
            if !spill.is_empty() {
                tracing::info!(destination = %d.display(), bytes = spill.bytes(), "replaying the queue kept on disk");
            }
            Some(spill)
        }
        None => None,
    };
    Ok(Arc::new(Outbound::new(d.clone(), max_queue, spill)))
}

async fn relay(file: RelayFile) -> anyhow::Result<()> {
    let router = match &file.cluster {
        Some(nodes) if !nodes.is_empty() => follow::first_router(nodes).await?,
        _ => build_router(&file)?,
    };
    let mut outbound: Vec<Arc<Outbound>> = Vec::new();
    for d in router.destinations() {
        outbound.push(make_outbound(&file, d)?);
    }
    let pipeline = Arc::new(Pipeline {
        routing: std::sync::RwLock::new(Arc::new(Routing {
            router,
            outbound: outbound.clone(),
        })),
        stats: Stats::new(),
    });
    let (trigger, shutdown) = shutdown::channel();
    let mut listeners = tokio::task::JoinSet::new();
    for t in file.tenant.iter().flatten() {
        let tenant = Arc::new(Tenant {
            name: t.name.clone(),
            fence: Mutex::new(Fence::new(
                t.namespaces.clone().unwrap_or_default(),
                t.max_age.unwrap_or(86_400),
                t.max_future.unwrap_or(600),
                t.rate_limit.unwrap_or(0.0),
            )),
            allow_pickle: t.allow_pickle.unwrap_or(false),
        });
        for l in &t.listener {
            let label = format!("{}-{}", t.name, l.protocol);
            match l.protocol.as_str() {
                "line" => {
                    let tcp = TcpListener::bind(&l.addr)
                        .await
                        .with_context(|| format!("cannot listen on {}", l.addr))?;
                    let udp = UdpSocket::bind(&l.addr)
                        .await
                        .with_context(|| format!("cannot listen for udp on {}", l.addr))?;
                    tracing::info!(protocol = %label, addr = %tcp.local_addr()?, "listening");
                    tracing::info!(protocol = %format!("{label}-udp"), addr = %udp.local_addr()?, "listening");
                    listeners.spawn(accept(
                        tcp,
                        pipeline.clone(),
                        tenant.clone(),
                        false,
                        shutdown.clone(),
                    ));
                    listeners.spawn(receive_udp(
                        udp,
                        pipeline.clone(),
                        tenant.clone(),
                        shutdown.clone(),
                    ));
                }
                "pickle" => {
                    let tcp = TcpListener::bind(&l.addr)
                        .await
                        .with_context(|| format!("cannot listen on {}", l.addr))?;
                    tracing::info!(protocol = %label, addr = %tcp.local_addr()?, "listening");
                    listeners.spawn(accept(
                        tcp,
                        pipeline.clone(),
                        tenant.clone(),
                        true,
                        shutdown.clone(),
                    ));
                }
                "statsd" => {
                    let settings = file.statsd.clone().unwrap_or_default();
                    let every = file.statsd_flush_interval.unwrap_or(10.0);
                    if !(every.is_finite() && every > 0.0) {
                        anyhow::bail!(
                            "statsd_flush_interval = {every}: use a positive number of seconds"
                        );
                    }
                    let config =
                        settings.config(Duration::from_secs_f64(every), t.prefix.clone())?;
                    let (pipeline, tenant) = (pipeline.clone(), tenant.clone());
                    let sink: crate::statsd::Sink = Arc::new(move |lines| {
                        let points = lines
                            .into_iter()
                            .map(|l| Point {
                                name: l.name,
                                timestamp: l.timestamp,
                                value: l.value,
                            })
                            .collect();
                        pipeline.deliver(Some(&tenant), "statsd", points);
                    });
                    let one = vec![crate::statsd::Listener {
                        addr: l.addr.clone(),
                        tcp: false,
                        config,
                    }];
                    for task in crate::statsd::start(one, sink, shutdown.clone()).await? {
                        listeners.spawn(task);
                    }
                }
                other => anyhow::bail!(
                    "tenant {}: listener protocol {other:?}: use line, pickle or statsd",
                    t.name
                ),
            }
        }
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
    if let Some(nodes) = file.cluster.clone().filter(|n| !n.is_empty()) {
        let interval = Duration::from_secs_f64(file.cluster_poll_interval.unwrap_or(0.5).max(0.05));
        listeners.spawn(follow::follow(
            nodes,
            interval,
            pipeline.clone(),
            file.clone(),
            senders.clone(),
            senders_shutdown.clone(),
            shutdown.clone(),
        ));
    }
    let id = file.id.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().replace('.', "_"))
            .unwrap_or_else(|_| "relay".into())
    });
    let interval = Duration::from_secs_f64(file.self_metrics_interval.unwrap_or(60.0).max(0.1));
    listeners.spawn(self_metrics(
        pipeline.clone(),
        id,
        interval,
        shutdown.clone(),
    ));
    if let Some(addr) = file.http_addr.as_deref().filter(|a| !a.is_empty()) {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen for http on {addr}"))?;
        tracing::info!(protocol = %"http", addr = %listener.local_addr()?, "listening");
        let p = pipeline.clone();
        let mut s = shutdown.clone();
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let p = p.clone();
                async move { metrics_text(&p) }
            }),
        );
        listeners.spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { s.recv().await })
                .await;
        });
    }
    tracing::info!(destinations = outbound.len(), "ready");
    crate::serve::wait_for_signal().await?;
    tracing::info!("shutting down: closing listeners, then sending what is queued");
    trigger.fire();
    while listeners.join_next().await.is_some() {}
    stop_senders.fire();
    let mut senders = std::mem::take(&mut *senders.lock().unwrap_or_else(|e| e.into_inner()));
    while senders.join_next().await.is_some() {}
    Ok(())
}

fn metrics_text(p: &Pipeline) -> String {
    let routing = p.routing();
    for o in &routing.outbound {
        let d = o.destination.display();
        p.stats
            .sent
            .with_label_values(&[&d])
            .set(o.sent.load(Ordering::Relaxed) as i64);
        p.stats
            .dropped
            .with_label_values(&[&d])
            .set(o.dropped.load(Ordering::Relaxed) as i64);
        p.stats.queued.with_label_values(&[&d]).set(o.len() as i64);
    }
    let mut out = String::new();
    let _ = prometheus::TextEncoder::new().encode_utf8(&p.stats.registry.gather(), &mut out);
    out
}

/// `carbon.relays.<id>.*`, routed like any metric.
async fn self_metrics(p: Arc<Pipeline>, id: String, interval: Duration, mut shutdown: Shutdown) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    let mut last_received = 0u64;
    loop {
        tokio::select! {
            biased;
            _ = shutdown.recv() => return,
            _ = tick.tick() => {}
        }
        let now = unix_now();
        let received: u64 = p
            .stats
            .received
            .collect()
            .iter()
            .flat_map(|f| {
                f.get_metric()
                    .iter()
                    .map(|m| m.get_counter().get_value() as u64)
                    .collect::<Vec<_>>()
            })
            .sum();
        let refused: u64 = p
            .stats
            .refused
            .collect()
            .iter()
            .flat_map(|f| {
                f.get_metric()
                    .iter()
                    .map(|m| m.get_counter().get_value() as u64)
                    .collect::<Vec<_>>()
            })
            .sum();
        let routing = p.routing();
        let sent: u64 = routing
            .outbound
            .iter()
            .map(|o| o.sent.load(Ordering::Relaxed))
            .sum();
        let dropped: u64 = routing
            .outbound
            .iter()
            .map(|o| o.dropped.load(Ordering::Relaxed))
            .sum();
        let queued: usize = routing.outbound.iter().map(|o| o.len()).sum();
        let base = format!("carbon.relays.{id}");
        let points = [
            ("metricsReceived", (received - last_received) as f64),
            ("metricsRefused", refused as f64),
            ("sent", sent as f64),
            ("dropped", dropped as f64),
            ("queued", queued as f64),
        ]
        .into_iter()
        .map(|(k, v)| Point {
            name: format!("{base}.{k}"),
            timestamp: now,
            value: v,
        })
        .collect();
        last_received = received;
        p.deliver(None, "self", points);
    }
}

async fn accept(
    listener: TcpListener,
    p: Arc<Pipeline>,
    tenant: Arc<Tenant>,
    pickle: bool,
    mut shutdown: Shutdown,
) {
    // Connections are joined before the listener's task ends, so the
    // senders start their own shutdown only after every connection has
    // handed over what it read.
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let stream = tokio::select! {
            biased;
            _ = shutdown.recv() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let (p, tenant, shutdown) = (p.clone(), tenant.clone(), shutdown.clone());
        connections.spawn(async move {
            if pickle {
                pickle_connection(stream, p, tenant, shutdown).await
            } else {
                line_connection(stream, p, tenant, shutdown).await
            }
        });
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

fn bounds() -> TimeBounds {
    TimeBounds {
        now: unix_now(),
        max_future: i64::MAX / 4,
    }
}

/// How long a silent client connection is kept.
const IDLE: Duration = Duration::from_secs(3600);

async fn line_connection(
    mut stream: TcpStream,
    p: Arc<Pipeline>,
    tenant: Arc<Tenant>,
    mut shutdown: Shutdown,
) {
    let mut buf = Vec::with_capacity(65536);
    let mut rx = Receiving::default();
    while rx
        .read(&mut stream, &mut buf, 65536, IDLE, &mut shutdown)
        .await
        .is_some()
    {
        let b = bounds();
        let mut points = Vec::new();
        let mut bad = 0u64;
        let used = for_each_line(&buf, |line| {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            match parse_line(line, &b) {
                Ok(pt) => points.push(pt),
                Err(_) => bad += 1,
            }
        });
        buf.drain(..used);
        if buf.len() > 16384 {
            bad += 1;
            buf.clear();
        }
        if bad > 0 {
            p.refuse(&tenant, "malformed", bad);
        }
        p.deliver(Some(&tenant), "line", points);
    }
}

async fn pickle_connection(
    mut stream: TcpStream,
    p: Arc<Pipeline>,
    tenant: Arc<Tenant>,
    mut shutdown: Shutdown,
) {
    let mut buf = Vec::with_capacity(65536);
    let mut rx = Receiving::default();
    while rx
        .read(&mut stream, &mut buf, 65536, IDLE, &mut shutdown)
        .await
        .is_some()
    {
        let mut at = 0;
        let mut points = Vec::new();
        loop {
            match pickle::next_frame(&buf[at..], pickle::DEFAULT_MAX_FRAME) {
                Ok(Some((payload, used))) => {
                    if rx.hello(payload) {
                        // A graunt sender: taken in like any frame, no points.
                    } else if !tenant.allow_pickle {
                        p.refuse(&tenant, "pickle", 1);
                    } else if graunt_relay::codec::pickle_scan::check_plain(payload).is_err() {
                        p.refuse(&tenant, "frame", 1);
                    } else {
                        match pickle::decode_frame(payload, &bounds()) {
                            Ok(records) => {
                                let mut bad = 0;
                                for r in records {
                                    match r {
                                        Ok(pt) => points.push(pt),
                                        Err(_) => bad += 1,
                                    }
                                }
                                if bad > 0 {
                                    p.refuse(&tenant, "malformed", bad);
                                }
                            }
                            Err(_) => p.refuse(&tenant, "frame", 1),
                        }
                    }
                    at += used;
                }
                Ok(None) => break,
                Err(_) => {
                    p.refuse(&tenant, "frame", 1);
                    p.deliver(Some(&tenant), "pickle", points);
                    return;
                }
            }
        }
        buf.drain(..at);
        p.deliver(Some(&tenant), "pickle", points);
        rx.taken(&stream, at);
    }
    rx.finish(&mut stream).await;
}

async fn receive_udp(
    socket: UdpSocket,
    p: Arc<Pipeline>,
    tenant: Arc<Tenant>,
    mut shutdown: Shutdown,
) {
    let mut buf = vec![0u8; 65536];
    loop {
        let n = tokio::select! {
            biased;
            _ = shutdown.recv() => return,
            r = socket.recv(&mut buf) => match r { Ok(n) => n, Err(_) => continue },
        };
        let b = bounds();
        let mut points = Vec::new();
        let mut bad = 0u64;
        let mut data = buf[..n].to_vec();
        if data.last() != Some(&b'\n') {
            data.push(b'\n');
        }
        for_each_line(&data, |line| {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            match parse_line(line, &b) {
                Ok(pt) => points.push(pt),
                Err(_) => bad += 1,
            }
        });
        if bad > 0 {
            p.refuse(&tenant, "malformed", bad);
        }
        p.deliver(Some(&tenant), "line-udp", points);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_parses() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/relay.toml");
        let file = read_config(Some(&path)).unwrap();
        let router = build_router(&file).unwrap();
        assert_eq!(router.destinations().len(), 3);
        assert_eq!(file.tenant.unwrap().len(), 2);
    }
}

//! The node's own metrics: Prometheus counters (`graunt_*_total` for
//! monotonic counts) and gauges served on `/metrics`, and the
//! same figures written into the node every interval as
//! `carbon.agents.<host>-<instance>.*`, the names carbon-cache uses.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use graunt_storage::store::Store;
use graunt_storage::Datapoint;
use prometheus::{Encoder, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

use graunt_relay::shutdown::Shutdown;

/// Counters shared by every listener.
pub struct Telemetry {
    registry: Registry,
    /// Points accepted into the store.
    pub received: IntCounter,
    /// Records refused, by protocol and reason.
    pub refused: IntCounterVec,
    /// Points dropped because the cache was full (UDP only; TCP waits).
    pub dropped: IntCounter,
    /// Open TCP connections.
    pub connections: IntGauge,
    /// Carbonlink queries answered.
    pub cache_queries: IntCounter,
    /// Renders evaluating now (at most `max_concurrent_renders`).
    pub renders_running: IntGauge,
    /// Renders that waited for another to finish first.
    pub renders_waited: IntCounter,
    refused_all: IntCounter,
    committed: IntCounter,
    updates: IntCounter,
    creates: IntCounter,
    errors: IntCounter,
    cache_size: IntGauge,
    cache_queues: IntGauge,
    wal_segments: IntGauge,
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric");
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric");
    c
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric");
    registry
        .register(Box::new(g.clone()))
        .expect("unique metric");
    g
}

impl Telemetry {
    /// Registers every metric.
    pub fn new() -> Arc<Self> {
        let r = Registry::new_custom(Some("graunt".into()), None).expect("valid prefix");
        let refused = IntCounterVec::new(
            Opts::new(
                "records_refused_total",
                "Records refused by receivers, by protocol and reason",
            ),
            &["protocol", "reason"],
        )
        .expect("valid metric");
        r.register(Box::new(refused.clone()))
            .expect("unique metric");
        Arc::new(Telemetry {
            received: counter(
                &r,
                "points_received_total",
                "Points accepted into the store",
            ),
            refused,
            dropped: counter(
                &r,
                "points_dropped_total",
                "Points dropped because the cache was full (UDP)",
            ),
            connections: gauge(&r, "connections", "Open TCP connections"),
            cache_queries: counter(&r, "cache_queries_total", "Carbonlink queries answered"),
            renders_running: gauge(&r, "renders_running", "Renders evaluating now"),
            renders_waited: counter(
                &r,
                "renders_waited_total",
                "Renders that waited for a slot (max_concurrent_renders)",
            ),
            refused_all: IntCounter::new("refused_all", "unregistered sum").expect("valid metric"),
            committed: counter(&r, "committed_points_total", "Points written to whisper"),
            updates: counter(&r, "update_operations_total", "Whisper update_many calls"),
            creates: counter(&r, "creates_total", "Whisper files created"),
            errors: counter(&r, "write_errors_total", "Whisper writes that failed"),
            cache_size: gauge(
                &r,
                "cache_points",
                "Points in the cache, waiting or in flight",
            ),
            cache_queues: gauge(&r, "cache_metrics", "Metrics with points in the cache"),
            wal_segments: gauge(&r, "wal_segments", "Write-ahead log segments on disk"),
            registry: r,
        })
    }

    /// Counts a refused record.
    pub fn refuse(&self, protocol: &str, reason: &str) {
        self.refuse_many(protocol, reason, 1);
    }

    /// Counts `n` refused records.
    pub fn refuse_many(&self, protocol: &str, reason: &str, n: u64) {
        self.refused
            .with_label_values(&[protocol, reason])
            .inc_by(n);
        self.refused_all.inc_by(n);
    }

    fn refused_total(&self) -> u64 {
        self.refused_all.get()
    }

    /// The Prometheus text exposition, with store figures read now.
    pub fn render(&self, store: &Store) -> String {
        let s = &store.stats;
        // The store keeps its own counts; the counters catch up with them.
        for (counter, count) in [
            (&self.committed, &s.committed_points),
            (&self.updates, &s.update_operations),
            (&self.creates, &s.creates),
            (&self.errors, &s.errors),
        ] {
            let (have, now) = (counter.get(), count.load(Ordering::Relaxed));
            if now > have {
                counter.inc_by(now - have);
            }
        }
        let stats = store.cache.stats();
        self.cache_size.set(stats.points as i64);
        self.cache_queues.set(stats.metrics as i64);
        self.wal_segments.set(store.wal.segments() as i64);
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

/// carbon's HOSTNAME: the host name with dots made underscores.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().replace('.', "_"))
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

fn rss_bytes() -> Option<f64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: f64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096.0)
}

/// Writes `carbon.agents.<host>-<instance>.*` into the store every
/// `interval`, each counter as its increase over the interval, as carbon does.
pub async fn report(
    telemetry: Arc<Telemetry>,
    store: Arc<Store>,
    instance: String,
    interval: Duration,
    mut shutdown: Shutdown,
) {
    let prefix = format!("carbon.agents.{}-{instance}.", hostname());
    let mut last = [0u64; 7];
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.recv() => return,
        }
        let s = &store.stats;
        let now_counts = [
            telemetry.received.get(),
            s.committed_points.load(Ordering::Relaxed),
            s.update_operations.load(Ordering::Relaxed),
            s.update_micros.load(Ordering::Relaxed),
            s.creates.load(Ordering::Relaxed),
            s.errors.load(Ordering::Relaxed),
            telemetry.dropped.get() + telemetry.refused_total(),
        ];
        let d: Vec<f64> = now_counts
            .iter()
            .zip(last)
            .map(|(n, l)| n.saturating_sub(l) as f64)
            .collect();
        last = now_counts;
        let stats = store.cache.stats();
        let mut values = vec![
            ("metricsReceived", d[0]),
            ("committedPoints", d[1]),
            ("updateOperations", d[2]),
            ("creates", d[4]),
            ("errors", d[5]),
            ("cache.size", stats.points as f64),
            ("cache.queues", stats.metrics as f64),
            ("cache.queries", telemetry.cache_queries.get() as f64),
            ("activeConnections", telemetry.connections.get() as f64),
            ("dropped", d[6]),
        ];
        if d[2] > 0.0 {
            values.push(("avgUpdateTime", d[3] / d[2] / 1e6));
            values.push(("pointsPerUpdate", d[1] / d[2]));
        }
        if let Some(rss) = rss_bytes() {
            values.push(("memUsage", rss));
        }
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let points: Vec<Datapoint> = values
            .into_iter()
            .map(|(k, v)| Datapoint {
                name: format!("{prefix}{k}"),
                timestamp: ts,
                value: v,
            })
            .collect();
        if let Err(e) = store.accept(&points) {
            tracing::warn!(error = %e, "cannot record self-metrics");
        }
    }
}

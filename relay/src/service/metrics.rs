//! The relay's own metrics: Prometheus counters and gauges on `/metrics`
//! (`graunt_relay_*`: counters for monotonic counts, gauges for levels) and
//! the same figures routed as `carbon.relays.<id>.*` every interval, the
//! names carbon-relay uses.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use prometheus::{IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

use super::pipeline::Pipeline;
use crate::codec::Point;
use crate::net::unix_now;
use crate::shutdown::Shutdown;

/// Counters of the relay.
pub struct Stats {
    registry: Registry,
    /// Points accepted, by tenant and protocol.
    pub received: IntCounterVec,
    /// Points or records refused, by tenant and reason.
    pub refused: IntCounterVec,
    /// Points sent, by destination (from the queues' own counts at scrape).
    sent: IntCounterVec,
    /// Points dropped past a full queue, by destination.
    dropped: IntCounterVec,
    /// Points waiting, by destination.
    queued: IntGaugeVec,
    /// Open client connections.
    pub connections: IntGauge,
}

impl Default for Stats {
    fn default() -> Self {
        Self::new()
    }
}

impl Stats {
    /// Registers every metric.
    pub fn new() -> Stats {
        let registry =
            Registry::new_custom(Some("graunt_relay".into()), None).expect("a valid prefix");
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("a valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("registered once");
            c
        };
        let received = counter(
            "received_total",
            "Points accepted, by tenant and protocol",
            &["tenant", "protocol"],
        );
        let refused = counter(
            "refused_total",
            "Points or records refused, by tenant and reason",
            &["tenant", "reason"],
        );
        let sent = counter(
            "sent_points_total",
            "Points sent, by destination",
            &["destination"],
        );
        let dropped = counter(
            "dropped_points_total",
            "Points dropped past a full queue and spill, by destination",
            &["destination"],
        );
        let queued = IntGaugeVec::new(
            Opts::new("queue_points", "Points waiting, by destination"),
            &["destination"],
        )
        .expect("a valid metric");
        registry
            .register(Box::new(queued.clone()))
            .expect("registered once");
        let connections =
            IntGauge::new("connections", "Open client connections").expect("a valid metric");
        registry
            .register(Box::new(connections.clone()))
            .expect("registered once");
        Stats {
            registry,
            received,
            refused,
            sent,
            dropped,
            queued,
            connections,
        }
    }
}

/// Brings a counter up to a count kept elsewhere (counts only grow).
fn catch_up(counter: &prometheus::IntCounter, count: u64) {
    let have = counter.get();
    if count > have {
        counter.inc_by(count - have);
    }
}

/// `/metrics`: the Prometheus text.
pub fn text(p: &Pipeline) -> String {
    let routing = p.routing();
    for o in &routing.outbound {
        let d = o.destination.display();
        catch_up(
            &p.stats.sent.with_label_values(&[&d]),
            o.sent.load(Ordering::Relaxed),
        );
        catch_up(
            &p.stats.dropped.with_label_values(&[&d]),
            o.dropped.load(Ordering::Relaxed),
        );
        p.stats.queued.with_label_values(&[&d]).set(o.len() as i64);
    }
    let mut out = String::new();
    let _ = prometheus::TextEncoder::new().encode_utf8(&p.stats.registry.gather(), &mut out);
    out
}

fn total(counters: &IntCounterVec) -> u64 {
    use prometheus::core::Collector;
    counters
        .collect()
        .iter()
        .flat_map(|f| {
            f.get_metric()
                .iter()
                .map(|m| m.get_counter().get_value() as u64)
                .collect::<Vec<_>>()
        })
        .sum()
}

/// `carbon.relays.<id>.*`, routed like any metric, every `interval`.
pub async fn report(p: Arc<Pipeline>, id: String, interval: Duration, mut shutdown: Shutdown) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    let mut last_received = 0u64;
    loop {
        tokio::select! {
            biased;
            _ = shutdown.recv() => return,
            _ = tick.tick() => {}
        }
        let now = unix_now();
        let received = total(&p.stats.received);
        let refused = total(&p.stats.refused);
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

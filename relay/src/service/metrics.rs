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
    /// Journal bytes not acknowledged, by destination.
    journal_bytes: IntGaugeVec,
    /// Journal segment files, by destination.
    journal_segments: IntGaugeVec,
    /// Seconds since the oldest frame not acknowledged was journaled.
    journal_oldest: IntGaugeVec,
    /// Frames sent again from the journal (possible duplicates).
    resent: IntCounterVec,
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
            "Points dropped past a full queue or journal, by destination",
            &["destination"],
        );
        let resent = counter(
            "resent_frames_total",
            "Frames sent again from the journal after a reconnect or restart (possible duplicates), by destination",
            &["destination"],
        );
        let gauge = |name: &str, help: &str| {
            let g =
                IntGaugeVec::new(Opts::new(name, help), &["destination"]).expect("a valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("registered once");
            g
        };
        let queued = gauge("queue_points", "Points waiting in memory, by destination");
        let journal_bytes = gauge(
            "journal_bytes",
            "Journal bytes not yet acknowledged by the destination",
        );
        let journal_segments = gauge("journal_segments", "Journal segment files on disk");
        let journal_oldest = gauge(
            "journal_oldest_unacknowledged_seconds",
            "Age of the oldest journaled frame the destination has not acknowledged",
        );
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
            journal_bytes,
            journal_segments,
            journal_oldest,
            resent,
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
        let (bytes, segments, oldest, resent) = o.journal_stats();
        p.stats
            .journal_bytes
            .with_label_values(&[&d])
            .set(bytes as i64);
        p.stats
            .journal_segments
            .with_label_values(&[&d])
            .set(segments as i64);
        p.stats.journal_oldest.with_label_values(&[&d]).set(oldest);
        catch_up(&p.stats.resent.with_label_values(&[&d]), resent);
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
        let mut values = vec![
            (
                "metricsReceived".to_string(),
                (received - last_received) as f64,
            ),
            ("metricsRefused".to_string(), refused as f64),
            ("sent".to_string(), sent as f64),
            ("dropped".to_string(), dropped as f64),
            ("queued".to_string(), queued as f64),
        ];
        for o in &routing.outbound {
            let (bytes, segments, oldest, resent) = o.journal_stats();
            // One node per destination: `host:port:instance` with its
            // dots and colons made `_`.
            let d: String = o
                .destination
                .display()
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            for (k, v) in [
                ("journalBytes", bytes as f64),
                ("journalSegments", segments as f64),
                ("oldestUnacknowledgedAge", oldest as f64),
                ("resentFrames", resent as f64),
            ] {
                values.push((format!("destinations.{d}.{k}"), v));
            }
        }
        let points = values
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

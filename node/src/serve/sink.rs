//! The node's [`Sink`]: points the shared receivers read go into the
//! write-ahead log and then the cache, with backpressure while the cache is
//! full, and refusals counted on the node's telemetry.

use std::sync::Arc;
use std::time::Duration;

use graunt_relay::codec::{Point, TimeBounds};
use graunt_relay::net::unix_now;
use graunt_relay::receive::{Protocol, Sink};
use graunt_relay::rules::LiveRules;
use graunt_relay::shutdown::Shutdown;
use graunt_storage::store::Store;

use super::telemetry::Telemetry;

/// Where a node's receivers put what they read.
pub struct StoreSink {
    /// The store (log, cache, files).
    pub store: Arc<Store>,
    /// The node's counters.
    pub telemetry: Arc<Telemetry>,
    /// Seconds a timestamp may be ahead of the clock.
    pub max_future: i64,
    /// carbon's rule files, if any.
    pub rules: Option<Arc<LiveRules>>,
}

impl Sink for StoreSink {
    fn bounds(&self) -> TimeBounds {
        TimeBounds::new(unix_now(), self.max_future)
    }

    async fn accept(
        &self,
        protocol: Protocol,
        mut points: Vec<Point>,
        wait: bool,
        shutdown: &mut Shutdown,
    ) -> bool {
        if let Some(rules) = &self.rules {
            let outcome = rules.process(&mut points);
            for (reason, n) in [
                ("blacklist", outcome.blacklisted),
                ("whitelist", outcome.not_whitelisted),
                ("rewrite_invalid", outcome.invalid),
            ] {
                // (points that only fed aggregates are not refusals)
                if n > 0 {
                    self.telemetry.refuse_many(protocol.label(), reason, n);
                }
            }
        }
        if points.is_empty() {
            return !shutdown.is_down();
        }
        while !self.store.cache.has_room() {
            if !wait {
                self.telemetry.dropped.inc_by(points.len() as u64);
                return true;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(5)) => {}
                _ = shutdown.recv() => {}
            }
            if shutdown.is_down() {
                // Accept what was read: shutdown drains the cache anyway.
                break;
            }
        }
        // A file write (and, with wal_sync = always, an fsync): let the runtime
        // move other tasks off this worker meanwhile.
        match tokio::task::block_in_place(|| self.store.accept(&points)) {
            Ok(()) => self.telemetry.received.inc_by(points.len() as u64),
            Err(e) => {
                self.telemetry
                    .refuse_many("any", "wal", points.len() as u64);
                tracing::error!(error = %e, points = points.len(), "cannot append to the write-ahead log; points refused");
            }
        }
        !shutdown.is_down()
    }

    fn refuse(&self, protocol: Protocol, reason: &'static str, count: u64) {
        self.telemetry.refuse_many(protocol.label(), reason, count);
    }

    fn connection(&self, delta: i64) {
        self.telemetry.connections.add(delta);
    }
}

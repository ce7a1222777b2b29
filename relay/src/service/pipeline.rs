//! What a relay's listeners hand points to: each tenant's fence, then the
//! router, then one outbound queue per destination. [`TenantSink`] is a
//! tenant's listeners' [`Sink`].

use std::sync::{Arc, Mutex, RwLock};

use super::metrics::Stats;
use super::outbound::Outbound;
use crate::codec::{Point, TimeBounds};
use crate::net::unix_now;
use crate::receive::{Protocol, Sink};
use crate::route::{Fence, Router};
use crate::rules::LiveRules;
use crate::shutdown::Shutdown;

/// A tenant at run time.
pub struct Tenant {
    /// Its name, in counters and logs.
    pub name: String,
    /// Its fence; one lock, as the rate is per tenant.
    pub fence: Mutex<Fence>,
    /// Whether its pickle listeners take frames (a reload may change it).
    pub allow_pickle: std::sync::atomic::AtomicBool,
}

/// Where points go: the router and one outbound queue per destination (in
/// the router's order). Swapped whole when the cluster's membership changes.
pub struct Routing {
    /// Rules and ring.
    pub router: Router,
    /// Queues, in the router's destination order.
    pub outbound: Vec<Arc<Outbound>>,
}

/// The relay's routing and counters.
pub struct Pipeline {
    /// The routing in force.
    pub routing: RwLock<Arc<Routing>>,
    /// Counters.
    pub stats: Stats,
    /// carbon's rule files, if any.
    pub rules: Option<Arc<LiveRules>>,
}

impl Pipeline {
    /// The routing in force.
    pub fn routing(&self) -> Arc<Routing> {
        self.routing
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Applies the rule files, then [`Pipeline::route`]s.
    pub fn deliver(&self, tenant: Option<&Tenant>, protocol: &str, mut points: Vec<Point>) {
        if let Some(rules) = &self.rules {
            let outcome = rules.process(&mut points);
            let name = tenant.map_or("relay", |t| t.name.as_str());
            for (reason, n) in [
                ("blacklist", outcome.blacklisted),
                ("whitelist", outcome.not_whitelisted),
                ("rewrite_invalid", outcome.invalid),
            ] {
                if n > 0 {
                    self.stats
                        .refused
                        .with_label_values(&[name, reason])
                        .inc_by(n);
                }
            }
        }
        self.route(tenant, protocol, points);
    }

    /// Fences (when a tenant is given), routes and queues points the rules
    /// have seen (or made: aggregates).
    pub fn route(&self, tenant: Option<&Tenant>, protocol: &str, mut points: Vec<Point>) {
        // Tagged names are placed by their normalised form, as carbon's
        // relay with TAG_RELAY_NORMALIZED: one series has one owner however
        // its tags were ordered (receivers normalise already: this is for
        // statsd flushes and aggregates; a normal name costs one parse).
        let before = points.len();
        points.retain_mut(|p| {
            if !graunt_storage::tags::is_tagged(&p.name) {
                return true;
            }
            match graunt_storage::metric::normalize_name(&p.name) {
                Ok(std::borrow::Cow::Owned(n)) => {
                    p.name = n;
                    true
                }
                Ok(_) => true,
                Err(_) => false,
            }
        });
        if points.len() < before {
            let who = tenant.map_or("relay", |t| t.name.as_str());
            self.stats
                .refused
                .with_label_values(&[who, "name"])
                .inc_by((before - points.len()) as u64);
        }
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
                let mut p = Some(p);
                for (k, &d) in targets.iter().enumerate() {
                    // The last copy moves the point; earlier ones clone it.
                    let point = if k + 1 == targets.len() {
                        p.take()
                    } else {
                        p.clone()
                    };
                    per[d].extend(point);
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

    /// Counts refused records of a tenant.
    pub fn refuse(&self, tenant: &Tenant, reason: &str, n: u64) {
        self.stats
            .refused
            .with_label_values(&[&tenant.name, reason])
            .inc_by(n);
    }
}

/// A tenant's listeners' sink: fence, route, queue.
pub struct TenantSink {
    /// The relay's pipeline.
    pub pipeline: Arc<Pipeline>,
    /// The tenant.
    pub tenant: Arc<Tenant>,
}

impl Sink for TenantSink {
    fn bounds(&self) -> TimeBounds {
        // The fence judges freshness, per tenant.
        TimeBounds {
            now: unix_now(),
            max_future: i64::MAX / 4,
        }
    }

    fn allows_pickle(&self) -> bool {
        self.tenant
            .allow_pickle
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    async fn accept(
        &self,
        protocol: Protocol,
        points: Vec<Point>,
        _wait: bool,
        shutdown: &mut Shutdown,
    ) -> bool {
        let label = match protocol {
            Protocol::Udp => "line-udp",
            p => p.label(),
        };
        self.pipeline.deliver(Some(&self.tenant), label, points);
        !shutdown.is_down()
    }

    fn refuse(&self, _protocol: Protocol, reason: &'static str, count: u64) {
        // A tenant's counters keep the relay's coarse reasons.
        let reason = match reason {
            "pickle" => "pickle",
            "frame" | "frame_too_large" => "frame",
            _ => "malformed",
        };
        self.pipeline.refuse(&self.tenant, reason, count);
    }

    fn connection(&self, delta: i64) {
        self.pipeline.stats.connections.add(delta);
    }
}

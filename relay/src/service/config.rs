//! The relay's settings: [`RelayFile`], its TOML file as read, and
//! [`RelayConfig`], the validated form a relay runs with (defaults filled
//! in, protocols and durations checked, the router built). Every default is
//! here, next to the field it fills.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use graunt_cluster::hashing::{Destination, Method, Ring};
use graunt_cluster::secret::ClusterSecret;
use graunt_cluster::transport::Transport;
use serde::Deserialize;

use super::journal::JournalSync;
use crate::error::Error;
use crate::receive::Limits;
use crate::route::{Fence, Router, RuleSpec};
use crate::statsd::{Config as StatsdConfig, StatsdFile};
use crate::tls::{ClientFiles, ServerFiles, TlsClient};

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
    /// Directory of the destinations' journals (one subdirectory each):
    /// every accepted batch is written there before it is acknowledged and
    /// kept until its destination acknowledges it ["" = none: queues in
    /// memory only, lost if the relay dies; past `max_queue`, points are dropped].
    pub queue_dir: Option<PathBuf>,
    /// Journal bytes per destination before new points are dropped and counted [10 GiB].
    pub max_spill_bytes: Option<u64>,
    /// When journal writes are forced to disk: `always` (before each batch
    /// is acknowledged), `periodic` (every second) or `never` [periodic].
    pub journal_sync: Option<JournalSync>,
    /// Seconds between self-metrics [60].
    #[serde(default, deserialize_with = "crate::duration::option_seconds")]
    pub self_metrics_interval: Option<f64>,
    /// Seconds between flushes of the statsd listeners [10].
    #[serde(default, deserialize_with = "crate::duration::option_seconds")]
    pub statsd_flush_interval: Option<f64>,
    /// statsd aggregation settings for the statsd listeners.
    pub statsd: Option<StatsdFile>,
    /// Relay rules, evaluated before the ring.
    pub rule: Option<Vec<RuleFile>>,
    /// Tenants and their listeners.
    pub tenant: Option<Vec<TenantFile>>,
    /// carbon's `rewrite-rules.conf` [none].
    pub rewrite_rules: Option<PathBuf>,
    /// carbon's `whitelist.conf`, with `use_whitelist` [none].
    pub whitelist: Option<PathBuf>,
    /// carbon's `blacklist.conf`, with `use_whitelist` [none].
    pub blacklist: Option<PathBuf>,
    /// carbon's `USE_WHITELIST` [false].
    pub use_whitelist: Option<bool>,
    /// carbon-aggregator's `aggregation-rules.conf` [none].
    pub aggregation_rules: Option<PathBuf>,
    /// carbon's `FORWARD_ALL` [true].
    pub forward_all: Option<bool>,
    /// HTTP `host:port` of cluster nodes: the ring's destinations, method
    /// and replication then come from the cluster and follow its
    /// membership (`method` and `replication` are not used); `[[rule]]`s
    /// still apply, sending to members named `host:port:id` as the cluster
    /// lists them, or to `destinations`, which are then only where rules
    /// send outside the cluster.
    pub cluster: Option<Vec<String>>,
    /// Seconds between looks at the cluster's state [0.5].
    #[serde(default, deserialize_with = "crate::duration::option_seconds")]
    pub cluster_poll_interval: Option<f64>,
    /// The cluster's secret (the members' `cluster_secret_file`), for
    /// reading its state [none].
    pub cluster_secret_file: Option<PathBuf>,
    /// TCP connections per listener [50000].
    pub max_connections: Option<usize>,
    /// Longest plaintext line, bytes [16384].
    pub max_line_length: Option<usize>,
    /// Largest pickle frame, bytes [1 MiB].
    pub max_pickle_frame: Option<usize>,
    /// Seconds a silent client connection is kept [600].
    #[serde(default, deserialize_with = "crate::duration::option_whole_seconds")]
    pub idle_timeout: Option<u64>,
    /// TLS to the destinations, and to the cluster's HTTP ports when the
    /// relay follows one [none: plain TCP and HTTP].
    pub destination_tls: Option<ClientFiles>,
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

/// A tenant listener's protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenerProtocol {
    /// Carbon plaintext, TCP and UDP on one address.
    Line,
    /// Carbon pickle (TCP).
    Pickle,
    /// statsd (UDP), aggregated here.
    Statsd,
}

impl ListenerProtocol {
    /// Its name in the config file and in logs.
    pub fn name(self) -> &'static str {
        match self {
            ListenerProtocol::Line => "line",
            ListenerProtocol::Pickle => "pickle",
            ListenerProtocol::Statsd => "statsd",
        }
    }
}

/// `[[tenant.listener]]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerFile {
    /// `line` (TCP and UDP), `pickle` or `statsd`.
    pub protocol: ListenerProtocol,
    /// Address.
    pub addr: String,
    /// TLS on this listener (line and pickle; a TLS line listener has no
    /// UDP side) [none].
    pub tls: Option<ServerFiles>,
}

impl RelayFile {
    /// Reads a relay's TOML file; no file means every default.
    pub fn read(path: Option<&Path>) -> Result<RelayFile, Error> {
        match path {
            None => Ok(RelayFile::default()),
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| Error::io(format!("cannot read {}", p.display()), e))?;
                toml::from_str(&text).map_err(|e| Error::config(format!("in {}: {e}", p.display())))
            }
        }
    }

    /// The `[[rule]]`s, their destinations by name.
    pub fn rule_specs(&self) -> Result<Vec<RuleSpec>, Error> {
        self.rule
            .iter()
            .flatten()
            .map(|r| {
                Ok(RuleSpec {
                    pattern: regex::Regex::new(&r.pattern)
                        .map_err(|e| Error::config(format!("rule pattern {:?}: {e}", r.pattern)))?,
                    targets: r
                        .destinations
                        .iter()
                        .map(|d| Destination::parse(d).map_err(Error::Config))
                        .collect::<Result<_, _>>()?,
                    continue_matching: r.continue_matching.unwrap_or(false),
                })
            })
            .collect()
    }

    /// The router of a relay that does not follow a cluster: its rules,
    /// then its ring over `destinations`.
    pub fn router(&self) -> Result<Router, Error> {
        let destinations: Vec<Destination> = self
            .destinations
            .iter()
            .flatten()
            .map(|d| Destination::parse(d).map_err(Error::Config))
            .collect::<Result<_, _>>()?;
        if destinations.is_empty() {
            return Err(Error::config(
                "no destinations: list the nodes as destinations = [\"host:port:instance\", …]",
            ));
        }
        let method =
            Method::parse(self.method.as_deref().unwrap_or("carbon_ch")).map_err(Error::Config)?;
        let ring = Ring::new(
            method,
            destinations.clone(),
            self.replication.unwrap_or(1),
            self.diverse_replicas.unwrap_or(true),
        )
        .map_err(Error::Config)?;
        let mut rules = Vec::new();
        for spec in self.rule_specs()? {
            match spec.resolve(&destinations) {
                (Some(rule), missing) if missing.is_empty() => rules.push(rule),
                (_, missing) => {
                    return Err(Error::config(format!(
                        "rule destination {} is not in destinations",
                        missing[0].display()
                    )))
                }
            }
        }
        Ok(Router::new(ring, rules))
    }
}

/// Where points go when the relay does not follow a cluster.
#[derive(Debug, Clone)]
pub enum Destinations {
    /// A fixed router from the file.
    Fixed(Router),
    /// The cluster's members, asked through these HTTP addresses.
    Cluster {
        /// Nodes' HTTP `host:port`.
        nodes: Vec<String>,
        /// How often the state is looked at.
        poll_interval: Duration,
        /// Signs the calls, when the cluster has a secret.
        secret: Option<ClusterSecret>,
        /// Plain HTTP or HTTPS to the nodes.
        transport: Transport,
        /// The `[[rule]]`s, resolved against the members at each change.
        rules: Vec<RuleSpec>,
        /// `destinations` outside the cluster that only rules send to.
        extra: Vec<Destination>,
    },
}

/// A tenant as the relay runs it.
#[derive(Debug, Clone)]
pub struct TenantConfig {
    /// Its name.
    pub name: String,
    /// Its fence (namespaces, freshness, rate).
    pub fence: Fence,
    /// Whether its pickle listeners take frames.
    pub allow_pickle: bool,
    /// Its listeners.
    pub listeners: Vec<ListenerConfig>,
    /// The statsd aggregation of its statsd listeners (with its prefix).
    pub statsd: StatsdConfig,
}

/// A tenant's listener as the relay runs it.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerConfig {
    /// Its protocol.
    pub protocol: ListenerProtocol,
    /// Its address.
    pub addr: String,
    /// Its TLS files, if it speaks TLS.
    pub tls: Option<ServerFiles>,
}

/// Queues per destination.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// Points kept in memory.
    pub max_queue: usize,
    /// Where the journals are (none: queues in memory only).
    pub dir: Option<PathBuf>,
    /// Journal bytes per destination.
    pub max_spill_bytes: u64,
    /// When journal writes are forced to disk.
    pub sync: JournalSync,
    /// TLS to the destinations, if configured.
    pub tls: Option<Arc<TlsClient>>,
}

/// A relay's validated settings.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Name in `carbon.relays.<id>.*`.
    pub id: String,
    /// `/metrics` address, if any.
    pub http_addr: Option<String>,
    /// Where points go.
    pub destinations: Destinations,
    /// Queues per destination.
    pub queues: QueueConfig,
    /// Between self-metrics.
    pub self_metrics_interval: Duration,
    /// Tenants and their listeners.
    pub tenants: Vec<TenantConfig>,
    /// Bounds of every listener.
    pub limits: Limits,
    /// carbon's rule files, applied before fences and routing.
    pub rules: crate::rules::RuleFiles,
    /// The file it was read from, read again at SIGHUP for the tenants
    /// (none: the embedded default, never re-read).
    pub source: Option<PathBuf>,
}

impl RelayConfig {
    /// Validates a file: defaults filled in, every setting checked.
    pub fn from_file(file: RelayFile) -> Result<RelayConfig, Error> {
        let destinations = match file.cluster.clone().filter(|n| !n.is_empty()) {
            Some(nodes) => Destinations::Cluster {
                nodes,
                poll_interval: seconds(
                    "cluster_poll_interval",
                    file.cluster_poll_interval.unwrap_or(0.5),
                )?
                .max(Duration::from_millis(50)),
                secret: match &file.cluster_secret_file {
                    Some(p) => {
                        Some(ClusterSecret::read(p).map_err(|e| Error::config(e.to_string()))?)
                    }
                    None => None,
                },
                transport: match &file.destination_tls {
                    Some(t) => Transport::tls(&t.ca_file)
                        .map_err(|e| Error::config(format!("destination_tls: {e}")))?,
                    None => Transport::plain(),
                },
                rules: file.rule_specs()?,
                extra: file
                    .destinations
                    .iter()
                    .flatten()
                    .map(|d| Destination::parse(d).map_err(Error::Config))
                    .collect::<Result<_, _>>()?,
            },
            None => Destinations::Fixed(file.router()?),
        };
        let every = seconds(
            "statsd_flush_interval",
            file.statsd_flush_interval.unwrap_or(10.0),
        )?;
        let settings = file.statsd.clone().unwrap_or_default();
        let mut tenants = Vec::new();
        for t in file.tenant.iter().flatten() {
            tenants.push(TenantConfig {
                name: t.name.clone(),
                fence: Fence::new(
                    t.namespaces.clone().unwrap_or_default(),
                    t.max_age.unwrap_or(86_400),
                    t.max_future.unwrap_or(600),
                    t.rate_limit.unwrap_or(0.0),
                ),
                allow_pickle: t.allow_pickle.unwrap_or(false),
                listeners: t
                    .listener
                    .iter()
                    .map(|l| listener(&t.name, l))
                    .collect::<Result<_, _>>()?,
                statsd: settings.config(every, t.prefix.clone())?,
            });
        }
        let defaults = Limits::default();
        let rules = crate::rules::RuleFiles {
            rewrite_rules: file.rewrite_rules.clone(),
            whitelist: file.whitelist.clone(),
            blacklist: file.blacklist.clone(),
            use_whitelist: file.use_whitelist,
            aggregation_rules: file.aggregation_rules.clone(),
            forward_all: file.forward_all,
        };
        // Refused at start: a file that does not parse names its line.
        crate::rules::Rules::read(&rules)?;
        Ok(RelayConfig {
            rules,
            id: file.id.clone().unwrap_or_else(|| {
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .map(|h| h.trim().replace('.', "_"))
                    .unwrap_or_else(|_| "relay".into())
            }),
            http_addr: file.http_addr.clone().filter(|a| !a.is_empty()),
            destinations,
            queues: QueueConfig {
                max_queue: file.max_queue.unwrap_or(1_000_000),
                dir: file.queue_dir.clone().filter(|p| !p.as_os_str().is_empty()),
                max_spill_bytes: file.max_spill_bytes.unwrap_or(10 << 30),
                sync: file.journal_sync.unwrap_or_default(),
                tls: match &file.destination_tls {
                    Some(t) => Some(
                        TlsClient::load(t)
                            .map_err(|e| Error::config(format!("destination_tls: {e}")))?,
                    ),
                    None => None,
                },
            },
            self_metrics_interval: seconds(
                "self_metrics_interval",
                file.self_metrics_interval.unwrap_or(60.0),
            )?
            .max(Duration::from_millis(100)),
            tenants,
            limits: Limits {
                max_connections: file
                    .max_connections
                    .unwrap_or(defaults.max_connections)
                    .max(1),
                max_line_length: file
                    .max_line_length
                    .unwrap_or(defaults.max_line_length)
                    .max(64),
                max_pickle_frame: file
                    .max_pickle_frame
                    .unwrap_or(defaults.max_pickle_frame)
                    .max(1024),
                idle_timeout: file
                    .idle_timeout
                    .map_or(defaults.idle_timeout, |s| Duration::from_secs(s.max(1))),
            },
            source: None,
        })
    }
}

/// A tenant's listener, checked: TLS is for TCP listeners.
fn listener(tenant: &str, l: &ListenerFile) -> Result<ListenerConfig, Error> {
    if l.tls.is_some() && l.protocol == ListenerProtocol::Statsd {
        return Err(Error::config(format!(
            "tenant {tenant}: the statsd listener on {} is UDP and cannot use TLS; \
             use TLS on a line or pickle listener",
            l.addr
        )));
    }
    Ok(ListenerConfig {
        protocol: l.protocol,
        addr: l.addr.clone(),
        tls: l.tls.clone(),
    })
}

/// A positive number of seconds, or an error naming the setting.
fn seconds(setting: &str, value: f64) -> Result<Duration, Error> {
    if value.is_finite() && value > 0.0 {
        Ok(Duration::from_secs_f64(value))
    } else {
        Err(Error::config(format!(
            "{setting} = {value}: use a positive number of seconds"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/relay.toml");
        let file = RelayFile::read(Some(&path)).unwrap();
        let router = file.router().unwrap();
        assert_eq!(router.destinations().len(), 3);
        assert_eq!(file.tenant.clone().unwrap().len(), 2);
        let config = RelayConfig::from_file(file).unwrap();
        assert_eq!(config.tenants.len(), 2);
    }

    #[test]
    fn an_unknown_listener_protocol_is_refused_when_read() {
        let text = "destinations = [\"127.0.0.1:2004\"]\n[[tenant]]\nname = \"a\"\n[[tenant.listener]]\nprotocol = \"http\"\naddr = \"127.0.0.1:0\"\n";
        let e = toml::from_str::<RelayFile>(text).unwrap_err().to_string();
        assert!(e.contains("unknown variant `http`"), "{e}");
    }
}

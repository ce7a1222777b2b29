//! `graunt serve` settings: a TOML file (`--config`) overlaid by flags, with
//! defaults that make a complete single node on Graphite's usual ports.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use graunt_cluster::transport::Transport;
use graunt_relay::receive::Limits;
use graunt_relay::statsd::{Listener as StatsdListener, StatsdFile};
use graunt_relay::tls::{ServerFiles, TlsServer};
use graunt_storage::schema::{Aggregations, Schemas};
use graunt_storage::store::StoreConfig;
use graunt_storage::wal::SyncPolicy;
use serde::Deserialize;

/// Every setting, as read from the TOML file; all optional. Addresses may be
/// `""` to turn a listener off.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Data directory [`var`].
    pub data_dir: Option<PathBuf>,
    /// Plaintext, TCP and UDP [`0.0.0.0:2003`].
    pub line_addr: Option<String>,
    /// Pickle, TCP [`127.0.0.1:2004`: no credential, so this host only by default].
    pub pickle_addr: Option<String>,
    /// Carbonlink cache queries, TCP [`127.0.0.1:7002`: this host only by default].
    pub carbonlink_addr: Option<String>,
    /// HTTP: `/metrics` and, later, the web API [`0.0.0.0:8080`].
    pub http_addr: Option<String>,
    /// carbon `storage-schemas.conf` [embedded default].
    pub schemas: Option<PathBuf>,
    /// carbon `storage-aggregation.conf` [embedded default].
    pub aggregation: Option<PathBuf>,
    /// Instance name in `carbon.agents.<host>-<instance>` [`a`].
    pub instance: Option<String>,
    /// Points the cache holds before TCP readers are slowed [10,000,000].
    pub max_cache_size: Option<usize>,
    /// Whisper updates per second, 0 = unlimited [0].
    pub max_updates_per_second: Option<f64>,
    /// Whisper files created per minute, 0 = unlimited [0].
    pub max_creates_per_minute: Option<f64>,
    /// `always`, `periodic` (every second) or `never` [periodic].
    pub wal_sync: Option<WalSync>,
    /// Create whisper files sparse (holes) instead of allocated [false].
    pub sparse_create: Option<bool>,
    /// Writer threads [the machine's cores, at most 4].
    pub writers: Option<usize>,
    /// Seconds between reads of the whisper tree by the name index, for
    /// files other processes add or delete; 0 = only at start [300].
    pub index_rescan_seconds: Option<u64>,
    /// Seconds a timestamp may be ahead of the clock [3600].
    pub max_future: Option<i64>,
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
    /// Longest plaintext line, bytes [16384].
    pub max_line_length: Option<usize>,
    /// Largest pickle frame, bytes [1 MiB].
    pub max_pickle_frame: Option<usize>,
    /// Open TCP connections per listener [50,000].
    pub max_connections: Option<usize>,
    /// Seconds a silent connection is kept [600].
    #[serde(
        default,
        deserialize_with = "graunt_relay::duration::option_whole_seconds"
    )]
    pub idle_timeout: Option<u64>,
    /// Seconds between self-metric writes [60].
    #[serde(
        default,
        deserialize_with = "graunt_relay::duration::option_whole_seconds"
    )]
    pub self_metrics_interval: Option<u64>,
    /// Series one `/render` request may fetch [100,000].
    pub max_render_series: Option<usize>,
    /// Datapoints one `/render` request may fetch [50,000,000].
    pub max_render_points: Option<usize>,
    /// Calls a target may nest [64].
    pub max_expression_depth: Option<usize>,
    /// Renders evaluated at once; the others wait their turn [twice the
    /// cores: each render already spreads over them].
    pub max_concurrent_renders: Option<usize>,
    /// statsd, UDP [`0.0.0.0:8125`].
    pub statsd_addr: Option<String>,
    /// statsd on TCP too, same address [false].
    pub statsd_tcp: Option<bool>,
    /// Seconds between statsd flushes [10].
    #[serde(default, deserialize_with = "graunt_relay::duration::option_seconds")]
    pub statsd_flush_interval: Option<f64>,
    /// statsd aggregation settings and extra listeners.
    pub statsd: Option<StatsdFile>,
    /// This node's raft id: set, the node is a cluster member [none].
    pub node_id: Option<u64>,
    /// HTTP `host:port` other members reach this node at [the bound address].
    pub advertise_http: Option<String>,
    /// Pickle `host:port` relays send to [the bound address].
    pub advertise_pickle: Option<String>,
    /// Seconds a cluster read waits for a peer before answering without it [2].
    #[serde(default, deserialize_with = "graunt_relay::duration::option_seconds")]
    pub peer_timeout: Option<f64>,
    /// Start a new cluster with this node if it has no cluster state yet [false].
    pub cluster_init: Option<bool>,
    /// HTTP `host:port` of members to join through, tried in turn until one
    /// takes this node (no-op once it is a member) [none].
    pub cluster_join: Option<Vec<String>>,
    /// A file holding the cluster's secret: calls between members, from
    /// relays and from `graunt cluster` carry a credential made from it, and
    /// calls without one are refused (401) [none: the cluster API is open,
    /// and a warning says so at start].
    pub cluster_secret_file: Option<PathBuf>,
    /// Users of the read API and UI; none: open, as graphite-web is.
    pub user: Option<Vec<crate::web::auth::UserFile>>,
    /// Origins a browser may call the API from (CORS), `"*"` for any [none].
    pub cors_origins: Option<Vec<String>>,
    /// Basic logins checked against an LDAP directory [none].
    pub ldap: Option<crate::web::auth::LdapFile>,
    /// Bytes per second a cluster member pushes when moving series to new
    /// owners after a membership change, 0 = no limit [52428800].
    pub rebalance_bytes_per_second: Option<u64>,
    /// Delete a series this member no longer owns once its new owners have
    /// it [true].
    pub rebalance_delete: Option<bool>,
    /// Bytes per second a background repair pushes, 0 = no limit [1048576].
    pub repair_bytes_per_second: Option<u64>,
    /// Hours between background repairs (each owned series pushed to its
    /// other owners, filling their gaps), 0 = only `graunt cluster repair` [0].
    pub repair_interval_hours: Option<f64>,
    /// TLS on the HTTP port and carbon listeners, and to peers [none].
    pub tls: Option<TlsFile>,
}

/// `[tls]`: certificates for the node's listeners and the CA its peers'
/// certificates chain to.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFile {
    /// Certificate chain (PEM), leaf first.
    pub cert_file: PathBuf,
    /// Its private key (PEM).
    pub key_file: PathBuf,
    /// CA bundle (PEM) the other members' certificates chain to: a cluster
    /// member whose HTTP port is TLS calls its peers over HTTPS checked
    /// against it [none].
    pub ca_file: Option<PathBuf>,
    /// Require client certificates from these CAs (PEM) on the TLS carbon
    /// listeners (pickle, line), not on HTTP [none].
    pub client_ca_file: Option<PathBuf>,
    /// Which listeners speak TLS: `http`, `pickle`, `line` [http, pickle].
    pub listeners: Option<Vec<String>>,
}

/// The node's TLS as it runs.
#[derive(Debug, Clone)]
pub struct NodeTls {
    /// The HTTP port's TLS, if it speaks TLS.
    pub http: Option<Arc<TlsServer>>,
    /// The pickle listener's.
    pub pickle: Option<Arc<TlsServer>>,
    /// The plaintext TCP listener's (then it has no UDP side).
    pub line: Option<Arc<TlsServer>>,
}

impl TlsFile {
    fn load(&self) -> anyhow::Result<NodeTls> {
        let names = self
            .listeners
            .clone()
            .unwrap_or_else(|| vec!["http".into(), "pickle".into()]);
        for n in &names {
            if !matches!(n.as_str(), "http" | "pickle" | "line") {
                bail!("tls.listeners: {n:?} cannot speak TLS; use http, pickle or line");
            }
        }
        let on = |n: &str| names.iter().any(|x| x == n);
        let http = ServerFiles {
            cert_file: self.cert_file.clone(),
            key_file: self.key_file.clone(),
            client_ca_file: None,
        };
        let carbon = ServerFiles {
            client_ca_file: self.client_ca_file.clone(),
            ..http.clone()
        };
        let load =
            |files: &ServerFiles| TlsServer::load(files).map_err(|e| anyhow::anyhow!("tls: {e}"));
        Ok(NodeTls {
            http: if on("http") { Some(load(&http)?) } else { None },
            pickle: if on("pickle") {
                Some(load(&carbon)?)
            } else {
                None
            },
            line: if on("line") {
                Some(load(&carbon)?)
            } else {
                None
            },
        })
    }
}

/// The settings a node runs with.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Storage settings.
    pub store: StoreConfig,
    /// Listener addresses; `None` when turned off.
    pub line_addr: Option<String>,
    /// See [`FileConfig::pickle_addr`].
    pub pickle_addr: Option<String>,
    /// See [`FileConfig::carbonlink_addr`].
    pub carbonlink_addr: Option<String>,
    /// See [`FileConfig::http_addr`].
    pub http_addr: Option<String>,
    /// Parsed storage rules.
    pub schemas: Schemas,
    /// Parsed aggregation rules.
    pub aggregations: Aggregations,
    /// Where they were read from, to read again when they change.
    pub schema_files: super::schemas::SchemaFiles,
    /// Self-metric instance name.
    pub instance: String,
    /// See [`FileConfig::max_future`].
    pub max_future: i64,
    /// carbon's rule files, applied to what the receivers read.
    pub rules: graunt_relay::rules::RuleFiles,
    /// Receiver bounds: `max_connections`, `max_line_length`,
    /// `max_pickle_frame`, `idle_timeout` (defaults shared with the relay).
    pub limits: Limits,
    /// See [`FileConfig::self_metrics_interval`].
    pub self_metrics_interval: std::time::Duration,
    /// Bounds on `/render` requests.
    pub render_limits: crate::web::Limits,
    /// Who may read, and CORS.
    pub auth: std::sync::Arc<crate::web::auth::Auth>,
    /// statsd listeners.
    pub statsd: Vec<StatsdListener>,
    /// Cluster membership, when `node_id` is set.
    pub cluster: Option<ClusterSettings>,
    /// TLS on the listeners.
    pub tls: NodeTls,
}

/// `wal_sync`: when the write-ahead log is forced to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WalSync {
    /// After every batch (power loss loses nothing accepted).
    Always,
    /// Every second.
    Periodic,
    /// Left to the kernel.
    Never,
}

/// A node's cluster settings.
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    /// Raft id.
    pub id: u64,
    /// Advertised HTTP address (`None`: the bound one).
    pub advertise_http: Option<String>,
    /// Advertised pickle address (`None`: the bound one).
    pub advertise_pickle: Option<String>,
    /// How long reads wait for a peer.
    pub peer_timeout: std::time::Duration,
    /// Start a cluster if there is none yet.
    pub init: bool,
    /// Seeds to join through.
    pub join: Vec<String>,
    /// The cluster's secret.
    pub secret: Option<graunt_cluster::secret::ClusterSecret>,
    /// Plain HTTP or HTTPS to peers.
    pub transport: Transport,
    /// Moving and repairing series.
    pub rebalance: graunt_cluster::rebalance::Settings,
}

fn addr(value: Option<String>, default: &str) -> Option<String> {
    let a = value.unwrap_or_else(|| default.to_string());
    (!a.is_empty()).then_some(a)
}

fn read_rules(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

impl ServeConfig {
    /// Validates raw settings into the runtime form.
    pub fn from_file(f: FileConfig) -> anyhow::Result<Self> {
        let logins = f.user.as_ref().is_some_and(|u| !u.is_empty()) || f.ldap.is_some();
        if logins && f.node_id.is_some() && f.cluster_secret_file.is_none() {
            bail!(
                "a cluster member with users or ldap needs cluster_secret_file (--cluster-secret-file): \
                 without it /cluster/find and /cluster/fetch serve any series to anyone"
            );
        }
        let tls = match &f.tls {
            Some(t) => t.load()?,
            None => NodeTls {
                http: None,
                pickle: None,
                line: None,
            },
        };
        let transport = match (&f.tls, &tls.http) {
            (
                Some(TlsFile {
                    ca_file: Some(ca), ..
                }),
                Some(_),
            ) => Transport::tls(ca).map_err(|e| anyhow::anyhow!("tls.ca_file: {e}"))?,
            (_, Some(_)) if f.node_id.is_some() => bail!(
                "a cluster member whose HTTP port speaks TLS needs tls.ca_file: \
                 the CA its peers' certificates chain to"
            ),
            _ => Transport::plain(),
        };
        let schemas = match &f.schemas {
            Some(p) => {
                Schemas::parse(&read_rules(p)?).with_context(|| format!("in {}", p.display()))?
            }
            None => Schemas::embedded(),
        };
        let aggregations = match &f.aggregation {
            Some(p) => Aggregations::parse(&read_rules(p)?)
                .with_context(|| format!("in {}", p.display()))?,
            None => Aggregations::embedded(),
        };
        for warning in schemas.warnings.iter().chain(&aggregations.warnings) {
            tracing::warn!("{warning}");
        }
        let wal_sync = match f.wal_sync.unwrap_or(WalSync::Periodic) {
            WalSync::Always => SyncPolicy::Always,
            WalSync::Periodic => SyncPolicy::Periodic,
            WalSync::Never => SyncPolicy::Never,
        };
        let defaults = StoreConfig::default();
        let store = StoreConfig {
            data_dir: f.data_dir.unwrap_or(defaults.data_dir),
            max_cache_size: f.max_cache_size.unwrap_or(defaults.max_cache_size),
            wal_sync,
            max_updates_per_second: f.max_updates_per_second.unwrap_or(0.0),
            max_creates_per_minute: f.max_creates_per_minute.unwrap_or(0.0),
            sparse_create: f.sparse_create.unwrap_or(false),
            writers: f.writers.unwrap_or(defaults.writers).clamp(1, 64),
            index_rescan: f
                .index_rescan_seconds
                .map_or(defaults.index_rescan, std::time::Duration::from_secs),
            ..defaults
        };
        Ok(ServeConfig {
            store,
            line_addr: addr(f.line_addr, "0.0.0.0:2003"),
            // Pickle and carbonlink carry no credential: only this host
            // reaches them unless the operator says otherwise.
            pickle_addr: addr(f.pickle_addr, "127.0.0.1:2004"),
            carbonlink_addr: addr(f.carbonlink_addr, "127.0.0.1:7002"),
            http_addr: addr(f.http_addr, "0.0.0.0:8080"),
            schemas,
            aggregations,
            schema_files: super::schemas::SchemaFiles {
                schemas: f.schemas.clone(),
                aggregation: f.aggregation.clone(),
            },
            instance: f.instance.unwrap_or_else(|| "a".into()),
            max_future: f.max_future.unwrap_or(3600),
            rules: {
                let rules = graunt_relay::rules::RuleFiles {
                    rewrite_rules: f.rewrite_rules.clone(),
                    whitelist: f.whitelist.clone(),
                    blacklist: f.blacklist.clone(),
                    use_whitelist: f.use_whitelist,
                    aggregation_rules: f.aggregation_rules.clone(),
                    forward_all: f.forward_all,
                };
                graunt_relay::rules::Rules::read(&rules)?;
                rules
            },
            limits: {
                let d = Limits::default();
                Limits {
                    max_connections: f.max_connections.unwrap_or(d.max_connections).max(1),
                    max_line_length: f.max_line_length.unwrap_or(d.max_line_length).max(64),
                    max_pickle_frame: f.max_pickle_frame.unwrap_or(d.max_pickle_frame),
                    idle_timeout: f
                        .idle_timeout
                        .map_or(d.idle_timeout, |s| std::time::Duration::from_secs(s.max(1))),
                }
            },
            self_metrics_interval: std::time::Duration::from_secs(
                f.self_metrics_interval.unwrap_or(60).max(1),
            ),
            statsd: {
                let interval = f.statsd_flush_interval.unwrap_or(10.0);
                if !(interval.is_finite() && interval > 0.0) {
                    bail!("statsd_flush_interval = {interval}: use a positive number of seconds");
                }
                let addr = addr(f.statsd_addr.clone(), "0.0.0.0:8125");
                f.statsd.clone().unwrap_or_default().listeners(
                    addr.as_deref(),
                    f.statsd_tcp.unwrap_or(false),
                    None,
                    std::time::Duration::from_secs_f64(interval),
                )?
            },
            cluster: match f.node_id {
                None => None,
                Some(id) => {
                    let t = f.peer_timeout.unwrap_or(2.0);
                    if !(t.is_finite() && t > 0.0) {
                        bail!("peer_timeout = {t}: use a positive number of seconds");
                    }
                    Some(ClusterSettings {
                        id,
                        advertise_http: f.advertise_http.clone(),
                        advertise_pickle: f.advertise_pickle.clone(),
                        peer_timeout: std::time::Duration::from_secs_f64(t),
                        init: f.cluster_init.unwrap_or(false),
                        join: f.cluster_join.clone().unwrap_or_default(),
                        secret: match &f.cluster_secret_file {
                            Some(p) => Some(graunt_cluster::secret::ClusterSecret::read(p)?),
                            None => None,
                        },
                        transport,
                        rebalance: {
                            let d = graunt_cluster::rebalance::Settings::default();
                            let hours = f.repair_interval_hours.unwrap_or(0.0);
                            if !(hours.is_finite() && hours >= 0.0) {
                                bail!("repair_interval_hours = {hours}: use 0 (off) or a positive number of hours");
                            }
                            graunt_cluster::rebalance::Settings {
                                bytes_per_second: f
                                    .rebalance_bytes_per_second
                                    .unwrap_or(d.bytes_per_second),
                                delete: f.rebalance_delete.unwrap_or(d.delete),
                                repair_bytes_per_second: f
                                    .repair_bytes_per_second
                                    .unwrap_or(d.repair_bytes_per_second),
                                repair_interval: (hours > 0.0)
                                    .then(|| std::time::Duration::from_secs_f64(hours * 3600.0)),
                            }
                        },
                    })
                }
            },
            auth: std::sync::Arc::new(
                crate::web::auth::Auth::new(
                    f.user.clone().unwrap_or_default(),
                    f.cors_origins.clone().unwrap_or_default(),
                    f.ldap.clone(),
                )
                .map_err(anyhow::Error::msg)?,
            ),
            tls,
            render_limits: crate::web::Limits {
                max_series: f.max_render_series.unwrap_or(100_000).max(1),
                max_points: f.max_render_points.unwrap_or(50_000_000).max(1),
                max_depth: f.max_expression_depth.unwrap_or(64).clamp(1, 512),
                max_concurrent_renders: f
                    .max_concurrent_renders
                    .unwrap_or_else(|| crate::web::Limits::default().max_concurrent_renders)
                    .max(1),
            },
        })
    }
}

/// Reads `--config` (if given) as TOML.
pub fn read_file(path: Option<&Path>) -> anyhow::Result<FileConfig> {
    let Some(path) = path else {
        return Ok(FileConfig::default());
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("invalid config {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_on_a_cluster_member_need_the_cluster_secret() {
        let file: FileConfig = toml::from_str(
            "node_id = 1\n[[user]]\nname = \"a\"\ntoken = \"a-token-long-enough\"\n",
        )
        .unwrap();
        let e = ServeConfig::from_file(file).unwrap_err().to_string();
        assert!(e.contains("cluster_secret_file"), "{e}");
    }

    #[test]
    fn durations_take_units_in_files_and_flags() {
        let file: FileConfig =
            toml::from_str("idle_timeout = \"10m\"\nself_metrics_interval = \"2min\"\n").unwrap();
        let cfg = ServeConfig::from_file(file).unwrap();
        assert_eq!(cfg.limits.idle_timeout, std::time::Duration::from_secs(600));
        assert_eq!(
            cfg.self_metrics_interval,
            std::time::Duration::from_secs(120)
        );
        let cfg = crate::cli::serve_config([
            "--statsd-flush-interval",
            "1min",
            "--node-id",
            "1",
            "--peer-timeout",
            "1500ms",
        ])
        .unwrap();
        assert_eq!(cfg.statsd[0].config.flush_interval_ms, 60_000);
        assert_eq!(
            cfg.cluster.unwrap().peer_timeout,
            std::time::Duration::from_millis(1500)
        );
        let e = crate::cli::serve_config(["--statsd-flush-interval", "soon"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a duration"), "{e}");
    }

    /// The documented example files are valid configs (paths in them aside).
    #[test]
    fn the_example_configs_parse() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let text = std::fs::read_to_string(root.join("deploy/graunt.toml")).unwrap();
        let mut file: FileConfig = toml::from_str(&text).unwrap();
        file.schemas = None;
        file.aggregation = None;
        let cfg = ServeConfig::from_file(file).unwrap();
        assert_eq!(cfg.statsd.len(), 1);
        assert_eq!(cfg.statsd[0].config.flush_interval_ms, 10_000);
        let text = std::fs::read_to_string(root.join("deploy/agent.toml")).unwrap();
        let agent: graunt_relay::agent::AgentFile = toml::from_str(&text).unwrap();
        assert_eq!(
            agent.protocol,
            Some(graunt_relay::agent::Protocol::Plaintext)
        );
    }
}

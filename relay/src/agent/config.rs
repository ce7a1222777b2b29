//! The agent's settings: [`AgentFile`], its TOML file as read (flags
//! override it field by field), and [`AgentConfig`], the validated form.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::collect::{self, Host};
use crate::error::Error;
use crate::statsd::{Listener, StatsdFile};
use crate::tls::{ClientFiles, TlsClient};

/// How the agent talks to its destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Carbon plaintext (port 2003): no acknowledgements.
    #[serde(alias = "line")]
    Plaintext,
    /// Acknowledged pickle (port 2004) to a graunt node or relay; plain
    /// pickle to carbon.
    Pickle,
}

impl Protocol {
    /// `plaintext` (or `line`) or `pickle`.
    pub fn parse(name: &str) -> Result<Protocol, Error> {
        match name {
            "plaintext" | "line" => Ok(Protocol::Plaintext),
            "pickle" => Ok(Protocol::Pickle),
            other => Err(Error::config(format!(
                "protocol {other:?}: use plaintext or pickle"
            ))),
        }
    }
}

/// Every setting of the agent's TOML file.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentFile {
    /// statsd, UDP [`127.0.0.1:8125`].
    pub statsd_addr: Option<String>,
    /// statsd on TCP too [false].
    pub statsd_tcp: Option<bool>,
    /// host:port of the node or relay (required).
    pub destination: Option<String>,
    /// `plaintext` or `pickle` [plaintext].
    pub protocol: Option<Protocol>,
    /// Prefix, as written [none].
    pub name_prefix: Option<String>,
    /// Prefix parts after it; dots inside a part become `_` [none].
    pub name_prefix_parts: Option<Vec<String>>,
    /// Seconds between flushes [10].
    #[serde(default, deserialize_with = "crate::duration::option_seconds")]
    pub flush_interval: Option<f64>,
    /// Points held while the destination is down [1,000,000].
    pub max_buffer: Option<usize>,
    /// statsd aggregation settings.
    pub statsd: Option<StatsdFile>,
    /// TLS to the destination (a relay's TLS listener) [none: plain TCP].
    pub destination_tls: Option<ClientFiles>,
    /// Host collectors (diamond's): defaults for all, a table per
    /// collector [none: no host metrics].
    pub collectors: Option<toml::Table>,
    /// The host's /proc, for collectors [/proc].
    pub proc_root: Option<PathBuf>,
    /// The host's /sys, for collectors [/sys].
    pub sys_root: Option<PathBuf>,
    /// The host's /: mount points and /dev/disk/by-label [/].
    pub host_root: Option<PathBuf>,
}

impl AgentFile {
    /// Reads an agent's TOML file; no file means every default.
    pub fn read(path: Option<&Path>) -> Result<AgentFile, Error> {
        match path {
            None => Ok(AgentFile::default()),
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| Error::io(format!("cannot read {}", p.display()), e))?;
                toml::from_str(&text).map_err(|e| Error::config(format!("in {}: {e}", p.display())))
            }
        }
    }

    /// The prefix of every name, from `name_prefix` and its parts.
    pub fn prefix(&self) -> Option<String> {
        name_prefix(
            self.name_prefix.as_deref(),
            self.name_prefix_parts.as_deref().unwrap_or_default(),
        )
    }

    /// Where the collectors read the host.
    pub fn host(&self) -> Host {
        let d = Host::default();
        Host {
            proc_root: self.proc_root.clone().unwrap_or(d.proc_root),
            sys_root: self.sys_root.clone().unwrap_or(d.sys_root),
            host_root: self.host_root.clone().unwrap_or(d.host_root),
            filesystems: d.filesystems,
        }
    }
}

/// The prefix of every name: `name_prefix` then the parts, each part's dots
/// made `_` (a host name `web1.acme.com` stays one node).
pub fn name_prefix(prefix: Option<&str>, parts: &[String]) -> Option<String> {
    let mut all: Vec<String> = prefix
        .filter(|p| !p.is_empty())
        .map(|p| p.trim_matches('.').to_string())
        .into_iter()
        .collect();
    all.extend(
        parts
            .iter()
            .filter(|p| !p.is_empty())
            .map(|p| p.replace('.', "_")),
    );
    (!all.is_empty()).then(|| all.join("."))
}

/// An agent's validated settings.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// host:port of the node or relay.
    pub destination: String,
    /// How it is spoken to.
    pub protocol: Protocol,
    /// The statsd listeners (the first at `statsd_addr`, with the prefix).
    pub listeners: Vec<Listener>,
    /// Points held while the destination is down.
    pub max_buffer: usize,
    /// How long a stopping agent keeps trying to send what it holds.
    pub drain: Duration,
    /// TLS to the destination, if configured.
    pub tls: Option<Arc<TlsClient>>,
    /// The `[collectors]` table, checked; none: no host collectors.
    pub collectors: Option<toml::Table>,
    /// The agent's name prefix, also before every collected path.
    pub name_prefix: Option<String>,
    /// Where the collectors read the host.
    pub host: Host,
}

impl AgentConfig {
    /// Validates a file.
    pub fn from_file(file: AgentFile) -> Result<AgentConfig, Error> {
        let destination = file.destination.clone().ok_or_else(|| {
            Error::config("no destination: give --destination host:port (a graunt node or relay)")
        })?;
        let interval = file.flush_interval.unwrap_or(10.0);
        if !(interval.is_finite() && interval > 0.0) {
            return Err(Error::config(format!(
                "flush_interval = {interval}: use a positive number of seconds"
            )));
        }
        let prefix = file.prefix();
        let addr = file
            .statsd_addr
            .clone()
            .unwrap_or_else(|| "127.0.0.1:8125".into());
        let listeners = file.statsd.clone().unwrap_or_default().listeners(
            Some(&addr),
            file.statsd_tcp.unwrap_or(false),
            prefix.clone(),
            Duration::from_secs_f64(interval),
        )?;
        Ok(AgentConfig {
            destination,
            protocol: file.protocol.unwrap_or(Protocol::Plaintext),
            listeners,
            max_buffer: file.max_buffer.unwrap_or(1_000_000).max(1),
            drain: Duration::from_secs(5),
            tls: match &file.destination_tls {
                Some(t) => Some(
                    TlsClient::load(t)
                        .map_err(|e| Error::config(format!("destination_tls: {e}")))?,
                ),
                None => None,
            },
            host: file.host(),
            collectors: match file.collectors {
                Some(table) => {
                    collect::build(&table, prefix.as_deref())?;
                    Some(table)
                }
                None => None,
            },
            name_prefix: prefix,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_keep_each_part_one_node() {
        assert_eq!(
            name_prefix(Some("cust.acme"), &[]).as_deref(),
            Some("cust.acme")
        );
        assert_eq!(
            name_prefix(Some("cust"), &["acme".into(), "web1.acme.com".into()]).as_deref(),
            Some("cust.acme.web1_acme_com")
        );
        assert_eq!(name_prefix(None, &[]), None);
    }

    #[test]
    fn protocols_are_named_in_the_file() {
        let f: AgentFile = toml::from_str("protocol = \"line\"").unwrap();
        assert_eq!(f.protocol, Some(Protocol::Plaintext));
        assert!(toml::from_str::<AgentFile>("protocol = \"http\"").is_err());
    }
}

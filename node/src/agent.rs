//! `graunt agent`: the local statsd aggregator of a monitored host (what
//! bucky does). statsd in; every flush, the aggregated metrics go to a remote
//! node or relay over carbon plaintext or pickle, under the host's name
//! prefix. While the far end is down they wait in a bounded buffer (oldest
//! dropped and counted past the bound) and are sent once it is back. Over
//! pickle to a graunt node or relay, delivery is acknowledged: a restart of
//! the far end neither loses nor repeats a flush.
//!
//! ```text
//! statsd (UDP/TCP) ─▶ Aggregator ─flush─▶ buffer ─▶ forwarder ─TCP─▶ node/relay
//! ```

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use graunt_relay::statsd::Line;
use serde::Deserialize;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::Notify;

use crate::ack::Sender;
use crate::serve::shutdown::{self, Shutdown};
use crate::statsd::StatsdFile;

/// `graunt agent` flags; each overrides the same setting of `--config`.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// TOML config file (see deploy/agent.toml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// statsd address, UDP [127.0.0.1:8125].
    #[arg(long)]
    statsd_addr: Option<String>,
    /// Where aggregated metrics go: host:port of a node or relay.
    #[arg(long)]
    destination: Option<String>,
    /// `plaintext` (port 2003) or `pickle` (port 2004) [plaintext].
    #[arg(long)]
    protocol: Option<String>,
    /// Prepended to every metric name, as written (e.g. `cust.acme`).
    #[arg(long)]
    name_prefix: Option<String>,
    /// More prefix parts, after `--name-prefix`; dots inside a part become `_`.
    #[arg(long = "name-prefix-part")]
    name_prefix_parts: Vec<String>,
    /// Seconds between statsd flushes [10].
    #[arg(long)]
    flush_interval: Option<f64>,
}

/// Every setting of the agent's TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentFile {
    /// statsd, UDP [`127.0.0.1:8125`].
    pub statsd_addr: Option<String>,
    /// statsd on TCP too [false].
    pub statsd_tcp: Option<bool>,
    /// host:port of the node or relay (required).
    pub destination: Option<String>,
    /// `plaintext` or `pickle` [plaintext].
    pub protocol: Option<String>,
    /// Prefix, as written [none].
    pub name_prefix: Option<String>,
    /// Prefix parts after it; dots inside a part become `_` [none].
    pub name_prefix_parts: Option<Vec<String>>,
    /// Seconds between flushes [10].
    pub flush_interval: Option<f64>,
    /// Points held while the destination is down [1,000,000].
    pub max_buffer: Option<usize>,
    /// statsd aggregation settings.
    pub statsd: Option<StatsdFile>,
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

#[derive(Debug, Clone, Copy, PartialEq)]
enum Protocol {
    Plaintext,
    Pickle,
}

/// What waits to be sent.
struct Buffer {
    lines: Mutex<VecDeque<Line>>,
    max: usize,
    dropped: AtomicU64,
    ready: Notify,
}

impl Buffer {
    fn push(&self, lines: Vec<Line>) {
        let mut q = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        q.extend(lines);
        let over = q.len().saturating_sub(self.max);
        if over > 0 {
            q.drain(..over);
            self.dropped.fetch_add(over as u64, Ordering::Relaxed);
            tracing::warn!(dropped = over, "agent buffer full: oldest points dropped");
        }
        drop(q);
        self.ready.notify_one();
    }

    /// Up to `n` lines, fewer if their names would make a frame past 512 KiB.
    fn take(&self, n: usize) -> Vec<Line> {
        let mut q = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        let mut bytes = 0usize;
        let n = q
            .iter()
            .take(n)
            .take_while(|l| {
                bytes += l.name.len() + 32;
                bytes <= 512 << 10
            })
            .count()
            .max(1)
            .min(q.len());
        q.drain(..n).collect()
    }

    fn put_back(&self, lines: Vec<Line>) {
        let mut q = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        for l in lines.into_iter().rev() {
            q.push_front(l);
        }
    }

    fn is_empty(&self) -> bool {
        self.lines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }
}

fn encode(protocol: Protocol, lines: &[Line]) -> Vec<u8> {
    match protocol {
        Protocol::Plaintext => {
            let mut out = String::new();
            for l in lines {
                out.push_str(&l.to_plaintext());
                out.push('\n');
            }
            out.into_bytes()
        }
        Protocol::Pickle => graunt_relay::codec::pickle::encode_frame(
            lines
                .iter()
                .map(|l| (l.name.as_str(), l.timestamp, l.value)),
        ),
    }
}

/// Sends the buffer to `destination`, reconnecting with backoff, until
/// shutdown; then tries for `drain` to send what is left.
async fn forward(
    destination: String,
    protocol: Protocol,
    buffer: Arc<Buffer>,
    mut shutdown: Shutdown,
    drain: Duration,
) {
    let mut stream: Option<TcpStream> = None;
    let mut backoff = Duration::from_millis(100);
    let mut deadline: Option<tokio::time::Instant> = None;
    loop {
        if shutdown.is_down() && deadline.is_none() {
            deadline = Some(tokio::time::Instant::now() + drain);
        }
        if let Some(d) = deadline {
            if buffer.is_empty() || tokio::time::Instant::now() >= d {
                let left = buffer.lines.lock().map(|q| q.len()).unwrap_or(0);
                if left > 0 {
                    tracing::error!(points = left, %destination, "stopping with points not sent");
                }
                if let Some(mut s) = stream.take() {
                    let _ = s.shutdown().await;
                }
                return;
            }
        }
        if buffer.is_empty() {
            tokio::select! {
                _ = buffer.ready.notified() => {}
                _ = shutdown.recv(), if deadline.is_none() => {}
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
            continue;
        }
        if stream.is_none() {
            match tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(&destination))
                .await
            {
                Ok(Ok(s)) => {
                    let _ = s.set_nodelay(true);
                    tracing::info!(%destination, "connected");
                    stream = Some(s);
                    backoff = Duration::from_millis(100);
                }
                _ => {
                    tracing::warn!(%destination, retry_in = ?backoff, "destination unreachable; buffering");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.recv(), if deadline.is_none() => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            }
        }
        // A far end that closed (a node stopping) still accepts a write
        // into the kernel's buffer, and those points would be lost: look
        // for its FIN first.
        let closed = stream.as_ref().is_some_and(|s| {
            let mut probe = [0u8; 1];
            matches!(s.try_read(&mut probe), Ok(0))
                || matches!(s.try_read(&mut probe), Err(e) if e.kind() != std::io::ErrorKind::WouldBlock)
        });
        if closed {
            tracing::warn!(%destination, "destination closed the connection; reconnecting");
            stream = None;
            continue;
        }
        let batch = buffer.take(5000);
        let bytes = encode(protocol, &batch);
        let s = stream.as_mut().expect("connected above");
        match tokio::time::timeout(Duration::from_secs(10), s.write_all(&bytes)).await {
            Ok(Ok(())) => {}
            _ => {
                tracing::warn!(%destination, "send failed; reconnecting");
                buffer.put_back(batch);
                stream = None;
            }
        }
    }
}

/// Sends the buffer as acknowledged pickle (`crate::ack`): frames a graunt
/// node or relay has not acknowledged when its connection ends (a restart,
/// a crash) are sent again on the next one, so nothing is lost or doubled.
async fn forward_pickle(
    destination: String,
    buffer: Arc<Buffer>,
    mut shutdown: Shutdown,
    drain: Duration,
) {
    let mut sender = Sender::new(destination.clone());
    let mut deadline: Option<tokio::time::Instant> = None;
    loop {
        if shutdown.is_down() && deadline.is_none() {
            deadline = Some(tokio::time::Instant::now() + drain);
        }
        sender.check().await;
        let idle = buffer.is_empty() && !sender.has_resend();
        if let Some(d) = deadline {
            if idle || tokio::time::Instant::now() >= d {
                let frames = sender.finish().await.len();
                let left = buffer.lines.lock().map(|q| q.len()).unwrap_or(0);
                if left > 0 || frames > 0 {
                    tracing::error!(points = left, frames, %destination, "stopping with points not sent");
                }
                return;
            }
        }
        if idle {
            sender
                .idle(&buffer.ready, &mut shutdown, deadline.is_some())
                .await;
            continue;
        }
        if !sender.ready(&mut shutdown, deadline.is_some()).await {
            continue;
        }
        let frame = match sender.take_resend() {
            Some(f) => f,
            None => encode(Protocol::Pickle, &buffer.take(5000)),
        };
        sender.send(frame).await;
    }
}

/// Runs the agent until SIGTERM/SIGINT.
pub fn run(args: AgentArgs) -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .init();
    let result = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .and_then(|rt| rt.block_on(agent(args)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("graunt agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn agent(args: AgentArgs) -> anyhow::Result<()> {
    let mut file: AgentFile = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            toml::from_str(&text).with_context(|| format!("in {}", path.display()))?
        }
        None => AgentFile::default(),
    };
    if args.statsd_addr.is_some() {
        file.statsd_addr = args.statsd_addr;
    }
    if args.destination.is_some() {
        file.destination = args.destination;
    }
    if args.protocol.is_some() {
        file.protocol = args.protocol;
    }
    if args.name_prefix.is_some() {
        file.name_prefix = args.name_prefix;
    }
    if !args.name_prefix_parts.is_empty() {
        file.name_prefix_parts = Some(args.name_prefix_parts);
    }
    if args.flush_interval.is_some() {
        file.flush_interval = args.flush_interval;
    }
    let destination = file
        .destination
        .clone()
        .context("no destination: give --destination host:port (a graunt node or relay)")?;
    let protocol = match file.protocol.as_deref().unwrap_or("plaintext") {
        "plaintext" | "line" => Protocol::Plaintext,
        "pickle" => Protocol::Pickle,
        other => anyhow::bail!("protocol {other:?}: use plaintext or pickle"),
    };
    let interval = file.flush_interval.unwrap_or(10.0);
    if !(interval.is_finite() && interval > 0.0) {
        anyhow::bail!("flush_interval = {interval}: use a positive number of seconds");
    }
    let prefix = name_prefix(
        file.name_prefix.as_deref(),
        file.name_prefix_parts.as_deref().unwrap_or_default(),
    );
    let addr = file
        .statsd_addr
        .clone()
        .unwrap_or_else(|| "127.0.0.1:8125".into());
    let listeners = file.statsd.clone().unwrap_or_default().listeners(
        Some(&addr),
        file.statsd_tcp.unwrap_or(false),
        prefix,
        Duration::from_secs_f64(interval),
    )?;
    let buffer = Arc::new(Buffer {
        lines: Mutex::new(VecDeque::new()),
        max: file.max_buffer.unwrap_or(1_000_000).max(1),
        dropped: AtomicU64::new(0),
        ready: Notify::new(),
    });
    let (trigger, shutdown) = shutdown::channel();
    let sink_buffer = buffer.clone();
    let sink: crate::statsd::Sink = Arc::new(move |lines| sink_buffer.push(lines));
    let mut tasks = tokio::task::JoinSet::new();
    for task in crate::statsd::start(listeners, sink, shutdown.clone()).await? {
        tasks.spawn(task);
    }
    // The forwarder stops on its own signal, after the last flush is in the
    // buffer.
    let (stop_forwarder, forwarder_shutdown) = shutdown::channel();
    let forwarder = match protocol {
        Protocol::Pickle => tokio::spawn(forward_pickle(
            destination.clone(),
            buffer.clone(),
            forwarder_shutdown,
            Duration::from_secs(5),
        )),
        Protocol::Plaintext => tokio::spawn(forward(
            destination.clone(),
            protocol,
            buffer.clone(),
            forwarder_shutdown,
            Duration::from_secs(5),
        )),
    };
    tracing::info!(%destination, ?protocol, "ready");
    crate::serve::wait_for_signal().await?;
    tracing::info!("shutting down: last flush, then sending what is buffered");
    trigger.fire();
    while tasks.join_next().await.is_some() {}
    stop_forwarder.fire();
    let _ = forwarder.await;
    Ok(())
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
}

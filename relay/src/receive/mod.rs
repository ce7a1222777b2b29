//! The carbon receivers node and relay share: plaintext over TCP and UDP
//! ([`line`]) and pickle ([`pickle`], acknowledged for graunt senders), each
//! generic over the [`Sink`] that takes what they read: the node's
//! write-ahead log and cache, or a relay tenant's fence and router. Both
//! get the same bounds ([`Limits`]) and the same refusal counting: a bad
//! record is dropped, counted by reason and logged at a rate limit, and the
//! good records around it land.
//!
//! ```text
//! socket ─▶ net::accept_loop ─▶ line / pickle connection ─▶ codec ─▶ Sink::accept
//!                                         └─ bad record ─▶ Sink::refuse (+ rate-limited log)
//! ```

pub mod line;
pub mod pickle;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::codec::{Point, RecordError, TimeBounds};
use crate::net::LogLimiter;
use crate::shutdown::Shutdown;
use crate::tls::{Conn, TlsServer};

/// Which receiver read a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Plaintext over TCP.
    Line,
    /// Plaintext datagrams.
    Udp,
    /// Pickle over TCP.
    Pickle,
}

impl Protocol {
    /// The label in counters and logs (`line`, `udp`, `pickle`).
    pub fn label(self) -> &'static str {
        match self {
            Protocol::Line => "line",
            Protocol::Udp => "udp",
            Protocol::Pickle => "pickle",
        }
    }
}

/// Where receivers hand what they read.
pub trait Sink: Send + Sync + 'static {
    /// Timestamp bounds for a batch read now.
    fn bounds(&self) -> TimeBounds;

    /// Whether pickle frames are taken (a relay tenant may refuse them).
    fn allows_pickle(&self) -> bool {
        true
    }

    /// Takes a batch. With `wait` (TCP) it may hold the connection while
    /// the far side is full, so a fast client is slowed rather than dropped;
    /// without (UDP) it drops and counts. Answers false once shutdown has
    /// begun: the batch in hand is still taken, but the connection should
    /// read no more.
    fn accept(
        &self,
        protocol: Protocol,
        points: Vec<Point>,
        wait: bool,
        shutdown: &mut Shutdown,
    ) -> impl Future<Output = bool> + Send;

    /// Counts `count` refused records of `protocol` for `reason` (a label:
    /// a [`RecordError::reason`], `too_long`, `frame`, `frame_too_large`,
    /// `pickle` when pickle is not allowed).
    fn refuse(&self, protocol: Protocol, reason: &'static str, count: u64);

    /// A TCP connection opened (`1`) or closed (`-1`).
    fn connection(&self, _delta: i64) {}
}

/// Bounds every receiver applies; node and relay read them from their
/// config files with the same names and defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// TCP connections per listener; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// Longest plaintext line, bytes; a longer one is dropped and counted.
    pub max_line_length: usize,
    /// Largest pickle frame, bytes; a larger one ends the connection.
    pub max_pickle_frame: usize,
    /// How long a silent connection is kept.
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 50_000,
            max_line_length: 16 << 10,
            max_pickle_frame: crate::codec::pickle::DEFAULT_MAX_FRAME,
            idle_timeout: Duration::from_secs(600),
        }
    }
}

/// Accepts `protocol` connections until shutdown (at most
/// `limits.max_connections` at once, over TLS when `tls` is given), each
/// served by `connection` and counted open on the sink while it lasts.
pub async fn serve_connections<S, F, Fut>(
    listener: TcpListener,
    sink: Arc<S>,
    limits: Limits,
    shutdown: Shutdown,
    protocol: &'static str,
    tls: Option<Arc<TlsServer>>,
    connection: F,
) where
    S: Sink,
    F: Fn(Conn, Arc<S>, Shutdown) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    crate::net::accept_loop(
        listener,
        limits.max_connections,
        shutdown,
        protocol,
        tls,
        move |stream, shutdown| {
            let work = connection(stream, sink.clone(), shutdown);
            let sink = sink.clone();
            async move {
                sink.connection(1);
                work.await;
                sink.connection(-1);
            }
        },
    )
    .await;
}

static REFUSED_LOG: LogLimiter = LogLimiter::new(10);

/// Counts a refused record and logs it, rate-limited.
pub(crate) fn refuse<S: Sink>(
    sink: &S,
    protocol: Protocol,
    reason: &'static str,
    message: &dyn std::fmt::Display,
    peer: &str,
    record: &[u8],
) {
    sink.refuse(protocol, reason, 1);
    if REFUSED_LOG.allow() {
        let shown = String::from_utf8_lossy(&record[..record.len().min(200)]).into_owned();
        tracing::warn!(protocol = protocol.label(), peer, reason, record = %shown.escape_debug(), "{message}; record dropped (this message is rate-limited)");
    }
}

/// Counts a record the codec refused.
pub(crate) fn refuse_record<S: Sink>(
    sink: &S,
    protocol: Protocol,
    error: &RecordError,
    peer: &str,
    record: &[u8],
) {
    refuse(sink, protocol, error.reason(), error, peer, record);
}

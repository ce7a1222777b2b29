//! What every receiver shares: the store, the counters, the limits, and the
//! one way points get in ([`Ingest::accept`]) with its backpressure.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use graunt_relay::codec::{RecordError, TimeBounds};
use graunt_storage::store::Store;
use graunt_storage::Datapoint;

use super::shutdown::Shutdown;
use super::telemetry::Telemetry;

/// Seconds since the epoch, now.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Logs at most once per `every` (hot paths: one bad client must not flood the log).
pub struct LogLimiter {
    last: AtomicU64,
    every: u64,
}

impl LogLimiter {
    /// A limiter letting one message through per `every` seconds.
    pub const fn new(every: u64) -> Self {
        LogLimiter {
            last: AtomicU64::new(0),
            every,
        }
    }

    /// Whether a message may be logged now.
    pub fn allow(&self) -> bool {
        let now = unix_now() as u64;
        let last = self.last.load(Ordering::Relaxed);
        now >= last + self.every
            && self
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

static REFUSED_LOG: LogLimiter = LogLimiter::new(10);

/// Reads more bytes into `buf` (reserving `want` first). `None` when the
/// connection is done: closed, broken, silent past `idle`, or shutdown began.
pub async fn read_some(
    stream: &mut tokio::net::TcpStream,
    buf: &mut Vec<u8>,
    want: usize,
    idle: Duration,
    shutdown: &mut Shutdown,
) -> Option<usize> {
    use tokio::io::AsyncReadExt;
    buf.reserve(want);
    // Biased: once shutdown has begun a busy client must not win the race,
    // or a flood would keep being accepted and the final drain would grow.
    let read = tokio::select! {
        biased;
        _ = shutdown.recv() => return None,
        r = stream.read_buf(buf) => r,
        _ = tokio::time::sleep(idle) => return None,
    };
    match read {
        Ok(0) | Err(_) => None,
        Ok(n) => Some(n),
    }
}

/// Receiver context.
pub struct Ingest {
    /// Where points go.
    pub store: Arc<Store>,
    /// Counters.
    pub telemetry: Arc<Telemetry>,
    /// Seconds a timestamp may be ahead.
    pub max_future: i64,
    /// Longest plaintext line.
    pub max_line_length: usize,
    /// Largest pickle frame.
    pub max_pickle_frame: usize,
    /// How long a silent connection is kept.
    pub idle_timeout: Duration,
    /// TCP connections per listener.
    pub max_connections: usize,
}

impl Ingest {
    /// Timestamp bounds for a batch read now.
    pub fn bounds(&self) -> TimeBounds {
        TimeBounds::new(unix_now(), self.max_future)
    }

    /// Counts (and, rate-limited, logs) a refused record.
    pub fn refuse(&self, protocol: &str, error: &RecordError, peer: &str, record: &[u8]) {
        self.refuse_reason(protocol, error.reason(), &error.to_string(), peer, record);
    }

    /// Counts a refusal given by reason label.
    pub fn refuse_reason(
        &self,
        protocol: &str,
        reason: &str,
        message: &str,
        peer: &str,
        record: &[u8],
    ) {
        self.telemetry.refuse(protocol, reason);
        if REFUSED_LOG.allow() {
            let shown = String::from_utf8_lossy(&record[..record.len().min(200)]).into_owned();
            tracing::warn!(protocol, peer, reason, record = %shown.escape_debug(), "{message}; record dropped (this message is rate-limited)");
        }
    }

    /// Stores a batch. With `wait` (TCP), waits while the cache is full, so a
    /// fast client is slowed rather than dropped; without (UDP), drops the
    /// batch and counts it. Returns false once shutdown has begun: the batch
    /// in hand is still accepted, but the connection should read no more.
    pub async fn accept(
        &self,
        points: Vec<Datapoint>,
        wait: bool,
        shutdown: &mut Shutdown,
    ) -> bool {
        if points.is_empty() {
            return true;
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
}

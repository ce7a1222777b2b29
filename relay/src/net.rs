//! The socket plumbing every service shares: binding with an error that
//! names the protocol, the bounded accept loop, reads that give up on idle
//! connections and on shutdown, and rate-limited logging for hot paths.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::Semaphore;

use crate::error::Error;
use crate::shutdown::Shutdown;
use crate::tls::{Conn, TlsServer};

/// Seconds since the epoch, now.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Logs at most once per `every` seconds (hot paths: one bad client must
/// not flood the log).
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

/// Binds a TCP listener for `what`, logging `listening protocol=… addr=…`.
pub async fn bind_tcp(addr: &str, what: &str) -> Result<TcpListener, Error> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind {
            what: what.to_string(),
            addr: addr.to_string(),
            source,
        })?;
    if let Ok(local) = listener.local_addr() {
        tracing::info!(protocol = %what, addr = %local, "listening");
    }
    Ok(listener)
}

/// Binds a UDP socket for `what`, logging `listening protocol=… addr=…`.
pub async fn bind_udp(addr: &str, what: &str) -> Result<UdpSocket, Error> {
    let socket = UdpSocket::bind(addr).await.map_err(|source| Error::Bind {
        what: what.to_string(),
        addr: addr.to_string(),
        source,
    })?;
    if let Ok(local) = socket.local_addr() {
        tracing::info!(protocol = %what, addr = %local, "listening");
    }
    Ok(socket)
}

/// Binds carbon's plaintext pair, TCP and UDP on one address. Port 0 gives
/// both the same port (the one the kernel picked for TCP), as an operator
/// who gave a fixed port would have.
pub async fn bind_line(addr: &str, what: &str) -> Result<(TcpListener, UdpSocket), Error> {
    let tcp = bind_tcp(addr, what).await?;
    let udp_what = if what == "line" {
        "udp".to_string()
    } else {
        format!("{what}-udp")
    };
    let same_port = tcp.local_addr().ok().map(|a| a.to_string());
    let udp = match same_port.filter(|_| addr.ends_with(":0")) {
        Some(a) => match bind_udp(&a, &udp_what).await {
            Ok(u) => u,
            Err(_) => bind_udp(addr, &udp_what).await?,
        },
        None => bind_udp(addr, &udp_what).await?,
    };
    Ok((tcp, udp))
}

/// Reads more bytes into `buf` (reserving `want` first). `None` when the
/// connection is done: closed, broken, silent past `idle`, or shutdown began.
pub async fn read_some<R: tokio::io::AsyncRead + Unpin>(
    stream: &mut R,
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

/// Accepts connections until shutdown, each handled on its own task, at most
/// `max_connections` at once (further clients wait in the kernel's backlog).
/// With `tls`, each connection's handshake runs on its task first; one that
/// fails is logged (rate-limited) and closed. Connections are joined before
/// it returns, so a stopping service hands on everything its connections
/// read (an acknowledging sender is drained).
pub async fn accept_loop<F, Fut>(
    listener: TcpListener,
    max_connections: usize,
    mut shutdown: Shutdown,
    protocol: &'static str,
    tls: Option<Arc<TlsServer>>,
    handler: F,
) where
    F: Fn(Conn, Shutdown) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let handler = Arc::new(handler);
    let permits = Arc::new(Semaphore::new(max_connections.max(1)));
    let mut connections = tokio::task::JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = shutdown.recv() => break,
        };
        let (stream, peer) = tokio::select! {
            biased;
            _ = shutdown.recv() => break,
            r = listener.accept() => match r {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off, don't spin.
                    tracing::warn!(protocol, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let (handler, tls, mut shutdown) = (handler.clone(), tls.clone(), shutdown.clone());
        connections.spawn(async move {
            let conn = match tls {
                None => Conn::Plain(stream),
                Some(tls) => {
                    let accepted = tokio::select! {
                        _ = shutdown.recv() => return,
                        r = tls.accept(stream) => r,
                    };
                    match accepted {
                        Ok(conn) => conn,
                        Err(e) => {
                            crate::tls::handshake_failed(protocol, Some(peer), &e);
                            return;
                        }
                    }
                }
            };
            handler(conn, shutdown).await;
            drop(permit);
        });
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

//! The agent's forwarder: flushed statsd lines wait in a bounded [`Buffer`]
//! and go to the destination over plaintext ([`forward`]: reconnects with
//! backoff, but cannot know what a dying far end had read) or acknowledged
//! pickle ([`forward_pickle`]: frames not acknowledged are sent again on
//! the next connection).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::tls::{Conn, TlsClient};
use tokio::io::AsyncWriteExt;
use tokio::sync::Notify;

use super::config::Protocol;
use crate::ack::Sender;
use crate::shutdown::Shutdown;
use crate::statsd::Line;

/// What waits to be sent: flushed lines, oldest dropped (and counted)
/// past `max`.
pub struct Buffer {
    lines: Mutex<VecDeque<Line>>,
    max: usize,
    /// Lines dropped past `max`.
    dropped: AtomicU64,
    ready: Notify,
}

impl Buffer {
    /// An empty buffer holding at most `max` lines.
    pub fn new(max: usize) -> Buffer {
        Buffer {
            lines: Mutex::new(VecDeque::new()),
            max: max.max(1),
            dropped: AtomicU64::new(0),
            ready: Notify::new(),
        }
    }

    /// Appends a flush.
    pub fn push(&self, lines: Vec<Line>) {
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
        Protocol::Pickle => crate::codec::pickle::encode_frame(
            lines
                .iter()
                .map(|l| (l.name.as_str(), l.timestamp, l.value)),
        ),
    }
}

/// Sends the buffer to `destination`, reconnecting with backoff, until
/// shutdown; then tries for `drain` to send what is left.
pub async fn forward(
    destination: String,
    tls: Option<Arc<TlsClient>>,
    protocol: Protocol,
    buffer: Arc<Buffer>,
    mut shutdown: Shutdown,
    drain: Duration,
) {
    let mut stream: Option<Conn> = None;
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
            match crate::tls::connect(&destination, tls.as_deref(), Duration::from_secs(5)).await {
                Ok(s) => {
                    tracing::info!(%destination, "connected");
                    stream = Some(s);
                    backoff = Duration::from_millis(100);
                }
                Err(e) => {
                    tracing::warn!(%destination, error = %e, retry_in = ?backoff, "destination unreachable; buffering");
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
        let closed = stream.as_mut().is_some_and(|s| {
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
        let wrote = tokio::time::timeout(Duration::from_secs(10), async {
            s.write_all(&bytes).await?;
            s.flush().await
        })
        .await;
        match wrote {
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
pub async fn forward_pickle(
    destination: String,
    tls: Option<Arc<TlsClient>>,
    buffer: Arc<Buffer>,
    mut shutdown: Shutdown,
    drain: Duration,
) {
    let mut sender = Sender::new(destination.clone(), tls);
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

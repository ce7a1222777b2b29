//! One destination's outbound side: a bounded queue of points and a task
//! that sends them as batched pickle frames over a persistent connection,
//! reconnecting with backoff and keeping unsent points in order. Past the
//! bound, points are dropped, counted and logged (never silently).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use graunt_relay::codec::Point;
use graunt_relay::hashing::Destination;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::Notify;

use crate::serve::shutdown::Shutdown;

/// Points per pickle frame.
const BATCH: usize = 5000;

/// A destination's queue and counters.
pub struct Outbound {
    /// Where it sends.
    pub destination: Destination,
    queue: Mutex<VecDeque<Point>>,
    max: usize,
    ready: Notify,
    /// Points sent.
    pub sent: AtomicU64,
    /// Points dropped past the bound.
    pub dropped: AtomicU64,
}

impl Outbound {
    /// An empty queue holding at most `max` points.
    pub fn new(destination: Destination, max: usize) -> Outbound {
        Outbound {
            destination,
            queue: Mutex::new(VecDeque::new()),
            max: max.max(1),
            ready: Notify::new(),
            sent: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }
    }

    /// Points waiting.
    pub fn len(&self) -> usize {
        self.queue.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Queues points; past the bound the newest are dropped and counted.
    pub fn push(&self, points: impl IntoIterator<Item = Point>) {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let mut dropped = 0u64;
        for p in points {
            if q.len() < self.max {
                q.push_back(p);
            } else {
                dropped += 1;
            }
        }
        drop(q);
        if dropped > 0 {
            self.dropped.fetch_add(dropped, Ordering::Relaxed);
            tracing::warn!(destination = %self.destination.display(), dropped, "destination queue full: points dropped");
        }
        self.ready.notify_one();
    }

    fn take(&self, n: usize) -> Vec<Point> {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let n = n.min(q.len());
        q.drain(..n).collect()
    }

    fn put_back(&self, points: Vec<Point>) {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        for p in points.into_iter().rev() {
            q.push_front(p);
        }
    }

    /// Sends until shutdown, then for up to `drain` what is left.
    pub async fn run(&self, mut shutdown: Shutdown, drain: Duration) {
        let addr = format!("{}:{}", self.destination.host, self.destination.port);
        let mut stream: Option<TcpStream> = None;
        let mut backoff = Duration::from_millis(100);
        let mut deadline: Option<tokio::time::Instant> = None;
        loop {
            if shutdown.is_down() && deadline.is_none() {
                deadline = Some(tokio::time::Instant::now() + drain);
            }
            if let Some(d) = deadline {
                if self.len() == 0 || tokio::time::Instant::now() >= d {
                    let left = self.len();
                    if left > 0 {
                        tracing::error!(destination = %self.destination.display(), points = left, "stopping with points not sent");
                    }
                    if let Some(mut s) = stream.take() {
                        let _ = s.shutdown().await;
                    }
                    return;
                }
            }
            if self.len() == 0 {
                tokio::select! {
                    _ = self.ready.notified() => {}
                    _ = shutdown.recv(), if deadline.is_none() => {}
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
                continue;
            }
            // A far end that closed still takes a write into the kernel's
            // buffer, and those points would be lost: look for its FIN.
            if let Some(s) = &stream {
                let mut probe = [0u8; 1];
                let closed = match s.try_read(&mut probe) {
                    Ok(0) => true,
                    Ok(_) => false,
                    Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
                };
                if closed {
                    tracing::warn!(destination = %self.destination.display(), "destination closed the connection; reconnecting");
                    stream = None;
                }
            }
            if stream.is_none() {
                match tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(&addr)).await
                {
                    Ok(Ok(s)) => {
                        let _ = s.set_nodelay(true);
                        tracing::info!(destination = %self.destination.display(), "connected");
                        stream = Some(s);
                        backoff = Duration::from_millis(100);
                    }
                    _ => {
                        tracing::warn!(destination = %self.destination.display(), retry_in = ?backoff, "destination unreachable; queueing");
                        tokio::select! {
                            _ = tokio::time::sleep(backoff) => {}
                            _ = shutdown.recv(), if deadline.is_none() => {}
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                        continue;
                    }
                }
            }
            let batch = self.take(BATCH);
            let frame = graunt_relay::codec::pickle::encode_frame(
                batch
                    .iter()
                    .map(|p| (p.name.as_str(), p.timestamp, p.value)),
            );
            let s = stream.as_mut().expect("connected above");
            match tokio::time::timeout(Duration::from_secs(10), s.write_all(&frame)).await {
                Ok(Ok(())) => {
                    self.sent.fetch_add(batch.len() as u64, Ordering::Relaxed);
                }
                _ => {
                    tracing::warn!(destination = %self.destination.display(), "send failed; reconnecting");
                    self.put_back(batch);
                    stream = None;
                }
            }
        }
    }
}

//! One destination's outbound side: a bounded queue of points and a task
//! that sends them as batched pickle frames over a persistent connection,
//! reconnecting with backoff and keeping unsent points in order. Past the
//! memory bound, points go to the destination's spill on disk (replayed
//! first, in order, also after a restart); past the disk bound, they are
//! dropped, counted and logged (never silently).

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
    spill: Option<Mutex<super::spill::Spill>>,
}

impl Outbound {
    /// An empty queue holding at most `max` points.
    pub fn new(
        destination: Destination,
        max: usize,
        spill: Option<super::spill::Spill>,
    ) -> Outbound {
        Outbound {
            destination,
            queue: Mutex::new(VecDeque::new()),
            max: max.max(1),
            ready: Notify::new(),
            sent: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            spill: spill.map(Mutex::new),
        }
    }

    /// Bytes waiting on disk.
    pub fn spilled_bytes(&self) -> u64 {
        self.spill
            .as_ref()
            .map_or(0, |s| s.lock().unwrap_or_else(|e| e.into_inner()).bytes())
    }

    fn spill_is_empty(&self) -> bool {
        self.spilled_bytes() == 0
    }

    /// Writes points to the spill as frames; what does not fit is dropped
    /// and counted.
    fn to_disk(&self, spill: &Mutex<super::spill::Spill>, points: &[Point]) {
        let mut s = spill.lock().unwrap_or_else(|e| e.into_inner());
        let mut lost = 0u64;
        // Chunks by count and by name bytes, as take() cuts them.
        let mut chunks: Vec<&[Point]> = Vec::new();
        let (mut start, mut bytes) = (0usize, 0usize);
        for (i, p) in points.iter().enumerate() {
            bytes += p.name.len() + 32;
            if i > start && (i - start >= BATCH || bytes > 512 << 10) {
                chunks.push(&points[start..i]);
                start = i;
                bytes = p.name.len() + 32;
            }
        }
        if start < points.len() {
            chunks.push(&points[start..]);
        }
        for chunk in chunks {
            let frame = graunt_relay::codec::pickle::encode_frame(
                chunk
                    .iter()
                    .map(|p| (p.name.as_str(), p.timestamp, p.value)),
            );
            match s.append(&frame) {
                Ok(true) => {}
                Ok(false) => lost += chunk.len() as u64,
                Err(e) => {
                    tracing::error!(destination = %self.destination.display(), error = %e, "cannot write the spill");
                    lost += chunk.len() as u64;
                }
            }
        }
        if lost > 0 {
            self.dropped.fetch_add(lost, Ordering::Relaxed);
            tracing::warn!(destination = %self.destination.display(), dropped = lost, "spill full: points dropped");
        }
    }

    /// Moves what is queued in memory to the spill (at shutdown).
    fn memory_to_disk(&self) {
        if let Some(spill) = &self.spill {
            let points: Vec<Point> = self
                .queue
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .drain(..)
                .collect();
            if !points.is_empty() {
                self.to_disk(spill, &points);
                tracing::info!(destination = %self.destination.display(), points = points.len(), "queued points kept on disk for the next start");
            }
        }
    }

    /// Points waiting.
    pub fn len(&self) -> usize {
        self.queue.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Queues points: in memory, or on disk once memory is full (and until
    /// the disk is drained, to keep the order); without a spill, past the
    /// bound the newest are dropped and counted.
    pub fn push(&self, points: Vec<Point>) {
        if let Some(spill) = &self.spill {
            let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            if !self.spill_is_empty() || q.len() + points.len() > self.max {
                // Older points first: what memory holds goes to disk before these.
                let older: Vec<Point> = q.drain(..).collect();
                drop(q);
                self.to_disk(spill, &older);
                self.to_disk(spill, &points);
                self.ready.notify_one();
                return;
            }
            q.extend(points);
            drop(q);
            self.ready.notify_one();
            return;
        }
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

    /// Up to `n` points, fewer if their names would make a frame past
    /// 512 KiB (a node refuses frames over 1 MiB).
    fn take(&self, n: usize) -> Vec<Point> {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let mut bytes = 0usize;
        let n = q
            .iter()
            .take(n)
            .take_while(|p| {
                bytes += p.name.len() + 32;
                bytes <= 512 << 10
            })
            .count()
            .max(1)
            .min(q.len());
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
        // Frames written on the current connection lately. carbon's protocol
        // has no acknowledgements: when a destination dies, what its kernel
        // took but its process never read is gone, so these are sent again on
        // the next connection (at least once: a resent point writes the same
        // value to the same slot).
        let mut recent: VecDeque<(tokio::time::Instant, Vec<u8>)> = VecDeque::new();
        let mut resend: VecDeque<Vec<u8>> = VecDeque::new();
        loop {
            if shutdown.is_down() && deadline.is_none() {
                deadline = Some(tokio::time::Instant::now() + drain);
            }
            if let Some(d) = deadline {
                // With a spill, what is queued waits on disk for the next
                // start; without one, sending is tried until the deadline.
                let keep = self.spill.is_some() && stream.is_none();
                if keep
                    || (self.len() == 0 && self.spill_is_empty())
                    || tokio::time::Instant::now() >= d
                {
                    self.memory_to_disk();
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
            if self.len() == 0 && self.spill_is_empty() {
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
                    resend.extend(recent.drain(..).map(|(_, f)| f));
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
            if let Some(frame) = resend.pop_front() {
                let s = stream.as_mut().expect("connected above");
                match tokio::time::timeout(Duration::from_secs(10), s.write_all(&frame)).await {
                    Ok(Ok(())) => recent.push_back((tokio::time::Instant::now(), frame)),
                    _ => {
                        resend.push_front(frame);
                        resend.extend(recent.drain(..).map(|(_, f)| f));
                        stream = None;
                    }
                }
                continue;
            }
            // The disk holds the oldest points: it goes first.
            let from_disk = match &self.spill {
                Some(spill) if !self.spill_is_empty() => {
                    let peeked = spill.lock().unwrap_or_else(|e| e.into_inner()).peek();
                    match peeked {
                        Ok(frame) => frame,
                        Err(e) => {
                            tracing::error!(destination = %self.destination.display(), error = %e, "cannot read the spill");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            continue;
                        }
                    }
                }
                _ => None,
            };
            let (frame, batch) = match from_disk {
                Some(frame) => (frame, None),
                None => {
                    let batch = self.take(BATCH);
                    if batch.is_empty() {
                        continue;
                    }
                    let frame = graunt_relay::codec::pickle::encode_frame(
                        batch
                            .iter()
                            .map(|p| (p.name.as_str(), p.timestamp, p.value)),
                    );
                    (frame, Some(batch))
                }
            };
            let s = stream.as_mut().expect("connected above");
            match tokio::time::timeout(Duration::from_secs(10), s.write_all(&frame)).await {
                Ok(Ok(())) => match batch {
                    Some(b) => {
                        self.sent.fetch_add(b.len() as u64, Ordering::Relaxed);
                        remember(&mut recent, frame);
                    }
                    None => {
                        if let Some(spill) = &self.spill {
                            let moved = spill
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .done(frame.len());
                            if let Err(e) = moved {
                                tracing::error!(destination = %self.destination.display(), error = %e, "cannot move the spill cursor");
                            }
                        }
                        self.sent.fetch_add(frame_points(&frame), Ordering::Relaxed);
                        remember(&mut recent, frame);
                    }
                },
                _ => {
                    tracing::warn!(destination = %self.destination.display(), "send failed; reconnecting");
                    resend.extend(recent.drain(..).map(|(_, f)| f));
                    // (A spilled frame stays on disk: its cursor did not move.)
                    if let Some(b) = batch {
                        self.put_back(b);
                    }
                    stream = None;
                }
            }
        }
    }
}

/// Points in one encoded frame (for the sent counter).
fn frame_points(frame: &[u8]) -> u64 {
    serde_pickle::value_from_slice(&frame[4.min(frame.len())..], serde_pickle::DeOptions::new())
        .ok()
        .and_then(|v| match v {
            serde_pickle::Value::List(l) => Some(l.len() as u64),
            _ => None,
        })
        .unwrap_or(0)
}

/// Keeps the last frames for a resend: as many bytes as the kernel buffers
/// between the relay and a destination can hold (send plus receive side),
/// which bounds what a dying destination can have taken without reading.
fn remember(recent: &mut VecDeque<(tokio::time::Instant, Vec<u8>)>, frame: Vec<u8>) {
    const WINDOW: usize = 16 << 20;
    recent.push_back((tokio::time::Instant::now(), frame));
    let mut bytes: usize = recent.iter().map(|(_, f)| f.len()).sum();
    while bytes > WINDOW && recent.len() > 1 {
        if let Some((_, f)) = recent.pop_front() {
            bytes -= f.len();
        }
    }
}

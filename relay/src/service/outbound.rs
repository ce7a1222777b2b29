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

use crate::codec::Point;
use graunt_cluster::hashing::Destination;
use tokio::sync::Notify;

use super::batches::Batches;
use crate::ack::Sender;
use crate::shutdown::Shutdown;

/// Points per pickle frame.
const BATCH: usize = 5000;

/// A destination's queue and counters.
pub struct Outbound {
    /// Where it sends.
    pub destination: Destination,
    queue: Mutex<Batches>,
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
            queue: Mutex::new(Batches::default()),
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
            let frame = crate::codec::pickle::encode_frame(
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
                .drain_all();
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
                let older: Vec<Point> = q.drain_all();
                drop(q);
                self.to_disk(spill, &older);
                self.to_disk(spill, &points);
                self.ready.notify_one();
                return;
            }
            q.push(points);
            drop(q);
            self.ready.notify_one();
            return;
        }
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let mut points = points;
        let room = self.max.saturating_sub(q.len());
        let dropped = points.len().saturating_sub(room) as u64;
        points.truncate(room);
        q.push(points);
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
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take(n, 512 << 10)
    }

    /// Sends until shutdown, then for up to `drain` what is left.
    pub async fn run(&self, mut shutdown: Shutdown, drain: Duration) {
        let addr = format!("{}:{}", self.destination.host, self.destination.port);
        let mut sender = Sender::new(addr);
        let mut deadline: Option<tokio::time::Instant> = None;
        loop {
            if shutdown.is_down() && deadline.is_none() {
                deadline = Some(tokio::time::Instant::now() + drain);
            }
            sender.check().await;
            let idle = self.len() == 0 && self.spill_is_empty() && !sender.has_resend();
            if let Some(d) = deadline {
                // With a spill, what is queued waits on disk for the next
                // start; without one, sending is tried until the deadline.
                let keep = self.spill.is_some() && !sender.connected();
                if keep || idle || tokio::time::Instant::now() >= d {
                    let mut unsent = sender.finish().await;
                    self.resend_to_disk(&mut unsent);
                    self.memory_to_disk();
                    if self.len() + unsent.len() > 0 {
                        tracing::error!(destination = %self.destination.display(), points = self.len(), frames = unsent.len(), "stopping with points not sent");
                    }
                    return;
                }
            }
            if idle {
                sender
                    .idle(&self.ready, &mut shutdown, deadline.is_some())
                    .await;
                continue;
            }
            if !sender.ready(&mut shutdown, deadline.is_some()).await {
                continue;
            }
            if let Some(frame) = sender.take_resend() {
                sender.send(frame).await;
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
            match from_disk {
                Some(frame) => {
                    // Once written the frame is the link's to resend: the
                    // cursor moves even if the write fails.
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
                    sender.send(frame).await;
                }
                None => {
                    let batch = self.take(BATCH);
                    if batch.is_empty() {
                        continue;
                    }
                    let frame = crate::codec::pickle::encode_frame(
                        batch
                            .iter()
                            .map(|p| (p.name.as_str(), p.timestamp, p.value)),
                    );
                    self.sent.fetch_add(batch.len() as u64, Ordering::Relaxed);
                    sender.send(frame).await;
                }
            }
        }
    }

    /// Writes frames waiting for a resend to the spill (at shutdown), ahead
    /// of what memory holds.
    fn resend_to_disk(&self, resend: &mut VecDeque<Vec<u8>>) {
        let Some(spill) = &self.spill else { return };
        if resend.is_empty() {
            return;
        }
        let mut s = spill.lock().unwrap_or_else(|e| e.into_inner());
        let frames = resend.len();
        while let Some(frame) = resend.pop_front() {
            match s.append(&frame) {
                Ok(true) => {}
                _ => {
                    let n = frame_points(&frame);
                    self.dropped.fetch_add(n, Ordering::Relaxed);
                    tracing::warn!(destination = %self.destination.display(), dropped = n, "spill full: points dropped");
                }
            }
        }
        tracing::info!(destination = %self.destination.display(), frames, "frames not acknowledged kept on disk for the next start");
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

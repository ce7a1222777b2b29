//! One destination's outbound side: a queue of points and a task that sends
//! them as batched pickle frames over a persistent connection, reconnecting
//! with backoff and keeping unsent points in order.
//!
//! With a `queue_dir`, the queue is the destination's [`Journal`]: every
//! batch is on disk (in the page cache at least; see `journal_sync`) before
//! [`Outbound::push`] returns, so before the relay acknowledges it to a
//! graunt sender, and it stays there until the destination acknowledges it
//! in turn; a relay killed at any moment loses nothing. Without one, the
//! queue is in memory only, bounded by `max_queue`; past the bound the
//! newest points are dropped, counted and logged (never silently).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use graunt_cluster::hashing::Destination;
use tokio::sync::Notify;

use super::batches::Batches;
use super::journal::Journal;
use crate::ack::Sender;
use crate::codec::Point;
use crate::shutdown::Shutdown;
use crate::tls::TlsClient;

/// Points per pickle frame.
const BATCH: usize = 5000;

/// Name bytes per pickle frame (a node refuses frames over 1 MiB).
const BATCH_BYTES: usize = 512 << 10;

/// A destination's queue and counters.
pub struct Outbound {
    /// Where it sends.
    pub destination: Destination,
    /// TLS to it, if configured.
    tls: Option<Arc<TlsClient>>,
    queue: Mutex<Batches>,
    max: usize,
    ready: Notify,
    /// Points sent.
    pub sent: AtomicU64,
    /// Points dropped past the bound.
    pub dropped: AtomicU64,
    journal: Option<Mutex<Journal>>,
}

/// Pickle frames of `points`, cut by count and by name bytes, concatenated.
fn encode(points: &[Point]) -> Vec<u8> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0usize, 0usize);
    for (i, p) in points.iter().enumerate() {
        bytes += p.name.len() + 32;
        if i > start && (i - start >= BATCH || bytes > BATCH_BYTES) {
            out.extend(frame(&points[start..i]));
            start = i;
            bytes = p.name.len() + 32;
        }
    }
    if start < points.len() {
        out.extend(frame(&points[start..]));
    }
    out
}

fn frame(points: &[Point]) -> Vec<u8> {
    crate::codec::pickle::encode_frame(
        points
            .iter()
            .map(|p| (p.name.as_str(), p.timestamp, p.value)),
    )
}

impl Outbound {
    /// An empty queue: `journal` when the relay has a `queue_dir`, else in
    /// memory holding at most `max` points.
    pub fn new(
        destination: Destination,
        max: usize,
        journal: Option<Journal>,
        tls: Option<Arc<TlsClient>>,
    ) -> Outbound {
        Outbound {
            destination,
            tls,
            queue: Mutex::new(Batches::default()),
            max: max.max(1),
            ready: Notify::new(),
            sent: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            journal: journal.map(Mutex::new),
        }
    }

    fn journal(&self) -> Option<std::sync::MutexGuard<'_, Journal>> {
        self.journal
            .as_ref()
            .map(|j| j.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Journal figures: bytes not acknowledged, segment files, seconds
    /// since the oldest frame not acknowledged was appended, frames sent
    /// again after a reconnect or restart. Zeros without a journal.
    pub fn journal_stats(&self) -> (u64, usize, i64, u64) {
        self.journal().map_or((0, 0, 0, 0), |j| {
            (j.bytes(), j.segments(), j.oldest_age(), j.resent_frames())
        })
    }

    /// Forces the journal's appends to disk (the periodic sync).
    pub fn sync(&self) {
        if let Some(mut j) = self.journal() {
            if let Err(e) = j.sync() {
                // Linux may drop the unwritten pages after a failed fsync:
                // say so loudly, the journal may not survive a power loss.
                tracing::error!(destination = %self.destination.display(), error = %e, "journal fsync failed");
            }
        }
    }

    /// Points waiting in memory.
    pub fn len(&self) -> usize {
        self.queue.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Queues points: appended to the journal (one write for the batch), or
    /// in memory. Past the bound (the journal's `max_spill_bytes`, or
    /// `max_queue`) the newest are dropped and counted.
    pub fn push(&self, points: Vec<Point>) {
        if points.is_empty() {
            return;
        }
        let n = points.len() as u64;
        let dropped = match self.journal() {
            Some(mut j) => match j.append(&encode(&points)) {
                Ok(true) => 0,
                Ok(false) => n,
                Err(e) => {
                    tracing::error!(destination = %self.destination.display(), error = %e, "cannot write the journal");
                    n
                }
            },
            None => {
                let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
                let mut points = points;
                let room = self.max.saturating_sub(q.len());
                let dropped = points.len().saturating_sub(room) as u64;
                points.truncate(room);
                q.push(points);
                dropped
            }
        };
        if dropped > 0 {
            self.dropped.fetch_add(dropped, Ordering::Relaxed);
            tracing::warn!(destination = %self.destination.display(), dropped, "destination queue full: points dropped");
        }
        self.ready.notify_one();
    }

    /// Whether something waits to be sent.
    fn has_unsent(&self) -> bool {
        match self.journal() {
            Some(j) => j.has_unsent(),
            None => self.len() > 0,
        }
    }

    /// The next frame to send: from the journal, or cut from memory. `Err`
    /// when the journal cannot be read (the caller waits before trying again).
    fn next_frame(&self) -> std::io::Result<Option<Vec<u8>>> {
        if let Some(mut j) = self.journal() {
            return j.next_frame();
        }
        let batch = self
            .queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take(BATCH, BATCH_BYTES);
        Ok((!batch.is_empty()).then(|| frame(&batch)))
    }

    /// Moves the journal past what the destination released; after the
    /// connection ended, what it had not is read again.
    fn settle(&self, sender: &mut Sender, ended: bool) {
        let Some(mut j) = self.journal() else { return };
        let released = sender.take_released();
        if released > 0 {
            if let Err(e) = j.acknowledge(released) {
                tracing::error!(destination = %self.destination.display(), error = %e, "cannot move the journal cursor");
            }
        }
        if ended {
            // What the link held and had not released, the journal sends
            // again; the sender need not keep it. (A link known not to
            // acknowledge released everything it sent: what it returned is
            // its resend window, which the sender sends again itself.)
            if !sender.last_link_plain() {
                sender.clear_resend();
            }
            j.rewind();
        }
    }

    /// Sends until shutdown, then for up to `drain` what is left. With a
    /// journal, what is left waits on disk for the next start.
    pub async fn run(&self, mut shutdown: Shutdown, drain: Duration) {
        let addr = format!("{}:{}", self.destination.host, self.destination.port);
        let mut sender = Sender::new(addr, self.tls.clone());
        let mut deadline: Option<tokio::time::Instant> = None;
        loop {
            if shutdown.is_down() && deadline.is_none() {
                deadline = Some(tokio::time::Instant::now() + drain);
            }
            let ended = sender.check().await;
            self.settle(&mut sender, ended);
            let idle = !self.has_unsent() && !sender.has_resend();
            if let Some(d) = deadline {
                let keep = self.journal.is_some() && !sender.connected();
                if keep || idle || tokio::time::Instant::now() >= d {
                    let unsent = sender.finish().await;
                    self.settle(&mut sender, true);
                    if self.journal.is_none() && self.len() + unsent.len() > 0 {
                        tracing::error!(destination = %self.destination.display(), points = self.len(), frames = unsent.len(), "stopping with points not sent");
                    }
                    if let Some(j) = self.journal() {
                        if !j.is_empty() {
                            tracing::info!(destination = %self.destination.display(), bytes = j.bytes(), "frames not acknowledged kept in the journal for the next start");
                        }
                    }
                    self.sync();
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
            match self.next_frame() {
                Ok(Some(frame)) => {
                    self.sent.fetch_add(frame_points(&frame), Ordering::Relaxed);
                    sender.send(frame).await;
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(destination = %self.destination.display(), error = %e, "cannot read the journal; trying again in a second");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
}

/// Points in one frame (for the sent counter): counted from the opcodes of
/// a frame the relay encoded, decoded only if it has another shape.
fn frame_points(frame: &[u8]) -> u64 {
    if let Some(n) = crate::codec::pickle::encoded_points(frame) {
        return n;
    }
    serde_pickle::value_from_slice(&frame[4.min(frame.len())..], serde_pickle::DeOptions::new())
        .ok()
        .and_then(|v| match v {
            serde_pickle::Value::List(l) => Some(l.len() as u64),
            _ => None,
        })
        .unwrap_or(0)
}

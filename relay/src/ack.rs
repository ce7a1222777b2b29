//! Both ends of acknowledged pickle ([`crate::codec::ack`]) over tokio
//! streams: [`Receiving`] for a node's or relay's pickle listener,
//! [`Link`] for a relay's connection to a destination.

use std::collections::VecDeque;
use std::time::Duration;

use crate::codec::ack::{self, Control};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use crate::shutdown::Shutdown;
use crate::tls::{Conn, TlsClient};

/// How long a stopping receiver waits for an acknowledging sender to close.
const DRAIN: Duration = Duration::from_secs(5);

/// Control bytes a receiver holds for a sender that does not read them.
const MAX_PENDING: usize = 4096;

/// A receiving connection's side of the protocol.
#[derive(Debug, Default)]
pub struct Receiving {
    acks: bool,
    first: bool,
    taken: u64,
    pending: Vec<u8>,
    drain_until: Option<Instant>,
}

impl Receiving {
    /// Reads more bytes into `buf`. `None` when the connection is done:
    /// closed, broken, silent past `idle`, or shutdown began. After
    /// shutdown, a sender that acknowledges is asked to stop and is read
    /// until it closes (for at most a few seconds), so nothing it sent is
    /// left unread.
    pub async fn read(
        &mut self,
        stream: &mut Conn,
        buf: &mut Vec<u8>,
        want: usize,
        idle: Duration,
        shutdown: &mut Shutdown,
    ) -> Option<usize> {
        if self.drain_until.is_none() {
            let read = crate::net::read_some(stream, buf, want, idle, shutdown).await;
            if read.is_some() || !self.acks || !shutdown.is_down() {
                return read;
            }
            // Shutdown began: an acknowledging sender is asked to stop and
            // read to its end.
            self.pending.extend_from_slice(ack::DRAIN);
            self.flush(stream);
            self.drain_until = Some(Instant::now() + DRAIN);
        }
        buf.reserve(want);
        let until = self.drain_until?;
        match tokio::time::timeout_at(until, stream.read_buf(buf)).await {
            Ok(Ok(n)) if n > 0 => Some(n),
            _ => None,
        }
    }

    /// Whether `payload`, a frame's, is the hello that opens an
    /// acknowledging connection; if so the answer is queued and the frame
    /// is the caller's to skip.
    pub fn hello(&mut self, payload: &[u8]) -> bool {
        let first = !self.first;
        self.first = true;
        if first && payload == ack::HELLO_PAYLOAD {
            self.acks = true;
            self.pending.extend_from_slice(ack::REPLY);
            return true;
        }
        false
    }

    /// Counts `bytes` as taken in and, if the sender acknowledges, tells it.
    pub fn taken(&mut self, stream: &mut Conn, bytes: usize) {
        self.taken += bytes as u64;
        if self.acks && bytes > 0 && self.pending.len() < MAX_PENDING {
            self.pending.extend(ack::ack_line(self.taken));
        }
        self.flush(stream);
    }

    /// Sends the last acknowledgement before the connection closes.
    pub async fn finish(&mut self, stream: &mut Conn) {
        // Over TLS, acknowledgements "written" may still sit in the
        // session's buffer: flushed here even with nothing pending.
        if self.acks {
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                stream.write_all(&self.pending).await?;
                stream.flush().await
            })
            .await;
            self.pending.clear();
        }
    }

    fn flush(&mut self, stream: &mut Conn) {
        while !self.pending.is_empty() {
            match stream.try_write(&self.pending) {
                Ok(n) if n > 0 => {
                    self.pending.drain(..n);
                }
                _ => break,
            }
        }
    }
}

/// Frames a sender keeps for a receiver that does not acknowledge: as many
/// bytes as the kernel buffers between them can hold, which bounds what a
/// dying receiver can have taken without reading.
const UNACKNOWLEDGED_WINDOW: u64 = 16 << 20;

/// Frames in flight to an acknowledging receiver before the sender waits.
const MAX_IN_FLIGHT: u64 = 32 << 20;

/// What the far end of a [`Link`] said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Send on.
    Open,
    /// Closed, broken, or it asked to drain: finish with [`Link::close`].
    Closing,
}

/// A sender's connection to a destination that may acknowledge.
#[derive(Debug)]
pub struct Link {
    stream: Conn,
    acks: bool,
    written: u64,
    acked: u64,
    in_flight: VecDeque<(u64, Vec<u8>)>,
    /// Frames the receiver acknowledged.
    acked_frames: u64,
    /// Frames sent on this link.
    sent_frames: u64,
    /// When it connected: a receiver silent after the hello for
    /// [`PLAIN_AFTER`] does not acknowledge (a carbon daemon).
    opened: Instant,
    /// The destination acknowledged on an earlier link: wait for it,
    /// never take its silence for a carbon daemon's.
    expect_acks: bool,
    control: Vec<u8>,
    state: State,
}

/// How long a receiver may stay silent after the hello before it is taken
/// for one that does not acknowledge (a graunt receiver answers the hello
/// as soon as it reads it).
const PLAIN_AFTER: Duration = Duration::from_secs(10);

impl Link {
    /// Connects (over TLS when `tls` is given) and sends the hello;
    /// `expect_acks` when the destination acknowledged before.
    pub async fn connect(
        addr: &str,
        tls: Option<&TlsClient>,
        expect_acks: bool,
    ) -> std::io::Result<Link> {
        let mut stream = crate::tls::connect(addr, tls, Duration::from_secs(5)).await?;
        stream.write_all(ack::HELLO_FRAME).await?;
        stream.flush().await?;
        Ok(Link {
            stream,
            acks: false,
            written: ack::HELLO_FRAME.len() as u64,
            acked: 0,
            in_flight: VecDeque::new(),
            acked_frames: 0,
            sent_frames: 0,
            opened: Instant::now(),
            expect_acks,
            control: Vec::new(),
            state: State::Open,
        })
    }

    /// Reads what the receiver said, without waiting.
    pub fn poll(&mut self) -> State {
        let mut chunk = [0u8; 4096];
        loop {
            match self.stream.try_read(&mut chunk) {
                Ok(0) => {
                    self.state = State::Closing;
                    break;
                }
                Ok(n) => {
                    self.control.extend_from_slice(&chunk[..n]);
                    self.absorb();
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    self.state = State::Closing;
                    break;
                }
            }
        }
        self.state
    }

    /// Waits until the receiver says something (or closes).
    pub async fn readable(&self) {
        let _ = self.stream.readable().await;
    }

    /// Whether the receiver holds so much unacknowledged that the sender
    /// should wait for it.
    pub fn full(&self) -> bool {
        self.acks && self.written - self.acked > MAX_IN_FLIGHT
    }

    /// Writes one frame. On an error the link is closing and the frame is
    /// kept with the others in flight.
    pub async fn send(&mut self, frame: Vec<u8>) -> State {
        let stream = &mut self.stream;
        let wrote = tokio::time::timeout(Duration::from_secs(10), async {
            stream.write_all(&frame).await?;
            stream.flush().await
        })
        .await;
        self.written += frame.len() as u64;
        self.sent_frames += 1;
        self.in_flight.push_back((self.written, frame));
        if !self.acks {
            let mut bytes: u64 = self.in_flight.iter().map(|(_, f)| f.len() as u64).sum();
            while bytes > UNACKNOWLEDGED_WINDOW && self.in_flight.len() > 1 {
                if let Some((_, f)) = self.in_flight.pop_front() {
                    bytes -= f.len() as u64;
                }
            }
        }
        if !matches!(wrote, Ok(Ok(()))) {
            self.state = State::Closing;
        }
        self.state
    }

    /// Closes the link and returns the frames the receiver may not have
    /// taken, oldest first, and how many frames it released before (see
    /// [`Link::released`]). An acknowledging receiver is given a few seconds
    /// to read what was sent and say so; for one that does not acknowledge,
    /// the recent frames are returned (they may arrive twice).
    pub async fn close(mut self) -> (Vec<Vec<u8>>, u64) {
        let _ = self.stream.shutdown().await;
        if self.acks {
            let until = Instant::now() + DRAIN;
            let mut chunk = [0u8; 4096];
            while let Ok(Ok(n)) = tokio::time::timeout_at(until, self.stream.read(&mut chunk)).await
            {
                if n == 0 {
                    break;
                }
                self.control.extend_from_slice(&chunk[..n]);
                self.absorb();
            }
        }
        let released = self.released();
        let unsure = self.in_flight.into_iter().map(|(_, f)| f).collect();
        (unsure, released)
    }

    /// Whether the receiver is known not to acknowledge: it never answered
    /// the hello in [`PLAIN_AFTER`], and the destination never did before.
    pub fn plain(&self) -> bool {
        !self.acks && !self.expect_acks && self.opened.elapsed() >= PLAIN_AFTER
    }

    /// Frames sent on this link that the sender need not keep, in order:
    /// those the receiver acknowledged, or every frame sent once the
    /// receiver is known not to acknowledge (it cannot say more). Until it
    /// is known, nothing is released.
    pub fn released(&self) -> u64 {
        if self.plain() {
            self.sent_frames
        } else {
            self.acked_frames
        }
    }

    /// Whether the receiver said it acknowledges.
    pub fn acknowledges(&self) -> bool {
        self.acks
    }

    fn absorb(&mut self) {
        let (lines, used) = ack::parse_control(&self.control);
        self.control.drain(..used);
        if self.control.len() > 4096 {
            // Not our protocol (or garbage): stop collecting.
            self.control.clear();
        }
        for c in lines {
            match c {
                Control::Hello => self.acks = true,
                Control::Ack(n) => {
                    self.acked = self.acked.max(n);
                    while self
                        .in_flight
                        .front()
                        .is_some_and(|(end, _)| *end <= self.acked)
                    {
                        self.in_flight.pop_front();
                        self.acked_frames += 1;
                    }
                }
                Control::Drain => self.state = State::Closing,
            }
        }
    }
}

/// A sender's side across connections: the current [`Link`], the frames
/// to send again on the next one, and the reconnect backoff. The relay's
/// outbound queues and the agent's forwarder both drive one.
#[derive(Debug)]
pub struct Sender {
    addr: String,
    tls: Option<std::sync::Arc<TlsClient>>,
    link: Option<Link>,
    resend: VecDeque<Vec<u8>>,
    backoff: Duration,
    /// Frames released by links already closed, not yet taken.
    released: u64,
    /// Frames the current link had released when last taken.
    taken: u64,
    /// The destination acknowledged on some link.
    acknowledged: bool,
    /// The last link closed was known not to acknowledge.
    last_plain: bool,
}

impl Sender {
    /// A sender to `addr` (`host:port`), over TLS when `tls` is given,
    /// not yet connected.
    pub fn new(addr: String, tls: Option<std::sync::Arc<TlsClient>>) -> Sender {
        Sender {
            addr,
            tls,
            link: None,
            resend: VecDeque::new(),
            backoff: Duration::from_millis(100),
            released: 0,
            taken: 0,
            acknowledged: false,
            last_plain: false,
        }
    }

    /// Whether the last link that closed was known not to acknowledge:
    /// the frames it returned are its resend window, already released.
    pub fn last_link_plain(&self) -> bool {
        self.last_plain
    }

    /// Frames released since the last call, in the order they were sent:
    /// acknowledged by the destination, or past the resend window of one
    /// that does not acknowledge. A journal moves its cursor by this.
    pub fn take_released(&mut self) -> u64 {
        if self.link.as_ref().is_some_and(Link::acknowledges) {
            self.acknowledged = true;
        }
        let current = self.link.as_ref().map_or(0, Link::released);
        let n = self.released + current.saturating_sub(self.taken);
        self.released = 0;
        self.taken = current;
        n
    }

    /// Forgets the frames waiting to be sent again (a journal sends them
    /// again from disk instead).
    pub fn clear_resend(&mut self) {
        self.resend.clear();
    }

    fn closed_link(&mut self, plain: bool, acks: bool, released: u64) {
        self.acknowledged |= acks;
        self.last_plain = plain;
        self.released += released.saturating_sub(self.taken);
        self.taken = 0;
    }

    /// Reads what the destination said; when it is closing, the frames it
    /// may not have taken wait for the next connection. True when the
    /// connection ended.
    pub async fn check(&mut self) -> bool {
        if self
            .link
            .as_mut()
            .is_some_and(|l| l.poll() == State::Closing)
        {
            tracing::info!(destination = %self.addr, "destination closed the connection; reconnecting");
            if let Some(l) = self.link.take() {
                let (plain, acks) = (l.plain(), l.acknowledges());
                let (unsure, released) = l.close().await;
                self.closed_link(plain, acks, released);
                self.resend.extend(unsure);
            }
            return true;
        }
        false
    }

    /// Whether frames wait to be sent again.
    pub fn has_resend(&self) -> bool {
        !self.resend.is_empty()
    }

    /// Whether a connection is open.
    pub fn connected(&self) -> bool {
        self.link.is_some()
    }

    /// With nothing to send: waits for `ready`, shutdown (unless already
    /// draining), the destination saying something, or 200 ms.
    pub async fn idle(&self, ready: &tokio::sync::Notify, shutdown: &mut Shutdown, draining: bool) {
        let readable = async {
            match &self.link {
                Some(l) => l.readable().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = ready.notified() => {}
            _ = shutdown.recv(), if !draining => {}
            _ = readable => {}
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }

    /// Whether a frame can be sent now: connects if needed (after a failed
    /// attempt, waits out the backoff and answers false), and waits a moment
    /// (answering false) while the destination is behind on acknowledging.
    pub async fn ready(&mut self, shutdown: &mut Shutdown, draining: bool) -> bool {
        if self.link.is_none() {
            match Link::connect(&self.addr, self.tls.as_deref(), self.acknowledged).await {
                Ok(l) => {
                    tracing::info!(destination = %self.addr, "connected");
                    self.link = Some(l);
                    self.backoff = Duration::from_millis(100);
                }
                Err(e) => {
                    tracing::warn!(destination = %self.addr, error = %e, retry_in = ?self.backoff, "destination unreachable; holding points");
                    tokio::select! {
                        _ = tokio::time::sleep(self.backoff) => {}
                        _ = shutdown.recv(), if !draining => {}
                    }
                    self.backoff = (self.backoff * 2).min(Duration::from_secs(5));
                    return false;
                }
            }
        }
        match &self.link {
            Some(l) if l.full() => {
                tokio::select! {
                    _ = l.readable() => {}
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
                false
            }
            Some(_) => true,
            None => false,
        }
    }

    /// The next frame waiting to be sent again, if any.
    pub fn take_resend(&mut self) -> Option<Vec<u8>> {
        self.resend.pop_front()
    }

    /// Sends a frame on the open link (after [`Sender::ready`] said so);
    /// without one the frame waits to be sent again.
    pub async fn send(&mut self, frame: Vec<u8>) {
        match &mut self.link {
            Some(l) => {
                l.send(frame).await;
            }
            None => self.resend.push_front(frame),
        }
    }

    /// Closes the link and hands back every frame not known to be taken:
    /// those an acknowledging destination did not acknowledge, and those
    /// waiting to be sent again. (A carbon destination cannot say; its
    /// recent frames are not kept.)
    pub async fn finish(&mut self) -> VecDeque<Vec<u8>> {
        if let Some(l) = self.link.take() {
            let acknowledges = l.acknowledges();
            let (plain, acks) = (l.plain(), l.acknowledges());
            let (unsure, released) = l.close().await;
            self.closed_link(plain, acks, released);
            if acknowledges {
                self.resend.extend(unsure);
            }
        }
        std::mem::take(&mut self.resend)
    }
}

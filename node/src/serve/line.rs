//! Carbon plaintext receivers: TCP connections and UDP datagrams of
//! `name value timestamp` lines. Bad lines are counted and dropped; the good
//! lines around them land.

use std::sync::Arc;

use graunt_relay::codec::plaintext::{for_each_line, parse_line};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;

use super::ingest::{read_some, Ingest};
use super::shutdown::Shutdown;

/// Accepts plaintext connections until shutdown.
pub async fn serve_tcp(listener: TcpListener, ingest: Arc<Ingest>, shutdown: Shutdown) {
    super::accept_loop(
        listener,
        ingest,
        shutdown,
        "line",
        |stream, ingest, shutdown| Box::pin(connection(stream, ingest, shutdown)),
    )
    .await;
}

async fn connection(mut stream: TcpStream, ingest: Arc<Ingest>, mut shutdown: Shutdown) {
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    // Small at first so idle connections cost little; grows for busy ones.
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = 4096;
    let mut skipping = false;
    loop {
        let Some(n) = read_some(
            &mut stream,
            &mut buf,
            chunk,
            ingest.idle_timeout,
            &mut shutdown,
        )
        .await
        else {
            break;
        };
        if n >= chunk && chunk < 65536 {
            chunk *= 2;
        }
        let bounds = ingest.bounds();
        let mut points = Vec::new();
        let used = for_each_line(&buf, |line| {
            if std::mem::take(&mut skipping) {
                return;
            }
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            match parse_line(line, &bounds) {
                Ok(p) => points.push(p),
                Err(e) => ingest.refuse("line", &e, &peer, line),
            }
        });
        buf.drain(..used);
        if buf.len() > ingest.max_line_length {
            ingest.refuse_reason(
                "line",
                "too_long",
                "line longer than max_line_length",
                &peer,
                &buf,
            );
            buf.clear();
            buf.shrink_to(4096);
            skipping = true;
        }
        if !ingest.accept(points, true, &mut shutdown).await {
            break;
        }
    }
}

/// Receives plaintext datagrams until shutdown; each datagram is whole lines.
pub async fn serve_udp(socket: UdpSocket, ingest: Arc<Ingest>, mut shutdown: Shutdown) {
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, from) = tokio::select! {
            biased;
            _ = shutdown.recv() => return,
            r = socket.recv_from(&mut buf) => match r {
                Ok(r) => r,
                Err(_) => continue,
            },
        };
        let peer = from.to_string();
        let bounds = ingest.bounds();
        let mut points = Vec::new();
        let mut datagram = buf[..n].to_vec();
        if datagram.last() != Some(&b'\n') {
            datagram.push(b'\n');
        }
        for_each_line(&datagram, |line| {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.iter().all(u8::is_ascii_whitespace) {
                return;
            }
            match parse_line(line, &bounds) {
                Ok(p) => points.push(p),
                Err(e) => ingest.refuse("udp", &e, &peer, line),
            }
        });
        ingest.accept(points, false, &mut shutdown).await;
    }
}

/// Limits concurrent connections of one listener.
pub fn limiter(max: usize) -> Arc<Semaphore> {
    Arc::new(Semaphore::new(max))
}

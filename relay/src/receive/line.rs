//! Carbon plaintext receivers: TCP connections and UDP datagrams of
//! `name value timestamp` lines. Bad lines are counted and dropped; the good
//! lines around them land.

use std::sync::Arc;

use tokio::net::{TcpListener, UdpSocket};

use super::{refuse, refuse_record, serve_connections, Limits, Protocol, Sink};
use crate::codec::plaintext::{for_each_line, parse_line};
use crate::net::read_some;
use crate::shutdown::Shutdown;
use crate::tls::{Conn, TlsServer};

/// Accepts plaintext connections until shutdown.
pub async fn serve_tcp<S: Sink>(
    listener: TcpListener,
    sink: Arc<S>,
    limits: Limits,
    tls: Option<Arc<TlsServer>>,
    shutdown: Shutdown,
) {
    serve_connections(
        listener,
        sink,
        limits,
        shutdown,
        "line",
        tls,
        move |stream, sink, shutdown| async move {
            connection(stream, &*sink, limits, shutdown).await
        },
    )
    .await;
}

async fn connection<S: Sink>(mut stream: Conn, sink: &S, limits: Limits, mut shutdown: Shutdown) {
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
            limits.idle_timeout,
            &mut shutdown,
        )
        .await
        else {
            break;
        };
        if n >= chunk && chunk < 65536 {
            chunk *= 2;
        }
        let bounds = sink.bounds();
        let mut points = Vec::new();
        let used = for_each_line(&buf, |line| {
            if std::mem::take(&mut skipping) {
                return;
            }
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            match parse_line(line, &bounds) {
                Ok(p) => points.push(p),
                Err(e) => refuse_record(sink, Protocol::Line, &e, &peer, line),
            }
        });
        buf.drain(..used);
        if buf.len() > limits.max_line_length {
            refuse(
                sink,
                Protocol::Line,
                "too_long",
                &"line longer than max_line_length",
                &peer,
                &buf,
            );
            buf.clear();
            buf.shrink_to(4096);
            // The rest of this line, up to its newline, is dropped too.
            skipping = true;
        }
        if !sink
            .accept(Protocol::Line, points, true, &mut shutdown)
            .await
        {
            break;
        }
    }
}

/// Receives plaintext datagrams until shutdown; each datagram is whole lines.
pub async fn serve_udp<S: Sink>(socket: UdpSocket, sink: Arc<S>, mut shutdown: Shutdown) {
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
        let bounds = sink.bounds();
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
                Err(e) => refuse_record(&*sink, Protocol::Udp, &e, &peer, line),
            }
        });
        sink.accept(Protocol::Udp, points, false, &mut shutdown)
            .await;
    }
}

//! Carbon pickle receiver: length-prefixed pickles of `[(name, (ts, value)), …]`
//! as carbon-relay sends. Each frame is scanned before it is decoded (no
//! shared references, globals or objects: see `codec::pickle_scan`). A frame
//! that does not decode is counted and skipped (the length prefix keeps the
//! stream in step); one over the size limit ends the connection, since its
//! bytes cannot be skipped safely. A graunt sender that opens with the hello
//! gets acknowledgements ([`crate::ack`]) once the sink has taken a batch.

use std::sync::Arc;

use tokio::net::TcpListener;

use super::{refuse, refuse_record, serve_connections, Limits, Protocol, Sink};
use crate::ack::Receiving;
use crate::codec::pickle::{decode_frame, next_frame, FrameError};
use crate::codec::pickle_scan::check_plain;
use crate::shutdown::Shutdown;
use crate::tls::{Conn, TlsServer};

/// Accepts pickle connections until shutdown.
pub async fn serve<S: Sink>(
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
        "pickle",
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
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut rx = Receiving::default();
    while rx
        .read(
            &mut stream,
            &mut buf,
            8192,
            limits.idle_timeout,
            &mut shutdown,
        )
        .await
        .is_some()
    {
        let bounds = sink.bounds();
        let mut points = Vec::new();
        let mut at = 0;
        loop {
            match next_frame(&buf[at..], limits.max_pickle_frame) {
                Ok(Some((payload, used))) => {
                    if rx.hello(payload) {
                        // A graunt sender: taken in like any frame, no points.
                    } else if !sink.allows_pickle() {
                        refuse(
                            sink,
                            Protocol::Pickle,
                            "pickle",
                            &"pickle is not allowed on this listener",
                            &peer,
                            b"",
                        );
                    } else if let Err(e) = check_plain(payload) {
                        refuse(sink, Protocol::Pickle, "frame", &e, &peer, b"");
                    } else {
                        match decode_frame(payload, &bounds) {
                            Ok(records) => {
                                for r in records {
                                    match r {
                                        Ok(p) => points.push(p),
                                        Err(e) => {
                                            refuse_record(sink, Protocol::Pickle, &e, &peer, b"")
                                        }
                                    }
                                }
                            }
                            Err(e) => refuse(sink, Protocol::Pickle, "frame", &e, &peer, b""),
                        }
                    }
                    at += used;
                }
                Ok(None) => break,
                Err(e @ FrameError::TooLarge(_)) => {
                    refuse(sink, Protocol::Pickle, "frame_too_large", &e, &peer, b"");
                    sink.accept(Protocol::Pickle, points, true, &mut shutdown)
                        .await;
                    return;
                }
                Err(e) => {
                    refuse(sink, Protocol::Pickle, "frame", &e, &peer, b"");
                    sink.accept(Protocol::Pickle, points, true, &mut shutdown)
                        .await;
                    return;
                }
            }
        }
        buf.drain(..at);
        // Acknowledged only once the sink has it (the node: in its
        // write-ahead log). After shutdown began the batch in hand is still
        // taken; `read` decides whether to go on.
        sink.accept(Protocol::Pickle, points, true, &mut shutdown)
            .await;
        rx.taken(&mut stream, at);
    }
    rx.finish(&mut stream).await;
}

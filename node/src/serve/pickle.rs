//! Carbon pickle receiver: length-prefixed pickles of `[(name, (ts, value)), …]`
//! as carbon-relay sends. A frame that does not decode is counted and skipped
//! (the length prefix keeps the stream in step); one over the size limit ends
//! the connection, since its bytes cannot be skipped safely. A graunt sender
//! that opens with the hello gets acknowledgements (`crate::ack`).

use std::sync::Arc;

use graunt_relay::codec::pickle::{decode_frame, next_frame, FrameError};
use tokio::net::{TcpListener, TcpStream};

use super::ingest::Ingest;
use super::shutdown::Shutdown;
use crate::ack::Receiving;

/// Accepts pickle connections until shutdown.
pub async fn serve(listener: TcpListener, ingest: Arc<Ingest>, shutdown: Shutdown) {
    super::accept_loop(
        listener,
        ingest,
        shutdown,
        "pickle",
        |stream, ingest, shutdown| Box::pin(connection(stream, ingest, shutdown)),
    )
    .await;
}

async fn connection(mut stream: TcpStream, ingest: Arc<Ingest>, mut shutdown: Shutdown) {
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
            ingest.idle_timeout,
            &mut shutdown,
        )
        .await
        .is_some()
    {
        let bounds = ingest.bounds();
        let mut points = Vec::new();
        let mut at = 0;
        loop {
            match next_frame(&buf[at..], ingest.max_pickle_frame) {
                Ok(Some((payload, used))) => {
                    if !rx.hello(payload) {
                        match decode_frame(payload, &bounds) {
                            Ok(records) => {
                                for r in records {
                                    match r {
                                        Ok(p) => points.push(p),
                                        Err(e) => ingest.refuse("pickle", &e, &peer, b""),
                                    }
                                }
                            }
                            Err(e) => {
                                ingest.refuse_reason("pickle", "frame", &e.to_string(), &peer, b"")
                            }
                        }
                    }
                    at += used;
                }
                Ok(None) => break,
                Err(e @ FrameError::TooLarge(_)) => {
                    ingest.refuse_reason("pickle", "frame_too_large", &e.to_string(), &peer, b"");
                    ingest.accept(points, true, &mut shutdown).await;
                    return;
                }
                Err(e) => {
                    ingest.refuse_reason("pickle", "frame", &e.to_string(), &peer, b"");
                    return;
                }
            }
        }
        buf.drain(..at);
        // Acknowledged only once in the write-ahead log. After shutdown began
        // the batch in hand is still taken; `read` decides whether to go on.
        ingest.accept(points, true, &mut shutdown).await;
        rx.taken(&stream, at);
    }
    rx.finish(&mut stream).await;
}

//! statsd listeners, for `graunt serve`, `graunt agent` and relay tenants:
//! each listener (UDP, optionally TCP too) feeds its own etsy-compatible
//! aggregator, which is flushed every interval into a sink; a last flush on
//! shutdown keeps what arrived since the previous one.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, UdpSocket};

use super::aggregate::{Aggregator, Line};
use super::config::Listener;
use crate::error::Error;
use crate::shutdown::Shutdown;

/// Where flushed lines go, with the count of samples dropped past
/// `max_keys` / `max_samples` since the previous flush.
pub type Sink = Arc<dyn Fn(Vec<Line>, u64) + Send + Sync>;

/// A statsd listener's sockets, bound.
pub struct Bound {
    /// Its name in logs (`statsd`, `statsd1`, `acme-statsd`…).
    pub label: String,
    /// What it aggregates.
    pub listener: Listener,
    /// Its UDP socket.
    pub udp: UdpSocket,
    /// Its TCP listener, with `tcp = true`.
    pub tcp: Option<TcpListener>,
}

/// Binds every listener, logging each as `listening protocol=<label>`:
/// `label` for the first, `label1`, `label2`… for the others, with `-tcp`
/// for their TCP sides.
pub async fn bind(listeners: Vec<Listener>, label: &str) -> Result<Vec<Bound>, Error> {
    let mut out = Vec::new();
    for (i, l) in listeners.into_iter().enumerate() {
        let protocol = if i == 0 {
            label.to_string()
        } else {
            format!("{label}{i}")
        };
        let udp = crate::net::bind_udp(&l.addr, &protocol).await?;
        // A burst must not overflow the kernel's queue before we read it.
        let _ = set_recv_buffer(&udp, 8 << 20);
        let tcp = if l.tcp {
            let what = format!("{protocol}-tcp");
            // TCP on the port UDP got when the port was left to the kernel
            // (another socket may hold it on TCP: then any port).
            let same = udp
                .local_addr()
                .ok()
                .filter(|_| l.addr.ends_with(":0"))
                .map(|a| a.to_string());
            let tcp = match same {
                Some(a) => crate::net::bind_tcp(&a, &what).await.ok(),
                None => None,
            };
            match tcp {
                Some(t) => Some(t),
                None => Some(crate::net::bind_tcp(&l.addr, &what).await?),
            }
        } else {
            None
        };
        out.push(Bound {
            label: protocol,
            listener: l,
            udp,
            tcp,
        });
    }
    Ok(out)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The tasks that serve bound listeners until shutdown, each flushing into
/// `sink` every interval and once more at shutdown.
pub fn serve(
    bound: Vec<Bound>,
    sink: Sink,
    shutdown: Shutdown,
) -> Vec<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>> {
    let mut tasks: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>> =
        Vec::new();
    for b in bound {
        let interval = Duration::from_millis(b.listener.config.flush_interval_ms);
        let aggregator = Arc::new(Mutex::new(Aggregator::new(
            b.listener.config,
            now_ms() / 1000,
        )));
        tasks.push(Box::pin(receive_udp(
            b.udp,
            aggregator.clone(),
            shutdown.clone(),
        )));
        if let Some(tcp) = b.tcp {
            tasks.push(Box::pin(receive_tcp(
                tcp,
                aggregator.clone(),
                shutdown.clone(),
            )));
        }
        tasks.push(Box::pin(flush_every(
            interval,
            aggregator,
            sink.clone(),
            shutdown.clone(),
        )));
    }
    tasks
}

/// Raises the socket's receive buffer: past `net.core.rmem_max` when the
/// process may (SO_RCVBUFFORCE needs CAP_NET_ADMIN), else up to it.
fn set_recv_buffer(socket: &UdpSocket, bytes: usize) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let size = bytes as libc::c_int;
    let set = |option| {
        // SAFETY: setsockopt on a socket we own, with a valid int and its size.
        unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                option,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        }
    };
    if set(libc::SO_RCVBUFFORCE) == 0 || set(libc::SO_RCVBUF) == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

async fn receive_udp(
    socket: UdpSocket,
    aggregator: Arc<Mutex<Aggregator>>,
    mut shutdown: Shutdown,
) {
    let mut buf = vec![0u8; 65536];
    loop {
        let n = tokio::select! {
            biased;
            _ = shutdown.recv() => return,
            r = socket.recv(&mut buf) => match r {
                Ok(n) => n,
                Err(_) => continue,
            },
        };
        {
            let mut agg = aggregator.lock().unwrap_or_else(|e| e.into_inner());
            agg.add_packet(&buf[..n]);
            // Drain what else is already queued without waking the runtime,
            // but a bounded number: under a sustained flood the flush task
            // (and shutdown) must get the lock and the worker back.
            for _ in 0..1024 {
                match socket.try_recv(&mut buf) {
                    Ok(n) => agg.add_packet(&buf[..n]),
                    Err(_) => break,
                }
            }
        }
        tokio::task::yield_now().await;
    }
}

async fn receive_tcp(
    listener: TcpListener,
    aggregator: Arc<Mutex<Aggregator>>,
    mut shutdown: Shutdown,
) {
    loop {
        let stream = tokio::select! {
            biased;
            _ = shutdown.recv() => return,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let (aggregator, mut shutdown) = (aggregator.clone(), shutdown.clone());
        tokio::spawn(async move {
            let mut stream = stream;
            let mut buf: Vec<u8> = Vec::with_capacity(8192);
            loop {
                buf.reserve(8192);
                let n = tokio::select! {
                    biased;
                    _ = shutdown.recv() => return,
                    r = stream.read_buf(&mut buf) => match r {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    },
                };
                let _ = n;
                // Whole lines only; the rest waits for more bytes (bounded).
                if let Some(end) = buf.iter().rposition(|&b| b == b'\n') {
                    aggregator
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .add_packet(&buf[..end]);
                    buf.drain(..=end);
                } else if buf.len() > 65536 {
                    aggregator
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .add_packet(&buf);
                    buf.clear();
                }
            }
        });
    }
}

async fn flush_every(
    interval: Duration,
    aggregator: Arc<Mutex<Aggregator>>,
    sink: Sink,
    mut shutdown: Shutdown,
) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let last = tokio::select! {
            biased;
            _ = shutdown.recv() => true,
            _ = tick.tick() => false,
        };
        let (lines, dropped) = {
            let mut a = aggregator.lock().unwrap_or_else(|e| e.into_inner());
            (a.flush(now_ms()), a.take_dropped())
        };
        if dropped > 0 {
            tracing::warn!(
                dropped,
                "statsd samples dropped past max_keys / max_samples since the last flush"
            );
        }
        let sink = sink.clone();
        let _ = tokio::task::spawn_blocking(move || sink(lines, dropped)).await;
        if last {
            return;
        }
    }
}

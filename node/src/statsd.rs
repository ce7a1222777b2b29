//! statsd listeners, for `graunt serve` and `graunt agent`: each listener
//! (UDP, optionally TCP too) feeds its own etsy-compatible aggregator, which
//! is flushed every interval into a sink; a last flush on shutdown keeps
//! what arrived since the previous one.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use graunt_relay::statsd::{Aggregator, Config, Line};
use serde::Deserialize;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, UdpSocket};

use crate::serve::shutdown::Shutdown;

/// The `[statsd]` table of a config file (etsy's option names in brackets
/// where they differ).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatsdFile {
    /// Percentiles for timers [`percentThreshold`, 90].
    pub percent_threshold: Option<Vec<f64>>,
    /// etsy's old names (`stats.X`, `stats_counts.X`) [false].
    pub legacy_namespace: Option<bool>,
    /// [`stats`].
    pub global_prefix: Option<String>,
    /// [`counters`].
    pub prefix_counter: Option<String>,
    /// [`timers`].
    pub prefix_timer: Option<String>,
    /// [`gauges`].
    pub prefix_gauge: Option<String>,
    /// [`sets`].
    pub prefix_set: Option<String>,
    /// [none].
    pub global_suffix: Option<String>,
    /// statsd's own metrics namespace [`statsd`].
    pub prefix_stats: Option<String>,
    /// Counts beside rates [true].
    pub flush_counts: Option<bool>,
    /// Stop sending idle metrics [false].
    pub delete_idle_stats: Option<bool>,
    /// [as `delete_idle_stats`].
    pub delete_counters: Option<bool>,
    /// [as `delete_idle_stats`].
    pub delete_timers: Option<bool>,
    /// [as `delete_idle_stats`].
    pub delete_sets: Option<bool>,
    /// [as `delete_idle_stats`].
    pub delete_gauges: Option<bool>,
    /// Flushes a gauge may stay idle before it is dropped [1].
    pub gauges_max_ttl: Option<u32>,
    /// Histogram bins for timers whose key contains `metric`.
    pub histogram: Option<Vec<HistogramFile>>,
    /// Only these timer fields (`count`, `upper_percent`, `histogram`, …).
    pub calculated_timer_metrics: Option<Vec<String>>,
    /// Sanitize keys as etsy does [true].
    pub key_name_sanitize: Option<bool>,
    /// Listeners besides `statsd_addr`, each with its own prefix.
    pub listener: Option<Vec<ListenerFile>>,
    /// Distinct keys held between flushes; samples of more new keys are
    /// dropped and counted [100000].
    pub max_keys: Option<usize>,
    /// Timings per timer and members per set held between flushes [100000].
    pub max_samples: Option<usize>,
}

/// One `histogram` entry: bins are numbers or `"inf"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistogramFile {
    /// Substring of the timer keys it applies to.
    pub metric: String,
    /// Upper bounds of the bins.
    pub bins: Vec<toml::Value>,
}

/// One extra listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerFile {
    /// Address (UDP; TCP too with `tcp = true`).
    pub addr: String,
    /// Prepended to every name it flushes (`smc` gives `smc.stats.…`).
    pub prefix: Option<String>,
    /// Also accept TCP [false].
    pub tcp: Option<bool>,
}

/// One listener to start.
#[derive(Debug, Clone)]
pub struct Listener {
    /// Where it listens.
    pub addr: String,
    /// Also on TCP.
    pub tcp: bool,
    /// Its aggregation settings (with its prefix).
    pub config: Config,
}

impl StatsdFile {
    /// The aggregation settings for a listener with `prefix`.
    pub fn config(
        &self,
        flush_interval: Duration,
        prefix: Option<String>,
    ) -> anyhow::Result<Config> {
        let d = Config::default();
        let idle = self.delete_idle_stats.unwrap_or(false);
        let histogram = self
            .histogram
            .iter()
            .flatten()
            .map(|h| {
                let bins = h
                    .bins
                    .iter()
                    .map(|b| match b {
                        toml::Value::Integer(i) => Ok(*i as f64),
                        toml::Value::Float(f) => Ok(*f),
                        toml::Value::String(s) if s == "inf" => Ok(f64::INFINITY),
                        other => anyhow::bail!(
                            "histogram bin {other} for {:?}: use a number or \"inf\"",
                            h.metric
                        ),
                    })
                    .collect::<anyhow::Result<Vec<f64>>>()?;
                Ok((h.metric.clone(), bins))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        if let Some(bad) = self
            .percent_threshold
            .iter()
            .flatten()
            .find(|p| !(p.abs() <= 100.0 && **p != 0.0))
        {
            anyhow::bail!("percent_threshold {bad}: use percentages between -100 and 100, not 0");
        }
        Ok(Config {
            flush_interval_ms: flush_interval.as_millis().max(1) as u64,
            percent_threshold: self
                .percent_threshold
                .clone()
                .unwrap_or(d.percent_threshold),
            legacy_namespace: self.legacy_namespace.unwrap_or(d.legacy_namespace),
            global_prefix: self.global_prefix.clone().unwrap_or(d.global_prefix),
            prefix_counter: self.prefix_counter.clone().unwrap_or(d.prefix_counter),
            prefix_timer: self.prefix_timer.clone().unwrap_or(d.prefix_timer),
            prefix_gauge: self.prefix_gauge.clone().unwrap_or(d.prefix_gauge),
            prefix_set: self.prefix_set.clone().unwrap_or(d.prefix_set),
            global_suffix: self.global_suffix.clone(),
            prefix_stats: self.prefix_stats.clone().unwrap_or(d.prefix_stats),
            flush_counts: self.flush_counts.unwrap_or(true),
            delete_counters: self.delete_counters.unwrap_or(idle),
            delete_timers: self.delete_timers.unwrap_or(idle),
            delete_sets: self.delete_sets.unwrap_or(idle),
            delete_gauges: self.delete_gauges.unwrap_or(idle),
            gauges_max_ttl: self.gauges_max_ttl.unwrap_or(1).max(1),
            histogram,
            calculated_timer_metrics: self.calculated_timer_metrics.clone().unwrap_or_default(),
            key_name_sanitize: self.key_name_sanitize.unwrap_or(true),
            listener_prefix: prefix.filter(|p| !p.is_empty()),
            max_keys: self.max_keys.unwrap_or(d.max_keys).max(1),
            max_samples: self.max_samples.unwrap_or(d.max_samples).max(1),
        })
    }

    /// Every listener: `main_addr` (if not `""`) without a prefix, then the
    /// `[[statsd.listener]]` entries.
    pub fn listeners(
        &self,
        main_addr: Option<&str>,
        main_tcp: bool,
        main_prefix: Option<String>,
        flush_interval: Duration,
    ) -> anyhow::Result<Vec<Listener>> {
        let mut out = Vec::new();
        if let Some(addr) = main_addr.filter(|a| !a.is_empty()) {
            out.push(Listener {
                addr: addr.to_string(),
                tcp: main_tcp,
                config: self.config(flush_interval, main_prefix)?,
            });
        }
        for l in self.listener.iter().flatten() {
            out.push(Listener {
                addr: l.addr.clone(),
                tcp: l.tcp.unwrap_or(false),
                config: self.config(flush_interval, l.prefix.clone())?,
            });
        }
        Ok(out)
    }
}

/// Where flushed lines go.
pub type Sink = Arc<dyn Fn(Vec<Line>) + Send + Sync>;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Binds every listener (logging `listening protocol=statsd…`) and returns
/// the tasks that serve them until shutdown.
pub async fn start(
    listeners: Vec<Listener>,
    sink: Sink,
    shutdown: Shutdown,
) -> anyhow::Result<Vec<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>>> {
    let mut tasks: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>> =
        Vec::new();
    for (i, l) in listeners.into_iter().enumerate() {
        let interval = Duration::from_millis(l.config.flush_interval_ms);
        let aggregator = Arc::new(Mutex::new(Aggregator::new(l.config, now_ms() / 1000)));
        let udp = UdpSocket::bind(&l.addr)
            .await
            .with_context(|| format!("cannot listen for statsd on {}", l.addr))?;
        // A burst must not overflow the kernel's queue before we read it.
        let _ = set_recv_buffer(&udp, 8 << 20);
        let protocol = if i == 0 {
            "statsd".to_string()
        } else {
            format!("statsd{i}")
        };
        tracing::info!(protocol = %protocol, addr = %udp.local_addr()?, "listening");
        tasks.push(Box::pin(receive_udp(
            udp,
            aggregator.clone(),
            shutdown.clone(),
        )));
        if l.tcp {
            let tcp = TcpListener::bind(&l.addr)
                .await
                .with_context(|| format!("cannot listen for statsd on tcp {}", l.addr))?;
            tracing::info!(protocol = %format!("{protocol}-tcp"), addr = %tcp.local_addr()?, "listening");
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
    Ok(tasks)
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
        let _ = tokio::task::spawn_blocking(move || sink(lines)).await;
        if last {
            return;
        }
    }
}

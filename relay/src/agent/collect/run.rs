//! Collectors on their schedules: each enabled collector runs every own
//! interval on a blocking thread (a hung NFS statvfs stalls that collector
//! only), and its lines go to the agent's buffer.

use std::sync::Arc;

use super::{now, Collector, Host};
use crate::shutdown::Shutdown;
use crate::statsd::Line;

/// Where a round's lines go.
pub type Sink = Arc<dyn Fn(Vec<Line>) + Send + Sync>;

/// Runs `collectors` until `shutdown`.
pub async fn run(collectors: Vec<Collector>, host: Host, sink: Sink, shutdown: Shutdown) {
    let mut tasks = tokio::task::JoinSet::new();
    for collector in collectors {
        tasks.spawn(schedule(
            collector,
            host.clone(),
            sink.clone(),
            shutdown.clone(),
        ));
    }
    while let Some(done) = tasks.join_next().await {
        if let Err(e) = done {
            tracing::error!(error = %e, "a collector's schedule failed");
        }
    }
}

async fn schedule(collector: Collector, host: Host, sink: Sink, mut shutdown: Shutdown) {
    let name = collector.name();
    let mut ticks = tokio::time::interval(collector.interval());
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut slot = Some(collector);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = shutdown.recv() => return,
        }
        let Some(mut collector) = slot.take() else {
            return;
        };
        let host = host.clone();
        let done = tokio::task::spawn_blocking(move || {
            let lines = collector.round(&host, now());
            (collector, lines)
        });
        // A round stuck in the kernel (statvfs on a hung NFS mount) is
        // abandoned at shutdown rather than waited for.
        let (collector, lines) = tokio::select! {
            r = done => match r {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(collector = name, error = %e, "collector panicked; it stops");
                    return;
                }
            },
            _ = shutdown.recv() => return,
        };
        slot = Some(collector);
        match lines {
            Ok(lines) => {
                if failing {
                    tracing::info!(collector = name, "collecting again");
                    failing = false;
                }
                if !lines.is_empty() {
                    sink(lines);
                }
            }
            // Logged when it starts failing, not every round.
            Err(e) if !failing => {
                tracing::warn!(collector = name, error = %e, "collector round failed");
                failing = true;
            }
            Err(_) => {}
        }
    }
}

//! A `graunt agent` in the test process, from the same flags as the
//! binary's, its first statsd listener on a free port.

use std::net::SocketAddr;
use std::time::Duration;

use graunt_relay::agent;

use crate::in_process::Service;

/// A running agent.
pub struct Agent {
    service: Service,
    /// Its statsd (UDP) address.
    pub statsd: SocketAddr,
}

impl Agent {
    /// Starts an agent with `--statsd-addr 127.0.0.1:0 --flush-interval 1`
    /// and `extra` flags (a `--destination` at least).
    pub fn start(extra: &[&str]) -> Agent {
        let mut args: Vec<String> = ["--statsd-addr", "127.0.0.1:0", "--flush-interval", "1"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        let (service, addrs) = Service::start("agent", move |shutdown| async move {
            let config = graunt::cli::agent_config(args).map_err(|e| format!("{e:#}"))?;
            let listeners = agent::Listeners::bind(&config)
                .await
                .map_err(|e| e.to_string())?;
            let addrs = listeners
                .statsd_addrs()
                .into_iter()
                .map(|a| ("statsd".to_string(), a))
                .collect();
            Ok((addrs, async move {
                agent::run(config, listeners, shutdown).await;
                Ok(())
            }))
        });
        Agent {
            service,
            statsd: addrs["statsd"],
        }
    }

    /// Stops it as SIGTERM does: a last flush, then what it holds is sent
    /// (for a few seconds at most).
    pub fn stop(mut self) {
        self.service.stop(Duration::from_secs(20));
    }
}

//! What every long-running command shares: logging to stderr, the tokio
//! runtime, SIGTERM/SIGINT firing the service's shutdown signal, and
//! SIGHUP reloading TLS certificates, rule files, schemas and tenants.

use std::future::Future;
use std::process::ExitCode;

use anyhow::Context;
use graunt_relay::shutdown::{self, Shutdown};

/// Sets up logging (`RUST_LOG`, default `info`), starts a runtime with
/// `workers` threads (all cores when `None`), runs `service` with a
/// shutdown signal fired by SIGTERM or SIGINT, and reports its error as
/// `graunt <command>: …` with exit code 1.
pub fn run<F, Fut>(command: &str, workers: Option<usize>, service: F) -> ExitCode
where
    F: FnOnce(Shutdown) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all().thread_name("graunt");
    if let Some(n) = workers {
        builder.worker_threads(n);
    }
    let result = builder
        .build()
        .context("cannot start the async runtime")
        .and_then(|runtime| {
            let result = runtime.block_on(async {
                let (trigger, shutdown) = shutdown::channel();
                let signals = wait_for_signal()?;
                tokio::spawn(async move {
                    signals.await;
                    trigger.fire();
                });
                watch_hangup()?;
                service(shutdown).await
            });
            // A blocking call that never returns (a collector's statvfs on
            // a hung NFS mount) must not keep the process from exiting.
            runtime.shutdown_timeout(std::time::Duration::from_secs(5));
            result
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("graunt {command}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// On SIGHUP, every TLS listener and client looks at its certificate
/// files on its next connection.
fn watch_hangup() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup()).context("cannot watch SIGHUP")?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!(
                "SIGHUP: TLS certificates, rule files, schemas and tenants are looked at again"
            );
            graunt_relay::tls::reload_all();
            graunt_relay::rules::reload_all();
            graunt_relay::hangup::signal();
        }
    });
    Ok(())
}

/// Resolves on the first SIGTERM or SIGINT (watched from the call on).
fn wait_for_signal() -> anyhow::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

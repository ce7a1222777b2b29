//! A relay's tenants read again from its config file at SIGHUP. A tenant
//! whose listeners and statsd settings are unchanged takes its new fence
//! (namespaces, `max_age`, `max_future`, `rate_limit`) and `allow_pickle`
//! at once; a file that does not parse is refused and the tenants in force
//! stay. Tenants added or removed, changed listeners or statsd settings
//! need a restart (they own sockets), as do destinations and `[[rule]]`s,
//! and the log says which.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::config::{RelayConfig, RelayFile, TenantConfig};
use super::pipeline::Tenant;
use crate::shutdown::Shutdown;

/// A tenant as configured at start, and as it runs.
pub(super) struct Running {
    pub config: TenantConfig,
    pub tenant: Arc<Tenant>,
}

/// Reads `path` again at every SIGHUP until shutdown. `routing` is how the
/// destinations and rules read at start print (`{:?}`): a change to them
/// is reported as needing a restart.
pub(super) async fn follow_tenants(
    path: PathBuf,
    running: Vec<Running>,
    routing: String,
    mut shutdown: Shutdown,
) {
    let mut hangups = crate::hangup::subscribe();
    loop {
        tokio::select! {
            _ = shutdown.recv() => return,
            r = hangups.changed() => if r.is_err() { return },
        }
        let read = RelayFile::read(Some(&path)).and_then(RelayConfig::from_file);
        match read {
            Ok(config) => {
                if format!("{:?}", config.destinations) != routing {
                    tracing::warn!(file = %path.display(), "destinations, cluster or [[rule]] settings changed: they need a restart of the relay");
                }
                apply(&config.tenants, &running, &path);
            }
            Err(e) => tracing::error!(
                file = %path.display(),
                error = %e,
                "relay config refused; the tenants in force stay"
            ),
        }
    }
}

/// Applies what can change in place; returns the tenants it changed.
pub(super) fn apply(
    wanted: &[TenantConfig],
    running: &[Running],
    path: &std::path::Path,
) -> Vec<String> {
    let mut changed = Vec::new();
    let mut restart = Vec::new();
    for want in wanted {
        let Some(run) = running.iter().find(|r| r.config.name == want.name) else {
            restart.push(format!("{} (new)", want.name));
            continue;
        };
        if run.config.listeners != want.listeners
            || format!("{:?}", run.config.statsd) != format!("{:?}", want.statsd)
        {
            restart.push(format!("{} (listeners or statsd)", want.name));
        }
        let mut fence = run.tenant.fence.lock().unwrap_or_else(|e| e.into_inner());
        let pickle = run.tenant.allow_pickle.load(Ordering::Relaxed);
        if !fence.same_rules(&want.fence) || pickle != want.allow_pickle {
            *fence = want.fence.clone();
            run.tenant
                .allow_pickle
                .store(want.allow_pickle, Ordering::Relaxed);
            tracing::info!(
                tenant = %want.name,
                namespaces = ?want.fence.namespaces,
                max_age = want.fence.max_age,
                max_future = want.fence.max_future,
                allow_pickle = want.allow_pickle,
                "tenant fence reloaded"
            );
            changed.push(want.name.clone());
        }
    }
    for run in running {
        if !wanted.iter().any(|w| w.name == run.config.name) {
            restart.push(format!("{} (removed)", run.config.name));
        }
    }
    if !restart.is_empty() {
        tracing::warn!(
            file = %path.display(),
            tenants = ?restart,
            "these tenant changes need a restart of the relay; the rest is in force"
        );
    }
    tracing::info!(file = %path.display(), changed = ?changed, "relay config read again at SIGHUP");
    changed
}

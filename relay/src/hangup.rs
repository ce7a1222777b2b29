//! SIGHUP as a signal tasks can wait for: [`signal`] (called by the
//! binary's SIGHUP handler) wakes every [`subscribe`]r, which then looks at
//! its files again (schemas, tenants). TLS certificates and carbon's rule
//! files have their own counters ([`crate::tls::reload_all`],
//! [`crate::rules::reload_all`]), read on their next use.

use std::sync::OnceLock;

use tokio::sync::watch;

fn channel() -> &'static watch::Sender<u64> {
    static HANGUPS: OnceLock<watch::Sender<u64>> = OnceLock::new();
    HANGUPS.get_or_init(|| watch::channel(0).0)
}

/// Wakes every subscriber.
pub fn signal() {
    channel().send_modify(|n| *n += 1);
}

/// A receiver that sees each SIGHUP from now on (`changed()` resolves).
pub fn subscribe() -> watch::Receiver<u64> {
    channel().subscribe()
}

//! The shutdown signal every task of `graunt serve` obeys: one sender, a
//! cheap clone per task, `recv()` resolves once shutdown has begun.

use tokio::sync::watch;

/// Sends the signal.
#[derive(Debug)]
pub struct Trigger(watch::Sender<bool>);

/// Receives it; clone one into each task.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

/// A connected trigger and receiver.
pub fn channel() -> (Trigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (Trigger(tx), Shutdown(rx))
}

impl Trigger {
    /// Begins shutdown.
    pub fn fire(&self) {
        let _ = self.0.send(true);
    }
}

impl Shutdown {
    /// Resolves when shutdown has begun (at once if it already has).
    pub async fn recv(&mut self) {
        let _ = self.0.wait_for(|down| *down).await;
    }

    /// Whether shutdown has begun.
    pub fn is_down(&self) -> bool {
        *self.0.borrow()
    }
}

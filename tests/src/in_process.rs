//! Services started inside the test process: each on its own thread with
//! its own tokio runtime, bound on port 0, stopped by firing its shutdown
//! signal (what SIGTERM does in the binary) and joined under a deadline.
//! Tests that need a real process (signals, `kill -9`, the CLI, the image)
//! start the binary instead.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use graunt_relay::shutdown::{self, Shutdown, Trigger};

use crate::node::wait_for;

/// A service running on its own thread.
pub struct Service {
    trigger: Option<Trigger>,
    thread: Option<JoinHandle<Result<(), String>>>,
    what: String,
}

impl Service {
    /// Runs `start` on a new runtime: it binds (returning its addresses by
    /// protocol, or why it cannot) and returns the future that serves until
    /// the shutdown signal. Waits for the binding; panics if it fails.
    pub fn start<B, BF, RF>(what: &str, bind: B) -> (Service, HashMap<String, SocketAddr>)
    where
        B: FnOnce(Shutdown) -> BF + Send + 'static,
        BF: Future<Output = Result<(HashMap<String, SocketAddr>, RF), String>>,
        RF: Future<Output = Result<(), String>>,
    {
        let (trigger, shutdown) = shutdown::channel();
        let (tx, rx) = mpsc::channel();
        let name = what.to_string();
        let thread = std::thread::Builder::new()
            .name(format!("test-{what}"))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string())?;
                runtime.block_on(async move {
                    match bind(shutdown).await {
                        Ok((addrs, serve)) => {
                            let _ = tx.send(Ok(addrs));
                            serve.await
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e.clone()));
                            Err(e)
                        }
                    }
                })
            })
            .expect("spawn a service thread");
        let addrs = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(addrs)) => addrs,
            Ok(Err(e)) => panic!("{name} cannot start: {e}"),
            Err(e) => panic!("{name} did not bind: {e}"),
        };
        (
            Service {
                trigger: Some(trigger),
                thread: Some(thread),
                what: name,
            },
            addrs,
        )
    }

    /// Fires the shutdown signal and waits (up to `timeout`) for the
    /// service to finish; panics if it failed or took longer.
    pub fn stop(&mut self, timeout: Duration) {
        if let Some(t) = self.trigger.take() {
            t.fire();
        }
        if let Some(thread) = self.thread.take() {
            let what = format!("{} to stop", self.what);
            wait_for(timeout, &what, || thread.is_finished().then_some(()));
            match thread.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => panic!("{} failed: {e}", self.what),
                Err(_) => panic!("{} panicked", self.what),
            }
        }
    }
}

/// A failed test stops its services too (without judging how they ended).
impl Drop for Service {
    fn drop(&mut self) {
        if let Some(t) = self.trigger.take() {
            t.fire();
        }
        if let Some(thread) = self.thread.take() {
            for _ in 0..1000 {
                if thread.is_finished() {
                    let _ = thread.join();
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

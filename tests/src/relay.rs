//! A `graunt relay` process for end-to-end tests: started from a config
//! file, its listeners read from its log, stopped with SIGTERM (and killed
//! if a failing test drops it).

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::node::wait_for;

/// A running relay.
pub struct Relay {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Relay {
    /// Starts `bin relay --config config` and waits until it is ready.
    pub fn start(bin: &Path, config: &Path) -> Relay {
        let mut child = Command::new(bin)
            .args(["relay", "--config", config.to_str().expect("a UTF-8 path")])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start graunt relay");
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        let stderr = child.stderr.take().expect("piped stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let mut relay = Relay { child, log };
        wait_for(Duration::from_secs(30), "the relay to be ready", || {
            if let Ok(Some(status)) = relay.child.try_wait() {
                panic!("graunt relay exited with {status}:\n{}", relay.log());
            }
            relay
                .log
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.contains(" ready"))
                .then_some(())
        });
        relay
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// The address a listener logged (`protocol=<label> addr=…`).
    pub fn addr(&self, protocol: &str) -> SocketAddr {
        let key = format!("protocol={protocol} addr=");
        self.log
            .lock()
            .unwrap()
            .iter()
            .find_map(|l| {
                let at = l.find(&key)?;
                l[at + key.len()..].split_whitespace().next()?.parse().ok()
            })
            .unwrap_or_else(|| panic!("no {protocol} listener"))
    }

    /// A GET on its HTTP port (`/metrics`).
    pub fn http_get(&self, path: &str) -> String {
        let mut s = TcpStream::connect(self.addr("http")).unwrap();
        write!(s, "GET {path} HTTP/1.0\r\n\r\n").unwrap();
        let mut out = String::new();
        std::io::Read::read_to_string(&mut s, &mut out).unwrap();
        out
    }

    /// SIGTERM, then waits for a clean exit.
    pub fn stop(mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc_kill(self.child.id() as i32, 15) };
        let status = wait_for(Duration::from_secs(30), "the relay to exit", || {
            self.child.try_wait().ok().flatten()
        });
        assert!(status.success(), "{}", self.log());
    }
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

/// A failed test must not leave its relay running.
impl Drop for Relay {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

//! A relay for end-to-end tests, from a config file: in-process
//! ([`Relay::start`]) or as a `graunt relay` process ([`Relay::spawn`]: its
//! listeners read from its log, stopped with SIGTERM, killed if a failing
//! test drops it).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use graunt_relay::service::{self, RelayConfig, RelayFile};

use crate::in_process::Service;
use crate::node::wait_for;

/// A running relay.
pub struct Relay {
    child: Option<Child>,
    service: Option<Service>,
    addrs: HashMap<String, SocketAddr>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Relay {
    /// Starts a relay in this process from `config`; its listeners are
    /// named as the binary logs them (`<tenant>-line`, `<tenant>-line-udp`,
    /// `<tenant>-pickle`, `<tenant>-statsd`, `http`).
    pub fn start(config: &Path) -> Relay {
        let path = config.to_path_buf();
        let (service, addrs) = Service::start("relay", move |shutdown| async move {
            let file = RelayFile::read(Some(&path)).map_err(|e| e.to_string())?;
            let config = RelayConfig::from_file(file).map_err(|e| e.to_string())?;
            let listeners = service::Listeners::bind(&config)
                .await
                .map_err(|e| e.to_string())?;
            let addrs = listeners.addrs(&config).into_iter().collect();
            Ok((addrs, async move {
                service::run(config, listeners, shutdown)
                    .await
                    .map_err(|e| e.to_string())
            }))
        });
        Relay {
            child: None,
            service: Some(service),
            addrs,
            log: Arc::new(Mutex::new(vec![
                "(an in-process relay keeps no log; Relay::spawn runs a process)".into(),
            ])),
        }
    }

    /// Starts a relay in this process that follows the cluster at `http`
    /// (its members' HTTP addresses) with `secret_file`, polling every
    /// 100 ms, one tenant `t` with a plaintext listener (`t-line`), and
    /// `extra` TOML tables (say `[destination_tls]`); its config is
    /// `dir/relay.toml`.
    pub fn following(dir: &Path, http: &[String], secret_file: &Path, extra: &str) -> Relay {
        let config = dir.join("relay.toml");
        let nodes: Vec<String> = http.iter().map(|h| format!("\"{h}\"")).collect();
        std::fs::write(
            &config,
            format!(
                "cluster = [{}]\ncluster_secret_file = {secret_file:?}\ncluster_poll_interval = 0.1\n\
                 {extra}\n[[tenant]]\nname = \"t\"\n\
                 [[tenant.listener]]\nprotocol = \"line\"\naddr = \"127.0.0.1:0\"\n",
                nodes.join(", ")
            ),
        )
        .expect("write the relay's config");
        Relay::start(&config)
    }

    /// Starts `bin relay --config config` and waits until it is ready.
    pub fn spawn(bin: &Path, config: &Path) -> Relay {
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
        let mut relay = Relay {
            child: Some(child),
            service: None,
            addrs: HashMap::new(),
            log,
        };
        wait_for(Duration::from_secs(30), "the relay to be ready", || {
            if let Some(status) = relay
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
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
        if self.service.is_some() {
            return *self
                .addrs
                .get(protocol)
                .unwrap_or_else(|| panic!("no {protocol} listener"));
        }
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

    /// Stops it as SIGTERM does, then waits for a clean end: listeners
    /// closed, queues sent (or spilled).
    pub fn stop(mut self) {
        if let Some(mut s) = self.service.take() {
            s.stop(Duration::from_secs(30));
            return;
        }
        let Some(child) = self.child.as_mut() else {
            return;
        };
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc_kill(child.id() as i32, 15) };
        let status = wait_for(Duration::from_secs(30), "the relay to exit", || {
            child.try_wait().ok().flatten()
        });
        assert!(status.success(), "{}", self.log());
    }
}

impl Relay {
    /// Its process id (a relay started with [`Relay::spawn`]).
    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .expect("an in-process relay has no process: use Relay::spawn")
            .id()
    }

    /// SIGKILL: the process dies at once, as in a crash.
    pub fn kill9(mut self) {
        let child = self
            .child
            .as_mut()
            .expect("an in-process relay has no process: use Relay::spawn");
        let _ = child.kill();
        let _ = child.wait();
    }
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

/// A failed test must not leave its relay running.
impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

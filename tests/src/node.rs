//! A node for end-to-end tests, on port 0 for every listener: in-process
//! ([`Node::start`], the usual choice) or as a real `graunt serve` process
//! ([`Node::serve`]: its bound addresses read back from its log, stopped with
//! SIGTERM or SIGKILL) where a process matters.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::in_process::Service;

/// How a node runs.
enum Runner {
    Process(Child),
    InProcess(Service),
}

/// A running node.
pub struct Node {
    runner: Runner,
    addrs: HashMap<String, SocketAddr>,
    log: Arc<Mutex<Vec<String>>>,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// How its HTTP port is reached over TLS, if it speaks TLS.
    https: Option<Arc<rustls::ClientConfig>>,
}

/// A plain or TLS stream.
trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// Polls `f` every 20 ms until it returns `Some`, panicking with `what` after `timeout`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let start = line.find(key)? + key.len();
    let rest = &line[start..];
    let rest = rest.strip_prefix('"').unwrap_or(rest);
    Some(
        rest.split(|c: char| c == '"' || c.is_whitespace())
            .next()
            .unwrap_or(rest),
    )
}

/// Flags that put every listener of a node on a free loopback port.
const FREE_PORTS: [&str; 10] = [
    "--line-addr",
    "127.0.0.1:0",
    "--pickle-addr",
    "127.0.0.1:0",
    "--carbonlink-addr",
    "127.0.0.1:0",
    "--http-addr",
    "127.0.0.1:0",
    "--statsd-addr",
    "127.0.0.1:0",
];

impl Node {
    /// Starts a node in this process on `data_dir` with every listener on a
    /// free loopback port, plus `extra` flags of `graunt serve`; returns
    /// once its HTTP port answers.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Node {
        Node::start_with(data_dir, extra, None)
    }

    /// [`Node::start`] for a node whose HTTP port speaks TLS with a
    /// certificate from `ca_file` (the helpers then use HTTPS).
    pub fn start_tls(data_dir: &Path, extra: &[&str], ca_file: &Path) -> Node {
        Node::start_with(data_dir, extra, Some(crate::tls::client_config(ca_file)))
    }

    fn start_with(
        data_dir: &Path,
        extra: &[&str],
        https: Option<Arc<rustls::ClientConfig>>,
    ) -> Node {
        let mut args: Vec<String> = vec!["--data-dir".into(), data_dir.display().to_string()];
        args.extend(FREE_PORTS.iter().map(|s| s.to_string()));
        args.extend(extra.iter().map(|s| s.to_string()));
        let (service, addrs) = Service::start("node", move |shutdown| async move {
            let cfg = graunt::cli::serve_config(args).map_err(|e| format!("{e:#}"))?;
            let listeners = graunt::serve::Listeners::bind(&cfg)
                .await
                .map_err(|e| format!("{e:#}"))?;
            let addrs = listeners.addrs().into_iter().collect();
            Ok((addrs, async move {
                graunt::serve::run(cfg, listeners, shutdown)
                    .await
                    .map_err(|e| format!("{e:#}"))
            }))
        });
        let node = Node {
            runner: Runner::InProcess(service),
            addrs,
            log: Arc::new(Mutex::new(vec![
                "(an in-process node keeps no log; Node::serve runs a process)".into(),
            ])),
            data_dir: data_dir.to_path_buf(),
            https,
        };
        if node.addrs.contains_key("http") {
            wait_for(Duration::from_secs(20), "the node's HTTP port", || {
                (node.http_request("/version").0 == 200).then_some(())
            });
        }
        node
    }

    /// Starts `graunt serve` on `data_dir` with every listener on a free
    /// loopback port, plus `extra` arguments, and waits until it is ready.
    pub fn serve(bin: &Path, data_dir: &Path, extra: &[&str]) -> Node {
        let mut cmd = Command::new(bin);
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .args(FREE_PORTS)
            .args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let mut node = Node {
            runner: Runner::Process(child),
            addrs: HashMap::new(),
            log,
            data_dir: data_dir.to_path_buf(),
            https: None,
        };
        wait_for(Duration::from_secs(20), "the node to be ready", || {
            if let Ok(Some(status)) = node.child().try_wait() {
                panic!("graunt serve exited with {status}:\n{}", node.log());
            }
            let lines = node.log.lock().unwrap().clone();
            for line in &lines {
                if line.contains("listening") {
                    if let (Some(p), Some(a)) = (field(line, "protocol="), field(line, "addr=")) {
                        node.addrs
                            .insert(p.to_string(), a.parse().expect("an address"));
                    }
                }
            }
            lines.iter().any(|l| l.contains(" ready")).then_some(())
        });
        node
    }

    /// The bound address of a listener: `line`, `udp`, `pickle`, `carbonlink`, `http`.
    pub fn addr(&self, protocol: &str) -> SocketAddr {
        self.addrs[protocol]
    }

    fn child(&mut self) -> &mut Child {
        match &mut self.runner {
            Runner::Process(c) => c,
            Runner::InProcess(_) => panic!("an in-process node has no process: use Node::serve"),
        }
    }

    /// Its process id (a node started with [`Node::serve`]).
    pub fn pid(&self) -> u32 {
        match &self.runner {
            Runner::Process(c) => c.id(),
            Runner::InProcess(_) => panic!("an in-process node has no process: use Node::serve"),
        }
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// GETs a path on its HTTP port, returning the status and the body.
    pub fn http_request(&self, path: &str) -> (u16, String) {
        let (status, _, body) = self.http_raw("GET", path, None, &[]);
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    /// POSTs a form (`application/x-www-form-urlencoded`) to a path, as
    /// Grafana does, returning the status and the body.
    pub fn http_post_form(&self, path: &str, form: &str) -> (u16, String) {
        let (status, _, body) = self.http_raw(
            "POST",
            path,
            Some(form.as_bytes()),
            &[("Content-Type", "application/x-www-form-urlencoded")],
        );
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    /// Sends one HTTP/1.0 request; returns the status, the headers (lower-cased
    /// names) and the body bytes.
    pub fn http_raw(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        headers: &[(&str, &str)],
    ) -> (u16, Vec<(String, String)>, Vec<u8>) {
        let mut s: Box<dyn ReadWrite> = match &self.https {
            None => Box::new(TcpStream::connect(self.addr("http")).expect("connect to HTTP")),
            Some(config) => Box::new(crate::tls::connect(self.addr("http"), config)),
        };
        let mut request = format!("{method} {path} HTTP/1.0\r\nHost: test\r\n");
        for (k, v) in headers {
            request.push_str(&format!("{k}: {v}\r\n"));
        }
        if let Some(b) = body {
            request.push_str(&format!("Content-Length: {}\r\n", b.len()));
        }
        request.push_str("\r\n");
        s.write_all(request.as_bytes()).expect("send request");
        if let Some(b) = body {
            s.write_all(b).expect("send body");
        }
        let mut response = Vec::new();
        // A TLS server may close without close_notify after HTTP/1.0:
        // what was read is the answer.
        if let Err(e) = s.read_to_end(&mut response) {
            assert!(
                self.https.is_some() && e.kind() == std::io::ErrorKind::UnexpectedEof,
                "read response: {e}"
            );
        }
        let split = response
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or(response.len());
        let head = String::from_utf8_lossy(&response[..split]).into_owned();
        let body = response.get(split + 4..).unwrap_or_default().to_vec();
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        (status, headers, body)
    }

    /// GETs a path on its HTTP port, returning the body.
    pub fn http_get(&self, path: &str) -> String {
        self.http_request(path).1
    }

    /// A sample of `/metrics` (name with labels, as printed), 0 when absent.
    pub fn metric(&self, name: &str) -> f64 {
        self.http_get("/metrics")
            .lines()
            .find_map(|l| {
                l.strip_prefix(name)
                    .and_then(|v| v.strip_prefix(' '))
                    .and_then(|v| v.trim().parse().ok())
            })
            .unwrap_or(0.0)
    }

    /// Stops it as SIGTERM does (a process gets SIGTERM; an in-process
    /// node its shutdown signal), then waits (up to `timeout`) for a clean
    /// end: listeners closed, the cache written to whisper.
    pub fn stop(mut self, timeout: Duration) -> ExitStatus {
        use std::os::unix::process::ExitStatusExt;
        if let Runner::InProcess(service) = &mut self.runner {
            service.stop(timeout);
            return ExitStatus::from_raw(0);
        }
        let pid = self.pid().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let status = wait_for(timeout, "graunt to exit after SIGTERM", || {
            self.child().try_wait().ok().flatten()
        });
        assert!(status.success(), "exit status {status}:\n{}", self.log());
        status
    }

    /// SIGKILL: the process dies at once, as in a crash.
    pub fn kill9(mut self) {
        let child = self.child();
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Runner::Process(child) = &mut self.runner {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

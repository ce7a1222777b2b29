//! The docker-compose cluster end to end (issue 9): builds the image
//! (deploy/build-image.sh), brings deploy/docker-compose.yml up under its
//! own project name and host ports, and checks that it forms itself, that
//! 100,000 points through both relays give the same answers on every node,
//! that a stopped node, a relay cut off from a node and a rolling restart
//! under load lose nothing, and that the tenant relay keeps its fence.
//! Everything it made (containers, networks, volumes) is removed at the end.

use std::io::Write;
use std::net::TcpStream;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use graunt_harness::node::wait_for;
use graunt_harness::{unix_now, workspace_root};
use serde_json::Value;

const IMAGE: &str = "graunt:e2e";

/// The compose cluster's secret, as the test wrote it.
static SECRET: std::sync::OnceLock<graunt_cluster::secret::ClusterSecret> =
    std::sync::OnceLock::new();

struct Compose {
    project: String,
    env: Vec<(String, String)>,
}

impl Compose {
    fn run(&self, args: &[&str]) -> Output {
        let root = workspace_root();
        Command::new("docker-compose")
            .current_dir(&root)
            .args(["-p", &self.project, "-f", "deploy/docker-compose.yml"])
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .expect("docker-compose runs")
    }

    fn ok(&self, args: &[&str]) {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "docker-compose {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn container(&self, service: &str) -> String {
        format!("{}_{service}_1", self.project)
    }

    fn port(&self, var: &str) -> u16 {
        self.env
            .iter()
            .find(|(k, _)| k == var)
            .unwrap()
            .1
            .parse()
            .unwrap()
    }

    fn healthy(&self, service: &str) -> bool {
        let out = Command::new("docker")
            .args([
                "inspect",
                "--format",
                "{{.State.Health.Status}}",
                &self.container(service),
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim() == "healthy"
    }

    fn wait_healthy(&self, service: &str) {
        wait_for(
            Duration::from_secs(120),
            &format!("{service} healthy"),
            || self.healthy(service).then_some(()),
        );
    }
}

impl Drop for Compose {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let logs = self.run(&["logs", "--tail", "40"]);
            eprintln!("{}", String::from_utf8_lossy(&logs.stdout));
        }
        let _ = self.run(&["down", "-v", "--remove-orphans", "-t", "5"]);
    }
}

/// A host port for a published container port: below the kernel's ephemeral
/// range (32768 and up), so no other test's listener or outgoing connection
/// can take it between this check and docker binding it, and free on TCP and
/// UDP now.
fn free_port(taken: &mut Vec<u16>) -> u16 {
    let mut seed = std::process::id() as u64 ^ unix_now() as u64;
    loop {
        // xorshift: enough spread to keep parallel runs apart.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let port = 20_000 + (seed % 12_000) as u16;
        if taken.contains(&port) {
            continue;
        }
        let free = std::net::TcpListener::bind(("0.0.0.0", port)).is_ok()
            && std::net::UdpSocket::bind(("0.0.0.0", port)).is_ok();
        if free {
            taken.push(port);
            return port;
        }
    }
}

fn http(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    // The cluster's API wants the cluster's credential.
    let auth = match (path.starts_with("/cluster/"), SECRET.get()) {
        (true, Some(secret)) => format!("Authorization: {}\r\n", secret.sign("GET", path, b"")),
        _ => String::new(),
    };
    write!(s, "GET {path} HTTP/1.0\r\n{auth}\r\n").ok()?;
    let mut out = String::new();
    std::io::Read::read_to_string(&mut s, &mut out).ok()?;
    let status = out.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, out.split_once("\r\n\r\n")?.1.to_string()))
}

/// Points stored under `pattern` between t0 and t0+1000, as node `port` sees
/// them (`local`: only its own copies).
fn count(port: u16, pattern: &str, t0: i64, local: bool) -> Option<u64> {
    let path = format!(
        "/render?target=sumSeries(isNonNull({pattern}))&from={}&until={}&format=json{}",
        t0 - 1,
        t0 + 1000,
        if local { "&local=1" } else { "" }
    );
    let (status, body) = http(port, &path)?;
    if status != 200 {
        return None;
    }
    let v: Value = serde_json::from_str(&body).ok()?;
    Some(v.get(0).map_or(0.0, |s| {
        s["datapoints"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p[0].as_f64())
            .sum()
    }) as u64)
}

/// `metrics` × 100 lines `e2e.<group>.mI`, one every 10 s from t0.
fn lines(group: &str, metrics: usize, t0: i64) -> String {
    let mut out = String::new();
    for i in 0..metrics {
        for j in 0..100 {
            out.push_str(&format!(
                "e2e.{group}.m{i} {} {}\n",
                i * 100 + j,
                t0 + 10 * j as i64
            ));
        }
    }
    out
}

fn send(port: u16, text: &str) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(text.as_bytes()).unwrap();
}

#[test]
fn the_compose_cluster_forms_and_survives_its_failures() {
    let started = Instant::now();
    let build = Command::new(workspace_root().join("deploy/build-image.sh"))
        .arg(IMAGE)
        .output()
        .expect("deploy/build-image.sh runs");
    assert!(
        build.status.success(),
        "image build: {}",
        String::from_utf8_lossy(&build.stderr)
    );
    let secret_dir = graunt_harness::temp_dir();
    let secret_file = secret_dir.path().join("cluster.secret");
    std::fs::write(
        &secret_file,
        format!("e2e-secret-{}-0123456789\n", std::process::id()),
    )
    .unwrap();
    // Read by the image's user (nobody).
    std::fs::set_permissions(
        &secret_dir,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let _ = SECRET.set(graunt_cluster::secret::ClusterSecret::read(&secret_file).unwrap());
    let base_env = vec![
        ("GRAUNT_IMAGE".to_string(), IMAGE.to_string()),
        (
            "GRAUNT_CLUSTER_SECRET_FILE".to_string(),
            secret_file.display().to_string(),
        ),
    ];
    let mut taken = Vec::new();
    let mut attempt = 0;
    let compose = loop {
        let mut env = base_env.clone();
        for var in [
            "NODE1_HTTP",
            "NODE2_HTTP",
            "NODE3_HTTP",
            "RELAY1_LINE",
            "RELAY1_PICKLE",
            "RELAY1_STATSD",
            "RELAY2_LINE",
            "RELAY2_PICKLE",
            "RELAY2_STATSD",
            "ACME_LINE",
            "ACME_STATSD",
        ] {
            env.push((var.to_string(), free_port(&mut taken).to_string()));
        }
        let compose = Compose {
            project: format!("graunte2e{}", std::process::id()),
            env,
        };
        let up = compose.run(&["up", "-d"]);
        if up.status.success() {
            break compose;
        }
        // Something outside the test may still take a port between the check
        // and docker's bind: take other ports (dropping this try's project).
        let err = String::from_utf8_lossy(&up.stderr).into_owned();
        attempt += 1;
        assert!(
            attempt < 3 && err.contains("already allocated"),
            "docker-compose up: {err}"
        );
        drop(compose);
    };
    let nodes: Vec<u16> = ["NODE1_HTTP", "NODE2_HTTP", "NODE3_HTTP"]
        .iter()
        .map(|v| compose.port(v))
        .collect();
    wait_for(
        Duration::from_secs(120),
        "the cluster to form itself",
        || {
            let (_, body) = http(nodes[0], "/cluster/status")?;
            let st: Value = serde_json::from_str(&body).ok()?;
            let members = st["members"].as_array()?;
            (members.len() == 3 && members.iter().all(|m| m["health"] == "up")).then_some(())
        },
    );
    for s in ["relay1", "relay2", "acme"] {
        compose.wait_healthy(s);
    }
    let (r1, r2) = (compose.port("RELAY1_LINE"), compose.port("RELAY2_LINE"));
    let t0 = (unix_now() - 1800) / 10 * 10;

    // 100,000 points through both relays: the same answers on every node.
    send(r1, &lines("a", 500, t0));
    send(r2, &lines("b", 500, t0));
    for &n in &nodes {
        wait_for(
            Duration::from_secs(120),
            "100,000 points on every node",
            || (count(n, "e2e.*.*", t0, false)? == 100_000).then_some(()),
        );
    }
    let q = format!(
        "/render?target=sumSeries(e2e.*.*)&target=maxSeries(e2e.b.*)&from={}&until={}&format=json",
        t0 - 1,
        t0 + 1000
    );
    let want = http(nodes[0], &q).unwrap().1;
    for &n in &nodes[1..] {
        assert_eq!(http(n, &q).unwrap().1, want, "node on port {n}");
    }
    let local_total = |nodes: &[u16], pattern: &str| -> Option<u64> {
        let mut total = 0;
        for &n in nodes {
            total += count(n, pattern, t0, true)?;
        }
        Some(total)
    };
    assert_eq!(
        local_total(&nodes, "e2e.*.*"),
        Some(200_000),
        "two copies of every point"
    );

    // node2 stopped: answers stay complete; points sent meanwhile reach it
    // when it is back (the relays queued them).
    compose.ok(&["stop", "node2"]);
    send(r1, &lines("c", 100, t0));
    for &n in [nodes[0], nodes[2]].iter() {
        wait_for(
            Duration::from_secs(60),
            "complete answers without node2",
            || (count(n, "e2e.*.*", t0, false)? == 110_000).then_some(()),
        );
    }
    compose.ok(&["start", "node2"]);
    compose.wait_healthy("node2");
    wait_for(Duration::from_secs(120), "node2 to catch up", || {
        (local_total(&nodes, "e2e.*.*")? == 220_000).then_some(())
    });

    // relay1 cut off from node3 (their network), then reconnected.
    let net = format!("{}_ingest-a", compose.project);
    let node3 = compose.container("node3");
    let cut = Command::new("docker")
        .args(["network", "disconnect", &net, &node3])
        .output()
        .unwrap();
    assert!(
        cut.status.success(),
        "{}",
        String::from_utf8_lossy(&cut.stderr)
    );
    send(r1, &lines("d", 100, t0));
    std::thread::sleep(Duration::from_secs(5));
    let back = Command::new("docker")
        .args(["network", "connect", &net, &node3])
        .output()
        .unwrap();
    assert!(
        back.status.success(),
        "{}",
        String::from_utf8_lossy(&back.stderr)
    );
    wait_for(
        Duration::from_secs(120),
        "relay1's queue for node3 to drain",
        || (local_total(&nodes, "e2e.*.*")? == 240_000).then_some(()),
    );

    // A rolling restart of every node under steady load through relay2.
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut s = TcpStream::connect(("127.0.0.1", r2)).unwrap();
            let mut sent = 0usize;
            while !stop.load(Ordering::Relaxed) && sent < 50_000 {
                let batch: String = (sent..sent + 100)
                    .map(|i| format!("e2e.e.m{} {i} {}\n", i / 100, t0 + 10 * (i % 100) as i64))
                    .collect();
                s.write_all(batch.as_bytes()).unwrap();
                sent += 100;
                std::thread::sleep(Duration::from_millis(20));
            }
            sent
        })
    };
    for node in ["node1", "node2", "node3"] {
        compose.ok(&["restart", "-t", "20", node]);
        compose.wait_healthy(node);
        wait_for(
            Duration::from_secs(60),
            "a leader after the restart",
            || {
                let (_, body) = http(nodes[0], "/cluster/status")?;
                let st: Value = serde_json::from_str(&body).ok()?;
                st["leader"].as_u64()
            },
        );
    }
    stop.store(true, Ordering::Relaxed);
    let sent = load.join().unwrap() as u64;
    wait_for(
        Duration::from_secs(120),
        "every point of the rolling restart",
        || (local_total(&nodes, "e2e.e.*")? == 2 * sent).then_some(()),
    );
    assert_eq!(
        local_total(&nodes, "e2e.[a-d].*"),
        Some(240_000),
        "nothing lost before"
    );

    // The tenant relay keeps its fence.
    let acme = compose.port("ACME_LINE");
    let now = unix_now();
    send(
        acme,
        &format!("cust.acme.web.load 1 {now}\ncust.other.web.load 2 {now}\nevil.x 3 {now}\n"),
    );
    wait_for(Duration::from_secs(60), "acme's point", || {
        let (_, body) = http(
            nodes[0],
            "/metrics/find?query=cust.acme.web.*&format=completer",
        )?;
        body.contains("cust.acme.web.load").then_some(())
    });
    for name in ["cust.other.*", "evil.*"] {
        let (_, body) = http(
            nodes[1],
            &format!("/metrics/find?query={name}&format=completer"),
        )
        .unwrap();
        assert!(
            !body.contains("load") && !body.contains("evil.x"),
            "{name} crossed the fence: {body}"
        );
    }

    // The agent container collects the Docker host through relay1: diamond's
    // names under servers.host1, on every node.
    for &n in &nodes {
        for metric in [
            "servers.host1.cpu.total.idle",
            "servers.host1.memory.MemTotal",
            "servers.host1.loadavg.01",
            "servers.host1.diskspace.root.byte_free",
        ] {
            wait_for(Duration::from_secs(90), metric, || {
                let (_, body) = http(n, &format!("/metrics/find?query={metric}&format=completer"))?;
                body.contains(metric).then_some(())
            });
        }
    }
    let (_, body) = http(
        nodes[0],
        "/render?target=servers.host1.memory.MemTotal&from=-5min&format=json",
    )
    .unwrap();
    let host_mem = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kb: f64 = host_mem
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        body.contains(&format!("[{}", kb * 1024.0)),
        "the host's MemTotal ({} bytes) in {body}",
        kb * 1024.0
    );
    // The bound keeps CI in its budget; a fresh clone builds the release
    // image first, beside every other test (517 s seen on 2 cores).
    assert!(
        started.elapsed() < Duration::from_secs(900),
        "took {:?}",
        started.elapsed()
    );
}

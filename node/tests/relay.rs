//! `graunt relay` with real processes: three nodes behind a relay with
//! replicas, a fenced tenant, and `graunt relay lookup` agreeing with
//! carbon's own router.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use graunt_harness::node::{wait_for, Node};
use graunt_harness::{oracle_python, temp_dir, unix_now, workspace_root};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_graunt");

use graunt_harness::relay::Relay;

extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}

fn value_at(node: &Node, metric: &str, ts: i64) -> Option<f64> {
    let body = node.http_get(&format!(
        "/render?target={metric}&from={}&until={}&format=json",
        ts - 60,
        ts + 60
    ));
    let v: Value = serde_json::from_str(&body).ok()?;
    v.get(0)?["datapoints"]
        .as_array()?
        .iter()
        .find_map(|p| p[0].as_f64())
}

fn lookup(config: &std::path::Path, names: &[&str]) -> Vec<Vec<String>> {
    let out = Command::new(BIN)
        .args(["relay", "--config", config.to_str().unwrap(), "lookup"])
        .args(names)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.split(' ').skip(1).map(str::to_string).collect())
        .collect()
}

#[test]
fn replicas_reach_their_nodes_and_the_fence_holds() {
    let dir = temp_dir();
    let nodes: Vec<Node> = (0..3)
        .map(|i| Node::start(&dir.path().join(format!("node{i}")), &[]))
        .collect();
    let destinations: Vec<String> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| format!("{}:{}", n.addr("pickle"), ["a", "b", "c"][i]))
        .collect();
    let config = dir.path().join("relay.toml");
    std::fs::write(
        &config,
        format!(
            "http_addr = \"127.0.0.1:0\"\nreplication = 2\ndiverse_replicas = false\nself_metrics_interval = 1\n\
             destinations = [{}]\n\
             statsd_flush_interval = 1\n\
             [[tenant]]\nname = \"acme\"\nnamespaces = [\"cust.acme.\"]\nprefix = \"cust.acme\"\nmax_age = 3600\nmax_future = 60\n\
             listener = [{{ protocol = \"line\", addr = \"127.0.0.1:0\" }}, {{ protocol = \"pickle\", addr = \"127.0.0.1:0\" }}, \
             {{ protocol = \"statsd\", addr = \"127.0.0.1:0\" }}]\n",
            destinations.iter().map(|d| format!("\"{d}\"")).collect::<Vec<_>>().join(", ")
        ),
    )
    .unwrap();
    let relay = Relay::start(&config);
    let now = unix_now();
    let t = now - now % 60 - 60;
    let good: Vec<String> = (0..40).map(|i| format!("cust.acme.app.m{i}")).collect();
    let mut lines: String = good
        .iter()
        .enumerate()
        .map(|(i, n)| format!("{n} {i} {t}\n"))
        .collect();
    lines.push_str(&format!("cust.other.app.x 1 {t}\n"));
    lines.push_str(&format!("cust.acme.old 1 {}\n", now - 7200));
    lines.push_str(&format!("cust.acme.future 1 {}\n", now + 3600));
    lines.push_str("not a line\n");
    let mut s = TcpStream::connect(relay.addr("acme-line")).unwrap();
    s.write_all(lines.as_bytes()).unwrap();
    drop(s);
    // Pickle is not allowed for this tenant.
    let frame = {
        let body = b"\x80\x02]q\x00(X\x0e\x00\x00\x00cust.acme.pklq\x01J\x00\x00\x00\x00G?\xf0\x00\x00\x00\x00\x00\x00\x86\x86a.";
        let mut f = (body.len() as u32).to_be_bytes().to_vec();
        f.extend_from_slice(body);
        f
    };
    let mut p = TcpStream::connect(relay.addr("acme-pickle")).unwrap();
    p.write_all(&frame).unwrap();
    drop(p);

    let names: Vec<&str> = good.iter().map(String::as_str).collect();
    let placement = lookup(&config, &names);
    for (i, (name, dests)) in good.iter().zip(&placement).enumerate() {
        assert_eq!(dests.len(), 2, "{name}: {dests:?}");
        for (k, node) in nodes.iter().enumerate() {
            let holds = dests.contains(&destinations[k]);
            if holds {
                wait_for(Duration::from_secs(20), "a replica to arrive", || {
                    value_at(node, name, t).filter(|v| *v == i as f64)
                });
            } else {
                assert_eq!(
                    value_at(node, name, t),
                    None,
                    "{name} must not be on node {k}"
                );
            }
        }
    }
    for bad in [
        "cust.other.app.x",
        "cust.acme.old",
        "cust.acme.future",
        "cust.acme.pkl",
    ] {
        for node in &nodes {
            let found: Value = serde_json::from_str(
                &node.http_get(&format!("/metrics/find?query={bad}&format=completer")),
            )
            .unwrap();
            assert_eq!(found["metrics"], serde_json::json!([]), "{bad} leaked");
        }
    }
    let metrics = relay.http_get("/metrics");
    for reason in ["namespace", "stale", "future", "pickle", "malformed"] {
        let line = format!("graunt_relay_refused_total{{reason=\"{reason}\",tenant=\"acme\"}} 1");
        assert!(metrics.contains(&line), "missing {line} in\n{metrics}");
    }
    // statsd through the tenant's listener lands under its prefix.
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.send_to(b"logins:3|c", relay.addr("acme-statsd"))
        .unwrap();
    wait_for(Duration::from_secs(20), "statsd through the relay", || {
        nodes
            .iter()
            .any(|n| {
                n.http_get("/metrics/find?query=cust.acme.stats.counters.logins.*&format=completer")
                    .contains("count")
            })
            .then_some(())
    });
    // The relay's own metrics travel like any other.
    wait_for(
        Duration::from_secs(20),
        "carbon.relays.* on some node",
        || {
            nodes
                .iter()
                .any(|n| {
                    n.http_get("/metrics/find?query=carbon.relays.*&format=completer")
                        .contains("carbon.relays.")
                })
                .then_some(())
        },
    );
    relay.stop();
    for n in nodes {
        n.stop(Duration::from_secs(20));
    }
}

/// Plain names as carbon's router places them; tagged names (each in two
/// spellings) as carbon's relay with `TAG_RELAY_NORMALIZED` does.
#[test]
fn lookup_agrees_with_carbon() {
    let mut names: Vec<String> = (0..300)
        .map(|i| format!("servers.host{i}.cpu.user"))
        .collect();
    for i in 0..100 {
        names.push(format!("cpu.load;host=h{i};dc=dc{}", i % 3));
        names.push(format!("cpu.load;dc=dc{};host=h{i}", i % 3));
        names.push(format!("disk.used{{host=\"h{i}\",rack=\"r1\"}}"));
    }
    let dests = [
        "10.0.0.1:2004:a",
        "10.0.0.2:2004:b",
        "10.0.0.3:2004:c",
        "10.0.0.3:2104:d",
    ];
    let mut child = Command::new(oracle_python())
        .arg(workspace_root().join("tests/oracle/carbon_placement.py"))
        .args(["--tag-relay-normalized", "carbon_ch", "2", "1"])
        .args(dests)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(names.join("\n").as_bytes())
        .unwrap();
    let want: Vec<Vec<String>> =
        serde_json::from_slice(&child.wait_with_output().unwrap().stdout).unwrap();
    let mut cmd = Command::new(BIN)
        .args([
            "relay",
            "lookup",
            "--replication",
            "2",
            "--destinations",
            &dests.join(","),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    cmd.stdin
        .take()
        .unwrap()
        .write_all(names.join("\n").as_bytes())
        .unwrap();
    let out = String::from_utf8(cmd.wait_with_output().unwrap().stdout).unwrap();
    let got: Vec<Vec<String>> = out
        .lines()
        .map(|l| l.split(' ').skip(1).map(str::to_string).collect())
        .collect();
    assert_eq!(got, want);
}

#[test]
fn queues_survive_a_down_node_and_a_relay_restart_exactly_once() {
    let dir = temp_dir();
    let data = dir.path().join("node");
    let node = Node::start(&data, &[]);
    let pickle = node.addr("pickle");
    let config = dir.path().join("relay.toml");
    std::fs::write(
        &config,
        format!(
            "destinations = [\"{pickle}:a\"]\nmax_queue = 100\nqueue_dir = \"{}\"\nself_metrics_interval = 3600\nhttp_addr = \"127.0.0.1:0\"\n\
             [[tenant]]\nname = \"t\"\nlistener = [{{ protocol = \"line\", addr = \"127.0.0.1:0\" }}]\n",
            dir.path().join("queues").display()
        ),
    )
    .unwrap();
    node.stop(Duration::from_secs(20));
    let relay = Relay::start(&config);
    let t = unix_now() - 120;
    let send = |relay: &Relay, from: usize, to: usize| {
        let lines: String = (from..to)
            .map(|i| format!("spill.m{i} {i} {t}\n"))
            .collect();
        let mut s = TcpStream::connect(relay.addr("t-line")).unwrap();
        s.write_all(lines.as_bytes()).unwrap();
    };
    send(&relay, 0, 700);
    wait_for(
        Duration::from_secs(10),
        "the relay to read 700 points",
        || (received(&relay, "line", "t") == 700.0).then_some(()),
    );
    // The relay restarts while the node is still away: nothing may be lost.
    relay.stop();
    let relay = Relay::start(&config);
    send(&relay, 700, 1000);
    wait_for(
        Duration::from_secs(10),
        "the relay to read 300 points",
        || (received(&relay, "line", "t") == 300.0).then_some(()),
    );
    let node = Node::start(&data, &["--pickle-addr", &pickle.to_string()]);
    wait_for(
        Duration::from_secs(30),
        "every queued point at the node",
        || (node.metric("graunt_points_received_total") >= 1000.0).then_some(()),
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        node.metric("graunt_points_received_total"),
        1000.0,
        "exactly once"
    );
    for i in [0usize, 99, 100, 699, 700, 999] {
        assert_eq!(
            value_at(&node, &format!("spill.m{i}"), t),
            Some(i as f64),
            "spill.m{i}"
        );
    }
    relay.stop();
    node.stop(Duration::from_secs(20));
}

struct Reaper(Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A Python carbon daemon (`carbon-relay.py` or `carbon-cache.py`) with
/// `section` settings, under `dir`.
fn carbon_daemon(dir: &std::path::Path, script: &str, section: &str, settings: &str) -> Reaper {
    let conf = dir.join("conf");
    let storage = dir.join("storage");
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::create_dir_all(storage.join("log")).unwrap();
    std::fs::write(
        conf.join("storage-schemas.conf"),
        "[all]\npattern = .*\nretentions = 10s:1d\n",
    )
    .unwrap();
    std::fs::write(
        conf.join("carbon.conf"),
        format!(
            "[cache]\nSTORAGE_DIR = {s}\nLOCAL_DATA_DIR = {s}/whisper\nLOG_DIR = {s}/log\nPID_DIR = {s}\n\n{header}{settings}",
            s = storage.display(),
            header = if section == "cache" { String::new() } else { format!("[{section}]\n") },
        ),
    )
    .unwrap();
    Reaper(
        Command::new(oracle_python())
            .arg(graunt_harness::oracle_bin_dir().join(script))
            .arg(format!("--config={}", conf.join("carbon.conf").display()))
            .args(["--nodaemon", "start"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// Python carbon-relay → graunt relay (a tenant that takes pickle) → node.
#[test]
fn carbon_relay_feeds_graunt_relay() {
    let dir = temp_dir();
    let data = dir.path().join("node");
    let node = Node::start(&data, &[]);
    let config = dir.path().join("relay.toml");
    std::fs::write(
        &config,
        format!(
            "destinations = [\"{}:a\"]\nself_metrics_interval = 3600\n\
             [[tenant]]\nname = \"upstream\"\nallow_pickle = true\n\
             listener = [{{ protocol = \"pickle\", addr = \"127.0.0.1:0\" }}]\n",
            node.addr("pickle")
        ),
    )
    .unwrap();
    let relay = Relay::start(&config);
    let line = free_port();
    let _carbon = carbon_daemon(
        &dir.path().join("carbon-relay"),
        "carbon-relay.py",
        "relay",
        &format!(
            "LINE_RECEIVER_INTERFACE = 127.0.0.1\nLINE_RECEIVER_PORT = {line}\n\
             PICKLE_RECEIVER_INTERFACE = 127.0.0.1\nPICKLE_RECEIVER_PORT = {}\n\
             ENABLE_UDP_LISTENER = False\nRELAY_METHOD = consistent-hashing\nREPLICATION_FACTOR = 1\n\
             DESTINATIONS = {}:a\nCARBON_METRIC_INTERVAL = 0\n",
            free_port(),
            relay.addr("upstream-pickle")
        ),
    );
    let mut stream = wait_for(Duration::from_secs(30), "carbon-relay to listen", || {
        TcpStream::connect(("127.0.0.1", line)).ok()
    });
    let t = unix_now() - 60;
    let lines: String = (0..300)
        .map(|i| format!("upstream.h{i}.load {i}.25 {t}\n"))
        .collect();
    stream.write_all(lines.as_bytes()).unwrap();
    drop(stream);
    wait_for(
        Duration::from_secs(30),
        "300 points through both relays",
        || (node.metric("graunt_points_received_total") >= 300.0).then_some(()),
    );
    for i in [0, 150, 299] {
        assert_eq!(
            value_at(&node, &format!("upstream.h{i}.load"), t),
            Some(i as f64 + 0.25)
        );
    }
    relay.stop();
    node.stop(Duration::from_secs(20));
}

/// graunt relay → Python carbon-cache: its pickle receiver stores what the
/// relay sends.
#[test]
fn graunt_relay_feeds_carbon_cache() {
    let dir = temp_dir();
    let (line, pickle, query) = (free_port(), free_port(), free_port());
    let carbon_dir = dir.path().join("carbon-cache");
    let _cache = carbon_daemon(
        &carbon_dir,
        "carbon-cache.py",
        "cache",
        &format!(
            "LINE_RECEIVER_INTERFACE = 127.0.0.1\nLINE_RECEIVER_PORT = {line}\n\
             PICKLE_RECEIVER_INTERFACE = 127.0.0.1\nPICKLE_RECEIVER_PORT = {pickle}\n\
             CACHE_QUERY_INTERFACE = 127.0.0.1\nCACHE_QUERY_PORT = {query}\nENABLE_UDP_LISTENER = False\n\
             MAX_CACHE_SIZE = inf\nMAX_UPDATES_PER_SECOND = inf\nMAX_CREATES_PER_MINUTE = inf\nCARBON_METRIC_INTERVAL = 0\n"
        ),
    );
    wait_for(Duration::from_secs(30), "carbon-cache to listen", || {
        TcpStream::connect(("127.0.0.1", pickle)).ok()
    });
    let config = dir.path().join("relay.toml");
    std::fs::write(
        &config,
        format!(
            "destinations = [\"127.0.0.1:{pickle}\"]\nself_metrics_interval = 3600\n\
             queue_dir = \"{}\"\n\
             [[tenant]]\nname = \"t\"\nlistener = [{{ protocol = \"line\", addr = \"127.0.0.1:0\" }}]\n",
            // A journal in front of a destination that never acknowledges.
            dir.path().join("queues").display()
        ),
    )
    .unwrap();
    let relay = Relay::start(&config);
    let t = unix_now() - unix_now() % 10 - 60;
    let lines: String = (0..50)
        .map(|i| format!("tocarbon.m{i} {i}.5 {t}\n"))
        .collect();
    let mut s = TcpStream::connect(relay.addr("t-line")).unwrap();
    s.write_all(lines.as_bytes()).unwrap();
    drop(s);
    let whisper = carbon_dir.join("storage/whisper");
    for i in [0, 25, 49] {
        let name = format!("tocarbon.m{i}");
        wait_for(
            Duration::from_secs(30),
            "carbon-cache to write the file",
            || {
                graunt_harness::stored_value(&carbon_dir.join("storage"), &name, t)
                    .or_else(|| {
                        let path = whisper.join(format!("tocarbon/m{i}.wsp"));
                        graunt_storage::whisper::WhisperFile::open(&path)
                            .ok()
                            .and_then(|f| {
                                f.fetch(t - 10, Some(t + 10), t + 60, None).ok().flatten()
                            })
                            .and_then(|s| s.values.into_iter().flatten().next())
                    })
                    .filter(|v| *v == i as f64 + 0.5)
            },
        );
    }
    relay.stop();
}

/// Steady plaintext load into a relay for `seconds`: 20 points every 20 ms,
/// spread over 200 metrics `prefix.mN`, point i at `t0 + 10 * (i / 200)`
/// with value i. Returns how many were sent.
fn steady_load(
    to: SocketAddr,
    prefix: &'static str,
    t0: i64,
    seconds: u64,
) -> std::thread::JoinHandle<usize> {
    load_at(to, prefix, t0, seconds, 20)
}

/// [`steady_load`] with `per_tick` points every 20 ms.
fn load_at(
    to: SocketAddr,
    prefix: &'static str,
    t0: i64,
    seconds: u64,
    per_tick: usize,
) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let mut s = TcpStream::connect(to).unwrap();
        let started = std::time::Instant::now();
        let mut sent = 0usize;
        while started.elapsed() < Duration::from_secs(seconds) {
            let batch: String = (sent..sent + per_tick)
                .map(|i| format!("{prefix}.m{} {i} {}\n", i % 200, t0 + 10 * (i / 200) as i64))
                .collect();
            s.write_all(batch.as_bytes()).unwrap();
            sent += per_tick;
            std::thread::sleep(Duration::from_millis(20));
        }
        sent
    })
}

/// A front relay (plaintext in) and a middle relay (pickle in on a fixed
/// free port so it can restart on it, `/metrics` on any port), each with a
/// journal, chained to a node's pickle port: the two config files.
fn chain(
    dir: &std::path::Path,
    node_pickle: SocketAddr,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let middle_addr = format!("127.0.0.1:{}", free_port());
    let middle = dir.join("middle.toml");
    std::fs::write(
        &middle,
        format!(
            "destinations = [\"{node_pickle}:a\"]\nqueue_dir = \"{}\"\nself_metrics_interval = 3600\n\
             http_addr = \"127.0.0.1:0\"\n\
             [[tenant]]\nname = \"mid\"\nallow_pickle = true\n\
             listener = [{{ protocol = \"pickle\", addr = \"{middle_addr}\" }}]\n",
            dir.join("middle-queues").display()
        ),
    )
    .unwrap();
    let front = dir.join("front.toml");
    std::fs::write(
        &front,
        format!(
            "destinations = [\"{middle_addr}:a\"]\nqueue_dir = \"{}\"\nself_metrics_interval = 3600\n\
             [[tenant]]\nname = \"t\"\nlistener = [{{ protocol = \"line\", addr = \"127.0.0.1:0\" }}]\n",
            dir.join("front-queues").display()
        ),
    )
    .unwrap();
    (middle, front)
}

/// What a relay has taken from a tenant's listeners of `protocol`.
fn received(relay: &Relay, protocol: &str, tenant: &str) -> f64 {
    let key =
        format!("graunt_relay_received_total{{protocol=\"{protocol}\",tenant=\"{tenant}\"}} ");
    relay
        .http_get("/metrics")
        .lines()
        .find_map(|l| l.strip_prefix(key.as_str()))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// [`stored_load`] polled until it reaches `sent` or `within` passes; the
/// last count, so a failure says how many were missing.
fn stored_within(node: &Node, prefix: &str, t0: i64, sent: usize, within: Duration) -> usize {
    let deadline = std::time::Instant::now() + within;
    loop {
        let stored = stored_load(node, prefix, t0, sent);
        if stored >= sent || std::time::Instant::now() >= deadline {
            return stored;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every point of [`steady_load`] with its value, read back from `node`.
fn stored_load(node: &Node, prefix: &str, t0: i64, sent: usize) -> usize {
    let body = node.http_get(&format!(
        "/render?target={prefix}.*&from={}&until={}&format=json",
        t0 - 1,
        t0 + 10 * (sent / 200 + 1) as i64
    ));
    let Ok(Value::Array(series)) = serde_json::from_str::<Value>(&body) else {
        return 0;
    };
    let mut found = 0;
    for s in &series {
        let m: usize = s["target"].as_str().unwrap()[prefix.len() + 2..]
            .parse()
            .unwrap();
        for p in s["datapoints"].as_array().unwrap() {
            if let (Some(v), Some(ts)) = (p[0].as_f64(), p[1].as_i64()) {
                let i = ((ts - t0) / 10) as usize * 200 + m;
                assert_eq!(v, i as f64, "{prefix}.m{m} at {ts}");
                found += 1;
            }
        }
    }
    found
}

/// Steady load while the destination is frozen, killed (-9) and kept away
/// for 30 s: every point the relay took is stored with its value (the node
/// acknowledges what is in its log; the relay resends the rest).
#[test]
fn a_destination_killed_for_30s_loses_nothing_under_load() {
    let dir = temp_dir();
    let data = dir.path().join("node");
    let node = Node::serve(BIN.as_ref(), &data, &[]);
    let pickle = node.addr("pickle");
    let config = dir.path().join("relay.toml");
    std::fs::write(
        &config,
        format!(
            "destinations = [\"{pickle}:a\"]\nqueue_dir = \"{}\"\nself_metrics_interval = 3600\n\
             [[tenant]]\nname = \"t\"\nlistener = [{{ protocol = \"line\", addr = \"127.0.0.1:0\" }}]\n",
            dir.path().join("queues").display()
        ),
    )
    .unwrap();
    let relay = Relay::start(&config);
    let t0 = (unix_now() - 7200) / 10 * 10;
    let load = steady_load(relay.addr("t-line"), "fault", t0, 36);
    std::thread::sleep(Duration::from_millis(1500));
    // Frozen first: its kernel keeps taking the relay's frames that the
    // process will never read; then killed, those are gone from the node.
    unsafe { kill(node.pid() as i32, 19) };
    std::thread::sleep(Duration::from_millis(1000));
    node.kill9();
    std::thread::sleep(Duration::from_secs(30));
    let node = restart_on(&data, pickle);
    let sent = load.join().unwrap();
    wait_for(Duration::from_secs(120), "every point at the node", || {
        (stored_load(&node, "fault", t0, sent) == sent).then_some(())
    });
    relay.stop();
    node.stop(Duration::from_secs(20));
}

/// A relay between a relay and a node restarted under steady load: the node
/// receives every point exactly once (the stopping relay asks its senders
/// to stop, reads what they sent and acknowledges it; what it had queued
/// waits on disk).
#[test]
fn a_relay_restarted_mid_load_delivers_every_point_once() {
    let dir = temp_dir();
    let node = Node::start(&dir.path().join("node"), &[]);
    let (middle, front) = chain(dir.path(), node.addr("pickle"));
    let mut relay = Some(Relay::start(&middle));
    let front = Relay::start(&front);
    let t0 = (unix_now() - 7200) / 10 * 10;
    let load = steady_load(front.addr("t-line"), "restart", t0, 8);
    for _ in 0..2 {
        std::thread::sleep(Duration::from_millis(2500));
        relay.take().unwrap().stop();
        relay = Some(Relay::start(&middle));
    }
    let sent = load.join().unwrap();
    wait_for(Duration::from_secs(60), "every point at the node", || {
        (node.metric("graunt_points_received_total") >= sent as f64).then_some(())
    });
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        node.metric("graunt_points_received_total"),
        sent as f64,
        "exactly once"
    );
    assert_eq!(stored_load(&node, "restart", t0, sent), sent);
    front.stop();
    relay.take().unwrap().stop();
    node.stop(Duration::from_secs(20));
}

/// Starts a node again on its old pickle address; another test may hold the
/// freed port for a moment, so a failed start is retried.
fn restart_on(data: &std::path::Path, pickle: SocketAddr) -> Node {
    for attempt in 0..5 {
        let started = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            Node::serve(BIN.as_ref(), data, &["--pickle-addr", &pickle.to_string()])
        }));
        match started {
            Ok(node) => return node,
            Err(e) if attempt == 4 => std::panic::resume_unwind(e),
            Err(_) => std::thread::sleep(Duration::from_secs(1)),
        }
    }
    unreachable!("returns or panics in the loop")
}

/// The chain front relay -> middle relay -> node under steady load; the
/// node frozen so the middle relay holds what it acknowledged, then the
/// middle relay killed with `-9` and started again, then the node resumes:
/// every point is stored with its value (duplicates are allowed, loss is
/// not). A relay acknowledges only what is in its journal.
#[test]
fn a_middle_relay_killed_holding_acknowledged_frames_loses_nothing() {
    let dir = temp_dir();
    let node = Node::serve(BIN.as_ref(), &dir.path().join("node"), &[]);
    let (middle, front) = chain(dir.path(), node.addr("pickle"));
    let relay = Relay::spawn(BIN.as_ref(), &middle);
    let front = Relay::start(&front);
    let t0 = (unix_now() - 7200) / 10 * 10;
    // 5,000 points/s: more than the kernel's socket buffers hold in the 3 s
    // the node is frozen, so the middle relay queues some in its memory.
    let load = load_at(front.addr("t-line"), "chain", t0, 10, 100);
    wait_for(Duration::from_secs(10), "points through the chain", || {
        (node.metric("graunt_points_received_total") >= 1000.0).then_some(())
    });
    // SAFETY: kill(2) on our own child's pid: SIGSTOP, then SIGCONT.
    unsafe { kill(node.pid() as i32, 19) };
    // The middle relay goes on taking (and acknowledging) points it cannot
    // deliver: more than the kernel's socket buffers hold.
    let before = received(&relay, "pickle", "mid");
    wait_for(
        Duration::from_secs(8),
        "the middle relay to hold 10,000 points",
        || (received(&relay, "pickle", "mid") - before >= 10_000.0).then_some(()),
    );
    relay.kill9();
    let relay = Relay::spawn(BIN.as_ref(), &middle);
    unsafe { kill(node.pid() as i32, 18) };
    let sent = load.join().unwrap();
    assert_eq!(
        stored_within(&node, "chain", t0, sent, Duration::from_secs(60)),
        sent,
        "points stored of those sent"
    );
    front.stop();
    relay.stop();
    node.stop(Duration::from_secs(20));
}

/// A relay whose destination has been down for 30 s holds what it took in
/// its journal; killed with `-9` then, and started again, it delivers every
/// point once the destination is back.
#[test]
fn a_relay_killed_while_its_destination_is_down_delivers_everything_later() {
    let dir = temp_dir();
    let data = dir.path().join("node");
    let node = Node::start(&data, &[]);
    let pickle = node.addr("pickle");
    node.stop(Duration::from_secs(20));
    let down = std::time::Instant::now();
    let config = dir.path().join("relay.toml");
    std::fs::write(
        &config,
        format!(
            "destinations = [\"{pickle}:a\"]\nqueue_dir = \"{}\"\nself_metrics_interval = 3600\n\
             http_addr = \"127.0.0.1:0\"\n\
             [[tenant]]\nname = \"t\"\nlistener = [{{ protocol = \"line\", addr = \"127.0.0.1:0\" }}]\n",
            dir.path().join("queues").display()
        ),
    )
    .unwrap();
    let relay = Relay::spawn(BIN.as_ref(), &config);
    let t0 = (unix_now() - 7200) / 10 * 10;
    let sent = load_at(relay.addr("t-line"), "down", t0, 5, 100)
        .join()
        .unwrap();
    wait_for(
        Duration::from_secs(20),
        "the relay to take every point",
        || (received(&relay, "line", "t") == sent as f64).then_some(()),
    );
    let journaled = relay.http_get("/metrics");
    assert!(
        journaled.contains("graunt_relay_journal_bytes{destination="),
        "{journaled}"
    );
    // The destination has been away 30 s when the relay dies.
    std::thread::sleep(Duration::from_secs(30).saturating_sub(down.elapsed()));
    relay.kill9();
    let relay = Relay::spawn(BIN.as_ref(), &config);
    let node = restart_on(&data, pickle);
    assert_eq!(
        stored_within(&node, "down", t0, sent, Duration::from_secs(60)),
        sent,
        "points stored of those sent"
    );
    relay.stop();
    node.stop(Duration::from_secs(20));
}

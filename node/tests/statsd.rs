//! statsd end to end: the PyPI `statsd` client against `graunt serve`, and
//! against `graunt agent` forwarding (plaintext and pickle) to a node,
//! including while the node is down. Nodes and agents in-process, the
//! client a real Python process, real sockets.

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::Duration;

use graunt_harness::agent::Agent;
use graunt_harness::node::{wait_for, Node};
use graunt_harness::{oracle_python, temp_dir};
use serde_json::Value;

/// Runs Python with the `statsd` client; `script` sees `c` (UDP client to
/// `addr`) and `addr`.
fn statsd_client(addr: SocketAddr, script: &str) {
    let program = format!(
        "import statsd, socket\naddr = ('{}', {})\nc = statsd.StatsClient(addr[0], addr[1])\n{script}\n",
        addr.ip(),
        addr.port()
    );
    let out = Command::new(oracle_python())
        .args(["-c", &program])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every (value, timestamp) of a metric over the last 10 minutes.
fn points(node: &Node, metric: &str) -> Vec<(Option<f64>, i64)> {
    let body = node.http_get(&format!(
        "/render?target={metric}&from=-10min&until=now%2B1min&format=json"
    ));
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    v.get(0)
        .and_then(|s| s["datapoints"].as_array())
        .map(|d| {
            d.iter()
                .map(|p| (p[0].as_f64(), p[1].as_i64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default()
}

/// Flushes every second need one-second slots, as in any statsd + Graphite
/// setup (the flush interval must match the finest retention).
fn second_schema(dir: &std::path::Path) -> String {
    let path = dir.join("storage-schemas.conf");
    std::fs::write(&path, "[all]\npattern = .*\nretentions = 1s:1h\n").unwrap();
    path.to_str().unwrap().to_string()
}

fn total(node: &Node, metric: &str) -> f64 {
    points(node, metric).iter().filter_map(|p| p.0).sum()
}

fn max(node: &Node, metric: &str) -> Option<f64> {
    points(node, metric)
        .iter()
        .filter_map(|p| p.0)
        .reduce(f64::max)
}

fn last(node: &Node, metric: &str) -> Option<f64> {
    points(node, metric).iter().rev().find_map(|p| p.0)
}

#[test]
fn the_statsd_client_against_serve() {
    let dir = temp_dir();
    let schemas = second_schema(dir.path());
    let node = Node::start(
        &dir.path().join("data"),
        &["--statsd-flush-interval", "1", "--schemas", &schemas],
    );
    let addr = node.addr("statsd");
    statsd_client(
        addr,
        r#"
c.incr('app.hits')
c.incr('app.hits', 4)
c.decr('app.misses', 2)
c.timing('app.db', 12)
c.timing('app.db', 30)
c.timing('app.db', 15)
c.gauge('app.load', 5)
c.gauge('app.load', 2, delta=True)
c.set('app.users', 'ann')
c.set('app.users', 'bob')
c.set('app.users', 'ann')
with c.pipeline() as p:
    p.incr('app.piped', 3)
    p.timing('app.piped_t', 7)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.sendto(b'app.sampled:1|c|@0.25\nfoo\nfoo:bar|c\n:1|c\napp.good:2|c\n' + b'\xff\xfe:1|c', addr)
s.sendto(b'big:' + b'1' * 65000 + b'|c', addr)
"#,
    );
    wait_for(Duration::from_secs(20), "the counters to land", || {
        (total(&node, "stats.counters.app.hits.count") == 5.0).then_some(())
    });
    assert_eq!(total(&node, "stats.counters.app.misses.count"), -2.0);
    assert_eq!(total(&node, "stats.counters.app.piped.count"), 3.0);
    assert_eq!(total(&node, "stats.counters.app.sampled.count"), 4.0);
    assert_eq!(total(&node, "stats.counters.app.good.count"), 2.0);
    assert_eq!(max(&node, "stats.timers.app.db.upper"), Some(30.0));
    assert_eq!(max(&node, "stats.timers.app.db.median"), Some(15.0));
    assert_eq!(total(&node, "stats.timers.app.db.count"), 3.0);
    assert_eq!(max(&node, "stats.timers.app.piped_t.upper_90"), Some(7.0));
    assert_eq!(last(&node, "stats.gauges.app.load"), Some(7.0));
    assert_eq!(max(&node, "stats.sets.app.users.count"), Some(2.0));
    // foo, foo:bar|c, :1|c, the invalid UTF-8 line and the 64 KiB line.
    wait_for(Duration::from_secs(10), "bad lines to be counted", || {
        (total(&node, "stats.counters.statsd.bad_lines_seen.count") >= 5.0).then_some(())
    });
    assert_eq!(
        total(&node, "stats.counters.statsd.bad_lines_seen.count"),
        5.0
    );
    assert!(total(&node, "stats.counters.statsd.packets_received.count") >= 3.0);
    assert!(max(&node, "stats.statsd.numStats").unwrap_or(0.0) >= 9.0);
    node.stop(Duration::from_secs(20));
}

#[test]
fn the_agent_forwards_and_buffers_while_the_node_is_down() {
    let dir = temp_dir();
    let data = dir.path().join("data");
    let schemas = second_schema(dir.path());
    let node = Node::start(&data, &["--schemas", &schemas]);
    let line = node.addr("line");
    let agent = Agent::start(&[
        "--destination",
        &line.to_string(),
        "--name-prefix",
        "cust",
        "--name-prefix-part",
        "web1.acme.com",
    ]);
    statsd_client(
        agent.statsd,
        "c.incr('jobs', 3)\nc.timing('job_time', 40)\nc.gauge('queue', 9)",
    );
    let name = "cust.web1_acme_com.stats.counters.jobs.count";
    wait_for(
        Duration::from_secs(20),
        "the agent's flush at the node",
        || (total(&node, name) == 3.0).then_some(()),
    );
    assert_eq!(
        max(&node, "cust.web1_acme_com.stats.timers.job_time.upper"),
        Some(40.0)
    );
    assert_eq!(
        last(&node, "cust.web1_acme_com.stats.gauges.queue"),
        Some(9.0)
    );

    // The node goes away; what the agent aggregates meanwhile waits.
    node.stop(Duration::from_secs(20));
    statsd_client(agent.statsd, "c.incr('jobs', 4)");
    std::thread::sleep(Duration::from_millis(2500));
    let node = Node::start(
        &data,
        &["--line-addr", &line.to_string(), "--schemas", &schemas],
    );
    wait_for(
        Duration::from_secs(30),
        "buffered points after the node is back",
        || (total(&node, name) == 7.0).then_some(()),
    );
    agent.stop();
    node.stop(Duration::from_secs(20));
}

#[test]
fn the_agent_speaks_pickle() {
    let dir = temp_dir();
    let schemas = second_schema(dir.path());
    let node = Node::start(&dir.path().join("data"), &["--schemas", &schemas]);
    let agent = Agent::start(&[
        "--destination",
        &node.addr("pickle").to_string(),
        "--protocol",
        "pickle",
        "--name-prefix",
        "cust.acme",
    ]);
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.send_to(b"orders:2|c\norders:3|c|@0.5\nlatency:5|ms", agent.statsd)
        .unwrap();
    wait_for(
        Duration::from_secs(20),
        "pickled flushes at the node",
        || (total(&node, "cust.acme.stats.counters.orders.count") == 8.0).then_some(()),
    );
    assert_eq!(max(&node, "cust.acme.stats.timers.latency.mean"), Some(5.0));
    agent.stop();
    node.stop(Duration::from_secs(20));
}

/// The node restarts (SIGTERM, then up again on its port) while the agent
/// flushes every second over pickle: every increment is stored (the
/// stopping node drains and acknowledges what the agent sent; what it did
/// not take the agent sends again).
#[test]
fn the_agent_loses_nothing_when_the_node_restarts() {
    let dir = temp_dir();
    let schemas = second_schema(dir.path());
    let data = dir.path().join("data");
    let node = Node::start(&data, &["--schemas", &schemas]);
    let pickle = node.addr("pickle").to_string();
    let agent = Agent::start(&["--destination", &pickle, "--protocol", "pickle"]);
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let statsd = agent.statsd;
    let sender = std::thread::spawn(move || {
        let mut sent = 0;
        let started = std::time::Instant::now();
        while started.elapsed() < Duration::from_secs(7) {
            udp.send_to(b"ticks:1|c", statsd).unwrap();
            sent += 1;
            std::thread::sleep(Duration::from_millis(20));
        }
        sent
    });
    std::thread::sleep(Duration::from_millis(3000));
    node.stop(Duration::from_secs(20));
    let node = Node::start(&data, &["--schemas", &schemas, "--pickle-addr", &pickle]);
    let sent = sender.join().unwrap() as f64;
    wait_for(
        Duration::from_secs(20),
        "every increment at the node",
        || (total(&node, "stats.counters.ticks.count") >= sent).then_some(()),
    );
    assert_eq!(total(&node, "stats.counters.ticks.count"), sent);
    agent.stop();
    node.stop(Duration::from_secs(20));
}

#[test]
fn listeners_with_their_own_prefix_and_tcp() {
    let dir = temp_dir();
    let schemas = second_schema(dir.path());
    let config = dir.path().join("graunt.toml");
    std::fs::write(
        &config,
        "statsd_flush_interval = 1\n[statsd]\npercent_threshold = [90, 50]\n\
         [[statsd.listener]]\naddr = \"127.0.0.1:0\"\nprefix = \"smc\"\ntcp = true\n",
    )
    .unwrap();
    let node = Node::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap(), "--schemas", &schemas],
    );
    let udp = node.addr("statsd1");
    let tcp = node.addr("statsd1-tcp");
    statsd_client(
        udp,
        &format!(
            "c.incr('orders', 2)\nt = statsd.TCPStatsClient('{}', {})\nt.incr('orders', 5)\nt.timing('pay', 8)\nt.close()",
            tcp.ip(),
            tcp.port()
        ),
    );
    wait_for(
        Duration::from_secs(20),
        "both transports under smc.",
        || (total(&node, "smc.stats.counters.orders.count") == 7.0).then_some(()),
    );
    assert_eq!(max(&node, "smc.stats.timers.pay.upper_50"), Some(8.0));
    // The main listener keeps its own, unprefixed namespace.
    assert_eq!(total(&node, "stats.counters.orders.count"), 0.0);
    assert!(total(&node, "smc.stats.counters.statsd.packets_received.count") >= 2.0);
    node.stop(Duration::from_secs(20));
}

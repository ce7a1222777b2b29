//! `graunt agent`'s host collectors on this machine: `--collect-once`
//! against what the test reads from /proc and statvfs over the same
//! interval, and collected points travelling agent → relay (a fenced
//! tenant) → node like its statsd flushes.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use graunt_harness::agent::Agent;
use graunt_harness::node::{wait_for, Node};
use graunt_harness::relay::Relay;
use graunt_harness::temp_dir;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_graunt");

/// `/proc/net/dev`'s received bytes of `lo`.
fn lo_rx_bytes() -> u64 {
    let dev = std::fs::read_to_string("/proc/net/dev").unwrap();
    let line = dev
        .lines()
        .find(|l| l.trim_start().starts_with("lo:"))
        .expect("a loopback");
    line.split_once(':')
        .unwrap()
        .1
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

fn meminfo(key: &str) -> f64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("{key}:")))
        .unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<f64>()
        .unwrap()
        * 1024.0
}

/// The mount point and type of the filesystem holding `path`, from
/// /proc/self/mountinfo's longest matching mount point.
fn mount_of(path: &str) -> (String, String) {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let m = f.get(1)?;
            (path == *m || path.starts_with(&format!("{}/", m.trim_end_matches('/'))))
                .then(|| (m.to_string(), f[2].to_string()))
        })
        .max_by_key(|(m, _)| m.len())
        .unwrap()
}

/// `stat -f` (coreutils) of `path`: fundamental block size and free blocks.
fn statfs_free_bytes(path: &str) -> f64 {
    let out = Command::new("stat")
        .args(["-f", "-c", "%S %f", path])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let f: Vec<f64> = text
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    f[0] * f[1]
}

#[test]
fn collect_once_agrees_with_proc_over_the_same_interval() {
    let dir = temp_dir();
    let (mount, fs_type) = mount_of(dir.path().to_str().unwrap());
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[collectors]\nhostname = \"probe\"\n\
             [collectors.network]\ninterfaces = [\"lo\"]\n\
             [collectors.diskspace]\nfilesystems = [\"{fs_type}\"]\nexclude_filters = []\n\
             [collectors.tcp]\n[collectors.sockstat]\n"
        ),
    )
    .unwrap();
    let interval = 3.0;
    let rx_before = lo_rx_bytes();
    let mut child = Command::new(BIN)
        .args([
            "agent",
            "--config",
            config.to_str().unwrap(),
            "--collect-once",
        ])
        .args(["--collect-interval", &interval.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Between the two readings: a known transfer over loopback.
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut said = String::new();
    stderr.read_line(&mut said).unwrap();
    assert!(said.contains("first reading"), "{said}");
    let sent = 8 << 20;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let reader = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut n = 0;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            match s.read(&mut buf).unwrap() {
                0 => return n,
                k => n += k,
            }
        }
    });
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(&vec![7u8; sent]).unwrap();
    drop(s);
    assert_eq!(reader.join().unwrap(), sent);
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).unwrap();
    assert!(child.wait().unwrap().success(), "{rest}");
    let rx_after = lo_rx_bytes();
    let free_now = statfs_free_bytes(dir.path().to_str().unwrap());
    let memfree_now = meminfo("MemFree");
    let loadavg: Vec<f64> = std::fs::read_to_string("/proc/loadavg")
        .unwrap()
        .split_whitespace()
        .take(3)
        .map(|x| x.parse().unwrap())
        .collect();

    let values: HashMap<String, f64> = out
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            assert_eq!(f.len(), 3, "{l}");
            assert!(f[0].starts_with("servers.probe."), "{l}");
            (
                f[0]["servers.probe.".len()..].to_string(),
                f[1].parse::<f64>().unwrap(),
            )
        })
        .collect();
    let get = |k: &str| {
        *values
            .get(k)
            .unwrap_or_else(|| panic!("{k} not collected:\n{out}"))
    };
    for collector in [
        "cpu.",
        "memory.",
        "loadavg.",
        "network.",
        "diskspace.",
        "iostat.",
        "vmstat.",
        "tcp.",
        "sockets.",
    ] {
        // iostat publishes only for disks with I/O in the interval.
        if collector != "iostat." {
            assert!(
                values.keys().any(|k| k.starts_with(collector)),
                "no {collector} in\n{out}"
            );
        }
    }

    // CPU: jiffies per second, about 100 per CPU in all.
    let ncpu = get("cpu.cpu_count") as usize;
    let stat = std::fs::read_to_string("/proc/stat").unwrap();
    assert_eq!(
        ncpu,
        stat.lines()
            .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
            .count()
    );
    let fields = [
        "user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal",
    ];
    for cpu in 0..ncpu {
        let sum: f64 = fields
            .iter()
            .map(|f| get(&format!("cpu.cpu{cpu}.{f}")))
            .sum();
        assert!((90.0..=110.0).contains(&sum), "cpu{cpu} adds up to {sum}");
    }
    let total: f64 = fields.iter().map(|f| get(&format!("cpu.total.{f}"))).sum();
    assert!(
        (total - 100.0 * ncpu as f64).abs() <= 10.0 * ncpu as f64,
        "total adds up to {total}"
    );

    // Memory in bytes, near what /proc says a moment later.
    let memfree = get("memory.MemFree");
    assert!(
        (memfree - memfree_now).abs() <= 0.1 * memfree_now,
        "MemFree {memfree} vs {memfree_now}"
    );
    assert_eq!(get("memory.MemTotal"), meminfo("MemTotal"));

    // Load averages move slowly.
    for (i, k) in ["01", "05", "15"].iter().enumerate() {
        let v = get(&format!("loadavg.{k}"));
        assert!(
            (v - loadavg[i]).abs() <= 1.0,
            "load {k}: {v} vs {}",
            loadavg[i]
        );
        let normalized = get(&format!("loadavg.{k}_normalized"));
        assert!(
            (normalized - v / ncpu as f64).abs() <= 0.011,
            "{normalized}"
        );
    }

    // Loopback: the transfer is in the agent's rate, and the rate is no
    // more than all loopback traffic over the test.
    let agent_bytes = get("network.lo.rx_byte") * interval;
    assert!(
        agent_bytes >= sent as f64,
        "lo rx {agent_bytes} bytes < {sent} sent"
    );
    assert!(
        agent_bytes <= (rx_after - rx_before) as f64 + 1.0,
        "lo rx {agent_bytes} > {}",
        rx_after - rx_before
    );
    assert!(
        (get("network.lo.rx_bit") - 8.0 * get("network.lo.rx_byte")).abs()
            <= 0.01 * get("network.lo.rx_bit")
    );

    // The test's filesystem: free bytes as statvfs says.
    let name = match mount.as_str() {
        "/" => "root".to_string(),
        "/tmp" => "tmp".to_string(),
        m => m.replace(['/', '.'], "_"),
    };
    let free = get(&format!("diskspace.{name}.byte_free"));
    assert!(
        (free - free_now).abs() <= 0.02 * free_now + 64e6,
        "free {free} vs statvfs {free_now}"
    );

    // TCP: CurrEstab is a gauge; sockets add IPv4 and IPv6.
    assert!(get("tcp.CurrEstab") >= 0.0);
    assert!(get("sockets.used") >= 1.0);
}

#[test]
fn collected_metrics_reach_the_node_through_a_tenant_fence() {
    let dir = temp_dir();
    let node = Node::start(&dir.path().join("data"), &[]);
    let relay_config = dir.path().join("relay.toml");
    std::fs::write(
        &relay_config,
        format!(
            "http_addr = \"127.0.0.1:0\"\ndestinations = [\"{}:a\"]\n\
             [[tenant]]\nname = \"acme\"\nnamespaces = [\"cust.acme.\"]\n\
             listener = [{{ protocol = \"line\", addr = \"127.0.0.1:0\" }}]\n",
            node.addr("pickle")
        ),
    )
    .unwrap();
    let relay = Relay::start(&relay_config);
    let agent_config = dir.path().join("agent.toml");
    std::fs::write(
        &agent_config,
        "name_prefix = \"cust.acme\"\n[collectors]\nhostname = \"web01\"\ninterval = 1\n[collectors.sockstat]\n",
    )
    .unwrap();
    let agent = Agent::start(&[
        "--config",
        agent_config.to_str().unwrap(),
        "--destination",
        &relay.addr("acme-line").to_string(),
    ]);
    let points = |target: &str| -> Vec<f64> {
        let body = node.http_get(&format!(
            "/render?target={target}&from=-5min&until=now%2B1min&format=json"
        ));
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        v.get(0)
            .and_then(|s| s["datapoints"].as_array())
            .map(|d| d.iter().filter_map(|p| p[0].as_f64()).collect())
            .unwrap_or_default()
    };
    // A gauge, a rate (from the second round on) and sockets.
    for target in [
        "cust.acme.servers.web01.loadavg.processes_total",
        "cust.acme.servers.web01.cpu.total.idle",
        "cust.acme.servers.web01.sockets.used",
        "cust.acme.servers.web01.memory.MemTotal",
    ] {
        let got = wait_for(Duration::from_secs(30), target, || {
            let p = points(target);
            (!p.is_empty()).then_some(p)
        });
        assert!(got.iter().all(|v| *v >= 0.0), "{target}: {got:?}");
    }
    assert_eq!(
        points("cust.acme.servers.web01.memory.MemTotal")
            .last()
            .copied(),
        Some(meminfo("MemTotal"))
    );
    agent.stop();
    relay.stop();
    node.stop(Duration::from_secs(20));
}

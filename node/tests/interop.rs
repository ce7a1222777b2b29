//! `graunt serve` with the real Graphite programs around it: the graphyte
//! client, a Python carbon-relay forwarding pickle, and a stock graphite-web
//! reading graunt's files and its cache through carbonlink.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use graunt_harness::node::{wait_for, Node};
use graunt_harness::{oracle_bin_dir, oracle_python, temp_dir, workspace_root};
use graunt_harness::{stored_value as stored, unix_now as now};

const BIN: &str = env!("CARGO_BIN_EXE_graunt");

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Kills a helper process when the test ends, however it ends.
struct Reaper(Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn graphyte_client_sends_plaintext() {
    let dir = temp_dir();
    let data = dir.path().join("data");
    let node = Node::start(&data, &[]);
    let t = now() - now() % 60 - 120;
    let script = r#"
import sys, graphyte
host, port, t = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
sender = graphyte.Sender(host, port=port, prefix="apps.shop")
sender.send("orders", 42, timestamp=t)
sender.send("latency.p99", 0.25, timestamp=t)
sender.send("tagged", 1, timestamp=t, tags={"dc": "eu"})
"#;
    let addr = node.addr("line");
    let out = Command::new(oracle_python())
        .args([
            "-c",
            script,
            &addr.ip().to_string(),
            &addr.port().to_string(),
            &t.to_string(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for(Duration::from_secs(10), "graphyte's points", || {
        (node.metric("graunt_points_received_total") >= 2.0).then_some(())
    });
    node.stop(Duration::from_secs(20));
    assert_eq!(stored(&data, "apps.shop.orders", t), Some(42.0));
    assert_eq!(stored(&data, "apps.shop.latency.p99", t), Some(0.25));
}

#[test]
fn python_carbon_relay_forwards_pickle_to_graunt() {
    let dir = temp_dir();
    let data = dir.path().join("data");
    let node = Node::start(&data, &[]);
    let relay_line = free_port();
    let relay_pickle = free_port();
    let conf = dir.path().join("conf");
    let storage = dir.path().join("relay");
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::create_dir_all(storage.join("log")).unwrap();
    std::fs::write(conf.join("storage-schemas.conf"), "").unwrap();
    std::fs::write(
        conf.join("carbon.conf"),
        format!(
            "[cache]\nSTORAGE_DIR = {s}\nLOCAL_DATA_DIR = {s}/whisper\nLOG_DIR = {s}/log\nPID_DIR = {s}\n\n\
             [relay]\nLINE_RECEIVER_INTERFACE = 127.0.0.1\nLINE_RECEIVER_PORT = {relay_line}\n\
             PICKLE_RECEIVER_INTERFACE = 127.0.0.1\nPICKLE_RECEIVER_PORT = {relay_pickle}\n\
             ENABLE_UDP_LISTENER = False\nRELAY_METHOD = consistent-hashing\nREPLICATION_FACTOR = 1\n\
             DESTINATIONS = {dest}:a\nMAX_QUEUE_SIZE = 100000\nCARBON_METRIC_INTERVAL = 0\n",
            s = storage.display(),
            dest = node.addr("pickle"),
        ),
    )
    .unwrap();
    let relay = Command::new(oracle_python())
        .arg(oracle_bin_dir().join("carbon-relay.py"))
        .arg(format!("--config={}", conf.join("carbon.conf").display()))
        .args(["--nodaemon", "start"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _relay = Reaper(relay);
    let mut stream = wait_for(Duration::from_secs(30), "carbon-relay to listen", || {
        std::net::TcpStream::connect(("127.0.0.1", relay_line)).ok()
    });
    let t = now() - now() % 10 - 30;
    let lines: String = (0..500)
        .map(|i| format!("relayed.host{i}.cpu {i}.5 {t}\n"))
        .collect();
    std::io::Write::write_all(&mut stream, lines.as_bytes()).unwrap();
    drop(stream);
    wait_for(
        Duration::from_secs(30),
        "the relay to forward 500 points",
        || (node.metric("graunt_points_received_total") >= 500.0).then_some(()),
    );
    node.stop(Duration::from_secs(20));
    for i in 0..500 {
        assert_eq!(
            stored(&data, &format!("relayed.host{i}.cpu"), t),
            Some(i as f64 + 0.5)
        );
    }
}

#[test]
fn graphite_web_reads_graunt_files_and_cache_through_carbonlink() {
    let dir = temp_dir();
    let data = dir.path().join("data");
    let config = dir.path().join("graunt.toml");
    // The writer is held back: the newest points exist only in graunt's cache.
    std::fs::write(&config, "max_updates_per_second = 0.001\n").unwrap();
    let schemas = dir.path().join("schemas.conf");
    std::fs::write(&schemas, "[all]\npattern = .*\nretentions = 10s:1h\n").unwrap();
    let whisper_dir = data.join("whisper");
    std::fs::create_dir_all(whisper_dir.join("web")).unwrap();
    let file = whisper_dir.join("web/hits.wsp");
    let t = now() - now() % 10 - 60;
    // On disk: one older point, written by the whisper tool.
    let tool = Command::new(BIN)
        .args(["whisper", "create", file.to_str().unwrap(), "10s:1h"])
        .output()
        .unwrap();
    assert!(tool.status.success());
    let tool = Command::new(BIN)
        .args([
            "whisper",
            "update",
            file.to_str().unwrap(),
            &format!("{}:1", t - 20),
        ])
        .output()
        .unwrap();
    assert!(
        tool.status.success(),
        "{}",
        String::from_utf8_lossy(&tool.stderr)
    );
    let node = Node::start(
        &data,
        &[
            "--config",
            config.to_str().unwrap(),
            "--schemas",
            schemas.to_str().unwrap(),
        ],
    );
    let lines = format!("web.hits 5 {t}\nweb.hits 6 {}\n", t + 10);
    std::io::Write::write_all(
        &mut std::net::TcpStream::connect(node.addr("line")).unwrap(),
        lines.as_bytes(),
    )
    .unwrap();
    wait_for(Duration::from_secs(10), "two points", || {
        (node.metric("graunt_points_received_total") >= 2.0).then_some(())
    });

    let script = workspace_root().join("tests/oracle/graphite_web.py");
    let until = t + 10;
    let path = format!(
        "/render/?target=web.hits&format=json&from={}&until={until}",
        t - 30
    );
    let out = Command::new(oracle_python())
        .arg(script)
        .args(["--whisper-dir", whisper_dir.to_str().unwrap()])
        .args(["--carbonlink", &format!("{}:a", node.addr("carbonlink"))])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answers: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answers[0]["status"], 200, "{answers}");
    let series: serde_json::Value =
        serde_json::from_str(answers[0]["body"].as_str().unwrap()).unwrap();
    let points = series[0]["datapoints"].as_array().unwrap().clone();
    let value_at = |ts: i64| points.iter().find(|p| p[1] == ts).map(|p| p[0].clone());
    assert_eq!(value_at(t - 20), Some(serde_json::json!(1.0)), "{points:?}");
    assert_eq!(
        value_at(t),
        Some(serde_json::json!(5.0)),
        "cached point missing: {points:?}"
    );
    assert_eq!(
        value_at(t + 10),
        Some(serde_json::json!(6.0)),
        "cached point missing: {points:?}"
    );
    assert!(node.metric("graunt_cache_queries_total") >= 1.0);
}

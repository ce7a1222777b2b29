//! SIGHUP in running processes: a node reads its storage schemas and
//! aggregation files again (new files follow them, a broken file is
//! refused and the rules in force stay), and a relay its tenants (a
//! changed fence is in force at once; a broken file keeps the old one).

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use graunt_harness::node::{wait_for, Node};
use graunt_harness::relay::Relay;
use graunt_harness::{temp_dir, unix_now};
use graunt_storage::whisper::{AggregationMethod, Header, WhisperFile};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_graunt");

fn hup(pid: u32) {
    let ok = Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

fn send(to: std::net::SocketAddr, text: &str) {
    let mut s = TcpStream::connect(to).unwrap();
    s.write_all(text.as_bytes()).unwrap();
}

/// The header of `metric`'s file, once it exists.
fn info(node: &Node, metric: &str) -> Header {
    let path = node
        .data_dir
        .join("whisper")
        .join(format!("{}.wsp", metric.replace('.', "/")));
    wait_for(Duration::from_secs(20), "the metric's file", || {
        WhisperFile::open(&path).ok().map(|f| f.header().clone())
    })
}

fn retentions(h: &Header) -> Vec<(u32, u32)> {
    h.archives
        .iter()
        .map(|a| (a.seconds_per_point, a.points))
        .collect()
}

fn wait_log(log: impl Fn() -> String, text: &str, times: usize) {
    wait_for(Duration::from_secs(20), text, || {
        (log().matches(text).count() >= times).then_some(())
    });
}

#[test]
fn a_node_reads_its_schemas_again_at_sighup_and_refuses_a_broken_file() {
    let dir = temp_dir();
    let schemas = dir.path().join("storage-schemas.conf");
    let aggregation = dir.path().join("storage-aggregation.conf");
    std::fs::write(&schemas, "[all]\npattern = .*\nretentions = 60s:1d\n").unwrap();
    std::fs::write(
        &aggregation,
        "[all]\npattern = .*\nxFilesFactor = 0.5\naggregationMethod = average\n",
    )
    .unwrap();
    let node = Node::serve(
        Path::new(BIN),
        &dir.path().join("data"),
        &[
            "--schemas",
            schemas.to_str().unwrap(),
            "--aggregation",
            aggregation.to_str().unwrap(),
        ],
    );
    let now = unix_now();
    send(node.addr("line"), &format!("before.m 1 {now}\n"));
    let before = info(&node, "before.m");
    assert_eq!(retentions(&before), [(60, 1440)]);
    assert_eq!(before.aggregation, AggregationMethod::Average);

    std::fs::write(
        &schemas,
        "[fast]\npattern = ^after\\.\nretentions = 10s:1h,1m:1d\n[all]\npattern = .*\nretentions = 60s:1d\n",
    )
    .unwrap();
    std::fs::write(
        &aggregation,
        "[all]\npattern = .*\nxFilesFactor = 0\naggregationMethod = max\n",
    )
    .unwrap();
    hup(node.pid());
    wait_log(|| node.log(), "storage schemas reloaded", 1);
    wait_log(|| node.log(), "storage aggregation reloaded", 1);
    assert!(node.log().contains("added [fast]"), "{}", node.log());
    send(node.addr("line"), &format!("after.m 1 {now}\n"));
    let after = info(&node, "after.m");
    assert_eq!(retentions(&after), [(10, 360), (60, 1440)]);
    assert_eq!(after.aggregation, AggregationMethod::Max);
    assert_eq!(after.x_files_factor, 0.0);

    // A broken file is refused; the rules read last stay.
    std::fs::write(&schemas, "[broken]\npattern = .*\nretentions = nonsense\n").unwrap();
    hup(node.pid());
    wait_log(|| node.log(), "storage schemas refused", 1);
    send(node.addr("line"), &format!("after.n 1 {now}\n"));
    assert_eq!(retentions(&info(&node, "after.n")), [(10, 360), (60, 1440)]);
    // The file's change is also noticed without a signal (every 10 s).
    std::fs::write(&schemas, "[all]\npattern = .*\nretentions = 5m:1d\n").unwrap();
    wait_log(|| node.log(), "storage schemas reloaded", 2);
    send(node.addr("line"), &format!("later.m 1 {now}\n"));
    assert_eq!(retentions(&info(&node, "later.m")), [(300, 288)]);
    node.stop(Duration::from_secs(20));
}

#[test]
fn a_relay_reads_its_tenants_again_at_sighup() {
    let dir = temp_dir();
    let schemas = dir.path().join("storage-schemas.conf");
    std::fs::write(&schemas, "[all]\npattern = .*\nretentions = 1s:1d\n").unwrap();
    let node = Node::start(
        &dir.path().join("data"),
        &["--schemas", schemas.to_str().unwrap()],
    );
    let config = dir.path().join("relay.toml");
    let write_config = |namespaces: &str, extra: &str| {
        std::fs::write(
            &config,
            format!(
                "destinations = [\"{}:a\"]\n\
                 [[tenant]]\nname = \"acme\"\nnamespaces = [{namespaces}]\n\
                 listener = [{{ protocol = \"line\", addr = \"127.0.0.1:0\" }}]\n{extra}",
                node.addr("pickle")
            ),
        )
        .unwrap();
    };
    write_config("\"cust.acme.\"", "");
    let relay = Relay::spawn(Path::new(BIN), &config);
    let addr = relay.addr("acme-line");
    let found = |pattern: &str| -> usize {
        let body = node.http_get(&format!("/metrics/find?query={pattern}&format=completer"));
        serde_json::from_str::<Value>(&body).unwrap()["metrics"]
            .as_array()
            .map_or(0, |a| a.len())
    };
    let now = unix_now();
    send(
        addr,
        &format!("cust.acme.a 1 {now}\ncust.shared.a 1 {now}\n"),
    );
    wait_for(Duration::from_secs(20), "acme's own metric", || {
        (found("cust.acme.*") == 1).then_some(())
    });
    assert_eq!(found("cust.shared.*"), 0, "outside the fence");

    // A wider fence, and a tenant the relay cannot add without a restart.
    write_config(
        "\"cust.acme.\", \"cust.shared.\"",
        "[[tenant]]\nname = \"newco\"\nlistener = [{ protocol = \"line\", addr = \"127.0.0.1:0\" }]\n",
    );
    hup(relay.pid());
    wait_log(|| relay.log(), "tenant fence reloaded", 1);
    // Logged after the fence; a read between the two lines sees only one.
    wait_log(|| relay.log(), "need a restart", 1);
    send(addr, &format!("cust.shared.b 1 {now}\n"));
    wait_for(Duration::from_secs(20), "the wider fence in force", || {
        (found("cust.shared.*") == 1).then_some(())
    });

    // A broken file: refused, the wider fence stays.
    std::fs::write(&config, "destinations = [\n").unwrap();
    hup(relay.pid());
    wait_log(|| relay.log(), "relay config refused", 1);
    send(addr, &format!("cust.shared.c 1 {now}\n"));
    wait_for(Duration::from_secs(20), "the fence in force kept", || {
        (found("cust.shared.*") == 2).then_some(())
    });
    relay.stop();
    node.stop(Duration::from_secs(20));
}

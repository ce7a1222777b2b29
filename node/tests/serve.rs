//! `graunt serve` end to end: a real process, real sockets, real files, and
//! Python whisper reading what it wrote.

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::path::Path;
use std::time::Duration;

use graunt_harness::node::{wait_for, Node};
use graunt_harness::{stored_value as stored, unix_now as now};
use graunt_harness::{temp_dir, whisper_oracle};
use graunt_storage::whisper::WhisperFile;
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_graunt");
const SCHEMAS: &str = "[all]\npattern = .*\nretentions = 10s:1h,1m:1d\n";

fn schemas_file(dir: &Path) -> String {
    let path = dir.join("storage-schemas.conf");
    std::fs::write(&path, SCHEMAS).unwrap();
    path.display().to_string()
}

fn send_tcp(node: &Node, protocol: &str, bytes: &[u8]) {
    let mut s = TcpStream::connect(node.addr(protocol)).unwrap();
    s.write_all(bytes).unwrap();
}

/// The value graunt's file holds for `name` at `ts` (10 s slots), read back
/// through the storage library.
fn refused(node: &Node, protocol: &str, reason: &str) -> f64 {
    node.metric(&format!(
        "graunt_records_refused_total{{protocol=\"{protocol}\",reason=\"{reason}\"}}"
    ))
}

#[test]
fn plaintext_over_tcp_and_udp_keeps_good_lines_and_counts_bad_ones() {
    let dir = temp_dir();
    let data = dir.path().join("data");
    let schemas = schemas_file(dir.path());
    let node = Node::start(&data, &["--schemas", &schemas]);
    let t = now() - now() % 10 - 20;

    let mut batch = Vec::new();
    batch.extend_from_slice(format!("servers.web1.load 1.5 {t}\r\n").as_bytes());
    batch.extend_from_slice(b"only two\n");
    batch.extend_from_slice(format!("servers.web1.bad notanumber {t}\n").as_bytes());
    batch.extend_from_slice(format!("servers..web1 1 {t}\n").as_bytes());
    batch.extend_from_slice(format!("../../etc/passwd 1 {t}\n").as_bytes());
    batch.extend_from_slice(format!("a/b 1 {t}\n").as_bytes());
    batch.extend_from_slice(format!("nul\0name 1 {t}\n").as_bytes());
    batch.extend_from_slice(format!("servers.web1.nan nan {t}\n").as_bytes());
    batch.extend_from_slice(b"servers.web1.old 1 -7\n");
    batch.extend_from_slice(format!("servers.web1.future 1 {}\n", now() + 86400 * 365).as_bytes());
    batch.extend_from_slice(b"\xff\xfe 1 2\n");
    batch.extend_from_slice(&vec![b'x'; 40_000]);
    batch.extend_from_slice(format!(" 1 {t}\n").as_bytes());
    batch.extend_from_slice(format!("servers.web2.load 2.5 {t}\n").as_bytes());
    batch.extend_from_slice(format!("{} 1 {t}\n", "y".repeat(2000)).as_bytes());
    send_tcp(&node, "line", &batch);

    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let datagram = format!("servers.web3.load 3.5 {t}\ngarbage\nservers.web3.mem 4 -1");
    udp.send_to(datagram.as_bytes(), node.addr("udp")).unwrap();

    wait_for(Duration::from_secs(10), "four good points", || {
        (node.metric("graunt_points_received_total") >= 4.0).then_some(())
    });
    wait_for(Duration::from_secs(10), "the writer", || {
        (node.metric("graunt_committed_points_total") >= 4.0).then_some(())
    });
    assert_eq!(refused(&node, "line", "fields"), 1.0);
    assert_eq!(refused(&node, "line", "value"), 1.0);
    assert_eq!(
        refused(&node, "line", "name"),
        5.0,
        "`..`, path escape, `/`, NUL, 2000-byte name"
    );
    assert_eq!(refused(&node, "line", "non_finite"), 1.0);
    assert_eq!(refused(&node, "line", "timestamp_range"), 2.0);
    assert_eq!(refused(&node, "line", "utf8"), 1.0);
    assert_eq!(refused(&node, "line", "too_long"), 1.0);
    assert_eq!(refused(&node, "udp", "fields"), 1.0);
    assert_eq!(node.metric("graunt_points_received_total"), 4.0);

    node.stop(Duration::from_secs(20));
    assert_eq!(stored(&data, "servers.web1.load", t), Some(1.5));
    assert_eq!(stored(&data, "servers.web2.load", t), Some(2.5));
    assert_eq!(stored(&data, "servers.web3.load", t), Some(3.5));

    // Nothing outside the data directory's folders, nothing for refused names.
    let mut top: Vec<String> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    top.sort();
    assert_eq!(top, vec!["tags", "wal", "whisper"]);
    assert!(!data.join("whisper/servers/web1/bad.wsp").exists());
    assert!(!dir.path().join("etc").exists());

    // Python whisper reads graunt's files the same way.
    let path = data
        .join("whisper/servers/web1/load.wsp")
        .display()
        .to_string();
    let answer = whisper_oracle(&json!([
        {"op": "fetch", "path": path, "from": t - 1, "until": t, "now": now()},
        {"op": "info", "path": path},
    ]));
    assert_eq!(answer[0]["ok"][1], json!([1.5]), "{answer}");
    assert_eq!(answer[1]["ok"]["archives"][0]["secondsPerPoint"], json!(10));
    assert_eq!(answer[1]["ok"]["archives"][1]["points"], json!(1440));
}

#[test]
fn sigterm_writes_the_whole_cache() {
    let dir = temp_dir();
    let data = dir.path().join("data");
    let schemas = schemas_file(dir.path());
    let config = dir.path().join("graunt.toml");
    // One update a second: almost everything is still cached at SIGTERM.
    std::fs::write(&config, "max_updates_per_second = 1\n").unwrap();
    let node = Node::serve(
        BIN.as_ref(),
        &data,
        &["--schemas", &schemas, "--config", config.to_str().unwrap()],
    );
    let t = now() - now() % 10 - 30;
    let lines: String = (0..300).map(|i| format!("drain.m{i} {i} {t}\n")).collect();
    send_tcp(&node, "line", lines.as_bytes());
    wait_for(Duration::from_secs(10), "300 points", || {
        (node.metric("graunt_points_received_total") >= 300.0).then_some(())
    });
    assert!(
        node.metric("graunt_cache_points") > 200.0,
        "the rate limit should hold points back"
    );
    node.stop(Duration::from_secs(30));
    for i in 0..300 {
        assert_eq!(
            stored(&data, &format!("drain.m{i}"), t),
            Some(i as f64),
            "drain.m{i}"
        );
    }
    // Every segment but the current one is released once its points are in whisper.
    let segments = std::fs::read_dir(data.join("wal")).unwrap().count();
    assert!(segments <= 2, "{segments} WAL segments left");
}

#[test]
fn kill_9_under_load_loses_no_accepted_point() {
    let dir = temp_dir();
    let data = dir.path().join("data");
    let schemas = schemas_file(dir.path());
    let config = dir.path().join("graunt.toml");
    std::fs::write(&config, "max_updates_per_second = 200\n").unwrap();
    let args = [
        "--schemas",
        schemas.as_str(),
        "--config",
        config.to_str().unwrap(),
    ];
    let node = Node::serve(BIN.as_ref(), &data, &args);
    let t0 = now() - now() % 10 - 600;

    // A sender streaming lines until the node dies.
    let addr = node.addr("line");
    let sender = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        let mut sent = 0u64;
        for round in 0..50i64 {
            let lines: String = (0..1000)
                .map(|i| format!("load.m{i} {round} {}\n", t0 + round * 10))
                .collect();
            if s.write_all(lines.as_bytes()).is_err() {
                break;
            }
            sent += 1000;
            std::thread::sleep(Duration::from_millis(20));
        }
        sent
    });
    wait_for(Duration::from_secs(20), "load to build up", || {
        (node.metric("graunt_points_received_total") >= 20_000.0).then_some(())
    });
    let accepted = node.metric("graunt_points_received_total") as i64;
    node.kill9();
    let sent = sender.join().unwrap();
    assert!(accepted >= 20_000 && accepted as u64 <= sent);

    // Restart without the rate limit; the log is replayed. Every accepted
    // point is returned by a query at once (from the cache or the files)...
    let node = Node::serve(BIN.as_ref(), &data, &["--schemas", &schemas]);
    assert!(node.log().contains("replayed_points="), "{}", node.log());
    let body = node.http_get(&format!(
        "/render?target=load.*&format=json&from={}&until={}",
        t0 - 10,
        now()
    ));
    let series: serde_json::Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    let mut seen = std::collections::HashMap::new();
    for s in series.as_array().unwrap() {
        for p in s["datapoints"].as_array().unwrap() {
            if let Some(v) = p[0].as_f64() {
                seen.insert(
                    (
                        s["target"].as_str().unwrap().to_string(),
                        p[1].as_i64().unwrap(),
                    ),
                    v,
                );
            }
        }
    }
    for n in 0..accepted {
        let (round, i) = (n / 1000, n % 1000);
        let key = (format!("load.m{i}"), t0 + round * 10);
        if seen.get(&key) != Some(&(round as f64)) {
            let theirs = series
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["target"] == key.0.as_str());
            panic!("point {n} ({key:?}) was accepted, then not returned by /render: {theirs:?}");
        }
    }
    // ...and is in whisper once the node has drained.
    node.stop(Duration::from_secs(60));
    // Lines are accepted in order, so the first `accepted` lines are all stored.
    for n in 0..accepted {
        let (round, i) = (n / 1000, n % 1000);
        let got = stored(&data, &format!("load.m{i}"), t0 + round * 10);
        assert_eq!(
            got,
            Some(round as f64),
            "point {n} (load.m{i} at round {round}) was accepted, then lost"
        );
    }
}

#[test]
fn carbonlink_answers_cache_queries_and_metadata() {
    let dir = temp_dir();
    let data = dir.path().join("data");
    let schemas = schemas_file(dir.path());
    let config = dir.path().join("graunt.toml");
    std::fs::write(&config, "max_updates_per_second = 0.01\n").unwrap();
    let node = Node::start(
        &data,
        &["--schemas", &schemas, "--config", config.to_str().unwrap()],
    );
    let t = now() - now() % 10 - 30;
    send_tcp(
        &node,
        "line",
        format!("cl.a 1 {t}\ncl.a 2 {}\ncl.b 5 {t}\n", t + 10).as_bytes(),
    );
    wait_for(Duration::from_secs(10), "three points", || {
        (node.metric("graunt_points_received_total") >= 3.0).then_some(())
    });
    // graphite-web's CarbonLink client, verbatim protocol: pickle protocol 2,
    // 4-byte big-endian length prefixes, unpickled by graphite-web's own
    // restricted unpickler.
    let script = r#"
import pickle, socket, struct, sys, json
from io import BytesIO
class Safe(pickle.Unpickler):
    def find_class(self, module, name):
        raise pickle.UnpicklingError("global %s.%s refused" % (module, name))
def ask(s, req):
    body = pickle.dumps(req, protocol=2)
    s.sendall(struct.pack("!L", len(body)) + body)
    head = b""
    while len(head) < 4: head += s.recv(4 - len(head))
    n = struct.unpack("!L", head)[0]
    data = b""
    while len(data) < n: data += s.recv(n - len(data))
    return Safe(BytesIO(data)).load()
host, port = sys.argv[1].rsplit(":", 1)
s = socket.create_connection((host, int(port)))
out = [
    ask(s, {"type": "cache-query", "metric": "cl.a"}),
    ask(s, {"type": "cache-query-bulk", "metrics": ["cl.a", "cl.b", "cl.none"]}),
    ask(s, {"type": "get-metadata", "metric": "cl.a", "key": "aggregationMethod"}),
    ask(s, {"type": "get-metadata", "metric": "cl.a", "key": "color"}),
    ask(s, {"type": "bogus"}),
]
print(json.dumps(out))
"#;
    let out = std::process::Command::new(graunt_harness::oracle_python())
        .args(["-c", script, &node.addr("carbonlink").to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answers: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answers[0], json!({"datapoints": [[t, 1.0], [t + 10, 2.0]]}));
    assert_eq!(
        answers[1],
        json!({"datapointsByMetric": {"cl.a": [[t, 1.0], [t + 10, 2.0]], "cl.b": [[t, 5.0]], "cl.none": []}})
    );
    assert_eq!(answers[2], json!({"value": "average"}));
    assert_eq!(
        answers[3],
        json!({"error": "Unsupported metadata key \"color\""})
    );
    assert_eq!(
        answers[4],
        json!({"error": "Invalid request type \"bogus\""})
    );
    assert_eq!(node.metric("graunt_cache_queries_total"), 2.0);
}

#[test]
fn pickle_frames_land_and_bad_frames_are_refused() {
    let dir = temp_dir();
    let data = dir.path().join("data");
    let schemas = schemas_file(dir.path());
    let node = Node::start(&data, &["--schemas", &schemas]);
    let t = now() - now() % 10 - 20;
    // Frames built by Python's pickle, as carbon-relay sends them.
    let script = format!(
        r#"
import pickle, struct, sys, os
def frame(obj, proto=2):
    body = pickle.dumps(obj, protocol=proto)
    return struct.pack("!L", len(body)) + body
out = frame([("pk.a", ({t}, 1.0)), ("pk.b", ({t}, 2)), ("pk..bad", ({t}, 1.0))])
out += struct.pack("!L", 5) + b"\x80\x02junk"[:5]
out += frame([("pk.c", ({t}.0, 3.5))], proto=0)
evil = b"cos\nsystem\n(S'touch /tmp/graunt-pwned'\ntR."
out += struct.pack("!L", len(evil)) + evil
out += frame([("pk.d", ({t}, 4.0))])
sys.stdout.buffer.write(out)
"#
    );
    let frames = std::process::Command::new(graunt_harness::oracle_python())
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(frames.status.success());
    send_tcp(&node, "pickle", &frames.stdout);
    wait_for(Duration::from_secs(10), "four pickled points", || {
        (node.metric("graunt_points_received_total") >= 4.0).then_some(())
    });
    assert_eq!(refused(&node, "pickle", "name"), 1.0);
    assert_eq!(
        refused(&node, "pickle", "frame"),
        2.0,
        "garbage and the os.system global"
    );
    assert!(!Path::new("/tmp/graunt-pwned").exists());

    // A frame cut short by the client going away: nothing from it is stored.
    let mut s = TcpStream::connect(node.addr("pickle")).unwrap();
    s.write_all(&100u32.to_be_bytes()).unwrap();
    s.write_all(b"\x80\x02]q\x00(X\x04\x00\x00\x00pk.e")
        .unwrap();
    drop(s);

    // A frame over the limit closes that connection; others carry on.
    let mut s = TcpStream::connect(node.addr("pickle")).unwrap();
    s.write_all(&(100u32 << 20).to_be_bytes()).unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert_eq!(refused(&node, "pickle", "frame_too_large"), 1.0);
    node.stop(Duration::from_secs(20));
    for (name, v) in [("pk.a", 1.0), ("pk.b", 2.0), ("pk.c", 3.5), ("pk.d", 4.0)] {
        assert_eq!(stored(&data, name, t), Some(v), "{name}");
    }
    assert!(!data.join("whisper/pk/e.wsp").exists());
}

#[test]
fn self_metrics_are_written_as_carbon_agents() {
    let dir = temp_dir();
    let data = dir.path().join("data");
    let config = dir.path().join("graunt.toml");
    std::fs::write(&config, "self_metrics_interval = 1\ninstance = \"b\"\n").unwrap();
    // One slot per second for self-metrics, so each interval keeps its own value.
    let schemas = dir.path().join("schemas.conf");
    std::fs::write(&schemas, "[carbon]\npattern = ^carbon\\.\nretentions = 1s:10m\n[all]\npattern = .*\nretentions = 10s:1h\n").unwrap();
    let args = [
        "--config",
        config.to_str().unwrap(),
        "--schemas",
        schemas.to_str().unwrap(),
    ];
    let node = Node::start(&data, &args);
    let t = now() - 20;
    send_tcp(
        &node,
        "line",
        format!("app.x 1 {t}\napp.y 2 {t}\napp.z 3 {t}\n").as_bytes(),
    );
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .replace('.', "_");
    let agent = data.join(format!("whisper/carbon/agents/{host}-b"));
    let received = agent.join("metricsReceived.wsp");
    let total = wait_for(
        Duration::from_secs(15),
        "metricsReceived to count the 3 points",
        || {
            let file = WhisperFile::open(&received).ok()?;
            let s = file.fetch(now() - 600, Some(now()), now(), None).ok()??;
            let sum: f64 = s.values.iter().flatten().sum();
            (sum >= 3.0).then_some(sum)
        },
    );
    assert_eq!(total, 3.0);
    for name in [
        "committedPoints",
        "updateOperations",
        "creates",
        "cache.size",
        "cache.queues",
        "errors",
        "dropped",
    ] {
        let path = agent.join(name.replace('.', "/") + ".wsp");
        wait_for(Duration::from_secs(10), name, || {
            path.exists().then_some(())
        });
    }
    node.stop(Duration::from_secs(20));
}

/// mimalloc's arenas would otherwise be backed by 2 MiB pages, each
/// touched one held and zeroed whole: the cache took 72–83 bytes a point
/// with them, 43 without (docs/BENCHMARKS.md).
#[test]
fn a_node_runs_without_transparent_huge_pages() {
    let dir = temp_dir();
    let node = Node::serve(Path::new(BIN), &dir.path().join("data"), &[]);
    let status = std::fs::read_to_string(format!("/proc/{}/status", node.pid())).unwrap();
    let thp = status
        .lines()
        .find_map(|l| l.strip_prefix("THP_enabled:"))
        .expect("this kernel reports THP_enabled in /proc/PID/status");
    assert_eq!(thp.trim(), "0", "huge pages are still allowed");
    node.stop(Duration::from_secs(20));
}

//! carbon's rule files in running services: a node with rewrite rules and
//! white/blacklists (what lands, what is counted as refused), and a relay
//! process that reloads a changed rewrite file at SIGHUP under load
//! without losing or repeating a point, and refuses a broken one keeping
//! its rules.

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use graunt_harness::node::{wait_for, Node};
use graunt_harness::relay::Relay;
use graunt_harness::{temp_dir, unix_now};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_graunt");

fn find(node: &Node, query: &str) -> Vec<String> {
    let body = node.http_get(&format!("/metrics/find?query={query}&format=completer"));
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    v["metrics"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|m| {
                    m["path"]
                        .as_str()
                        .map(|p| p.trim_end_matches('.').to_string())
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Points with a value under `pattern` between t0 and t0 + span.
fn count(node: &Node, pattern: &str, t0: i64, span: i64) -> u64 {
    let body = node.http_get(&format!(
        "/render?target=sumSeries(isNonNull({pattern}))&from={}&until={}&format=json",
        t0 - 1,
        t0 + span
    ));
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    v.get(0).map_or(0.0, |s| {
        s["datapoints"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p[0].as_f64())
            .sum()
    }) as u64
}

fn refused(node: &Node, reason: &str) -> f64 {
    let metrics = node.http_get("/metrics");
    metrics
        .lines()
        .filter(|l| {
            l.starts_with("graunt_records_refused_total")
                && l.contains(&format!("reason=\"{reason}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn write(path: &Path, text: &str) {
    // Renamed over, as editors and config management do.
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A node that keeps a point a second for a day, in `dir/data`.
fn node_by_the_second(dir: &Path) -> Node {
    let schemas = dir.join("storage-schemas.conf");
    std::fs::write(&schemas, "[all]\npattern = .*\nretentions = 1s:1d\n").unwrap();
    Node::start(&dir.join("data"), &["--schemas", schemas.to_str().unwrap()])
}

/// `dir/relay.toml`: a relay sending to `node`, with the `rules` line and
/// one tenant `t` with a plaintext listener (`t-line`).
fn relay_config(dir: &Path, node: &Node, rules: &str) -> std::path::PathBuf {
    let config = dir.join("relay.toml");
    std::fs::write(
        &config,
        format!(
            "http_addr = \"127.0.0.1:0\"\ndestinations = [\"{}:a\"]\n{rules}\n\
             [[tenant]]\nname = \"t\"\nlistener = [{{ protocol = \"line\", addr = \"127.0.0.1:0\" }}]\n",
            node.addr("pickle")
        ),
    )
    .unwrap();
    config
}

#[test]
fn a_node_applies_carbons_rule_files() {
    let dir = temp_dir();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/carbon_rules");
    let config = dir.path().join("graunt.toml");
    std::fs::write(
        &config,
        format!(
            "rewrite_rules = {:?}\nwhitelist = {:?}\nblacklist = {:?}\nuse_whitelist = true\n",
            fixtures.join("rewrite-rules.conf"),
            fixtures.join("whitelist.conf"),
            fixtures.join("blacklist.conf")
        ),
    )
    .unwrap();
    let node = Node::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    let now = unix_now();
    let lines: String = [
        "collectd.web-01.cpu-0.user",
        "servers.web01_example_com.load",
        "servers.evil.cpu",
        "other.thing",
        "tmp.build.123",
        "stats_counts.jobs.done",
    ]
    .iter()
    .map(|n| format!("{n} 1 {now}\n"))
    .collect();
    let mut s = TcpStream::connect(node.addr("line")).unwrap();
    s.write_all(lines.as_bytes()).unwrap();
    drop(s);
    wait_for(Duration::from_secs(20), "the rewritten names", || {
        let servers = find(&node, "servers.*.*");
        (servers.contains(&"servers.web_01.cpu".to_string())
            && servers.contains(&"servers.web01.load".to_string()))
        .then_some(())
    });
    assert_eq!(
        find(&node, "stats.counts.jobs.*"),
        ["stats.counts.jobs.done"]
    );
    assert!(find(&node, "servers.evil*").is_empty());
    assert!(find(&node, "other.*").is_empty());
    // Not whitelisted: refused before any rewrite.
    assert!(find(&node, "tmp.*").is_empty());
    assert!(find(&node, "collectd.*").is_empty(), "renamed away");
    assert_eq!(refused(&node, "blacklist"), 1.0);
    assert_eq!(refused(&node, "whitelist"), 2.0);
    node.stop(Duration::from_secs(20));
}

#[test]
fn a_relay_reloads_rewrite_rules_at_sighup_under_load_and_keeps_them_when_broken() {
    let dir = temp_dir();
    let node = node_by_the_second(dir.path());
    let rules = dir.path().join("rewrite-rules.conf");
    write(&rules, "[pre]\n^in\\. = first.\n");
    let config = relay_config(dir.path(), &node, &format!("rewrite_rules = {rules:?}"));
    let relay = Relay::spawn(Path::new(BIN), &config);
    let hup = || {
        let ok = Command::new("kill")
            .args(["-HUP", &relay.pid().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    };
    // 20 series, one point a second each over 1,500 s of timestamps: 30,000
    // points, every (series, timestamp) once, sent in a steady stream.
    let t0 = unix_now() - 3000;
    let total = 30_000;
    let addr = relay.addr("t-line");
    let (progress_tx, progress) = std::sync::mpsc::channel::<usize>();
    let sender = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        for batch in 0..total / 500 {
            let lines: String = (batch * 500..(batch + 1) * 500)
                .map(|i| format!("in.m{} {i} {}\n", i % 20, t0 + (i / 20) as i64))
                .collect();
            s.write_all(lines.as_bytes()).unwrap();
            let _ = progress_tx.send((batch + 1) * 500);
            std::thread::sleep(Duration::from_millis(40));
        }
    });
    let wait_sent = |n: usize| while progress.recv().expect("the sender runs") < n {};
    wait_sent(total / 3);
    write(&rules, "[pre]\n^in\\. = second.\n");
    hup();
    wait_for(
        Duration::from_secs(20),
        "the relay to read its rules again",
        || relay.log().contains("rule files read again").then_some(()),
    );
    wait_sent(2 * total / 3);
    write(&rules, "[pre]\n^in\\.(unclosed = broken.\n");
    hup();
    wait_for(Duration::from_secs(20), "the broken file refused", || {
        relay.log().contains("rule file refused").then_some(())
    });
    sender.join().unwrap();
    let span = 1600;
    wait_for(Duration::from_secs(60), "every point, once", || {
        let (first, second) = (
            count(&node, "first.*", t0, span),
            count(&node, "second.*", t0, span),
        );
        (first + second == total as u64).then_some(())
    });
    let (first, second) = (
        count(&node, "first.*", t0, span),
        count(&node, "second.*", t0, span),
    );
    assert!(
        first >= total as u64 / 3 && second >= total as u64 / 3,
        "first {first}, second {second}"
    );
    assert!(find(&node, "broken*").is_empty() && find(&node, "in.*").is_empty());
    // Nothing sent twice: the node took exactly what was sent.
    let received: f64 = node
        .http_get("/metrics")
        .lines()
        .filter(|l| l.starts_with("graunt_points_received_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(received, total as f64);
    // The last points, sent after the broken file, kept the second rules.
    let last = t0 + (total as i64 - 1) / 20;
    assert_eq!(
        count(&node, "second.*", last, 1),
        20,
        "the last second's 20 points"
    );
    relay.stop();
    node.stop(Duration::from_secs(20));
}

#[test]
fn a_relay_aggregates_as_carbon_aggregator_and_forwards_the_inputs() {
    let dir = temp_dir();
    let node = node_by_the_second(dir.path());
    let rules = dir.path().join("aggregation-rules.conf");
    std::fs::write(
        &rules,
        "agg.<m>.sum (2) = sum src.*.<m>\nagg.<m>.p50 (2) = p50 src.*.<m>\nagg.<m>.count (2) = count src.*.<m>\n",
    )
    .unwrap();
    let config = relay_config(dir.path(), &node, &format!("aggregation_rules = {rules:?}"));
    let relay = Relay::start(&config);
    let t = unix_now() - 20;
    let t = t - t % 2;
    let lines: String = [("a", 1.0), ("b", 2.0), ("c", 4.0), ("d", 10.0)]
        .iter()
        .map(|(h, v)| format!("src.{h}.x {v} {t}\nsrc.{h}.x {} {}\n", v * 2.0, t + 1))
        .collect();
    let mut s = TcpStream::connect(relay.addr("t-line")).unwrap();
    s.write_all(lines.as_bytes()).unwrap();
    drop(s);
    let value = |target: &str| -> Option<f64> {
        let body = node.http_get(&format!(
            "/render?target={target}&from={}&until={}&format=json",
            t - 1,
            t + 1
        ));
        let v: Value = serde_json::from_str(&body).ok()?;
        v.get(0)?["datapoints"]
            .as_array()?
            .iter()
            .find_map(|p| (p[1].as_i64() == Some(t)).then(|| p[0].as_f64()).flatten())
    };
    // One interval of 2 s holds both timestamps of every host: 8 values.
    wait_for(Duration::from_secs(20), "the aggregates", || {
        (value("agg.x.sum") == Some(51.0)).then_some(())
    });
    assert_eq!(value("agg.x.count"), Some(8.0));
    // p50 of 1 2 2 4 4 8 10 20: between 4 and 4.
    assert_eq!(value("agg.x.p50"), Some(4.0));
    // FORWARD_ALL: the inputs are passed on too.
    assert_eq!(value("src.c.x"), Some(4.0));
    relay.stop();
    node.stop(Duration::from_secs(20));
}

//! Graphite tags end to end. The recorded requests of tests/fixtures/tags
//! (graphite-web 1.1.10 with its own tag database over a whisper tree laid
//! out as carbon 1.1.10 writes tagged series, registered as carbon does)
//! replayed against a node serving that same tree; tagged names and
//! DogStatsD tags through the receivers; and a 3-node cluster answering
//! `seriesByTag` and autocompletion alike on every member, equal to one
//! node holding everything.

use std::io::Write;
use std::net::{TcpStream, UdpSocket};
use std::path::Path;
use std::time::Duration;

use graunt_harness::cluster::TestCluster;
use graunt_harness::node::{wait_for, Node};
use graunt_harness::relay::Relay;
use graunt_harness::{temp_dir, unix_now, workspace_root};
use serde_json::Value;

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Ids are the tag database's row ids (sqlite's, gaps included): opaque.
fn without_ids(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.remove("id");
            m.values_mut().for_each(without_ids);
        }
        Value::Array(a) => a.iter_mut().for_each(without_ids),
        _ => {}
    }
}

#[test]
fn a_carbon_tree_with_tags_is_served_as_graphite_web_serves_it() {
    let fixtures = workspace_root().join("tests/fixtures/tags");
    let dir = temp_dir();
    let data = dir.path().join("data");
    copy_tree(&fixtures.join("whisper"), &data.join("whisper"));
    let node = Node::start(&data, &[]);
    let read = |name: &str| -> Vec<Value> {
        serde_json::from_str(&std::fs::read_to_string(fixtures.join(name)).unwrap()).unwrap()
    };
    let (steps, answers) = (read("steps.json"), read("answers.json"));
    assert!(steps.len() >= 150, "{} requests", steps.len());
    let mut failures = Vec::new();
    for (i, (step, want)) in steps.iter().zip(&answers).enumerate() {
        let path = step["path"].as_str().unwrap();
        let method = step["method"].as_str().unwrap();
        let mut headers = Vec::new();
        if let Some(ct) = step["content_type"].as_str() {
            headers.push(("Content-Type", ct));
        }
        let (status, h, body) = node.http_raw(
            method,
            path,
            step["body"].as_str().map(str::as_bytes),
            &headers,
        );
        let body = String::from_utf8_lossy(&body).into_owned();
        let ctype = h
            .iter()
            .find(|(k, _)| k == "content-type")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let want_status = step["graunt"]["status"]
            .as_u64()
            .or(want["status"].as_u64())
            .unwrap() as u16;
        let mut problem = None;
        if status != want_status {
            problem = Some(format!("status {status}, want {want_status}"));
        } else if step["graunt"].is_null() && status == 200 {
            let want_type = want["content_type"].as_str().unwrap();
            let mime = |t: &str| t.split(';').next().unwrap_or("").trim().to_string();
            if mime(&ctype) != mime(want_type) {
                problem = Some(format!("content type {ctype}, want {want_type}"));
            } else {
                let mut a: Value =
                    serde_json::from_str(&body).unwrap_or(Value::String(body.clone()));
                let mut b: Value = serde_json::from_str(want["body"].as_str().unwrap())
                    .unwrap_or(Value::String(want["body"].as_str().unwrap().to_string()));
                without_ids(&mut a);
                without_ids(&mut b);
                if !graunt_harness::same_json(&a, &b) {
                    problem = Some(format!("graphite-web: {}", want["body"]));
                }
            }
        } else if step["graunt"].is_null()
            && status == 400
            && body != want["body"].as_str().unwrap()
        {
            problem = Some(format!("error text, graphite-web: {}", want["body"]));
        }
        if let Some(p) = problem {
            let body: String = body.chars().take(400).collect();
            failures.push(format!("step {i}: {method} {path}: {p}\n   graunt: {body}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} differ:\n{}",
        failures.len(),
        steps.len(),
        failures.join("\n")
    );
    node.stop(Duration::from_secs(20));
}

fn send(addr: std::net::SocketAddr, text: &str) {
    TcpStream::connect(addr)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
}

fn json(node: &Node, path: &str) -> Value {
    let (status, body) = node.http_request(path);
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

#[test]
fn tagged_names_and_dogstatsd_tags_arrive_as_tagged_series() {
    let dir = temp_dir();
    let data = dir.path().join("data");
    let node = Node::start(&data, &["--statsd-flush-interval", "1"]);
    let now = unix_now();
    send(
        node.addr("line"),
        &format!(
            "disk.used;rack=a1;dc=dc1 5 {now}\ndisk.used{{dc=\"dc2\",rack=\"a1\"}} 6 {now}\n\
             bad;x= 1 {now}\nbad;a^b=1 1 {now}\n"
        ),
    );
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.send_to(b"api.hits:3|c|#env:prod,region:eu", node.addr("statsd"))
        .unwrap();
    // Plaintext over UDP and pickle too: one receive path.
    udp.send_to(
        format!("disk.used;rack=a1;dc=dc3 7 {now}\n").as_bytes(),
        node.addr("udp"),
    )
    .unwrap();
    let frame = graunt_relay::codec::pickle::encode_frame([("disk.used;rack=a1;dc=dc4", now, 8.0)]);
    TcpStream::connect(node.addr("pickle"))
        .unwrap()
        .write_all(&frame)
        .unwrap();
    wait_for(Duration::from_secs(20), "the tagged series", || {
        let found = json(&node, "/tags/findSeries?expr=rack=a1");
        (found.as_array()?.len() == 4).then_some(())
    });
    assert_eq!(
        json(&node, "/tags/findSeries?expr=rack=a1"),
        serde_json::json!([
            "disk.used;dc=dc1;rack=a1",
            "disk.used;dc=dc2;rack=a1",
            "disk.used;dc=dc3;rack=a1",
            "disk.used;dc=dc4;rack=a1"
        ])
    );
    // etsy's names with the tags after them.
    wait_for(Duration::from_secs(20), "the statsd counter", || {
        let found = json(&node, "/tags/findSeries?expr=env=prod");
        found
            .as_array()?
            .contains(&Value::from(
                "stats.counters.api.hits.count;env=prod;region=eu",
            ))
            .then_some(())
    });
    let r = json(
        &node,
        &format!(
            "/render?target=seriesByTag('name=disk.used','dc=dc2')&from={}&until={}&format=json",
            now - 60,
            now + 60
        ),
    );
    assert_eq!(r[0]["target"], "disk.used;dc=dc2;rack=a1");
    assert_eq!(r[0]["tags"]["rack"], "a1");
    let values: Vec<f64> = r[0]["datapoints"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p[0].as_f64())
        .collect();
    assert_eq!(values, [6.0]);
    // The file is where carbon puts it; the refused names were counted.
    let file = graunt_storage::tags::hashed_path(&data.join("whisper"), "disk.used;dc=dc1;rack=a1");
    wait_for(Duration::from_secs(20), "the hashed file", || {
        file.exists().then_some(())
    });
    let refused = node.metric("graunt_records_refused_total{protocol=\"line\",reason=\"name\"}");
    assert_eq!(refused, 2.0);
    // The index survives a restart.
    node.stop(Duration::from_secs(20));
    let node = Node::start(&data, &[]);
    assert_eq!(
        json(
            &node,
            "/tags/autoComplete/values?tag=dc&expr=name=disk.used"
        ),
        serde_json::json!(["dc1", "dc2", "dc3", "dc4"])
    );
    node.stop(Duration::from_secs(20));
}

#[test]
fn a_cluster_answers_tags_on_every_member_as_one_node() {
    let dir = temp_dir();
    let cluster = TestCluster::start(dir.path(), 3, &[]);
    let lone = Node::start(&dir.path().join("lone"), &[]);
    let relay = Relay::following(dir.path(), &cluster.http(), &cluster.secret_file, "");
    let now = unix_now() / 60 * 60;
    let mut lines = String::new();
    for dc in ["dc1", "dc2", "dc3"] {
        for h in 0..20 {
            for name in ["cpu.load", "mem.free"] {
                lines.push_str(&format!(
                    "{name};host=h{h:02};dc={dc};role={} {h} {now}\n",
                    if h % 2 == 0 { "web" } else { "db" }
                ));
            }
        }
    }
    send(relay.addr("t-line"), &lines);
    send(lone.addr("line"), &lines);
    // `now` fixed: a range ending in the future ends at the clock
    // otherwise, and the members are asked later than the lone node.
    let queries = [
        format!(
            "/render?target=seriesByTag('name=cpu.load','dc=dc1')&from={}&until={}&now={}&format=json",
            now - 60,
            now + 60,
            now + 60
        ),
        format!(
            "/render?target=groupByTags(seriesByTag('name=~cpu|mem','role=web'),'sum','dc')&from={}&until={}&now={}&format=json",
            now - 60,
            now + 60,
            now + 60
        ),
        "/tags/autoComplete/values?tag=host&expr=dc=dc2&expr=role=db".to_string(),
        "/tags/autoComplete/tags?expr=name=cpu.load".to_string(),
        "/tags/findSeries?expr=host=~h0[1-3]&expr=dc!=dc3".to_string(),
        "/tags/dc".to_string(),
        "/tags".to_string(),
    ];
    let answers = |n: &Node| -> Vec<Value> {
        queries
            .iter()
            .map(|q| {
                let mut v = json(n, q);
                without_ids(&mut v);
                v
            })
            .collect()
    };
    wait_for(
        Duration::from_secs(30),
        "every series on the lone node",
        || {
            (json(&lone, "/tags/findSeries?expr=name=~.%2B")
                .as_array()?
                .len()
                == 120)
                .then_some(())
        },
    );
    let want = answers(&lone);
    assert_eq!(want[0].as_array().unwrap().len(), 20);
    for n in &cluster.nodes {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let got = answers(n);
            if got == want {
                break;
            }
            if std::time::Instant::now() > deadline {
                let (q, (w, g)) = queries
                    .iter()
                    .zip(want.iter().zip(&got))
                    .find(|(_, (w, g))| w != g)
                    .expect("a differing answer");
                panic!(
                    "{} answers {q}\n{g}\nwhere the lone node answers\n{w}",
                    n.data_dir.display()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    // Each series is on two members (replication 2), counted once.
    let local: usize = cluster
        .nodes
        .iter()
        .map(|n| {
            json(n, "/tags/findSeries?expr=name=~.%2B&local=1")
                .as_array()
                .unwrap()
                .len()
        })
        .sum();
    assert_eq!(local, 240);
    // delSeries on one member forgets the series on every member.
    let (status, _, _) = cluster.nodes[1].http_raw(
        "POST",
        "/tags/delSeries",
        Some(b"path=cpu.load%3Bdc%3Ddc1%3Bhost%3Dh00%3Brole%3Dweb"),
        &[("Content-Type", "application/x-www-form-urlencoded")],
    );
    assert_eq!(status, 200);
    for n in &cluster.nodes {
        let found = json(n, "/tags/findSeries?expr=name=cpu.load&expr=dc=dc1");
        assert_eq!(found.as_array().unwrap().len(), 19, "{found}");
    }
    // A member down: the answer says who is missing, as /render does.
    let mut cluster = cluster;
    cluster.nodes.pop().unwrap().stop(Duration::from_secs(20));
    let (status, headers, _) = cluster.nodes[0].http_raw(
        "GET",
        "/tags/autoComplete/tags?expr=name=cpu.load",
        None,
        &[],
    );
    assert_eq!(status, 200);
    assert!(
        headers.iter().any(|(k, _)| k == "x-graunt-partial"),
        "{headers:?}"
    );
    relay.stop();
    lone.stop(Duration::from_secs(20));
    cluster.stop();
}

/// Tagged series move to their owners when a member joins (their files are
/// named by hash: the names come from the tag index), and nothing is lost.
#[test]
fn tagged_series_follow_their_owners_when_a_member_joins() {
    let dir = temp_dir();
    let mut cluster = TestCluster::start(dir.path(), 2, &["--peer-timeout", "5"]);
    let relay = Relay::following(dir.path(), &cluster.http(), &cluster.secret_file, "");
    let now = unix_now() / 60 * 60;
    let mut lines = String::new();
    for h in 0..60 {
        lines.push_str(&format!("cpu.load;host=h{h:02};dc=dc{} {h} {now}\n", h % 3));
    }
    send(relay.addr("t-line"), &lines);
    let render = format!(
        "/render?target=sumSeries(seriesByTag('name=cpu.load'))&from={}&until={}&format=json",
        now - 60,
        now + 60
    );
    let total = |n: &Node| -> Option<f64> {
        let v = json(n, &render);
        v[0]["datapoints"]
            .as_array()?
            .iter()
            .filter_map(|p| p[0].as_f64())
            .next()
    };
    let want: f64 = (0..60).map(f64::from).sum();
    wait_for(
        Duration::from_secs(30),
        "every point on both members",
        || (total(&cluster.nodes[0]) == Some(want)).then_some(()),
    );
    // Written to disk before the join, so what moves is files.
    std::thread::sleep(Duration::from_secs(2));
    let http = cluster.http();
    let secret = cluster.secret_file.display().to_string();
    let args = [
        "--node-id",
        "3",
        "--peer-timeout",
        "5",
        "--cluster-join",
        &http[0],
        "--cluster-secret-file",
        &secret,
    ];
    cluster
        .nodes
        .push(Node::start(&dir.path().join("n3"), &args));
    cluster.wait_for_members(3);
    let local = |n: &Node| -> usize {
        json(n, "/tags/findSeries?expr=name=cpu.load&local=1")
            .as_array()
            .map_or(0, |a| a.len())
    };
    wait_for(
        Duration::from_secs(60),
        "two copies of each series over three members",
        || {
            let counts: Vec<usize> = cluster.nodes.iter().map(local).collect();
            (counts.iter().sum::<usize>() == 120 && counts.iter().all(|&c| c > 0)).then_some(())
        },
    );
    for n in &cluster.nodes {
        wait_for(Duration::from_secs(30), "the sum on every member", || {
            (total(n) == Some(want)).then_some(())
        });
    }
    relay.stop();
    cluster.stop();
}

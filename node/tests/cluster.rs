//! Clusters on loopback. In-process ([`TestCluster`]): three members form
//! the cluster themselves, a relay that follows it (replication 2) feeds
//! them, every node answers alike, a schema change set with `graunt cluster`
//! reaches all, a fourth member joins and the relay routes to it. As real
//! `graunt serve` processes, where `kill -9` matters: formed with `graunt
//! cluster init` and `join`, the leader killed and replaced; and a node
//! killed during a query storm.

use std::io::Write;
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use graunt_harness::cluster::TestCluster;
use graunt_harness::node::{wait_for, Node};
use graunt_harness::relay::Relay;
use graunt_harness::{temp_dir, unix_now};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_graunt");

fn cluster(args: &[&str]) -> String {
    let out = Command::new(BIN)
        .arg("cluster")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "graunt cluster {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn status(node: &Node) -> Value {
    serde_json::from_str(&cluster(&[
        "status",
        "--node",
        &node.addr("http").to_string(),
        "--json",
    ]))
    .unwrap()
}

fn member(dir: &std::path::Path, id: u64, extra: &[&str]) -> Node {
    let mut args = vec![
        "--node-id".to_string(),
        id.to_string(),
        "--peer-timeout".into(),
        "1".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Node::serve(BIN.as_ref(), &dir.join(format!("n{id}")), &args)
}

fn send(to: std::net::SocketAddr, lines: &str) {
    let mut s = TcpStream::connect(to).unwrap();
    s.write_all(lines.as_bytes()).unwrap();
}

/// `metrics` × `points` lines `prefix.mI` (value I*1000+J at t0+step*J).
fn lines(prefix: &str, metrics: usize, points: usize, t0: i64, step: i64) -> String {
    let mut out = String::new();
    for i in 0..metrics {
        for j in 0..points {
            out.push_str(&format!(
                "{prefix}.m{i} {} {}\n",
                i * 1000 + j,
                t0 + step * j as i64
            ));
        }
    }
    out
}

fn render(node: &Node, query: &str) -> Value {
    let (status, body) = node.http_request(query);
    assert_eq!(status, 200, "{query}: {body}");
    serde_json::from_str(&body).unwrap()
}

fn points_stored(node: &Node, query: &str) -> usize {
    render(node, query)
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            s["datapoints"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|p| !p[0].is_null())
                .count()
        })
        .sum()
}

#[test]
fn a_cluster_forms_itself_replicates_and_answers_alike_everywhere() {
    let dir = temp_dir();
    let schemas = dir.path().join("schemas.conf");
    std::fs::write(&schemas, "[all]\npattern = .*\nretentions = 60s:1d\n").unwrap();
    let s = schemas.to_str().unwrap();
    let mut cluster = TestCluster::start(dir.path(), 3, &["--schemas", s]);
    let http = cluster.http();
    let st = cluster.status(&cluster.nodes[2]).unwrap();
    assert_eq!(st["ring"]["replication"], 2, "{st}");
    for n in &cluster.nodes {
        wait_for(Duration::from_secs(10), "the members in /metrics", || {
            (n.metric("graunt_cluster_members") == 3.0 && n.metric("graunt_cluster_voters") == 3.0)
                .then_some(())
        });
    }

    // A relay that follows the cluster, and a lone node given everything.
    let config = dir.path().join("relay.toml");
    std::fs::write(
        &config,
        format!(
            "cluster = [\"{}\", \"{}\"]\ncluster_poll_interval = 0.2\nself_metrics_interval = 3600\n\
             http_addr = \"127.0.0.1:0\"\ncluster_secret_file = \"{}\"\n\
             [[tenant]]\nname = \"t\"\nlistener = [{{ protocol = \"line\", addr = \"127.0.0.1:0\" }}]\n",
            http[0], http[1], cluster.secret_file.display()
        ),
    )
    .unwrap();
    let relay = Relay::start(&config);
    let lone = Node::start(&dir.path().join("lone"), &["--schemas", s]);
    let t0 = (unix_now() - 3600) / 60 * 60;
    let data = lines("c", 200, 10, t0, 60);
    send(relay.addr("t-line"), &data);
    send(lone.addr("line"), &data);
    let range = format!("from={}&until={}&format=json", t0 - 60, t0 + 600);
    let all = format!("/render?target=c.*&{range}");
    for n in &cluster.nodes {
        wait_for(
            Duration::from_secs(30),
            "every point on every node's view",
            || (points_stored(n, &all) == 2000).then_some(()),
        );
    }
    // Replication 2: each metric is on exactly two nodes.
    let local: usize = cluster
        .nodes
        .iter()
        .map(|n| points_stored(n, &format!("{all}&local=1")))
        .sum();
    assert_eq!(local, 4000, "two copies of each point");
    let calls = cluster.nodes[0].http_get("/metrics");
    assert!(
        calls.contains("graunt_cluster_peer_calls_total{outcome=\"ok\""),
        "{calls}"
    );
    // Fractional values: sums of them are not folded by series (the order
    // of additions shows in the last digits) but by parts of the range;
    // extremes are.
    let mut fractions = String::new();
    for i in 0..30 {
        for j in 0..10 {
            fractions.push_str(&format!(
                "f.m{i} {} {}\n",
                0.1 * (i * 7 + j) as f64 + 1e-3,
                t0 + 60 * j as i64
            ));
        }
    }
    send(relay.addr("t-line"), &fractions);
    send(lone.addr("line"), &fractions);
    // Hosts and their cpu times, for groupByNode: integral values, a gap
    // in one.
    let mut hosts = String::new();
    for h in 0..12 {
        for (k, kind) in ["user", "system", "idle"].iter().enumerate() {
            for j in 0..10 {
                if (h, k, j) == (3, 1, 4) {
                    continue;
                }
                hosts.push_str(&format!(
                    "g.h{h}.{kind} {} {}\n",
                    h * 100 + k * 10 + j,
                    t0 + 60 * j as i64
                ));
            }
        }
    }
    send(relay.addr("t-line"), &hosts);
    send(lone.addr("line"), &hosts);
    let fall = format!("/render?target=f.*&{range}");
    let gall = format!("/render?target=g.*.*&{range}");
    for n in &cluster.nodes {
        wait_for(Duration::from_secs(30), "the fractions everywhere", || {
            (points_stored(n, &fall) == 300).then_some(())
        });
        wait_for(Duration::from_secs(30), "the hosts everywhere", || {
            (points_stored(n, &gall) == 359).then_some(())
        });
    }
    // The same answers everywhere, equal to the lone node's; the folds
    // among them computed on each member.
    let folds_before = cluster.nodes[0].metric("graunt_cluster_folds_total{outcome=\"folded\"}");
    for q in [
        format!("/render?target=sumSeries(c.*)&{range}"),
        format!("/render?target=averageSeries(c.*)&{range}"),
        format!("/render?target=minSeries(c.*)&{range}"),
        format!("/render?target=maxSeries(c.*)&{range}"),
        format!("/render?target=sum(c.m1*,c.m2*)&{range}"),
        format!("/render?target=avg(c.m1)&{range}"),
        format!("/render?target=sumSeries(c.m1*,c.*)&{range}"),
        format!("/render?target=sumSeries(c.*)&{range}&xFilesFactor=0.9"),
        format!("/render?target=sumSeries(nothing.*)&{range}"),
        format!("/render?target=sumSeries(f.*)&{range}"),
        format!("/render?target=averageSeries(f.*)&{range}"),
        format!("/render?target=maxSeries(f.*)&{range}"),
        format!("/render?target=minSeries(f.*,c.*)&{range}"),
        format!("/render?target=movingAverage(averageSeries(c.*),3)&{range}"),
        format!("/render?target=highestMax(c.*,3)&{range}"),
        format!("/render?target=c.m7&{range}"),
        format!("/render?target=countSeries(c.*)&{range}"),
        format!("/render?target=countSeries(f.*,c.m1*)&{range}"),
        format!("/render?target=groupByNode(g.*.*,2,'sum')&{range}"),
        format!("/render?target=groupByNode(g.*.*,2)&{range}"),
        format!("/render?target=groupByNode(g.*.*,1,'maxSeries')&{range}"),
        format!("/render?target=groupByNode(g.*.*,-1,'countSeries')&{range}"),
        format!("/render?target=groupByNode(g.*.*,2,'min')&{range}&xFilesFactor=1"),
        format!("/render?target=groupByNode(g.*.*,'name','avg')&{range}"),
        format!("/render?target=groupByNodes(g.*.*,'total',2)&{range}"),
        format!("/render?target=groupByNodes(g.*.*,'average',0,2)&{range}"),
        format!("/render?target=groupByNodes(g.*.*,'sum')&{range}"),
        format!("/render?target=groupByNode(g.*.*,2,'median')&{range}"),
        format!("/render?target=aliasByNode(groupByNode(g.*.*,2,'sum'),0)&{range}"),
        format!("/render?target=groupByNode(f.*,0,'sum')&{range}"),
        format!("/render?target=groupByNode(f.*,0,'max')&{range}"),
        format!("/render?target=groupByNode(nothing.*.*,1,'sum')&{range}"),
        format!("/render?target=sumSeriesWithWildcards(g.*.*,1)&{range}"),
        format!("/render?target=averageSeriesWithWildcards(g.*.*,0,2)&{range}"),
        format!("/render?target=aggregateWithWildcards(g.*.*,'maxSeries',1)&{range}"),
        format!("/render?target=aggregateWithWildcards(g.*.*,'avg',1)&{range}"),
        format!("/render?target=aggregateWithWildcards(g.*.*,'total',-1,1)&{range}"),
        format!("/render?target=aggregateWithWildcards(g.*.*,'median',1)&{range}"),
        format!("/render?target=sumSeriesWithWildcards(f.*,1)&{range}"),
        format!("/render?target=aggregate(c.*,'sum')&{range}"),
        format!("/render?target=aggregate(c.*,'avg',0.5)&{range}"),
        format!("/render?target=aggregate(c.m1*,'max',1)&{range}"),
        format!("/render?target=aggregate(f.*,'total')&{range}"),
        format!("/render?target=aggregate(g.*.*,'minSeries',0.9)&{range}"),
    ] {
        let want = render(&lone, &q);
        for n in &cluster.nodes {
            assert_eq!(render(n, &q), want, "{q} on {}", n.addr("http"));
        }
    }
    let folded = cluster.nodes[0].metric("graunt_cluster_folds_total{outcome=\"folded\"}");
    let as_series = cluster.nodes[0].metric("graunt_cluster_folds_total{outcome=\"series\"}");
    let by_parts = cluster.nodes[0].metric("graunt_cluster_folds_total{outcome=\"parts\"}");
    // Integral sums, averages, every min and max, counts, groupByNode's
    // groups; the sums of fractions by parts of the range; the groups with
    // a hole as series.
    assert!(folded - folds_before >= 40.0, "{folded} folded");
    assert!(by_parts >= 5.0, "{by_parts} folded by parts");
    assert!(as_series >= 2.0, "{as_series} sent as series");
    // A glob, an exact metric and an exact branch (found on any node).
    for find in [
        "/metrics/find?query=c.*&format=completer",
        "/metrics/find?query=c.m7",
        "/metrics/find?query=c",
    ] {
        let want: Value = serde_json::from_str(&lone.http_get(find)).unwrap();
        assert_ne!(want, Value::Array(vec![]), "{find}");
        for n in &cluster.nodes {
            let got: Value = serde_json::from_str(&n.http_get(find)).unwrap();
            assert_eq!(got, want, "{find}");
        }
    }

    // Every node's index lists every metric of the cluster, files and cache.
    for n in &cluster.nodes {
        let index: Vec<String> = serde_json::from_str(&n.http_get("/metrics/index.json")).unwrap();
        assert_eq!(index.iter().filter(|m| m.starts_with("c.m")).count(), 200);
    }

    // A schema change set through any member reaches every member, and new
    // files follow it.
    let new_schemas = dir.path().join("new-schemas.conf");
    std::fs::write(&new_schemas, "[after]\npattern = ^after\\.\nretentions = 10s:1h\n\n[all]\npattern = .*\nretentions = 60s:1d\n").unwrap();
    let secret = cluster.secret_file.to_str().unwrap().to_string();
    // Without the secret the change is refused.
    let refused = Command::new(BIN)
        .args(["cluster", "schemas", "set", "--node", &http[2], "--schemas"])
        .arg(&new_schemas)
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("401"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    self::cluster(&[
        "schemas",
        "set",
        "--secret-file",
        &secret,
        "--node",
        &http[2],
        "--schemas",
        new_schemas.to_str().unwrap(),
    ]);
    for h in &http {
        wait_for(Duration::from_secs(10), "the schemas on every node", || {
            self::cluster(&["schemas", "get", "--secret-file", &secret, "--node", h])
                .contains("^after")
                .then_some(())
        });
    }
    let t1 = (unix_now() - 120) / 10 * 10;
    send(relay.addr("t-line"), &lines("after", 50, 3, t1, 10));
    let after = format!(
        "/render?target=after.m1&from={}&until={}&format=json",
        t1 - 30,
        t1 + 60
    );
    let got = wait_for(Duration::from_secs(30), "after.m1 stored", || {
        let got = render(&cluster.nodes[0], &after);
        let n = got[0]["datapoints"]
            .as_array()?
            .iter()
            .filter(|p| !p[0].is_null())
            .count();
        (n == 3).then_some(got)
    });
    let pts = got[0]["datapoints"].as_array().unwrap();
    assert_eq!(
        pts[1][1].as_i64().unwrap() - pts[0][1].as_i64().unwrap(),
        10,
        "{got}"
    );

    // Without the secret, or with another, the cluster's API, raft RPC and
    // peer reads answer 401 and count it, and a node cannot join.
    let before = cluster.nodes[0].metric("graunt_cluster_unauthorized_total");
    let n0 = &cluster.nodes[0];
    for (method, path) in [
        ("GET", "/cluster/status"),
        ("GET", "/cluster/state"),
        ("POST", "/cluster/raft/vote"),
        ("POST", "/cluster/raft/append"),
        ("POST", "/cluster/join"),
        ("POST", "/cluster/write"),
        ("PUT", "/cluster/schemas"),
        ("POST", "/cluster/fetch"),
        ("GET", "/cluster/find?query=*"),
    ] {
        let (code, _, body) = n0.http_raw(
            method,
            path,
            Some(b"{}"),
            &[("Content-Type", "application/json")],
        );
        assert_eq!(
            code,
            401,
            "{method} {path}: {}",
            String::from_utf8_lossy(&body)
        );
        let forged = [("Authorization", "Graunt-HMAC-SHA256 1:00")];
        assert_eq!(n0.http_raw(method, path, Some(b"{}"), &forged).0, 401);
    }
    assert_eq!(
        n0.metric("graunt_cluster_unauthorized_total") - before,
        18.0
    );
    let wrong = dir.path().join("wrong.secret");
    std::fs::write(&wrong, "not this cluster's secret at all").unwrap();
    let intruders: Vec<Node> = [(8, None), (9, Some(&wrong))]
        .into_iter()
        .map(|(id, secret): (u64, Option<&std::path::PathBuf>)| {
            let id = id.to_string();
            let mut args = vec!["--node-id", &id, "--cluster-join", &http[0]];
            let w = secret.map(|p| p.display().to_string());
            if let Some(w) = &w {
                args.extend(["--cluster-secret-file", w]);
            }
            Node::start(&dir.path().join(format!("intruder{id}")), &args)
        })
        .collect();
    // Both have asked to join (and been refused) before membership is read.
    let asked = n0.metric("graunt_cluster_unauthorized_total");
    wait_for(
        Duration::from_secs(10),
        "the intruders to ask to join",
        || (n0.metric("graunt_cluster_unauthorized_total") >= asked + 2.0).then_some(()),
    );
    let st = cluster.status(&cluster.nodes[0]).unwrap();
    assert_eq!(st["members"].as_array().unwrap().len(), 3, "{st}");
    for i in intruders {
        i.stop(Duration::from_secs(20));
    }

    // A fourth member joins by itself; the relay routes to it without a
    // restart.
    let mut args = vec!["--node-id", "4", "--peer-timeout", "1", "--schemas", s];
    args.extend(["--cluster-join", &http[1]]);
    args.extend(["--cluster-secret-file", &secret]);
    cluster
        .nodes
        .push(Node::start(&dir.path().join("n4"), &args));
    cluster.wait_for_members(4);
    let n4 = &cluster.nodes[3];
    wait_for(Duration::from_secs(30), "points at the new node", || {
        send(relay.addr("t-line"), &lines("late", 100, 1, t0, 60));
        (n4.metric("graunt_points_received_total") > 0.0).then_some(())
    });
    relay.stop();
    lone.stop(Duration::from_secs(20));
    cluster.stop();
}

#[test]
fn the_leader_killed_is_replaced_and_reads_and_writes_go_on() {
    let dir = temp_dir();
    let schemas = dir.path().join("schemas.conf");
    std::fs::write(&schemas, "[all]\npattern = .*\nretentions = 60s:1d\n").unwrap();
    let s = schemas.to_str().unwrap();
    let nodes: Vec<Node> = (1..=3)
        .map(|id| member(dir.path(), id, &["--schemas", s]))
        .collect();
    let http: Vec<String> = nodes.iter().map(|n| n.addr("http").to_string()).collect();
    cluster(&["init", "--node", &http[0]]);
    cluster(&["join", "--node", &http[1], "--via", &http[0]]);
    cluster(&["join", "--node", &http[2], "--via", &http[1]]);
    // `join` returns once the leader has the member; the new node's own
    // copy of the state follows a moment later.
    let st = wait_for(Duration::from_secs(10), "3 members seen by node 3", || {
        let st = status(&nodes[2]);
        let members = st["members"].as_array()?;
        (members.len() == 3
            && members
                .iter()
                .all(|m| m["health"] == "up" && m["voter"] == true))
        .then_some(st)
    });
    let first_leader = st["leader"].as_u64().unwrap();

    let config = dir.path().join("relay.toml");
    std::fs::write(
        &config,
        format!(
            "cluster = [\"{}\", \"{}\"]\ncluster_poll_interval = 0.2\nself_metrics_interval = 3600\n\
             [[tenant]]\nname = \"t\"\nlistener = [{{ protocol = \"line\", addr = \"127.0.0.1:0\" }}]\n",
            http[0], http[1]
        ),
    )
    .unwrap();
    let relay = Relay::spawn(BIN.as_ref(), &config);
    let t0 = (unix_now() - 3600) / 60 * 60;
    send(relay.addr("t-line"), &lines("c", 200, 10, t0, 60));
    let range = format!("from={}&until={}&format=json", t0 - 60, t0 + 600);
    let all = format!("/render?target=c.*&{range}");
    for n in &nodes {
        wait_for(
            Duration::from_secs(30),
            "every point on every node's view",
            || (points_stored(n, &all) == 2000).then_some(()),
        );
    }

    // The leader killed: another is elected within seconds; writes go on.
    let mut nodes: Vec<Option<Node>> = nodes.into_iter().map(Some).collect();
    let killed_at = Instant::now();
    nodes[first_leader as usize - 1].take().unwrap().kill9();
    let alive: Vec<&Node> = nodes.iter().flatten().collect();
    wait_for(Duration::from_secs(15), "a new leader", || {
        let st = status(alive[0]);
        st["leader"].as_u64().filter(|l| *l != first_leader)
    });
    let election = killed_at.elapsed();
    assert!(election < Duration::from_secs(10), "{election:?}");
    // Reads stay complete without the dead leader (its copies are on the
    // survivors: RF 2 over 3 nodes), and writes through the relay land.
    let t1 = (unix_now() - 120) / 60 * 60;
    send(relay.addr("t-line"), &lines("after", 50, 1, t1, 60));
    for n in &alive {
        wait_for(
            Duration::from_secs(30),
            "reads and writes without the dead node",
            || {
                let after = format!(
                    "/render?target=after.*&from={}&until={}&format=json",
                    t1 - 60,
                    t1 + 60
                );
                (points_stored(n, &all) == 2000 && points_stored(n, &after) == 50).then_some(())
            },
        );
    }
    relay.stop();
    for n in nodes.into_iter().flatten() {
        n.stop(Duration::from_secs(20));
    }
}

/// One node killed while four clients query as fast as they can: every
/// query answers, complete (replication 2), none past the peer timeout.
#[test]
fn a_node_killed_during_a_query_storm_leaves_every_answer_complete() {
    let dir = temp_dir();
    let nodes: Vec<Node> = (1..=3).map(|id| member(dir.path(), id, &[])).collect();
    let http: Vec<String> = nodes.iter().map(|n| n.addr("http").to_string()).collect();
    cluster(&["init", "--node", &http[0]]);
    cluster(&["join", "--node", &http[1], "--via", &http[0]]);
    cluster(&["join", "--node", &http[2], "--via", &http[0]]);
    let config = dir.path().join("relay.toml");
    std::fs::write(
        &config,
        format!(
            "cluster = [\"{}\"]\nself_metrics_interval = 3600\n\
             [[tenant]]\nname = \"t\"\nlistener = [{{ protocol = \"line\", addr = \"127.0.0.1:0\" }}]\n",
            http[0]
        ),
    )
    .unwrap();
    let relay = Relay::spawn(BIN.as_ref(), &config);
    let t0 = (unix_now() - 3600) / 10 * 10;
    send(relay.addr("t-line"), &lines("q", 100, 1, t0, 10));
    let query = format!(
        "/render?target=q.*&from={}&until={}&format=json",
        t0 - 10,
        t0 + 10
    );
    wait_for(Duration::from_secs(30), "the data", || {
        (points_stored(&nodes[0], &query) == 100).then_some(())
    });
    let mut nodes: Vec<Option<Node>> = nodes.into_iter().map(Some).collect();
    let asked: Vec<std::net::SocketAddr> = nodes[..2]
        .iter()
        .flatten()
        .map(|n| n.addr("http"))
        .collect();
    let stop = Instant::now() + Duration::from_secs(6);
    let storm: Vec<_> = (0..4)
        .map(|k| {
            let (addr, query) = (asked[k % 2], query.clone());
            std::thread::spawn(move || {
                let mut worst = Duration::ZERO;
                let mut answered = 0;
                while Instant::now() < stop {
                    let started = Instant::now();
                    let mut s = TcpStream::connect(addr).unwrap();
                    write!(s, "GET {query} HTTP/1.0\r\n\r\n").unwrap();
                    let mut out = String::new();
                    std::io::Read::read_to_string(&mut s, &mut out).unwrap();
                    worst = worst.max(started.elapsed());
                    let body = out.split("\r\n\r\n").nth(1).unwrap_or("");
                    let series: Value = serde_json::from_str(body).unwrap_or(Value::Null);
                    let n = series.as_array().map_or(0, |a| {
                        a.iter()
                            .filter(|s| {
                                s["datapoints"]
                                    .as_array()
                                    .is_some_and(|p| p.iter().any(|p| !p[0].is_null()))
                            })
                            .count()
                    });
                    assert_eq!(n, 100, "an incomplete answer: {out:.300}");
                    answered += 1;
                }
                (answered, worst)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    nodes[2].take().unwrap().kill9();
    for h in storm {
        let (answered, worst) = h.join().unwrap();
        assert!(answered > 5, "{answered} answers");
        assert!(
            worst < Duration::from_millis(2500),
            "a query took {worst:?} (peer timeout 1 s)"
        );
    }
    relay.stop();
    for n in nodes.into_iter().flatten() {
        n.stop(Duration::from_secs(20));
    }
}

/// Series still only in the caches (file creation held back to one a
/// minute) are in `/metrics/index.json` and `find`, from every member of
/// the cluster.
#[test]
fn index_json_lists_cache_only_series_across_the_cluster() {
    let dir = temp_dir();
    let config = dir.path().join("slow-creates.toml");
    std::fs::write(&config, "max_creates_per_minute = 1\n").unwrap();
    let cluster = TestCluster::start(dir.path(), 3, &["--config", config.to_str().unwrap()]);
    let now = unix_now();
    let mut want = std::collections::BTreeSet::new();
    for (k, node) in cluster.nodes.iter().enumerate() {
        let mut text = String::new();
        for i in 0..40 {
            let name = format!("idx.n{k}.deep.m{i}");
            text.push_str(&format!("{name} {i} {now}\n"));
            want.insert(name);
        }
        send(node.addr("line"), &text);
    }
    for node in &cluster.nodes {
        let got: std::collections::BTreeSet<String> = wait_for(
            Duration::from_secs(20),
            "every cached series in index.json",
            || {
                let (code, body) = node.http_request("/metrics/index.json");
                let names: Vec<String> = serde_json::from_str(&body).ok()?;
                let names: std::collections::BTreeSet<String> = names
                    .into_iter()
                    .filter(|n| n.starts_with("idx."))
                    .collect();
                (code == 200 && names.len() >= want.len()).then_some(names)
            },
        );
        assert_eq!(got, want);
        let found = node.http_get("/metrics/find?query=idx.*.deep.*&format=completer");
        assert_eq!(
            found.matches("\"is_leaf\": \"1\"").count()
                + found.matches("\"is_leaf\":\"1\"").count(),
            120,
            "{found}"
        );
    }
    // Most are still only in the caches.
    let files: usize = cluster
        .nodes
        .iter()
        .map(|n| graunt_cluster::rebalance::local_series(&n.data_dir.join("whisper")).len())
        .sum();
    assert!(
        files < 20,
        "{files} files were created: the test needs cache-only series"
    );
    cluster.stop();
}

/// A relay that follows the cluster keeps its `[[rule]]`s: one pins names
/// to a member named as the cluster lists it (`host:port:id`), one sends
/// names to a destination outside the cluster (a legacy node), one names
/// no member (its names follow the ring rather than vanish), and the rest
/// follow the ring at replication 2.
#[test]
fn a_relay_following_the_cluster_keeps_its_rules() {
    let dir = temp_dir();
    let schemas = dir.path().join("schemas.conf");
    std::fs::write(&schemas, "[all]\npattern = .*\nretentions = 60s:1d\n").unwrap();
    let s = schemas.to_str().unwrap();
    let cluster = TestCluster::start(dir.path(), 3, &["--schemas", s]);
    let legacy = Node::start(&dir.path().join("legacy"), &["--schemas", s]);
    let http = cluster.http();
    let pinned_to = format!("{}:2", cluster.nodes[1].addr("pickle"));
    let outside = format!("{}:legacy", legacy.addr("pickle"));
    let config = dir.path().join("relay.toml");
    std::fs::write(
        &config,
        format!(
            "cluster = [\"{}\"]\ncluster_poll_interval = 0.2\nself_metrics_interval = 3600\n\
             cluster_secret_file = \"{}\"\ndestinations = [\"{outside}\"]\n\
             [[rule]]\npattern = \"^pinned\\\\.\"\ndestinations = [\"{pinned_to}\"]\n\
             [[rule]]\npattern = \"^legacy\\\\.\"\ndestinations = [\"{outside}\"]\n\
             [[rule]]\npattern = \"^gone\\\\.\"\ndestinations = [\"127.0.0.1:1:9\"]\n\
             [[tenant]]\nname = \"t\"\nlistener = [{{ protocol = \"line\", addr = \"127.0.0.1:0\" }}]\n",
            http[0],
            cluster.secret_file.display()
        ),
    )
    .unwrap();
    let relay = Relay::start(&config);
    let t0 = (unix_now() - 3600) / 60 * 60;
    let mut data = String::new();
    for prefix in ["pinned", "legacy", "ring", "gone"] {
        data.push_str(&lines(prefix, 20, 5, t0, 60));
    }
    send(relay.addr("t-line"), &data);
    let range = format!("from={}&until={}&format=json&local=1", t0 - 60, t0 + 600);
    let local =
        |n: &Node, prefix: &str| points_stored(n, &format!("/render?target={prefix}.*&{range}"));
    let copies =
        |prefix: &str| -> Vec<usize> { cluster.nodes.iter().map(|n| local(n, prefix)).collect() };
    wait_for(
        Duration::from_secs(30),
        "every point where its rule sends it",
        || {
            (copies("pinned") == [0, 100, 0]
                && local(&legacy, "legacy") == 100
                && copies("ring").iter().sum::<usize>() == 200
                && copies("gone").iter().sum::<usize>() == 200)
                .then_some(())
        },
    );
    assert_eq!(copies("legacy"), [0, 0, 0], "legacy names stay outside");
    assert_eq!(local(&legacy, "ring"), 0);
    relay.stop();
    legacy.stop(Duration::from_secs(20));
    cluster.stop();
}

/// Sums of fractions are folded by parts of the range, one per member
/// (`cluster/src/slots.rs`). Here one copy of each series lacks slots
/// inside the middle part (in it, at its first slot, at its last, all of
/// it) that the other copy has: whichever member reads which copy, the
/// answer must be the lone node's, which holds every point.
#[test]
fn sums_of_fractions_by_parts_see_past_a_replica_that_lacks_slots() {
    use graunt_cluster::hashing::{Destination, Method, Ring};
    use graunt_storage::whisper::{self, CreateOptions, Retention, WhisperFile};
    let dir = temp_dir();
    let now: i64 = 1_700_006_400;
    let from = now - 86_400;
    // The parts the asker makes of `from=-1d`: cuts at a third and two.
    let (second, third) = (from + 28_800, from + 57_600);
    let members: Vec<Destination> = (1..=3)
        .map(|id| Destination::parse(&format!("127.0.0.1:2004:{id}")).unwrap())
        .collect();
    let ring = Ring::new(Method::CarbonCh, members, 2, false).unwrap();
    let retention = [Retention {
        seconds_per_point: 60,
        points: 1440,
    }];
    let write = |path: &std::path::Path, points: &[(i64, f64)]| {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        whisper::create(path, &retention, &CreateOptions::default()).unwrap();
        WhisperFile::open_rw(path)
            .unwrap()
            .update_many(points, now)
            .unwrap();
    };
    for i in 0..40i64 {
        let name = format!("p.m{i:02}");
        let all: Vec<(i64, f64)> = (1..1440)
            .map(|k| {
                (
                    from + 60 * k,
                    0.1 * ((i * 7 + k) % 97) as f64 + 1e-3 * i as f64,
                )
            })
            .collect();
        let lacks = |t: i64| match i % 4 {
            0 => (second + 3_000..second + 3_300).contains(&t),
            1 => (second..second + 180).contains(&t),
            2 => (third - 180..third).contains(&t),
            _ => (second..third).contains(&t),
        };
        let lacking: Vec<(i64, f64)> = all.iter().copied().filter(|p| !lacks(p.0)).collect();
        let rel = format!("p/m{i:02}.wsp");
        write(&dir.path().join("lone/whisper").join(&rel), &all);
        let owners = ring.route(&name);
        for (k, owner) in owners.iter().enumerate() {
            let copy = if k == (i as usize / 4) % 2 {
                &lacking
            } else {
                &all
            };
            write(
                &dir.path()
                    .join(format!("n{}/whisper", owner + 1))
                    .join(&rel),
                copy,
            );
        }
    }
    let lone = Node::start(&dir.path().join("lone"), &[]);
    let cluster = TestCluster::start(dir.path(), 3, &["--peer-timeout", "20"]);
    // Until a member has the whole ring and its peers' names, it reads
    // every holder as during a rebalance (no folds): wait for a fold.
    let parts = |n: &Node| n.metric("graunt_cluster_folds_total{outcome=\"parts\"}");
    let first = format!("/render?target=sumSeries(p.*)&from=-1d&now={now}&format=json");
    for n in &cluster.nodes {
        wait_for(Duration::from_secs(20), "a first fold by parts", || {
            let before = parts(n);
            render(n, &first);
            (parts(n) > before).then_some(())
        });
    }
    for q in [
        "sumSeries(p.*)",
        "averageSeries(p.*)",
        "sumSeries(p.m0*)",
        "groupByNode(p.*,0,'sum')",
        "sumSeriesWithWildcards(p.*,1)",
        "aggregate(p.*,'avg',0.99)",
    ] {
        let q = format!("/render?target={q}&from=-1d&now={now}&format=json");
        let want = render(&lone, &q);
        for n in &cluster.nodes {
            assert_eq!(render(n, &q), want, "{q} on {}", n.addr("http"));
        }
    }
    let by_parts: f64 = cluster.nodes.iter().map(parts).sum();
    assert!(by_parts >= 21.0, "{by_parts} folded by parts");
}

//! Cluster growth: series move to their new owners when members join and
//! leave (every series on exactly its ring owners, with every point, reads
//! complete throughout), and replicas fill each other's gaps on `repair`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use graunt_cluster::ClusterState;
use graunt_harness::cluster::TestCluster;
use graunt_harness::node::{wait_for, Node};
use graunt_harness::relay::Relay;
use graunt_harness::{temp_dir, unix_now};

/// Series written in the growth test.
const SERIES: usize = 20_000;

fn schemas(dir: &Path) -> String {
    let path = dir.join("schemas.conf");
    std::fs::write(&path, "[all]\npattern = .*\nretentions = 10s:1h,1m:1d\n").unwrap();
    path.display().to_string()
}

fn graunt(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_graunt"))
        .args(args)
        .output()
        .expect("run graunt");
    assert!(
        out.status.success(),
        "graunt {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The cluster's state as a member sees it.
fn state(cluster: &TestCluster, node: &Node) -> ClusterState {
    let (code, body) = cluster.get(node, "/cluster/state");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// Every member's rebalance status by id.
fn statuses(cluster: &TestCluster, node: &Node) -> BTreeMap<u64, serde_json::Value> {
    let (code, body) = cluster.get(node, "/cluster/rebalance");
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| Some((n["node"].as_u64()?, n.clone())))
        .collect()
}

/// Whether every member in `ids` is idle, balanced and (if it was in
/// `before`) has finished a rebalance since.
fn rebalanced(
    now: &BTreeMap<u64, serde_json::Value>,
    before: &BTreeMap<u64, u64>,
    ids: &[u64],
) -> bool {
    ids.iter().all(|id| {
        now.get(id).is_some_and(|s| {
            s["job"] == "idle"
                && s["balanced"] == true
                && s["pending_series"] == 0
                && before
                    .get(id)
                    .is_none_or(|b| s["rebalances_done"].as_u64().unwrap_or(0) > *b)
        })
    })
}

fn done_counts(cluster: &TestCluster, node: &Node) -> BTreeMap<u64, u64> {
    statuses(cluster, node)
        .into_iter()
        .filter_map(|(id, s)| Some((id, s["rebalances_done"].as_u64()?)))
        .collect()
}

/// The series each member holds (files and cache), by member id.
fn holdings(
    cluster: &TestCluster,
    members: &[&Node],
    ids: &[u64],
) -> BTreeMap<u64, BTreeSet<String>> {
    members
        .iter()
        .zip(ids)
        .map(|(n, id)| {
            let (code, body) = cluster.get(n, "/cluster/find?query=grow.*");
            assert_eq!(code, 200, "{body}");
            let list: Vec<(String, bool)> = serde_json::from_str(&body).unwrap();
            (*id, list.into_iter().map(|(p, _)| p).collect())
        })
        .collect()
}

/// Every series on exactly its owners under the cluster's current ring.
fn check_placement(cluster: &TestCluster, members: &[&Node], ids: &[u64]) {
    let st = state(cluster, members[0]);
    let (ring, ring_members) = graunt_cluster::ring::of_members(&st).expect("a ring");
    let held = holdings(cluster, members, ids);
    let mut wrong = Vec::new();
    for i in 0..SERIES {
        let name = format!("grow.s{i}");
        let owners: BTreeSet<u64> = ring
            .route(&name)
            .into_iter()
            .map(|j| ring_members[j].id)
            .collect();
        let holders: BTreeSet<u64> = held
            .iter()
            .filter(|(_, names)| names.contains(&name))
            .map(|(id, _)| *id)
            .collect();
        if holders != owners {
            wrong.push(format!("{name}: owners {owners:?}, held by {holders:?}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {SERIES} series misplaced, e.g. {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
}

/// What a member's own copies of `names` hold (its files and cache, no
/// peers), by timestamp.
fn own_values(
    cluster: &TestCluster,
    node: &Node,
    names: &[String],
    from: i64,
    until: i64,
) -> BTreeMap<String, BTreeMap<i64, Option<f64>>> {
    let mut out = BTreeMap::new();
    for chunk in names.chunks(500) {
        let body =
            serde_json::json!({ "paths": chunk, "from": from, "until": until, "now": until });
        let auth = cluster_sign(cluster, "POST", "/cluster/fetch", &body);
        let (code, _, bytes) = node.http_raw(
            "POST",
            "/cluster/fetch",
            Some(body.to_string().as_bytes()),
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
        );
        assert_eq!(code, 200);
        for s in graunt_cluster::source::decode(&bytes).expect("series") {
            let values = (s.start..s.end)
                .step_by(s.step as usize)
                .zip(s.values.iter().copied())
                .collect();
            out.insert(s.name.clone(), values);
        }
    }
    out
}

fn cluster_sign(
    cluster: &TestCluster,
    method: &str,
    path: &str,
    body: &serde_json::Value,
) -> String {
    let secret = graunt_cluster::secret::ClusterSecret::read(&cluster.secret_file).unwrap();
    secret.sign(method, path, body.to_string().as_bytes())
}

/// What was sent: per series, timestamp → value.
type Sent = Arc<Mutex<BTreeMap<usize, BTreeMap<i64, f64>>>>;

fn send_lines(addr: std::net::SocketAddr, lines: &str) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(lines.as_bytes()).unwrap();
}

#[test]
fn series_follow_their_owners_as_members_join_and_leave() {
    let dir = temp_dir();
    let schemas = schemas(dir.path());
    let cluster = TestCluster::start(dir.path(), 3, &["--schemas", &schemas]);
    let relay_config = dir.path().join("relay.toml");
    let nodes: Vec<String> = cluster.http().iter().map(|h| format!("\"{h}\"")).collect();
    std::fs::write(
        &relay_config,
        format!(
            "cluster = [{}]\ncluster_secret_file = {:?}\ncluster_poll_interval = 0.1\n\
             [[tenant]]\nname = \"t\"\n[[tenant.listener]]\nprotocol = \"line\"\naddr = \"127.0.0.1:0\"\n",
            nodes.join(", "),
            cluster.secret_file
        ),
    )
    .unwrap();
    let relay = Relay::start(&relay_config);
    let line = relay.addr("t-line");

    // History: every series gets six points a minute apart-ish (10 s slots).
    let now = unix_now();
    let t0 = now - now % 10 - 300;
    let sent: Sent = Arc::new(Mutex::new(BTreeMap::new()));
    {
        let mut lines = String::with_capacity(SERIES * 6 * 24);
        let mut sent = sent.lock().unwrap();
        for i in 0..SERIES {
            for k in 0..6 {
                let ts = t0 + 10 * k;
                let v = (i * 10 + k as usize) as f64;
                lines.push_str(&format!("grow.s{i} {v} {ts}\n"));
                sent.entry(i).or_default().insert(ts, v);
            }
        }
        send_lines(line, &lines);
    }
    let total_of = |sent: &Sent| -> f64 {
        sent.lock()
            .unwrap()
            .values()
            .flat_map(|m| m.get(&t0).copied())
            .sum()
    };
    let want_t0 = total_of(&sent);
    let first = &cluster.nodes[0];
    let sum_at_t0 = |node: &Node| -> Option<f64> {
        let (code, body) = node.http_request(&format!(
            "/render?target=sumSeries(grow.*)&format=json&from={}&until={}",
            t0 - 1,
            t0 + 9
        ));
        if code != 200 {
            return None;
        }
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        v[0]["datapoints"][0][0].as_f64()
    };
    wait_for(
        Duration::from_secs(120),
        "the history in the cluster",
        || (sum_at_t0(first) == Some(want_t0)).then_some(()),
    );

    // Steady load: 500 of the series get a point every 10 s slot after the history.
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (stop, sent) = (stop.clone(), sent.clone());
        std::thread::spawn(move || {
            let mut ts = t0 + 60;
            while !stop.load(Ordering::Relaxed) && ts < t0 + 290 {
                let mut lines = String::new();
                {
                    let mut sent = sent.lock().unwrap();
                    for i in (0..SERIES).step_by(SERIES / 500) {
                        let v = (i + ts as usize % 1000) as f64;
                        lines.push_str(&format!("grow.s{i} {v} {ts}\n"));
                        sent.entry(i).or_default().insert(ts, v);
                    }
                }
                send_lines(line, &lines);
                ts += 10;
                std::thread::sleep(Duration::from_millis(300));
            }
        })
    };

    // Reads are checked while members join: the history's total never changes.
    let member_flags = cluster.member_flags();
    let mut extra_nodes: Vec<Node> = Vec::new();
    let mut ids: Vec<u64> = vec![1, 2, 3];
    for id in [4u64, 5] {
        let before = done_counts(&cluster, first);
        let mut args: Vec<String> = vec![
            "--node-id".into(),
            id.to_string(),
            "--peer-timeout".into(),
            "1".into(),
            "--cluster-join".into(),
            first.addr("http").to_string(),
            "--schemas".into(),
            schemas.clone(),
        ];
        args.extend(member_flags.iter().cloned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        extra_nodes.push(Node::start(&dir.path().join(format!("n{id}")), &args));
        ids.push(id);
        // While the moves run, every answer is complete.
        let started = Instant::now();
        let mut checks = 0;
        loop {
            let done = rebalanced(&statuses(&cluster, first), &before, &ids);
            let asked = &cluster.nodes[checks % 3];
            let got = sum_at_t0(asked);
            assert_eq!(
                got,
                Some(want_t0),
                "a read from node {} while node {id} joins; {}",
                checks % 3 + 1,
                asked.metric("graunt_cluster_partial_reads_total")
            );
            checks += 1;
            if done {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(240),
                "node {id}'s rebalance did not finish: {:?}",
                statuses(&cluster, first)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        eprintln!(
            "node {id} joined: rebalanced in {:?}, {checks} reads checked meanwhile",
            started.elapsed()
        );
    }
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();

    let all: Vec<&Node> = cluster.nodes.iter().chain(extra_nodes.iter()).collect();
    // Caches drain into files (and the last load points settle).
    wait_for(Duration::from_secs(60), "caches to drain", || {
        all.iter()
            .all(|n| n.metric("graunt_cache_points") == 0.0)
            .then_some(())
    });
    check_placement(&cluster, &all, &ids);
    check_points(&cluster, &all, &ids, &sent, t0);

    // Node 2 leaves: it drains first, then the same holds over the other four.
    let before = done_counts(&cluster, first);
    graunt(&[
        "cluster",
        "leave",
        "--node",
        &first.addr("http").to_string(),
        "--id",
        "2",
        "--secret-file",
        cluster.secret_file.to_str().unwrap(),
    ]);
    let remaining: Vec<&Node> = all
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 1)
        .map(|(_, n)| *n)
        .collect();
    let remaining_ids: Vec<u64> = ids.iter().copied().filter(|&i| i != 2).collect();
    // Its removal changes the members once more: a last, empty pass.
    wait_for(
        Duration::from_secs(60),
        "the members after the leave",
        || rebalanced(&statuses(&cluster, first), &before, &remaining_ids).then_some(()),
    );
    assert_eq!(state(&cluster, first).members.len(), 4);
    assert_eq!(sum_at_t0(first), Some(want_t0));
    check_placement(&cluster, &remaining, &remaining_ids);
    check_points(&cluster, &remaining, &remaining_ids, &sent, t0);
    let left_behind = holdings(&cluster, &[all[1]], &[2]);
    assert!(
        left_behind[&2].is_empty(),
        "node 2 kept {} series",
        left_behind[&2].len()
    );

    relay.stop();
    for n in extra_nodes {
        n.stop(Duration::from_secs(30));
    }
    cluster.stop();
}

/// Every owner's own copy holds every point sent.
fn check_points(cluster: &TestCluster, members: &[&Node], ids: &[u64], sent: &Sent, t0: i64) {
    let st = state(cluster, members[0]);
    let (ring, ring_members) = graunt_cluster::ring::of_members(&st).expect("a ring");
    let sent = sent.lock().unwrap();
    let mut by_owner: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for i in sent.keys() {
        let name = format!("grow.s{i}");
        for j in ring.route(&name) {
            by_owner
                .entry(ring_members[j].id)
                .or_default()
                .push(name.clone());
        }
    }
    let (from, until) = (t0 - 10, t0 + 300);
    let mut missing = Vec::new();
    for (node, id) in members.iter().zip(ids) {
        let names = by_owner.get(id).cloned().unwrap_or_default();
        let values = own_values(cluster, node, &names, from, until);
        for name in &names {
            let i: usize = name["grow.s".len()..].parse().unwrap();
            let got = values.get(name);
            for (ts, v) in &sent[&i] {
                let have = got.and_then(|vals| vals.get(ts).copied().flatten());
                if have != Some(*v) {
                    missing.push(format!("{name}@{ts} on node {id}: {have:?}, sent {v}"));
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "{} points missing from their owners, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
}

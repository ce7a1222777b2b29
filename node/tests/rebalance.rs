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

/// Calls `/cluster/` routes with the cluster's credential.
struct Admin(graunt_cluster::secret::ClusterSecret);

impl Admin {
    fn of(secret_file: &Path) -> Admin {
        Admin(graunt_cluster::secret::ClusterSecret::read(secret_file).unwrap())
    }

    fn sign(&self, method: &str, path: &str, body: &serde_json::Value) -> String {
        self.0.sign(method, path, body.to_string().as_bytes())
    }

    fn get(&self, node: &Node, path: &str) -> (u16, String) {
        let auth = self.0.sign("GET", path, b"");
        let (code, _, body) = node.http_raw("GET", path, None, &[("Authorization", &auth)]);
        (code, String::from_utf8_lossy(&body).into_owned())
    }
}

/// The cluster's state as a member sees it.
fn state(admin: &Admin, node: &Node) -> ClusterState {
    let (code, body) = admin.get(node, "/cluster/state");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// Every member's rebalance status by id.
fn statuses(admin: &Admin, node: &Node) -> BTreeMap<u64, serde_json::Value> {
    let (code, body) = admin.get(node, "/cluster/rebalance");
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

fn done_counts(admin: &Admin, node: &Node) -> BTreeMap<u64, u64> {
    statuses(admin, node)
        .into_iter()
        .filter_map(|(id, s)| Some((id, s["rebalances_done"].as_u64()?)))
        .collect()
}

/// The series each member holds (files and cache), by member id.
fn holdings(admin: &Admin, members: &[&Node], ids: &[u64]) -> BTreeMap<u64, BTreeSet<String>> {
    members
        .iter()
        .zip(ids)
        .map(|(n, id)| {
            let (code, body) = admin.get(n, "/cluster/find?query=grow.*");
            assert_eq!(code, 200, "{body}");
            let list: Vec<(String, bool)> = serde_json::from_str(&body).unwrap();
            (*id, list.into_iter().map(|(p, _)| p).collect())
        })
        .collect()
}

/// Every series on exactly its owners under the cluster's current ring.
fn check_placement(admin: &Admin, members: &[&Node], ids: &[u64], series: usize) {
    let st = state(admin, members[0]);
    let (ring, ring_members) = graunt_cluster::ring::of_members(&st).expect("a ring");
    let held = holdings(admin, members, ids);
    let mut wrong = Vec::new();
    for i in 0..series {
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
        "{} of {series} series misplaced, e.g. {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
}

/// What a member's own copies of `names` hold (its files and cache, no
/// peers), by timestamp.
fn own_values(
    admin: &Admin,
    node: &Node,
    names: &[String],
    from: i64,
    until: i64,
) -> BTreeMap<String, BTreeMap<i64, Option<f64>>> {
    let mut out = BTreeMap::new();
    for chunk in names.chunks(500) {
        let body =
            serde_json::json!({ "paths": chunk, "from": from, "until": until, "now": until });
        let auth = admin.sign("POST", "/cluster/fetch", &body);
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
        for s in graunt_cluster::wire::decode(&bytes).expect("series") {
            let values = (s.start..s.end)
                .step_by(s.step as usize)
                .zip(s.values.iter().copied())
                .collect();
            out.insert(s.name.clone(), values);
        }
    }
    out
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
    // Reads during the moves must be complete; under CI's load a 20,000
    // series answer can take a peer more than the harness's 1 s.
    let cluster = TestCluster::start(
        dir.path(),
        3,
        &["--schemas", &schemas, "--peer-timeout", "5"],
    );
    let admin = Admin::of(&cluster.secret_file);
    let relay = Relay::following(dir.path(), &cluster.http(), &cluster.secret_file, "");
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
        let before = done_counts(&admin, first);
        let mut args: Vec<String> = vec![
            "--node-id".into(),
            id.to_string(),
            "--peer-timeout".into(),
            "5".into(),
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
            let done = rebalanced(&statuses(&admin, first), &before, &ids);
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
                statuses(&admin, first)
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
    check_placement(&admin, &all, &ids, SERIES);
    check_points(&admin, &all, &ids, &sent, t0);

    // Node 2 leaves: it drains first, then the same holds over the other four.
    let before = done_counts(&admin, first);
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
        || rebalanced(&statuses(&admin, first), &before, &remaining_ids).then_some(()),
    );
    assert_eq!(state(&admin, first).members.len(), 4);
    assert_eq!(sum_at_t0(first), Some(want_t0));
    check_placement(&admin, &remaining, &remaining_ids, SERIES);
    check_points(&admin, &remaining, &remaining_ids, &sent, t0);
    let left_behind = holdings(&admin, &[all[1]], &[2]);
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
fn check_points(admin: &Admin, members: &[&Node], ids: &[u64], sent: &Sent, t0: i64) {
    let st = state(admin, members[0]);
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
        let values = own_values(admin, node, &names, from, until);
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

/// Writes `series` series of six points each through `relay`, returning
/// what was sent and the first timestamp.
fn write_history(relay: &Relay, series: usize) -> (Sent, i64) {
    let now = unix_now();
    let t0 = now - now % 10 - 300;
    let sent: Sent = Arc::new(Mutex::new(BTreeMap::new()));
    let mut lines = String::new();
    {
        let mut sent = sent.lock().unwrap();
        for i in 0..series {
            for k in 0..6 {
                let ts = t0 + 10 * k;
                let v = (i * 10 + k as usize) as f64;
                lines.push_str(&format!("grow.s{i} {v} {ts}\n"));
                sent.entry(i).or_default().insert(ts, v);
            }
        }
    }
    send_lines(relay.addr("t-line"), &lines);
    (sent, t0)
}

/// Waits until the nodes' caches are empty (every point in a file).
fn drained(nodes: &[&Node]) {
    wait_for(Duration::from_secs(120), "caches to drain", || {
        nodes
            .iter()
            .all(|n| n.metric("graunt_cache_points") == 0.0)
            .then_some(())
    });
}

#[test]
fn repair_brings_back_what_one_replica_lost() {
    const N: usize = 300;
    let dir = temp_dir();
    let schemas = schemas(dir.path());
    let cluster = TestCluster::start(dir.path(), 3, &["--schemas", &schemas]);
    let admin = Admin::of(&cluster.secret_file);
    let relay = Relay::following(dir.path(), &cluster.http(), &cluster.secret_file, "");
    let (sent, t0) = write_history(&relay, N);
    let nodes: Vec<&Node> = cluster.nodes.iter().collect();
    let ids = [1u64, 2, 3];
    wait_for(
        Duration::from_secs(60),
        "every series on its owners",
        || {
            let held = holdings(&admin, &nodes, &ids);
            (held.values().map(BTreeSet::len).sum::<usize>() == 2 * N).then_some(())
        },
    );
    drained(&nodes);
    check_points(&admin, &nodes, &ids, &sent, t0);

    // Node 2 loses the files of half its series, and of the others the
    // points of two slots (written over with nothing: a new empty file).
    let whisper = cluster.nodes[1].data_dir.join("whisper");
    let lost = graunt_cluster::rebalance::local_series(&whisper);
    assert!(lost.len() > 100, "node 2 holds {}", lost.len());
    for (k, name) in lost.iter().enumerate() {
        let path = whisper.join(format!("{}.wsp", name.replace('.', "/")));
        std::fs::remove_file(&path).unwrap();
        if k % 2 == 1 {
            // Recreated empty but for its last point: gaps inside a file.
            let i: usize = name["grow.s".len()..].parse().unwrap();
            let last = t0 + 50;
            let v = sent.lock().unwrap()[&i][&last];
            graunt(&[
                "whisper",
                "create",
                path.to_str().unwrap(),
                "10s:1h",
                "1m:1d",
            ]);
            graunt(&[
                "whisper",
                "update",
                path.to_str().unwrap(),
                &format!("{last}:{v}"),
            ]);
        }
    }
    let out = graunt(&[
        "cluster",
        "repair",
        "--node",
        &cluster.nodes[0].addr("http").to_string(),
        "--wait",
        "--secret-file",
        cluster.secret_file.to_str().unwrap(),
    ]);
    assert!(out.contains("done"), "{out}");
    check_placement(&admin, &nodes, &ids, N);
    check_points(&admin, &nodes, &ids, &sent, t0);
    relay.stop();
    cluster.stop();
}

#[test]
fn a_member_killed_mid_rebalance_carries_on_after_a_restart() {
    const N: usize = 3_000;
    let dir = temp_dir();
    let schemas = schemas(dir.path());
    let secret_file = dir.path().join("cluster.secret");
    std::fs::write(&secret_file, "a test cluster's secret, long enough\n").unwrap();
    let admin = Admin::of(&secret_file);
    // Slow moves, so the kill lands in the middle of one.
    let config = dir.path().join("slow.toml");
    std::fs::write(&config, "rebalance_bytes_per_second = 3000000\n").unwrap();
    let bin = Path::new(env!("CARGO_BIN_EXE_graunt"));
    let common: Vec<String> = vec![
        "--schemas".into(),
        schemas.clone(),
        "--config".into(),
        config.display().to_string(),
        "--cluster-secret-file".into(),
        secret_file.display().to_string(),
        "--peer-timeout".into(),
        "2".into(),
    ];
    let start = |id: u64, extra: &[String]| {
        let mut args = common.clone();
        args.extend(["--node-id".to_string(), id.to_string()]);
        args.extend(extra.iter().cloned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Node::serve(bin, &dir.path().join(format!("n{id}")), &args)
    };
    let mut nodes: Vec<Option<Node>> = vec![Some(start(1, &["--cluster-init".into()]))];
    let seed = nodes[0].as_ref().unwrap().addr("http").to_string();
    let join = vec!["--cluster-join".to_string(), seed.clone()];
    for id in [2, 3] {
        nodes.push(Some(start(id, &join)));
    }
    let n1 = nodes[0].as_ref().unwrap();
    wait_for(Duration::from_secs(60), "three members", || {
        let (code, body) = admin.get(n1, "/cluster/state");
        (code == 200
            && serde_json::from_str::<ClusterState>(&body)
                .ok()?
                .members
                .len()
                == 3)
            .then_some(())
    });
    let http: Vec<String> = nodes
        .iter()
        .map(|n| n.as_ref().unwrap().addr("http").to_string())
        .collect();
    let relay = Relay::following(dir.path(), &http, &secret_file, "");
    let (sent, t0) = write_history(&relay, N);
    {
        let all: Vec<&Node> = nodes.iter().flatten().collect();
        wait_for(
            Duration::from_secs(120),
            "every series on its owners",
            || {
                let held = holdings(&admin, &all, &[1, 2, 3]);
                (held.values().map(BTreeSet::len).sum::<usize>() == 2 * N).then_some(())
            },
        );
        drained(&all);
    }

    nodes.push(Some(start(4, &join)));
    let probe = nodes[0].as_ref().unwrap();
    let victim = wait_for(
        Duration::from_secs(120),
        "a member in the middle of its moves",
        || {
            statuses(&admin, probe).into_iter().find_map(|(id, s)| {
                (id <= 3
                    && s["job"] == "rebalance"
                    && s["moved_series"].as_u64() > Some(60)
                    && s["pending_series"].as_u64() > Some(20))
                .then_some(id)
            })
        },
    );
    let killed = nodes[victim as usize - 1].take().unwrap();
    let (victim_http, victim_pickle) = (killed.addr("http"), killed.addr("pickle"));
    killed.kill9();
    let again = start(
        victim,
        &[
            "--http-addr".into(),
            victim_http.to_string(),
            "--pickle-addr".into(),
            victim_pickle.to_string(),
        ],
    );
    nodes[victim as usize - 1] = Some(again);
    let all: Vec<&Node> = nodes.iter().flatten().collect();
    let ids = [1u64, 2, 3, 4];
    wait_for(Duration::from_secs(180), "the rebalance to finish", || {
        rebalanced(&statuses(&admin, all[0]), &BTreeMap::new(), &ids).then_some(())
    });
    assert!(
        all[victim as usize - 1]
            .log()
            .contains("carrying on with the rebalance"),
        "node {victim} planned again instead of carrying on:\n{}",
        all[victim as usize - 1].log()
    );
    drained(&all);
    check_placement(&admin, &all, &ids, N);
    check_points(&admin, &all, &ids, &sent, t0);
    relay.stop();
    for n in nodes.into_iter().flatten() {
        n.stop(Duration::from_secs(30));
    }
}

#[test]
fn new_schemas_apply_to_existing_files() {
    const N: usize = 100;
    let dir = temp_dir();
    let schemas = schemas(dir.path());
    let cluster = TestCluster::start(dir.path(), 2, &["--schemas", &schemas]);
    let admin = Admin::of(&cluster.secret_file);
    let relay = Relay::following(dir.path(), &cluster.http(), &cluster.secret_file, "");
    let (sent, t0) = write_history(&relay, N);
    let nodes: Vec<&Node> = cluster.nodes.iter().collect();
    let ids = [1u64, 2];
    wait_for(
        Duration::from_secs(60),
        "every series on both members",
        || {
            let held = holdings(&admin, &nodes, &ids);
            (held.values().map(BTreeSet::len).sum::<usize>() == 2 * N).then_some(())
        },
    );
    drained(&nodes);

    let longer = dir.path().join("longer.conf");
    std::fs::write(&longer, "[all]\npattern = .*\nretentions = 10s:2h,5m:7d\n").unwrap();
    let http = cluster.nodes[0].addr("http").to_string();
    let secret = cluster.secret_file.to_str().unwrap();
    graunt(&[
        "cluster",
        "schemas",
        "set",
        "--node",
        &http,
        "--schemas",
        longer.to_str().unwrap(),
        "--apply-to-existing",
        "--secret-file",
        secret,
    ]);
    wait_for(
        Duration::from_secs(60),
        "every member to resize its files",
        || {
            let s = statuses(&admin, nodes[0]);
            ids.iter()
                .all(|id| {
                    s.get(id)
                        .is_some_and(|x| x["schemas_applied"] == 1 && x["job"] == "idle")
                })
                .then_some(())
        },
    );
    let out = graunt(&[
        "cluster",
        "rebalance",
        "status",
        "--node",
        &http,
        "--secret-file",
        secret,
    ]);
    assert!(out.contains("idle"), "{out}");
    for node in &nodes {
        for name in graunt_cluster::rebalance::local_series(&node.data_dir.join("whisper")) {
            let path = node
                .data_dir
                .join("whisper")
                .join(format!("{}.wsp", name.replace('.', "/")));
            let info = graunt(&["whisper", "info", path.to_str().unwrap()]);
            assert!(info.contains("maxRetention: 604800"), "{name}: {info}");
            assert!(info.contains("retention: 7200"), "{name}: {info}");
        }
    }
    // The points are all there, in the new archives.
    check_points(&admin, &nodes, &ids, &sent, t0);
    relay.stop();
    cluster.stop();
}

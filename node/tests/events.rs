//! graphite-web's events on a node and on a cluster: the recorded requests
//! of tests/fixtures/events (246 posts, lookups, pages and `events()`
//! renders, answered by graphite-web 1.1.10 with its own event database)
//! replayed against one node and against a 3-node cluster (each request to
//! the next member), the events surviving a restart, a member that joins
//! later getting them, and deletion.

use std::path::Path;
use std::time::{Duration, Instant};

use graunt_harness::cluster::TestCluster;
use graunt_harness::node::{wait_for, Node};
use graunt_harness::{temp_dir, workspace_root};
use serde_json::Value;

struct Step {
    method: String,
    path: String,
    body: Option<String>,
    accept: Option<String>,
    /// Where graunt answers otherwise on purpose: its status.
    graunt_status: Option<u16>,
    want_status: u16,
    want_type: String,
    want_body: String,
}

fn steps() -> Vec<Step> {
    let dir = workspace_root().join("tests/fixtures/events");
    let read = |name: &str| -> Vec<Value> {
        serde_json::from_str(&std::fs::read_to_string(dir.join(name)).unwrap()).unwrap()
    };
    read("steps.json")
        .into_iter()
        .zip(read("answers.json"))
        .map(|(s, a)| Step {
            method: s["method"].as_str().unwrap().into(),
            path: s["path"].as_str().unwrap().into(),
            body: s["body"].as_str().map(String::from),
            accept: s["accept"].as_str().map(String::from),
            graunt_status: s["graunt"]["status"].as_u64().map(|c| c as u16),
            want_status: a["status"].as_u64().unwrap() as u16,
            want_type: a["content_type"].as_str().unwrap().into(),
            want_body: a["body"].as_str().unwrap().into(),
        })
        .collect()
}

/// One request: status, content type, body.
fn call(node: &Node, step: &Step) -> (u16, String, String) {
    let mut headers = vec![];
    if let Some(a) = &step.accept {
        headers.push(("Accept", a.as_str()));
    }
    if step.body.is_some() {
        headers.push(("Content-Type", "application/json"));
    }
    let (status, h, body) = node.http_raw(
        &step.method,
        &step.path,
        step.body.as_deref().map(str::as_bytes),
        &headers,
    );
    let ctype = h
        .iter()
        .find(|(k, _)| k == "content-type")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    (status, ctype, String::from_utf8_lossy(&body).into_owned())
}

/// Renders compare by value (graphite-web counts in Python ints, `1`;
/// graunt's series hold floats, `1.0`); everything else byte for byte,
/// except pages, which must only exist.
fn same_answer(step: &Step, got: &(u16, String, String)) -> Result<(), String> {
    let (status, ctype, body) = got;
    if let Some(want) = step.graunt_status {
        return (*status == want)
            .then_some(())
            .ok_or_else(|| format!("status {status}, want graunt's {want}: {body}"));
    }
    if *status != step.want_status {
        return Err(format!(
            "status {status}, graphite-web {}: {body}",
            step.want_status
        ));
    }
    let mime = |t: &str| t.split(';').next().unwrap_or("").trim().to_string();
    if mime(ctype) != mime(&step.want_type) {
        return Err(format!(
            "content type {ctype}, graphite-web {}",
            step.want_type
        ));
    }
    if mime(ctype) == "text/html" && !step.want_body.is_empty() {
        return Ok(());
    }
    if step.path.starts_with("/render") {
        let a: Value = serde_json::from_str(body).map_err(|e| format!("{e}: {body}"))?;
        let b: Value = serde_json::from_str(&step.want_body).unwrap();
        return graunt_harness::same_json(&a, &b)
            .then_some(())
            .ok_or_else(|| {
                format!(
                    "render differs:\n graunt {body}\n graphite-web {}",
                    step.want_body
                )
            });
    }
    (*body == step.want_body).then_some(()).ok_or_else(|| {
        format!(
            "body differs:\n graunt       {body}\n graphite-web {}",
            step.want_body
        )
    })
}

/// Replays every step, each on `pick(i)`; reads retry for a few seconds
/// (a member may apply a change a moment after the one that took it).
fn replay(pick: impl Fn(usize) -> usize, nodes: &[Node]) {
    for (i, step) in steps().iter().enumerate() {
        let node = &nodes[pick(i)];
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let got = call(node, step);
            match same_answer(step, &got) {
                Ok(()) => break,
                Err(e) if step.method == "GET" && Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!(
                    "step {i}: {} {}: {}",
                    step.method,
                    step.path,
                    e.chars().take(600).collect::<String>()
                ),
            }
        }
    }
}

fn get_data(node: &Node) -> String {
    node.http_get("/events/get_data?from=0&until=2000000000")
}

#[test]
fn one_node_answers_events_as_graphite_web_and_keeps_them() {
    let dir = temp_dir();
    let data = dir.path().join("data");
    let node = Node::start(&data, &[]);
    replay(|_| 0, std::slice::from_ref(&node));
    let before = get_data(&node);
    let events: Vec<Value> = serde_json::from_str(&before).unwrap();
    assert_eq!(events.len(), 50, "every accepted post is kept");

    // An event without `when` is now's.
    let t = graunt_harness::unix_now();
    let (status, _, _) = node.http_raw(
        "POST",
        "/events/",
        Some(br#"{"what": "now", "tags": "clock"}"#),
        &[],
    );
    assert_eq!(status, 200);
    let now: Vec<Value> =
        serde_json::from_str(&node.http_get("/events/get_data?tags=clock")).unwrap();
    let when = now[0]["when"].as_i64().unwrap();
    assert!((t..=t + 5).contains(&when), "{when} vs {t}");

    // A restart keeps them.
    node.stop(Duration::from_secs(20));
    let node = Node::start(&data, &[]);
    let after = get_data(&node);
    assert_eq!(
        serde_json::from_str::<Vec<Value>>(&after).unwrap().len(),
        51
    );
    assert!(after.starts_with(&before[..before.len() - 1]));

    // Deletion (graunt's own; graphite-web deletes in its admin pages).
    let (status, _, body) = node.http_raw("DELETE", "/events/1/", None, &[]);
    assert_eq!(
        (status, String::from_utf8_lossy(&body).as_ref()),
        (200, r#"{"deleted": 1}"#)
    );
    let (status, _, _) = node.http_raw("DELETE", "/events/1/", None, &[]);
    assert_eq!(status, 404);
    let (status, _) = node.http_request("/events/1/");
    assert_eq!(status, 404);
    node.stop(Duration::from_secs(20));
}

#[test]
fn a_cluster_answers_events_as_one_node_on_every_member() {
    let dir = temp_dir();
    let mut cluster = TestCluster::start(dir.path(), 3, &[]);
    // Each request goes to the next member: the answers are graphite-web's,
    // the ids too (one sequence for the cluster).
    replay(|i| i % 3, &cluster.nodes);
    let want = get_data(&cluster.nodes[0]);
    assert_eq!(serde_json::from_str::<Vec<Value>>(&want).unwrap().len(), 50);
    let grafana = "/events/get_data?from=1699990000&until=1700010000&tags=web";
    let render = "/render?target=events(%22prod%22)&from=1699999000&until=1700004000&format=json";
    let answers = |n: &Node| (get_data(n), n.http_get(grafana), n.http_get(render));
    let first = answers(&cluster.nodes[0]);
    assert!(first.1.contains("deploy web"), "{}", first.1);
    for n in &cluster.nodes[1..] {
        assert_eq!(answers(n), first);
    }

    // A member that joins later gets them all.
    let http = cluster.http();
    let secret = cluster.secret_file.display().to_string();
    let args = [
        "--node-id",
        "4",
        "--peer-timeout",
        "1",
        "--cluster-join",
        &http[1],
        "--cluster-secret-file",
        &secret,
    ];
    cluster
        .nodes
        .push(Node::start(&dir.path().join("n4"), &args));
    cluster.wait_for_members(4);
    wait_for(Duration::from_secs(20), "the new member's events", || {
        (answers(&cluster.nodes[3]) == first).then_some(())
    });

    // A deletion through one member is gone on every member.
    let (status, _, _) = cluster.nodes[2].http_raw("DELETE", "/events/1", None, &[]);
    assert_eq!(status, 200);
    for n in &cluster.nodes {
        wait_for(Duration::from_secs(10), "the deletion everywhere", || {
            (n.http_request("/events/1/").0 == 404).then_some(())
        });
    }
    cluster.stop();
}

/// The events file a node keeps is where the README says.
#[test]
fn a_broken_events_file_stops_the_node_with_its_name() {
    let dir = temp_dir();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("events.json"), "{broken").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_graunt"))
        .args(["serve", "--data-dir"])
        .arg(&data)
        .args(["--http-addr", "127.0.0.1:0", "--line-addr", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&Path::new(&data).join("events.json").display().to_string()),
        "{err}"
    );
}

//! `/render` and `/metrics/find` against a stock graphite-web 1.1.10 reading
//! the same whisper tree with the same `now`: the same series, names, tags
//! and values (floats within 1e-9 relative).
//!
//! The fixture tree is built here with fixed timestamps, so both sides see
//! identical files. graphite-web runs in-process through Django's test client
//! (tests/oracle/graphite_web.py).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use graunt_harness::node::Node;
use graunt_harness::{oracle_python, temp_dir, url_encode, workspace_root};
use graunt_storage::whisper::{self, AggregationMethod, CreateOptions, Retention, WhisperFile};
use serde_json::Value;

const NOW: i64 = 1_700_000_000;

/// Builds the fixture tree under `root`.
fn fixture(root: &Path) {
    let ten = [
        Retention {
            seconds_per_point: 10,
            points: 360,
        },
        Retention {
            seconds_per_point: 60,
            points: 1440,
        },
    ];
    let minute = [Retention {
        seconds_per_point: 60,
        points: 1440,
    }];
    let mut metrics: Vec<(String, &[Retention], AggregationMethod)> = Vec::new();
    for host in ["web1", "web2", "web3", "db1"] {
        for kind in ["user", "system"] {
            metrics.push((
                format!("servers.{host}.cpu.{kind}"),
                &ten,
                AggregationMethod::Average,
            ));
        }
    }
    metrics.push((
        "servers.web1.requests.count".into(),
        &ten,
        AggregationMethod::Sum,
    ));
    metrics.push(("mixed.minutely".into(), &minute, AggregationMethod::Average));
    metrics.push(("mixed.negative".into(), &ten, AggregationMethod::Average));
    metrics.push(("counters.total".into(), &ten, AggregationMethod::Last));
    for (n, (name, archives, method)) in metrics.iter().enumerate() {
        let path = root.join(name.replace('.', "/") + ".wsp");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let opts = CreateOptions {
            aggregation: *method,
            ..Default::default()
        };
        whisper::create(&path, archives, &opts).unwrap();
        let step = i64::from(archives[0].seconds_per_point);
        // Gaps everywhere except in the counter (graphite-web's
        // nonNegativeDerivative with maxValue raises on gaps under Python 3).
        let counter = name.starts_with("counters.");
        let points: Vec<(i64, f64)> = (0..300)
            .filter(|i| counter || (i + n as i64) % 7 != 0)
            .map(|i| {
                let v = ((i * 37 + n as i64 * 11) % 97) as f64 * 0.5
                    - if name.contains("negative") { 30.0 } else { 0.0 };
                (NOW - i * step, v)
            })
            .collect();
        WhisperFile::open_rw(&path)
            .unwrap()
            .update_many(&points, NOW)
            .unwrap();
    }
}

/// graphite-web's answers for `paths`.
fn graphite_web(whisper_dir: &Path, paths: &[String]) -> Vec<(u16, String)> {
    let out = Command::new(oracle_python())
        .arg(workspace_root().join("tests/oracle/graphite_web.py"))
        .args(["--whisper-dir", whisper_dir.to_str().unwrap()])
        .args(paths)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answers: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    answers
        .iter()
        .map(|a| {
            (
                a["status"].as_u64().unwrap() as u16,
                a["body"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn close(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y || (x - y).abs() <= 1e-9 * x.abs().max(y.abs()),
        _ => a == b,
    }
}

fn same_render(target: &str, want: &str, got: &str, random_values: bool) {
    let want: Value = serde_json::from_str(want)
        .unwrap_or_else(|e| panic!("{target}: graphite-web JSON {e}: {want}"));
    let got: Value =
        serde_json::from_str(got).unwrap_or_else(|e| panic!("{target}: graunt JSON {e}: {got}"));
    let (want, got) = (want.as_array().unwrap(), got.as_array().unwrap());
    assert_eq!(
        got.len(),
        want.len(),
        "{target}: series count\ngraphite-web: {want:?}\ngraunt: {got:?}"
    );
    for (w, g) in want.iter().zip(got) {
        assert_eq!(g["target"], w["target"], "{target}: series name");
        assert_eq!(g["tags"], w["tags"], "{target}: tags of {}", w["target"]);
        let (wp, gp) = (
            w["datapoints"].as_array().unwrap(),
            g["datapoints"].as_array().unwrap(),
        );
        assert_eq!(
            gp.len(),
            wp.len(),
            "{target}: datapoint count of {}",
            w["target"]
        );
        for (x, y) in wp.iter().zip(gp) {
            assert!(
                (random_values || close(&x[0], &y[0])) && x[1] == y[1],
                "{target}: {} differs: graphite-web {x}, graunt {y}",
                w["target"]
            );
        }
    }
}

/// The recorded targets: `(target, query)` from tests/fixtures/render/targets.txt.
fn recorded_targets() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(workspace_root().join("tests/fixtures/render/targets.txt"))
        .expect("tests/fixtures/render/targets.txt");
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| match l.split_once("  @ ") {
            Some((t, q)) => (t.trim().to_string(), q.trim().to_string()),
            None => (l.to_string(), "from=-15min".to_string()),
        })
        .collect()
}

fn render_path(target: &str, query: &str) -> String {
    format!(
        "/render?target={}&format=json&{query}&now={NOW}",
        url_encode(target)
    )
}

const RECORDS: &str = "tests/fixtures/render/records.json";

/// Records graphite-web's answers for every recorded target (run by
/// tests/fixtures/render/regenerate.sh).
#[test]
#[ignore = "regenerates tests/fixtures/render/records.json from graphite-web"]
fn record_graphite_web_answers() {
    let dir = temp_dir();
    let whisper = dir.path().join("whisper");
    fixture(&whisper);
    let paths: Vec<String> = recorded_targets()
        .iter()
        .map(|(t, q)| render_path(t, q))
        .collect();
    let answers = graphite_web(&whisper, &paths);
    let records: Vec<Value> = paths
        .iter()
        .zip(answers)
        .map(|(path, (status, body))| serde_json::json!({"path": path, "status": status, "body": body}))
        .collect();
    let doc = serde_json::json!({"graphite_web": "1.1.10", "now": NOW, "records": records});
    std::fs::write(
        workspace_root().join(RECORDS),
        serde_json::to_string_pretty(&doc).unwrap() + "\n",
    )
    .unwrap();
}

/// Targets graphite-web 1.1.10 fails on (HTTP 500) over the fixture tree,
/// with why; graunt answers them (as graphite-web did under Python 2).
const GRAPHITE_WEB_CRASHES: &[(&str, u16, &str)] = &[
    (
        "asPercent(servers.*.cpu.*,sumSeries(servers.*.cpu.system),1)",
        400,
        "a total whose node matches no series makes a MISSING result from times it never computed (UnboundLocalError)",
    ),
    ("removeBetweenPercentile(servers.*.cpu.user,30)", 200, "None < float under Python 3"),
    ("useSeriesAbove(servers.web1.cpu.user,40,'user','system')", 200, "max() over None and floats under Python 3"),
    ("nonNegativeDerivative(servers.web1.requests.count,maxValue=100)", 200, "None > maxValue under Python 3"),
    ("perSecond(servers.web1.requests.count,minValue=1)", 200, "None < minValue under Python 3"),
];

/// graphite-web's recorded answers by request path: `(status, body)`.
fn records() -> std::collections::HashMap<String, (u64, String)> {
    let text = std::fs::read_to_string(workspace_root().join(RECORDS)).expect(RECORDS);
    let doc: Value = serde_json::from_str(&text).unwrap();
    doc["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["path"].as_str().unwrap().to_string(),
                (
                    r["status"].as_u64().unwrap(),
                    r["body"].as_str().unwrap().to_string(),
                ),
            )
        })
        .collect()
}

/// Asks `node` every recorded target and compares each answer with
/// graphite-web's; returns the differences, each naming its target.
fn differences_from_records(node: &Node) -> Vec<String> {
    let records = records();
    let targets = recorded_targets();
    assert!(targets.len() >= 400, "{} recorded targets", targets.len());
    let mut failures = Vec::new();
    let mut compared = 0;
    // Mismatches are collected, not printed one panic at a time.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    for (target, query) in &targets {
        let path = render_path(target, query);
        let Some((status, body)) = records.get(path.as_str()) else {
            panic!("no record for {target:?} ({query}): run tests/fixtures/render/regenerate.sh");
        };
        let (got_status, got_body) = node.http_request(&path);
        if *status == 500 {
            match GRAPHITE_WEB_CRASHES.iter().find(|(t, _, _)| t == target) {
                None => failures.push(format!(
                    "{target} [{query}]: graphite-web answered 500: {body}"
                )),
                Some((_, want, _)) if *want != got_status => failures.push(format!(
                    "{target} [{query}]: graunt answered {got_status}, expected {want}: {got_body}"
                )),
                Some(_) => {}
            }
            continue;
        }
        if got_status != *status as u16 {
            failures.push(format!(
                "{target} [{query}]: status {got_status}, graphite-web {status}\n  graunt: {got_body}\n  graphite-web: {}",
                &body[..body.len().min(300)]
            ));
            continue;
        }
        if *status != 200 {
            continue;
        }
        let random = target.starts_with("randomWalk");
        if let Err(e) = std::panic::catch_unwind(|| same_render(target, body, &got_body, random)) {
            let message = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            failures.push(format!("{target} [{query}]: {message}"));
            continue;
        }
        compared += 1;
    }
    std::panic::set_hook(hook);
    if failures.is_empty() {
        assert!(compared >= 400, "{compared} compared");
    }
    failures
}

#[test]
fn render_json_matches_recorded_graphite_web() {
    let dir = temp_dir();
    let data = dir.path().join("data");
    fixture(&data.join("whisper"));
    let node = Node::start(&data, &[]);
    let failures = differences_from_records(&node);
    node.stop(Duration::from_secs(20));
    assert!(
        failures.is_empty(),
        "{} of {} targets differ from graphite-web:\n{}",
        failures.len(),
        recorded_targets().len(),
        failures.join("\n")
    );
}

/// The whisper files under `dir`, at any depth.
fn wsp_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = e.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|x| x == "wsp") {
                files.push(path);
            }
        }
    }
    files
}

/// The same recorded targets asked of a 3-node cluster at replication 2,
/// each fixture file on the two members the cluster's ring gives it (so
/// nothing moves): merged reads, folds and groupByNode's folded groups
/// must give graphite-web's answers as one node does.
#[test]
fn a_cluster_answers_the_recorded_targets_as_graphite_web() {
    use graunt_cluster::hashing::{Destination, Method, Ring};
    let dir = temp_dir();
    let whole = dir.path().join("whole");
    fixture(&whole);
    // carbon's ring keys a member by host and instance (its id), not port.
    let members: Vec<Destination> = (1..=3)
        .map(|id| Destination::parse(&format!("127.0.0.1:2004:{id}")).unwrap())
        .collect();
    let ring = Ring::new(Method::CarbonCh, members, 2, false).unwrap();
    let files = wsp_files(&whole);
    for file in &files {
        let rel = file.strip_prefix(&whole).unwrap();
        let name = rel.with_extension("").to_string_lossy().replace('/', ".");
        let owners = ring.route(&name);
        assert_eq!(owners.len(), 2, "{name}");
        for i in owners {
            let to = dir.path().join(format!("n{}/whisper", i + 1)).join(rel);
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(file, &to).unwrap();
        }
    }
    // Slow renders under a loaded CI must not turn partial.
    let cluster =
        graunt_harness::cluster::TestCluster::start(dir.path(), 3, &["--peer-timeout", "20"]);
    let failures = differences_from_records(&cluster.nodes[0]);
    let folded = cluster.nodes[0].metric("graunt_cluster_folds_total{outcome=\"folded\"}");
    let by_parts = cluster.nodes[0].metric("graunt_cluster_folds_total{outcome=\"parts\"}");
    let held: Vec<usize> = (1..=3)
        .map(|id| wsp_files(&dir.path().join(format!("n{id}/whisper"))).len())
        .collect();
    cluster.stop();
    assert!(
        failures.is_empty(),
        "{} of {} targets differ from graphite-web on a cluster:\n{}",
        failures.len(),
        recorded_targets().len(),
        failures.join("\n")
    );
    assert_eq!(
        held.iter().sum::<usize>(),
        2 * files.len(),
        "every file on its two owners, none moved: {held:?}"
    );
    // Every fixture series but one has gaps, which another copy could
    // fill: only counts fold by series here (the cluster tests fold the
    // rest). The sums and averages of fractions fold by parts of the range,
    // each member adding every series over its part: graphite-web's
    // answers to the last digit.
    assert!(folded >= 3.0, "{folded} aggregations folded on the members");
    assert!(by_parts >= 50.0, "{by_parts} aggregations folded by parts");
}

#[test]
fn render_variants_match_graphite_web() {
    let dir = temp_dir();
    let data = dir.path().join("data");
    fixture(&data.join("whisper"));
    let node = Node::start(&data, &[]);
    // The request's xFilesFactor steers consolidation and aggregation.
    let mut xff_paths = Vec::new();
    for target in [
        "servers.web1.cpu.user",
        "sumSeries(servers.*.cpu.user)",
        "mixed.minutely",
    ] {
        for xff in ["0.5", "0.9", "1"] {
            xff_paths.push(format!("/render?target={target}&format=json&from=-20min&maxDataPoints=20&xFilesFactor={xff}&now={NOW}"));
        }
    }
    let xff_want = graphite_web(&data.join("whisper"), &xff_paths);
    for (path, (status, body)) in xff_paths.iter().zip(&xff_want) {
        let (got_status, got_body) = node.http_request(path);
        assert_eq!(
            (got_status, *status),
            (200, 200),
            "{path}: {got_body} / {body}"
        );
        same_render(path, body, &got_body, false);
    }

    // csv and raw for a few targets, compared as text.
    let mut text_paths = Vec::new();
    for target in [
        "servers.web*.cpu.user",
        "sumSeries(servers.*.cpu.user)",
        "alias(mixed.minutely,'a, \"b\"')",
    ] {
        let t = target.replace(' ', "%20").replace('"', "%22");
        for format in ["csv", "raw"] {
            text_paths.push(format!(
                "/render?target={t}&format={format}&from=-10min&now={NOW}"
            ));
            text_paths.push(format!(
                "/render?target={t}&format={format}&from=-20min&maxDataPoints=5&now={NOW}"
            ));
        }
        text_paths.push(format!(
            "/render?target={t}&rawData=1&from=-10min&now={NOW}"
        ));
        text_paths.push(format!(
            "/render?target={t}&format=csv&from=-10min&tz=Europe/Berlin&now={NOW}"
        ));
    }
    let text_want = graphite_web(&data.join("whisper"), &text_paths);
    for (path, (status, body)) in text_paths.iter().zip(&text_want) {
        let (got_status, got_body) = node.http_request(path);
        assert_eq!(
            (got_status, *status),
            (200, 200),
            "{path}: {got_body} / {body}"
        );
        assert_eq!(got_body, *body, "{path}");
    }
    node.stop(Duration::from_secs(20));
}

#[test]
fn metrics_find_matches_graphite_web() {
    let dir = temp_dir();
    let data = dir.path().join("data");
    fixture(&data.join("whisper"));
    let node = Node::start(&data, &[]);
    let queries = [
        "*",
        "servers.*",
        "servers.web*",
        "servers.web1.*",
        "servers.*.cpu.*",
        "servers.web{1,3}.cpu",
        "mixed.m*",
        "nope.*",
    ];
    let mut paths = Vec::new();
    for q in queries {
        let q = q.replace('{', "%7B").replace('}', "%7D");
        paths.push(format!("/metrics/find?query={q}"));
        paths.push(format!("/metrics/find?query={q}&format=completer"));
        paths.push(format!("/metrics/find?query={q}&wildcards=1"));
        paths.push(format!("/metrics/find?query={q}&format=json"));
        paths.push(format!("/metrics/find?query={q}&format=nodelist"));
        paths.push(format!(
            "/metrics/find?query={q}&format=nodelist&position=0"
        ));
    }
    paths.push("/metrics/find?query=servers.*.cpu.*&format=nodelist&position=1".into());
    paths.push("/metrics/find?query=servers.*.cpu.*&format=nodelist&position=-2".into());
    let want = graphite_web(&data.join("whisper"), &paths);
    for (path, (status, body)) in paths.iter().zip(&want) {
        let (got_status, got_body) = node.http_request(path);
        assert_eq!(
            (got_status, *status),
            (200, 200),
            "{path}: {got_body} / {body}"
        );
        let mut w: Value = serde_json::from_str(body).unwrap();
        let mut g: Value = serde_json::from_str(&got_body).unwrap();
        if path.contains("format=json") {
            // Intervals run from "now" less the retention to the file's
            // mtime: the two servers' clocks differ by the test's seconds.
            for (wi, gi) in w.as_array().unwrap().iter().zip(g.as_array().unwrap()) {
                for key in ["start", "end"] {
                    let (a, b) = (&wi["intervals"][0][key], &gi["intervals"][0][key]);
                    assert_eq!(a.is_f64(), b.is_f64(), "{path}: {key} of {}", wi["path"]);
                    if let (Some(a), Some(b)) = (a.as_f64(), b.as_f64()) {
                        assert!((a - b).abs() < 120.0, "{path}: {key} {a} / {b}");
                    }
                }
            }
            for v in [&mut w, &mut g] {
                for item in v.as_array_mut().unwrap() {
                    if let Some(i) = item.get_mut("intervals") {
                        *i = Value::Null;
                    }
                }
            }
        }
        // graphite-web adds an empty "context" to treejson nodes, and orders
        // nodes of equal name as its finder threads happen to return them.
        for v in [&mut w, &mut g] {
            if let Some(metrics) = v.get_mut("metrics").and_then(Value::as_array_mut) {
                metrics.sort_by_key(|m| (m["name"].to_string(), m["path"].to_string()));
            }
            if let Some(items) = v.as_array_mut() {
                for item in items {
                    if let Some(o) = item.as_object_mut() {
                        o.remove("context");
                    }
                }
            }
        }
        assert_eq!(g, w, "{path}");
    }
    node.stop(Duration::from_secs(20));
}

#[test]
fn bad_requests_are_400_with_the_problem_named() {
    let dir = temp_dir();
    let data = dir.path().join("data");
    fixture(&data.join("whisper"));
    let node = Node::start(&data, &[]);
    for (path, expect) in [
        (
            "/render?target=sumSeries(servers.*&format=json",
            "never closed",
        ),
        (
            "/render?target=noSuchFunction(a.b)&format=json",
            "unknown function \"noSuchFunction\"",
        ),
        (
            "/render?target=scale(a.b,'x')&format=json",
            "must be a number",
        ),
        (
            "/render?target=scale(a.b)&format=json",
            "missing required argument factor",
        ),
        (
            "/render?target=absolute(a.b,1)&format=json",
            "too many arguments",
        ),
        (
            "/render?target=sortByName(a.b,nope=1)&format=json",
            "unexpected keyword argument nope",
        ),
        (
            "/render?target=highest(a.b,2,'bogus')&format=json",
            "Unsupported aggregation function: bogus",
        ),
        (
            "/render?target=summarize(a.b,'1fortnight')&format=json",
            "Invalid offset unit",
        ),
        ("/render?target=sumSeries(a.b))&format=json", "position 14"),
        (
            "/render?target=a.b&format=json&from=blursday",
            "Unknown day reference",
        ),
        (
            "/render?target=a.b&format=json&from=-1h&until=-2h",
            "must be before until",
        ),
        (
            "/render?target=a.b&format=json&maxDataPoints=0",
            "maxDataPoints",
        ),
        ("/metrics/find", "Missing required parameter 'query'"),
    ] {
        let (status, body) = node.http_request(path);
        assert_eq!(status, 400, "{path}: {body}");
        assert!(
            body.contains(expect),
            "{path}: {body:?} should name {expect:?}"
        );
    }
    assert_eq!(node.http_request("/version").1, "1.1.10");
    node.stop(Duration::from_secs(20));
}

/// graphite-web's full answers (status, body, content type, pickle bytes).
fn graphite_web_full(whisper_dir: &Path, paths: &[String]) -> Vec<Value> {
    let out = Command::new(oracle_python())
        .arg(workspace_root().join("tests/oracle/graphite_web.py"))
        .args(["--whisper-dir", whisper_dir.to_str().unwrap()])
        .args(paths)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Unpickles with Python and prints the object as JSON.
fn unpickle(bytes: &[u8]) -> Value {
    let mut child = Command::new(oracle_python())
        .args([
            "-c",
            "import json, pickle, sys; print(json.dumps(pickle.loads(sys.stdin.buffer.read())))",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "Python could not unpickle graunt's answer"
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn functions_and_other_formats_match_graphite_web() {
    let dir = temp_dir();
    let data = dir.path().join("data");
    fixture(&data.join("whisper"));
    let node = Node::start(&data, &[]);
    let exact = [
        "/functions?type=pie".to_string(),
        "/functions/scale".into(),
        "/functions/movingAverage?pretty=1".into(),
        "/functions?group=Alias&pretty=1".into(),
        "/functions?grouped=true&group=Transform".into(),
        "/functions/nosuch".into(),
        format!("/render?target=servers.web1.cpu.user&format=json&pretty=1&from=-2min&now={NOW}"),
        format!("/render?target=sumSeries(servers.*.cpu.user)&format=json&pretty=1&from=-2min&maxDataPoints=5&now={NOW}"),
        format!("/render?target=servers.web*.cpu.user&format=dygraph&from=-5min&now={NOW}"),
        format!("/render?target=servers.web*.cpu.user&format=rickshaw&from=-5min&now={NOW}"),
        format!("/render?target=servers.web1.cpu.user&format=rickshaw&pretty=1&from=-2min&now={NOW}"),
        format!("/render?target=servers.web1.cpu.user&format=json&jsonp=cb&from=-2min&now={NOW}"),
    ];
    let pickles = [
        format!("/render?target=servers.*.cpu.user&format=pickle&from=-5min&now={NOW}"),
        format!("/render?target=consolidateBy(sumSeries(servers.*.cpu.*),'max')&pickle=1&from=-5min&now={NOW}"),
    ];
    let mut all: Vec<String> = exact.to_vec();
    all.extend(pickles.iter().cloned());
    all.push("/functions".into());
    let want = graphite_web_full(&data.join("whisper"), &all);
    for (path, w) in exact.iter().zip(&want) {
        let (status, _, body) = node.http_raw("GET", path, None, &[]);
        assert_eq!(u64::from(status), w["status"].as_u64().unwrap(), "{path}");
        assert_eq!(
            String::from_utf8_lossy(&body),
            w["body"].as_str().unwrap(),
            "{path}"
        );
    }
    for (path, w) in pickles.iter().zip(&want[exact.len()..]) {
        let (status, headers, body) = node.http_raw("GET", path, None, &[]);
        assert_eq!(status, 200, "{path}");
        assert!(headers.contains(&("content-type".into(), "application/pickle".into())));
        let theirs = unpickle(&base64_decode(w["body_base64"].as_str().unwrap()));
        assert_eq!(unpickle(&body), theirs, "{path}");
    }
    // The whole catalog: graphite-web's.
    let theirs: serde_json::Map<String, Value> = serde_json::from_str(
        &want.last().unwrap()["body"]
            .as_str()
            .unwrap()
            .replace("1e9999", "1e308"),
    )
    .unwrap();
    let ours: serde_json::Map<String, Value> =
        serde_json::from_str(&node.http_get("/functions").replace("1e9999", "1e308")).unwrap();
    assert_eq!(ours, theirs);
    node.stop(Duration::from_secs(20));
}

fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let clean: Vec<u8> = text
        .bytes()
        .filter(|&c| c != b'=' && !c.is_ascii_whitespace())
        .collect();
    let mut out = Vec::new();
    for chunk in clean.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= u32::from(value(c)) << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
}

/// Grafana's Graphite data source, as it calls graphite-web 1.1: `/version`,
/// `/functions`, `POST /metrics/find` and `POST /render` with a form holding
/// several targets, relative or epoch times and `maxDataPoints`.
#[test]
fn grafanas_calls_get_graphite_webs_answers() {
    let dir = temp_dir();
    let data = dir.path().join("data");
    fixture(&data.join("whisper"));
    let node = Node::start(&data, &[]);
    assert_eq!(node.http_get("/version"), "1.1.10");
    let functions: Value =
        serde_json::from_str(&node.http_get("/functions").replace("1e9999", "1e308")).unwrap();
    assert!(functions["aliasByNode"]["params"].is_array());

    let forms = [
        format!("target=servers.*.cpu.user&target=alias(sumSeries(servers.*.cpu.user),'total')&from=-6h&until=now&format=json&maxDataPoints=100&now={NOW}"),
        format!("target=aliasByNode(servers.*.cpu.system,1)&from={}&until={}&format=json&maxDataPoints=37&now={NOW}", NOW - 3600, NOW),
        format!("target=summarize(servers.web1.requests.count,'10min','sum',false)&from=-3h&until=now&format=json&maxDataPoints=1000&now={NOW}"),
    ];
    let get_paths: Vec<String> = forms
        .iter()
        .map(|f| format!("/render?{}", f.replace('\'', "%27").replace(' ', "%20")))
        .collect();
    let want = graphite_web(&data.join("whisper"), &get_paths);
    for (form, (status, body)) in forms.iter().zip(&want) {
        assert_eq!(*status, 200, "{form}: {body}");
        let encoded = form.replace('\'', "%27").replace(' ', "%20");
        let (got_status, got) = node.http_post_form("/render", &encoded);
        assert_eq!(got_status, 200, "{form}: {got}");
        same_render(form, body, &got, false);
    }

    for query in ["servers.*", "servers.web1.*", "servers.*.cpu.*", "mixed.*"] {
        let form = format!("query={}&from=-6h&until=now", url_encode(query));
        let want = graphite_web(&data.join("whisper"), &[format!("/metrics/find?{form}")]);
        let (status, got) = node.http_post_form("/metrics/find", &form);
        assert_eq!(status, 200);
        let (mut w, mut g): (Value, Value) = (
            serde_json::from_str(&want[0].1).unwrap(),
            serde_json::from_str(&got).unwrap(),
        );
        for v in [&mut w, &mut g] {
            for item in v.as_array_mut().unwrap() {
                item.as_object_mut().unwrap().remove("context");
            }
        }
        assert_eq!(g, w, "{query}");
    }
    node.stop(Duration::from_secs(20));
}

#[test]
fn requests_past_a_bound_are_refused_with_413() {
    let dir = temp_dir();
    let data = dir.path().join("data");
    fixture(&data.join("whisper"));
    let config = dir.path().join("graunt.toml");
    std::fs::write(
        &config,
        "max_render_series = 3\nmax_render_points = 2000\nmax_expression_depth = 4\n",
    )
    .unwrap();
    let node = Node::start(&data, &["--config", config.to_str().unwrap()]);
    let q = format!("format=json&now={NOW}");
    let (status, body) =
        node.http_request(&format!("/render?target=servers.*.cpu.*&from=-10min&{q}"));
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("more than 3 series"), "{body}");
    let (status, body) = node.http_request(&format!("/render?target=servers.web1.cpu.user&target=mixed.minutely&target=counters.total&from=-1d&{q}"));
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("more than 2000 datapoints"), "{body}");
    let (status, body) = node.http_request(&format!(
        "/render?target=a(b(c(d(e(f.g)))))&from=-10min&{q}"
    ));
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("nested deeper than 4"), "{body}");
    let (status, _) = node.http_request(&format!(
        "/render?target=servers.web1.cpu.user&from=-10min&{q}"
    ));
    assert_eq!(status, 200);
    node.stop(Duration::from_secs(20));
}

/// `max_concurrent_renders = 1`: renders sent together all answer, the
/// same, one at a time (the others counted as having waited).
#[test]
fn renders_past_the_concurrency_bound_wait_their_turn() {
    let dir = temp_dir();
    let data = dir.path().join("data");
    fixture(&data.join("whisper"));
    let config = dir.path().join("graunt.toml");
    std::fs::write(&config, "max_concurrent_renders = 1\n").unwrap();
    let node = Node::start(&data, &["--config", config.to_str().unwrap()]);
    // Not `*.*.*.*`: the node's own metrics (carbon.agents.*) would come
    // and change the answer.
    let q = format!(
        "/render?target=sumSeries(servers.*.*.*)&target=servers.*.cpu.*&from=-7d&format=json&now={NOW}"
    );
    let (status, want) = node.http_request(&q);
    assert_eq!(status, 200, "{want}");
    // Rounds of six at once until one had to wait (at once, unless every
    // render ended before the next came in).
    let waited =
        graunt_harness::node::wait_for(Duration::from_secs(60), "a render that waited", || {
            let gate = std::sync::Barrier::new(6);
            std::thread::scope(|s| {
                let asks: Vec<_> = (0..6)
                    .map(|_| {
                        s.spawn(|| {
                            gate.wait();
                            node.http_request(&q)
                        })
                    })
                    .collect();
                for ask in asks {
                    let (status, body) = ask.join().unwrap();
                    assert_eq!(status, 200, "{body}");
                    assert!(body == want, "a render sent with others answered otherwise");
                }
            });
            let waited = node.metric("graunt_renders_waited_total");
            (waited >= 1.0).then_some(waited)
        });
    assert!(waited >= 1.0);
    assert_eq!(
        node.metric("graunt_renders_running"),
        0.0,
        "every slot given back"
    );
    node.stop(Duration::from_secs(20));
}

#[test]
fn every_function_is_recorded_or_listed_as_missing() {
    let targets =
        std::fs::read_to_string(workspace_root().join("tests/fixtures/render/targets.txt"))
            .unwrap();
    // seriesByTag is recorded with the tag database's answers.
    let targets = targets
        + &std::fs::read_to_string(workspace_root().join("tests/fixtures/tags/steps.json"))
            .unwrap()
            .replace("%28", "(");
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).unwrap();
    for name in graunt_query::functions::catalog::PARAMS.keys() {
        if graunt_query::functions::UNIMPLEMENTED.contains(&name.as_str()) {
            assert!(
                readme.contains(&format!("`{name}`")),
                "README must list {name} as not implemented"
            );
        } else {
            assert!(
                targets.contains(&format!("{name}(")),
                "no recorded target uses {name}"
            );
        }
    }
}

/// Arguments that once panicked, looped or allocated without bound (found
/// in review): each is now an answer, a 400 or a 413, and the node lives on.
#[test]
fn hostile_arguments_are_bounded() {
    let dir = temp_dir();
    let data = dir.path().join("data");
    fixture(&data.join("whisper"));
    let node = Node::start(&data, &[]);
    let x = "servers.web1.cpu.user";
    for (target, range, want) in [
        ("events('x')".to_string(), "from=-9000y", 413),
        ("time('t',1)".to_string(), "from=-9000y", 413),
        (
            "summarize(constantLine(1),'1s')".to_string(),
            "from=-10y",
            413,
        ),
        (format!("hitcount({x},'1s')"), "from=-10y", 200),
        (
            format!("timeStack({x},'1y',0,1000000000000)"),
            "from=-10min",
            400,
        ),
        (
            format!("delay({x},-9223372036854775808)"),
            "from=-10min",
            200,
        ),
        (format!("delay({x},-1e19)"), "from=-10min", 200),
        (format!("stdev({x},-1)"), "from=-10min", 400),
        (
            format!("movingAverage({x},9223372036854775807)"),
            "from=-10min",
            400,
        ),
        (
            format!("timeShift({x},'+9223372036854775807s')"),
            "from=-10min",
            400,
        ),
        (format!("nPercentile({x},1e300)"), "from=-10min", 200),
        (
            "percentileOfSeries(servers.*.cpu.user,inf)".to_string(),
            "from=-10min",
            200,
        ),
        (format!("keepLastValue({x},'2')"), "from=-10min", 200),
        (
            "limit(servers.*.cpu.user,-1)".to_string(),
            "from=-10min",
            200,
        ),
        (
            "sumSeriesWithWildcards(servers.*.cpu.user,1.0)".to_string(),
            "from=-10min",
            200,
        ),
        (
            format!("aliasByNode(legendValue({x},'avg'),-1)"),
            "from=-10min",
            200,
        ),
    ] {
        let path = format!(
            "/render?target={}&format=json&{range}&now={NOW}",
            url_encode(&target)
        );
        let (status, body) = node.http_request(&path);
        assert_eq!(status, want, "{target}: {}", &body[..body.len().min(300)]);
    }
    // Python slicing and float positions, as graphite-web.
    let names = |target: &str| -> Vec<String> {
        let body = node.http_get(&format!(
            "/render?target={}&format=json&from=-10min&now={NOW}",
            url_encode(target)
        ));
        serde_json::from_str::<Value>(&body)
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["target"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names("limit(servers.*.cpu.user,-1)").len(), 3);
    assert_eq!(
        names("sumSeriesWithWildcards(servers.*.cpu.user,1.0)"),
        vec!["servers.cpu.user"]
    );
    assert_eq!(
        names(&format!("aliasByNode(legendValue({x},'avg'),-1)")),
        vec!["user"]
    );
    assert_eq!(node.http_request("/version").0, 200, "still serving");
    node.stop(Duration::from_secs(20));
}

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
use graunt_harness::{oracle_python, temp_dir, workspace_root};
use graunt_storage::whisper::{self, AggregationMethod, CreateOptions, Retention, WhisperFile};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_graunt");
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

fn same_render(target: &str, want: &str, got: &str) {
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
                close(&x[0], &y[0]) && x[1] == y[1],
                "{target}: {} differs: graphite-web {x}, graunt {y}",
                w["target"]
            );
        }
    }
}

const TARGETS: &[&str] = &[
    "servers.web1.cpu.user",
    "servers.*.cpu.user",
    "servers.web{1,2}.cpu.*",
    "servers.web[12].cpu.system",
    "servers.*.cpu.nothing",
    "mixed.minutely",
    "sumSeries(servers.*.cpu.user)",
    "sum(servers.*.cpu.*)",
    "sumSeries(servers.web1.cpu.user,servers.web2.cpu.user)",
    "sumSeries(servers.web1.cpu.user,mixed.minutely)",
    "averageSeries(servers.*.cpu.system)",
    "avg(servers.web*.cpu.user)",
    "maxSeries(servers.*.cpu.*)",
    "minSeries(servers.*.cpu.*)",
    "aggregate(servers.*.cpu.user,'sum')",
    "aggregate(servers.*.cpu.user,'average',0.5)",
    "aggregate(servers.*.cpu.user,'max')",
    "aggregate(servers.*.cpu.user,'last')",
    "aggregate(servers.*.cpu.user,'count')",
    "aggregate(servers.*.cpu.user,'range')",
    "alias(servers.web1.cpu.user,'web one')",
    "alias(sumSeries(servers.*.cpu.user),\"total\")",
    "aliasByNode(servers.*.cpu.user,1)",
    "aliasByNode(servers.*.cpu.*,1,3)",
    "aliasByNode(servers.*.cpu.user,-1)",
    "aliasByNode(sumSeries(servers.web1.cpu.*),1)",
    "scale(servers.web1.cpu.user,2)",
    "scale(servers.web1.cpu.user,0.5)",
    "scale(servers.*.cpu.system,-1.25)",
    "offset(servers.web1.cpu.user,10)",
    "offset(servers.web1.cpu.user,-0.001)",
    "absolute(mixed.negative)",
    "absolute(scale(mixed.negative,-1))",
    "scale(sumSeries(servers.*.cpu.user),0.1)",
    "derivative(servers.web1.requests.count)",
    "derivative(servers.*.cpu.user)",
    "nonNegativeDerivative(servers.web1.requests.count)",
    "nonNegativeDerivative(counters.total)",
    "nonNegativeDerivative(counters.total,99)",
    "nonNegativeDerivative(counters.total,maxValue=99,minValue=1)",
    "nonNegativeDerivative(counters.total,minValue=2)",
    "nonNegativeDerivative(counters.total,90)",
    "perSecond(servers.web1.requests.count)",
    "perSecond(counters.total,99)",
    "perSecond(mixed.minutely)",
    "keepLastValue(servers.web1.cpu.user)",
    "keepLastValue(servers.*.cpu.user,1)",
    "keepLastValue(mixed.minutely,0)",
    "transformNull(servers.web1.cpu.user)",
    "transformNull(servers.web1.cpu.user,-1)",
    "transformNull(servers.*.cpu.system,2.5)",
    "sumSeries(transformNull(servers.*.cpu.user))",
    "perSecond(sumSeries(servers.*.cpu.user))",
    "diffSeries(servers.web1.cpu.user,servers.web2.cpu.user)",
    "diffSeries(servers.*.cpu.user)",
    "multiplySeries(servers.web1.cpu.user,servers.web2.cpu.user)",
    "multiplySeries(servers.web1.cpu.user)",
    "countSeries(servers.*.cpu.*)",
    "aggregate(servers.*.cpu.user,'median')",
    "aggregate(servers.*.cpu.user,'stddev')",
    "aggregate(servers.*.cpu.user,'avg_zero')",
    "aggregate(servers.*.cpu.user,'multiply')",
    "aggregate(servers.*.cpu.user,'diff')",
    "group(servers.web1.cpu.user,servers.db1.cpu.*)",
    "highestCurrent(servers.*.cpu.*,3)",
    "highestAverage(servers.*.cpu.*,2)",
    "highestMax(servers.*.cpu.user,1)",
    "highest(servers.*.cpu.*,2,'sum')",
    "lowestCurrent(servers.*.cpu.*,3)",
    "lowestAverage(servers.*.cpu.*,2)",
    "lowest(servers.*.cpu.*,2,'max')",
    "limit(servers.*.cpu.*,3)",
    "sortByName(group(servers.web2.cpu.user,servers.web1.cpu.user,servers.db1.cpu.user))",
    "sortByName(servers.*.cpu.*,reverse=true)",
    "sortByName(servers.*.cpu.*,true)",
    "exclude(servers.*.cpu.*,'web[12]')",
    "grep(servers.*.cpu.*,'system$')",
    "aliasSub(servers.*.cpu.user,'servers\\.(\\w+)\\.cpu\\.(\\w+)','\\2 on \\1')",
    "aliasSub(servers.web1.cpu.user,'web','host-')",
    "consolidateBy(servers.web1.cpu.user,'max')",
    "consolidateBy(servers.web1.cpu.user,'sum')",
    "integral(servers.web1.requests.count)",
    "integral(mixed.minutely)",
];

/// Targets graphite-web 1.1.10 fails on (HTTP 500) when their input has gaps.
const GRAPHITE_WEB_CRASHES: &[&str] = &[
    "nonNegativeDerivative(counters.total,99)",
    "nonNegativeDerivative(counters.total,maxValue=99,minValue=1)",
    "nonNegativeDerivative(counters.total,minValue=2)",
    "nonNegativeDerivative(counters.total,90)",
    "perSecond(counters.total,99)",
];

#[test]
fn render_json_matches_graphite_web() {
    let dir = temp_dir();
    let data = dir.path().join("data");
    fixture(&data.join("whisper"));
    let node = Node::serve(BIN.as_ref(), &data, &[]);
    let mut paths = Vec::new();
    for target in TARGETS {
        let t = target
            .replace('{', "%7B")
            .replace('}', "%7D")
            .replace(' ', "%20")
            .replace('"', "%22");
        for range in [
            "from=-30min",
            "from=-3h&until=-1h",
            "from=-20min&maxDataPoints=50",
            "from=-40min&noNullPoints=1",
        ] {
            paths.push(format!("/render?target={t}&format=json&{range}&now={NOW}"));
        }
    }
    let want = graphite_web(&data.join("whisper"), &paths);
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
        same_render(path, body, &got_body);
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
    let mut compared = 0;
    for (path, (status, body)) in paths.iter().zip(&want) {
        let (got_status, got_body) = node.http_request(path);
        assert_eq!(got_status, 200, "graunt failed on {path}: {got_body}");
        // graphite-web's _nonNegativeDelta compares None > maxValue, which
        // raises under Python 3: it answers 500 wherever such a series has a
        // gap. graunt treats the gap as graphite-web does under Python 2.
        if *status == 500
            && GRAPHITE_WEB_CRASHES
                .iter()
                .any(|t| path.contains(&t.replace(' ', "%20")))
        {
            continue;
        }
        assert_eq!(*status, 200, "graphite-web failed on {path}: {body}");
        same_render(path, body, &got_body);
        compared += 1;
    }
    assert!(compared >= TARGETS.len() * 4 - GRAPHITE_WEB_CRASHES.len() * 4);
    node.stop(Duration::from_secs(20));
}

#[test]
fn metrics_find_matches_graphite_web() {
    let dir = temp_dir();
    let data = dir.path().join("data");
    fixture(&data.join("whisper"));
    let node = Node::serve(BIN.as_ref(), &data, &[]);
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
    }
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
    let node = Node::serve(BIN.as_ref(), &data, &[]);
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

//! Python whisper 1.1.10 as the oracle: random files and update sequences
//! applied by both must give byte-identical files and identical fetches, and
//! each must read the other's files the same way.

use std::path::Path;

use graunt_harness::{temp_dir, whisper_oracle};
use graunt_storage::whisper::{
    self, set_iteration_order, AggregationMethod, CreateOptions, Retention, WhisperError,
    WhisperFile,
};
use serde_json::{json, Value};

/// Scenarios per run; `GRAUNT_ORACLE_SEEDS=3000` for a longer soak.
fn seeds() -> u64 {
    std::env::var("GRAUNT_ORACLE_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(400)
}

/// Python's class name for an error graunt returns, where the two correspond.
fn python_error_class(e: &WhisperError) -> &'static str {
    match e {
        WhisperError::TimestampNotCovered => "TimestampNotCovered",
        WhisperError::InvalidTimeInterval { .. } => "InvalidTimeInterval",
        WhisperError::InvalidGranularity(_) => "ValueError",
        WhisperError::TimestampOutOfRange(_) => "error",
        WhisperError::Corrupt { .. } => "CorruptWhisperFile",
        _ => "other",
    }
}

fn value_json(v: f64) -> Value {
    if v.is_finite() {
        json!(v)
    } else if v.is_nan() {
        // The oracle's own spelling of non-finite floats (Python repr).
        json!("nan")
    } else if v > 0.0 {
        json!("inf")
    } else {
        json!("-inf")
    }
}

fn series_json(s: Option<whisper::Series>) -> Value {
    match s {
        None => Value::Null,
        Some(s) => json!([
            [s.start, s.end, s.step],
            s.values
                .iter()
                .map(|v| v.map_or(Value::Null, value_json))
                .collect::<Vec<_>>()
        ]),
    }
}

fn result_json<T>(r: Result<T, WhisperError>, ok: impl FnOnce(T) -> Value) -> Value {
    match r {
        Ok(v) => json!({ "ok": ok(v) }),
        Err(e) => json!({ "error": python_error_class(&e) }),
    }
}

/// Reduces an oracle result to what graunt can be compared on.
fn normalize(py: &Value) -> Value {
    match py.get("error") {
        Some(Value::String(msg)) => {
            let class = msg.split(':').next().unwrap_or_default();
            json!({ "error": class })
        }
        _ => py.clone(),
    }
}

/// Valid archive lists of 1 to 4 archives, each dividing the next.
fn random_archives(rng: &mut fastrand::Rng) -> Vec<Retention> {
    let count = rng.usize(1..=4);
    let mut spp = [1u32, 5, 10, 60][rng.usize(0..4)];
    let mut points = rng.u32(10..200);
    let mut out = Vec::new();
    for _ in 0..count {
        out.push(Retention {
            seconds_per_point: spp,
            points,
        });
        let factor = [2u32, 3, 4, 6, 10][rng.usize(0..5)];
        let next_spp = spp * factor;
        // Enough points to cover more time and to consolidate into the next.
        points = ((spp * points) / next_spp + 1 + rng.u32(0..100)).max(10);
        spp = next_spp;
    }
    out
}

fn random_value(rng: &mut fastrand::Rng) -> f64 {
    match rng.u8(0..40) {
        0 => f64::NAN,
        1 => f64::INFINITY,
        2 => 0.0,
        3 => -0.0,
        4..=12 => rng.i32(-1000..1000) as f64,
        _ => (rng.f64() - 0.3) * 10f64.powi(rng.i32(-5..9)),
    }
}

/// A value as text both sides parse to the same f64 (Rust's Debug round-trips
/// and Python's float() reads `NaN`, `inf` and exponents).
fn fmt_value(v: f64) -> String {
    format!("{v:?}")
}

struct Scenario {
    name: String,
    archives: Vec<Retention>,
    opts: CreateOptions,
    ops: Vec<Value>,
}

/// Builds one file's random history: create, then updates, batches and
/// fetches with a clock that moves forward.
fn scenario(seed: u64) -> Scenario {
    let mut rng = fastrand::Rng::with_seed(seed);
    let archives = random_archives(&mut rng);
    let method = AggregationMethod::ALL[rng.usize(0..8)];
    let xff = [0.0, 0.5, 1.0, 0.3, 0.25, rng.f64()][rng.usize(0..6)];
    let sparse = rng.bool();
    let name = format!("s{seed}.wsp");
    let first = archives[0];
    let max_retention = archives.iter().map(|a| a.retention()).max().unwrap() as i64;
    let mut now: i64 = 1_700_000_000 + rng.i64(0..100_000);
    let mut ops = Vec::new();
    for _ in 0..rng.usize(1..25) {
        now += rng.i64(0..(first.retention() as i64 / 2 + 2));
        match rng.u8(0..10) {
            0..=2 => {
                let age = match rng.u8(0..10) {
                    0 => -rng.i64(1..100),
                    1 => max_retention + rng.i64(0..100),
                    _ => rng.i64(0..max_retention),
                };
                ops.push(
                    json!({"op": "update", "value": fmt_value(random_value(&mut rng)),
                                "ts": now - age, "now": now}),
                );
            }
            3..=7 => {
                let n = rng.usize(1..150);
                let span =
                    [first.retention() as i64, max_retention, max_retention + 500][rng.usize(0..3)];
                // A few points a step or two ahead, as clocks drift; but not in
                // batches spanning the first archive's whole retention, where a
                // run longer than the archive makes whisper write past its end
                // (graunt wraps instead: see `run_longer_than_archive_stays_inside`).
                let ahead =
                    if span < first.retention() as i64 - 3 * i64::from(first.seconds_per_point) {
                        i64::from(first.seconds_per_point) * 2
                    } else {
                        0
                    };
                let mut points = Vec::new();
                for _ in 0..n {
                    let ts = now - rng.i64(-ahead..span.max(1));
                    points.push(json!([ts, fmt_value(random_value(&mut rng))]));
                    if rng.u8(0..8) == 0 {
                        points.push(json!([ts, fmt_value(random_value(&mut rng))]));
                    }
                }
                ops.push(json!({"op": "update_many", "points": points, "now": now}));
            }
            _ => {
                let from = now - rng.i64(-50..max_retention + 200);
                let until = from + rng.i64(-10..max_retention);
                let archive = (rng.u8(0..4) == 0).then(|| {
                    archives[rng.usize(0..archives.len())]
                        .seconds_per_point
                        .to_string()
                });
                ops.push(
                    json!({"op": "fetch", "from": from, "until": until, "now": now,
                                "archive": archive}),
                );
            }
        }
    }
    ops.push(json!({"op": "fetch", "from": now - max_retention, "until": now, "now": now}));
    let opts = CreateOptions {
        x_files_factor: xff,
        aggregation: method,
        sparse,
    };
    Scenario {
        name,
        archives,
        opts,
        ops,
    }
}

fn fetch_op(path: &Path, op: &Value) -> Value {
    let archive = op["archive"]
        .as_str()
        .map(|s| whisper::parse_precision(s).unwrap());
    let f = WhisperFile::open(path).unwrap();
    let now = op["now"].as_i64().unwrap();
    result_json(
        f.fetch(
            op["from"].as_i64().unwrap(),
            op["until"].as_i64(),
            now,
            archive,
        ),
        series_json,
    )
}

/// Applies a scenario's operations with graunt, returning oracle-shaped results.
fn run_graunt(dir: &Path, sc: &Scenario) -> Vec<Value> {
    let path = dir.join(&sc.name);
    let mut results = vec![result_json(
        whisper::create(&path, &sc.archives, &sc.opts),
        |_| Value::Null,
    )];
    for op in &sc.ops {
        let now = op["now"].as_i64().unwrap();
        let r = match op["op"].as_str().unwrap() {
            "update" => {
                let value: f64 = op["value"].as_str().unwrap().parse().unwrap();
                let mut f = WhisperFile::open_rw(&path).unwrap();
                result_json(f.update(value, op["ts"].as_i64(), now), |_| Value::Null)
            }
            "update_many" => {
                let points: Vec<(i64, f64)> = op["points"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| {
                        (
                            p[0].as_i64().unwrap(),
                            p[1].as_str().unwrap().parse().unwrap(),
                        )
                    })
                    .collect();
                let mut f = WhisperFile::open_rw(&path).unwrap();
                result_json(f.update_many(&points, now), |_| Value::Null)
            }
            "fetch" => fetch_op(&path, op),
            other => panic!("unknown op {other}"),
        };
        results.push(r);
    }
    results
}

fn oracle_ops(dir: &Path, sc: &Scenario) -> Vec<Value> {
    let path = dir.join(&sc.name).display().to_string();
    let archives: Vec<Value> = sc
        .archives
        .iter()
        .map(|a| json!([a.seconds_per_point, a.points]))
        .collect();
    let mut ops = vec![json!({"op": "create", "path": path, "archives": archives,
        "xff": sc.opts.x_files_factor, "method": sc.opts.aggregation.name(),
        "sparse": sc.opts.sparse})];
    for op in &sc.ops {
        let mut op = op.clone();
        op["path"] = json!(path);
        ops.push(op);
    }
    ops
}

fn assert_same_file(py: &Path, rs: &Path, what: &str) {
    let py_bytes = std::fs::read(py).unwrap();
    let rs_bytes = std::fs::read(rs).unwrap();
    if py_bytes != rs_bytes {
        let at = py_bytes.iter().zip(&rs_bytes).position(|(a, b)| a != b);
        let header = WhisperFile::open(rs).unwrap().header().clone();
        let point = |bytes: &[u8], at: usize| {
            let archive = header.archives.iter().find(|a| (at as u64) < a.end());
            let start = archive.map_or(0, |a| at - (at - a.offset as usize) % 12);
            let p = &bytes[start..start + 12];
            (
                u32::from_be_bytes(p[..4].try_into().unwrap()),
                f64::from_be_bytes(p[4..].try_into().unwrap()),
            )
        };
        let detail = at.map(|at| (point(&py_bytes, at), point(&rs_bytes, at)));
        panic!(
            "{what}: files differ (python {} bytes, graunt {} bytes, first difference at byte {at:?}: python, graunt point {detail:?}; header {header:?})",
            py_bytes.len(),
            rs_bytes.len()
        );
    }
}

#[test]
fn random_histories_give_byte_identical_files() {
    let py_dir = temp_dir();
    let rs_dir = temp_dir();
    let scenarios: Vec<Scenario> = (0..seeds()).map(scenario).collect();
    let ops: Vec<Value> = scenarios
        .iter()
        .flat_map(|s| oracle_ops(py_dir.path(), s))
        .collect();
    let answers = whisper_oracle(&Value::Array(ops));
    let mut answers = answers.as_array().unwrap().iter();

    for sc in &scenarios {
        let ours = run_graunt(rs_dir.path(), sc);
        for (i, got) in ours.iter().enumerate() {
            let want = normalize(answers.next().unwrap());
            let op = if i == 0 {
                json!("create")
            } else {
                sc.ops[i - 1].clone()
            };
            assert_eq!(
                got, &want,
                "{} ({:?}, {:?}): operation {i} differs: {op}",
                sc.name, sc.opts, sc.archives
            );
        }
        let what = format!("{} with archives {:?}", sc.name, sc.archives);
        assert_same_file(
            &py_dir.path().join(&sc.name),
            &rs_dir.path().join(&sc.name),
            &what,
        );
    }
}

#[test]
fn each_reads_the_others_files() {
    let py_dir = temp_dir();
    let rs_dir = temp_dir();
    let scenarios: Vec<Scenario> = (1000..1040).map(scenario).collect();
    let ops: Vec<Value> = scenarios
        .iter()
        .flat_map(|s| oracle_ops(py_dir.path(), s))
        .collect();
    whisper_oracle(&Value::Array(ops));
    for sc in &scenarios {
        run_graunt(rs_dir.path(), sc);
    }
    // Python reads graunt's files and graunt reads Python's, over every range
    // the scenario fetched plus the whole retention of each archive.
    let mut reads = Vec::new();
    for sc in &scenarios {
        let now = sc.ops.last().unwrap()["now"].as_i64().unwrap();
        for op in sc.ops.iter().filter(|o| o["op"] == "fetch") {
            reads.push((sc.name.clone(), op.clone()));
        }
        for a in &sc.archives {
            let op = json!({"op": "fetch", "from": now - a.retention() as i64, "until": now,
                            "now": now, "archive": a.seconds_per_point.to_string()});
            reads.push((sc.name.clone(), op));
        }
    }
    let py_reads_rs: Vec<Value> = reads
        .iter()
        .map(|(name, r)| {
            let mut r = r.clone();
            r["path"] = json!(rs_dir.path().join(name).display().to_string());
            r
        })
        .collect();
    let answers = whisper_oracle(&Value::Array(py_reads_rs));
    for ((name, r), want) in reads.iter().zip(answers.as_array().unwrap()) {
        let got = fetch_op(&py_dir.path().join(name), r);
        assert_eq!(got, normalize(want), "{name}: {r}");
    }
}

#[test]
fn python_files_with_every_method_read_identically() {
    let dir = temp_dir();
    let retentions: [&[[u32; 2]]; 4] = [
        &[[60, 1440]],
        &[[10, 360], [60, 1440], [3600, 48]],
        &[[1, 120], [5, 120], [60, 60], [300, 100]],
        &[[10, 8640], [60, 14400], [3600, 9600], [86400, 3650]],
    ];
    let now = 1_700_003_600i64;
    let mut ops = Vec::new();
    for (r, archives) in retentions.iter().enumerate() {
        for method in AggregationMethod::ALL {
            let path = dir
                .path()
                .join(format!("{method}-{r}.wsp"))
                .display()
                .to_string();
            ops.push(
                json!({"op": "create", "path": path, "archives": archives, "xff": 0.25,
                            "method": method.name()}),
            );
            let points: Vec<Value> = (0..600)
                .filter(|i| i % 7 != 3)
                .map(|i| json!([now - i * 9, format!("{:?}", ((i * 37) % 101) as f64 - 50.5)]))
                .collect();
            ops.push(json!({"op": "update_many", "path": path, "points": points, "now": now}));
            for a in archives.iter() {
                ops.push(
                    json!({"op": "fetch", "path": path, "from": now - i64::from(a[0] * a[1]),
                                "until": now, "now": now, "archive": a[0].to_string()}),
                );
            }
            ops.push(json!({"op": "info", "path": path}));
        }
    }
    let answers = whisper_oracle(&Value::Array(ops.clone()));
    let mut fetched = 0;
    for (op, want) in ops.iter().zip(answers.as_array().unwrap()) {
        let path = op["path"].as_str().unwrap();
        match op["op"].as_str().unwrap() {
            "fetch" => {
                assert_eq!(fetch_op(Path::new(path), op), normalize(want), "{op}");
                fetched += 1;
            }
            "info" => {
                let h = WhisperFile::open(path).unwrap().header().clone();
                let info = &want["ok"];
                assert_eq!(info["aggregationMethod"], h.aggregation.name());
                assert_eq!(info["maxRetention"], h.max_retention);
                assert_eq!(
                    info["xFilesFactor"].as_f64().unwrap(),
                    f64::from(h.x_files_factor)
                );
                let archives = info["archives"].as_array().unwrap();
                for (want, got) in archives.iter().zip(&h.archives) {
                    assert_eq!(want["offset"], got.offset);
                    assert_eq!(want["secondsPerPoint"], got.seconds_per_point);
                    assert_eq!(want["points"], got.points);
                }
                assert_eq!(archives.len(), h.archives.len());
            }
            _ => {}
        }
    }
    assert_eq!(fetched, 8 * 12);
}

#[test]
fn set_order_matches_cpython() {
    let mut rng = fastrand::Rng::with_seed(7);
    let mut lists = Vec::new();
    for _ in 0..300 {
        let n = rng.usize(1..400);
        let step = [1i64, 10, 60, 300, 3600, 86400][rng.usize(0..6)];
        let base = 1_700_000_000 - 1_700_000_000 % step;
        lists.push(
            (0..n)
                .map(|_| base + rng.i64(-200..200) * step)
                .collect::<Vec<i64>>(),
        );
    }
    lists.push((0..70_000).map(|i| 1_600_000_000 + i * 60).collect());
    let ops: Vec<Value> = lists
        .iter()
        .map(|l| json!({"op": "set_order", "items": l}))
        .collect();
    let answers = whisper_oracle(&Value::Array(ops));
    for (list, want) in lists.iter().zip(answers.as_array().unwrap()) {
        let want: Vec<i64> = want["ok"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect();
        assert_eq!(
            set_iteration_order(list),
            want,
            "set order of {} items",
            list.len()
        );
    }
}

#[test]
fn merge_and_fill_match_python() {
    let py = temp_dir();
    let rs = temp_dir();
    let now = 1_700_000_000i64;
    let archives = [[10u32, 360], [60, 1440], [3600, 100]];
    let mut rng = fastrand::Rng::with_seed(99);
    let batches: Vec<(&str, Vec<(i64, f64)>)> = ["a", "b", "c", "d"]
        .into_iter()
        .map(|name| {
            let mut pts = Vec::new();
            for i in 0..800 {
                if rng.u8(0..3) != 0 {
                    pts.push((now - i * 13 - rng.i64(0..5), rng.f64() * 100.0));
                }
            }
            (name, pts)
        })
        .collect();
    let p = |d: &tempfile::TempDir, n: &str| d.path().join(format!("{n}.wsp"));
    let s = |d: &tempfile::TempDir, n: &str| p(d, n).display().to_string();

    let mut py_ops = Vec::new();
    for (name, pts) in &batches {
        py_ops.push(
            json!({"op": "create", "path": s(&py, name), "archives": archives,
                           "method": "sum"}),
        );
        let pts: Vec<Value> = pts.iter().map(|(t, v)| json!([t, fmt_value(*v)])).collect();
        py_ops.push(json!({"op": "update_many", "path": s(&py, name), "points": pts, "now": now}));
    }
    py_ops.push(json!({"op": "merge", "from": s(&py, "a"), "to": s(&py, "b"), "now": now + 30}));
    py_ops.push(
        json!({"op": "merge", "from": s(&py, "c"), "to": s(&py, "d"),
                       "time_from": now - 5000, "time_to": now - 1000, "now": now + 30}),
    );
    py_ops.push(json!({"op": "fill", "src": s(&py, "a"), "dst": s(&py, "c"), "now": now + 45}));
    let answers = whisper_oracle(&Value::Array(py_ops));
    assert!(
        answers
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a.get("ok").is_some()),
        "{answers}"
    );

    let retentions: Vec<Retention> = archives
        .iter()
        .map(|a| Retention {
            seconds_per_point: a[0],
            points: a[1],
        })
        .collect();
    let opts = CreateOptions {
        aggregation: AggregationMethod::Sum,
        ..Default::default()
    };
    for (name, pts) in &batches {
        whisper::create(&p(&rs, name), &retentions, &opts).unwrap();
        WhisperFile::open_rw(p(&rs, name))
            .unwrap()
            .update_many(pts, now)
            .unwrap();
    }
    whisper::merge(&p(&rs, "a"), &p(&rs, "b"), None, None, now + 30).unwrap();
    whisper::merge(
        &p(&rs, "c"),
        &p(&rs, "d"),
        Some(now - 5000),
        Some(now - 1000),
        now + 30,
    )
    .unwrap();
    whisper::fill(&p(&rs, "a"), &p(&rs, "c"), now + 45).unwrap();
    for name in ["a", "b", "c", "d"] {
        assert_same_file(
            &p(&py, name),
            &p(&rs, name),
            &format!("{name}.wsp after merge/fill"),
        );
    }
}

/// Debug aid: `GRAUNT_DEBUG_SEED=N cargo test -p graunt-storage --test oracle
/// bisect` replays scenario N one operation at a time and stops at the first
/// operation after which the two files differ.
#[test]
fn bisect() {
    let Some(seed) = std::env::var("GRAUNT_DEBUG_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    else {
        return;
    };
    let sc = scenario(seed);
    let py_dir = temp_dir();
    let rs_dir = temp_dir();
    let ops = oracle_ops(py_dir.path(), &sc);
    for n in 1..=ops.len() {
        let partial = Scenario {
            name: sc.name.clone(),
            archives: sc.archives.clone(),
            opts: sc.opts,
            ops: sc.ops[..n - 1].to_vec(),
        };
        let _ = std::fs::remove_file(py_dir.path().join(&sc.name));
        let _ = std::fs::remove_file(rs_dir.path().join(&sc.name));
        whisper_oracle(&Value::Array(ops[..n].to_vec()));
        run_graunt(rs_dir.path(), &partial);
        let what = format!("after operation {} {}", n - 1, ops[n - 1]);
        assert_same_file(
            &py_dir.path().join(&sc.name),
            &rs_dir.path().join(&sc.name),
            &what,
        );
    }
}

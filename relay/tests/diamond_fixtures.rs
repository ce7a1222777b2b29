//! diamond's own collector tests, replayed: each case under
//! tests/fixtures/diamond holds the /proc files diamond's test fed its
//! collector round by round and the values that test asserts (recorded from
//! python-diamond/Diamond, source named in each case.json). The files go
//! through the agent's collectors via the proc root, and every asserted
//! value must come out as diamond's test demands it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use graunt_relay::agent::collect::{self, FsStats, Host, Sample};
use serde_json::Value;

fn cases() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/diamond");
    let mut out = Vec::new();
    for collector in std::fs::read_dir(&root).expect("fixtures") {
        let collector = collector.unwrap().path();
        if !collector.is_dir() {
            continue;
        }
        for case in std::fs::read_dir(&collector).unwrap() {
            let case = case.unwrap().path();
            if case.join("case.json").exists() {
                out.push(case);
            }
        }
    }
    out.sort();
    out
}

/// statvfs and stat as diamond's test mocked them: one answer for every
/// mount point, and (with `same_st_dev`) one device for all of them.
struct Recorded {
    stats: FsStats,
    same_device: bool,
}

impl collect::Filesystems for Recorded {
    fn statvfs(&self, _: &Path) -> std::io::Result<FsStats> {
        Ok(self.stats)
    }
    fn device_id(&self, path: &Path) -> std::io::Result<u64> {
        Ok(if self.same_device {
            42
        } else {
            path.to_string_lossy().len() as u64
        })
    }
}

fn to_toml(v: &Value) -> toml::Value {
    match v {
        Value::Bool(b) => toml::Value::Boolean(*b),
        Value::Number(n) if n.is_i64() => toml::Value::Integer(n.as_i64().unwrap()),
        Value::Number(n) => toml::Value::Float(n.as_f64().unwrap()),
        Value::String(s) => toml::Value::String(s.clone()),
        Value::Array(a) => toml::Value::Array(a.iter().map(to_toml).collect()),
        Value::Object(o) => {
            toml::Value::Table(o.iter().map(|(k, v)| (k.clone(), to_toml(v))).collect())
        }
        Value::Null => unreachable!("case configs leave unset keys out"),
    }
}

/// Python's `assertAlmostEqual(places=p)`: the difference rounds to 0.
fn almost_equal(actual: f64, expected: f64, places: i32) -> bool {
    let scale = 10f64.powi(places);
    ((actual - expected) * scale).round() == 0.0
}

fn replay(case: &Path) -> Result<(), String> {
    let spec: Value =
        serde_json::from_str(&std::fs::read_to_string(case.join("case.json")).unwrap()).unwrap();
    let name = spec["collector"].as_str().unwrap();
    let mut own = match to_toml(&spec["config"]) {
        toml::Value::Table(t) => t,
        _ => unreachable!(),
    };
    own.insert("enabled".into(), toml::Value::Boolean(true));
    let mut table = toml::Table::new();
    table.insert("hostname".into(), toml::Value::String("replay".into()));
    table.insert(name.into(), toml::Value::Table(own));
    let mut collector = collect::build(&table, None)
        .map_err(|e| format!("config: {e}"))?
        .into_iter()
        .find(|c| c.name() == name)
        .ok_or("collector not built")?;
    let filesystems: Arc<dyn collect::Filesystems> = match spec.get("statvfs") {
        Some(st) => {
            let f = |k: &str| st[k].as_u64().unwrap();
            Arc::new(Recorded {
                stats: FsStats {
                    f_frsize: f("f_frsize"),
                    f_blocks: f("f_blocks"),
                    f_bfree: f("f_bfree"),
                    f_bavail: f("f_bavail"),
                    f_files: f("f_files"),
                    f_ffree: f("f_ffree"),
                    f_favail: f("f_favail"),
                },
                same_device: spec["same_st_dev"].as_bool().unwrap_or(false),
            })
        }
        None => Arc::new(collect::LiveFilesystems),
    };
    let mut last: Vec<Sample> = Vec::new();
    for round in spec["rounds"].as_array().unwrap() {
        let dir = case.join(round["dir"].as_str().unwrap());
        // A round directory without /dev/disk/by-label: as diamond's mocked
        // os.path.isdir said.
        let host = Host {
            proc_root: dir.join("proc"),
            sys_root: dir.join("sys"),
            host_root: dir.clone(),
            filesystems: filesystems.clone(),
        };
        let now = round["time"].as_f64().unwrap_or(0.0);
        last = collector
            .samples(&host, now)
            .map_err(|e| format!("round {}: {e}", round["dir"]))?;
    }
    let mut problems = Vec::new();
    for (metric, want) in spec["expected"].as_object().unwrap() {
        let (value, places) = (want[0].as_f64().unwrap(), want[1].as_i64().unwrap() as i32);
        let got: Vec<&Sample> = last.iter().filter(|s| &s.name == metric).collect();
        match got[..] {
            [s] if almost_equal(s.value, value, places) => {}
            [s] => problems.push(format!(
                "{metric}: {} (diamond's test: {value}, {places} places)",
                s.value
            )),
            [] => problems.push(format!("{metric}: not published (diamond's test: {value})")),
            _ => problems.push(format!("{metric}: published {} times", got.len())),
        }
    }
    if let Some(n) = spec.get("published_count").and_then(Value::as_u64) {
        if last.len() as u64 != n {
            problems.push(format!(
                "{} values published, diamond's test wants {n}",
                last.len()
            ));
        }
    }
    if let Some(bounds) = spec.get("bounds") {
        let max = bounds["per_metric_max"].as_f64().unwrap();
        let sum_max = bounds["per_cpu_sum_max"].as_f64().unwrap();
        let mut sums: std::collections::BTreeMap<String, f64> = Default::default();
        for s in last.iter().filter(|s| !s.name.starts_with("total.")) {
            if s.value > max {
                problems.push(format!("{} = {} is over {max}", s.name, s.value));
            }
            *sums.entry(s.name.chars().take(4).collect()).or_default() += s.value;
        }
        for (cpu, sum) in sums.into_iter().filter(|(_, s)| *s >= sum_max) {
            problems.push(format!("{cpu}: values add up to {sum}, over {sum_max}"));
        }
        if last.is_empty() {
            problems.push("nothing published".into());
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n  "))
    }
}

#[test]
fn diamonds_own_collector_tests_replay_to_their_expected_values() {
    let cases = cases();
    assert!(cases.len() >= 25, "fixtures missing: {} cases", cases.len());
    let mut failed = Vec::new();
    let mut collectors = std::collections::BTreeSet::new();
    for case in &cases {
        collectors.insert(
            case.parent()
                .unwrap()
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned(),
        );
        if let Err(e) = replay(case) {
            failed.push(format!(
                "{}:\n  {e}",
                case.strip_prefix(case.parent().unwrap().parent().unwrap())
                    .unwrap()
                    .display()
            ));
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} cases differ from diamond:\n{}",
        failed.len(),
        cases.len(),
        failed.join("\n")
    );
    let every: Vec<_> = collect::names().map(str::to_string).collect();
    assert_eq!(collectors.into_iter().collect::<Vec<_>>(), {
        let mut e = every;
        e.sort();
        e
    });
}

//! graunt's time expressions against graphite-web's own `parseATTime`, in
//! several time zones and at several reference times (DST edges included).

use graunt_harness::{oracle_python, run_with_stdin, workspace_root};
use graunt_query::time::{parse, time_zone};
use jiff::Timestamp;
use serde_json::{json, Value};

const EXPRS: &[&str] = &[
    "now",
    "-1h",
    "-12hours",
    "now-1d",
    "-5min",
    "-30s",
    "+1h",
    "-1w",
    "-2weeks",
    "-1mon",
    "-1y",
    "-3days4hours",
    "today",
    "yesterday",
    "tomorrow",
    "midnight",
    "noon",
    "teatime",
    "midnight-1d",
    "noon yesterday",
    "6pm today",
    "9am",
    "16:00_20231113",
    "4:30pm_20231113",
    "00:00_20230326",
    "02:30_20230326",
    "02:30_20231029",
    "20231113",
    "20230101",
    "11/13/2023",
    "11/13/23",
    "1/2/99",
    "nov13",
    "dec 1",
    "feb29",
    "monday",
    "sunday",
    "saturday-1w",
    "1699999999",
    "1700000000",
    "16:00 20231113",
    "midnight+90min",
    "Today",
    "YESTERDAY",
];

const ZONES: &[&str] = &[
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Australia/Sydney",
    "Asia/Kolkata",
];
const NOWS: &[i64] = &[1_700_000_000, 1_679_792_400, 1_698_541_200, 1_709_164_800];

#[test]
fn time_expressions_match_graphite_web() {
    let mut cases = Vec::new();
    for tz in ZONES {
        for now in NOWS {
            for expr in EXPRS {
                cases.push(json!({"expr": expr, "tz": tz, "now": now}));
            }
        }
    }
    let script = workspace_root().join("tests/oracle/attime.py");
    let out = run_with_stdin(
        std::process::Command::new(oracle_python()).arg(script),
        &Value::Array(cases.clone()).to_string(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answers: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let mut compared = 0;
    for (case, want) in cases.iter().zip(&answers) {
        let tz = time_zone(case["tz"].as_str().unwrap()).unwrap();
        let now = Timestamp::from_second(case["now"].as_i64().unwrap()).unwrap();
        let got = parse(case["expr"].as_str().unwrap(), &tz, now);
        match (want.as_i64(), got) {
            (Some(w), Ok(g)) => assert_eq!(g.as_second(), w, "{case}"),
            (None, Err(_)) => {}
            (w, g) => panic!("{case}: graphite-web {w:?} / {want}, graunt {g:?}"),
        }
        compared += 1;
    }
    assert_eq!(compared, ZONES.len() * NOWS.len() * EXPRS.len());
}

//! carbon-aggregator 1.1.10's aggregation: 32 rules (every method, `<f>`
//! and `<<f>>` captures, wildcards inside nodes, frequencies from 5 to
//! 120 s, overlapping rules) over 635 input lines, then late points into
//! intervals already sent, through graunt's aggregator and through
//! carbon's own `RuleManager`, `AggregationProcessor` and buffers
//! (tests/oracle/carbon_aggregator.py; recorded in
//! tests/fixtures/carbon_aggregator, checked live too). Every aggregate,
//! every forwarded point and the buffers left must be the same, to the bit.

use std::path::{Path, PathBuf};

use graunt_relay::codec::Point;
use graunt_relay::rules::aggregate::{AggregationRules, Aggregator};
use serde_json::Value;

const NOW: i64 = 1_700_000_400;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/carbon_aggregator")
}

fn points(file: &str) -> Vec<Point> {
    std::fs::read_to_string(fixtures().join(file))
        .unwrap()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some(Point {
                name: f.first()?.to_string(),
                value: f.get(1)?.parse().ok()?,
                timestamp: f.get(2)?.parse().ok()?,
            })
        })
        .collect()
}

fn triples(points: &[Point]) -> Vec<(String, i64, u64)> {
    let mut v: Vec<_> = points
        .iter()
        .map(|p| (p.name.clone(), p.timestamp, p.value.to_bits()))
        .collect();
    v.sort();
    v
}

fn json_triples(v: &Value) -> Vec<(String, i64, u64)> {
    let mut out: Vec<_> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t[0].as_str().unwrap().to_string(),
                t[1].as_i64().unwrap(),
                t[2].as_f64().unwrap().to_bits(),
            )
        })
        .collect();
    out.sort();
    out
}

fn run(forward_all: bool) -> Value {
    let text = std::fs::read_to_string(fixtures().join("aggregation-rules.conf")).unwrap();
    let rules = AggregationRules::parse(&text, "aggregation-rules.conf").unwrap();
    assert_eq!(rules.rules.len(), 32);
    let mut agg = Aggregator::default();
    let mut forwarded = Vec::new();
    let mut feed = |agg: &mut Aggregator, file: &str| {
        for p in points(file) {
            if !agg.input(&rules, &p, NOW) && forward_all {
                forwarded.push(p);
            }
        }
    };
    feed(&mut agg, "input1.txt");
    let generated1 = agg.flush(NOW);
    feed(&mut agg, "input2.txt");
    let generated2 = agg.flush(NOW);
    let mut left: Vec<String> = agg.outputs().iter().map(|s| s.to_string()).collect();
    left.sort();
    serde_json::json!({
        "forwarded": triples(&forwarded).into_iter().map(|(n, t, v)| serde_json::json!([n, t, f64::from_bits(v)])).collect::<Vec<_>>(),
        "generated1": triples(&generated1).into_iter().map(|(n, t, v)| serde_json::json!([n, t, f64::from_bits(v)])).collect::<Vec<_>>(),
        "generated2": triples(&generated2).into_iter().map(|(n, t, v)| serde_json::json!([n, t, f64::from_bits(v)])).collect::<Vec<_>>(),
        "buffers_left": left,
    })
}

fn compare(ours: &Value, theirs: &Value, what: &str) {
    for key in ["forwarded", "generated1", "generated2"] {
        let (a, b) = (json_triples(&ours[key]), json_triples(&theirs[key]));
        let missing: Vec<_> = b.iter().filter(|t| !a.contains(t)).take(5).collect();
        let extra: Vec<_> = a.iter().filter(|t| !b.contains(t)).take(5).collect();
        assert!(
            missing.is_empty() && extra.is_empty() && a.len() == b.len(),
            "{what} {key}: {} ours, {} carbon's; carbon's not ours {missing:?}; ours not carbon's {extra:?}",
            a.len(),
            b.len()
        );
    }
    assert_eq!(ours["buffers_left"], theirs["buffers_left"], "{what}");
}

#[test]
fn aggregates_as_carbon_aggregator_does() {
    for forward_all in [true, false] {
        let ours = run(forward_all);
        let name = format!("expected_forward_all_{}.json", forward_all as u8);
        let recorded: Value =
            serde_json::from_str(&std::fs::read_to_string(fixtures().join(&name)).unwrap())
                .unwrap();
        compare(&ours, &recorded, &name);
        assert!(recorded["generated1"].as_array().unwrap().len() > 300);
        // carbon itself, now.
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/oracle/carbon_aggregator.py");
        let out = std::process::Command::new(graunt_harness::oracle_python())
            .arg(script)
            .args(
                ["aggregation-rules.conf", "input1.txt", "input2.txt"].map(|f| fixtures().join(f)),
            )
            .arg(NOW.to_string())
            .arg(if forward_all { "1" } else { "0" })
            .output()
            .expect("the oracle runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let live: Value = serde_json::from_slice(&out.stdout).unwrap();
        compare(&recorded, &live, "recorded against carbon now");
    }
}

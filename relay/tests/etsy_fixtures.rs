//! The recorded flushes of etsy statsd 0.9 (`../shared/fixtures/statsd/`):
//! the same packets into graunt's aggregator must flush the same lines.

use std::collections::BTreeSet;

use graunt_relay::statsd::{Aggregator, Config};
use serde_json::Value;

/// The shared fixtures, or the copy kept beside the tests.
fn fixtures() -> Value {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for path in [
        root.join("../shared/fixtures/statsd/etsy-statsd-0.9.json"),
        root.join("tests/fixtures/statsd/etsy-statsd-0.9.json"),
    ] {
        if let Ok(text) = std::fs::read_to_string(&path) {
            return serde_json::from_str(&text).unwrap();
        }
    }
    panic!("etsy-statsd-0.9.json not found");
}

const VOLATILE: &[&str] = &[
    "stats.statsd.graphiteStats.calculationtime",
    "stats.statsd.graphiteStats.last_exception",
    "stats.statsd.graphiteStats.last_flush",
    "stats.statsd.graphiteStats.flush_time",
    "stats.statsd.graphiteStats.flush_length",
    "stats.statsd.processing_time",
    "stats.gauges.statsd.timestamp_lag",
];

fn normalize(lines: impl IntoIterator<Item = String>) -> BTreeSet<String> {
    lines
        .into_iter()
        .map(|l| {
            let mut parts: Vec<&str> = l.split(' ').collect();
            if VOLATILE.contains(&parts[0]) {
                parts[1] = "<VOLATILE>";
            }
            parts[2] = "<TS>";
            parts.join(" ")
        })
        .collect()
}

#[test]
fn every_recorded_flush_matches_etsy_statsd() {
    let doc = fixtures();
    let interval = doc["flushInterval_ms"].as_u64().unwrap();
    let cases = doc["cases"].as_array().unwrap();
    assert!(cases.len() >= 19);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let config = Config {
            flush_interval_ms: interval,
            ..Config::default()
        };
        let start = 1_700_000_000_000i64;
        let mut agg = Aggregator::new(config, start / 1000);
        for p in case["packets"].as_array().unwrap() {
            agg.add_packet(p.as_str().unwrap().as_bytes());
        }
        for (i, want) in case["flushes"].as_array().unwrap().iter().enumerate() {
            let got = agg.flush(start + (i as i64 + 1) * interval as i64);
            let got = normalize(got.iter().map(|l| l.to_plaintext()));
            let want = normalize(
                want.as_array()
                    .unwrap()
                    .iter()
                    .map(|l| l.as_str().unwrap().to_string()),
            );
            assert_eq!(got, want, "{name}, flush {i}");
        }
    }
}

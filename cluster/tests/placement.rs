//! carbon_ch placement against carbon 1.1's own router (the `carbon`
//! package): 10,000 names, several destination sets and replication
//! factors, with and without diverse replicas; every name must go to the
//! same destinations in the same order.

use std::io::Write;
use std::process::{Command, Stdio};

use graunt_cluster::hashing::{Destination, Method, Ring};
use graunt_harness::{oracle_python, workspace_root};

fn names() -> Vec<String> {
    let mut rng = 0x2545F4914F6CDD1Du64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    (0..10_000)
        .map(|i| match i % 4 {
            0 => format!("servers.web{}.cpu.{}", next() % 500, next() % 8),
            1 => format!("cust.acme{}.app.requests.count", next() % 1000),
            2 => format!("stats.timers.svc{}.latency.upper_90", next()),
            _ => format!("m{}", next()),
        })
        .collect()
}

fn carbon(
    hash: &str,
    rf: usize,
    diverse: bool,
    destinations: &[&str],
    names: &[String],
) -> Vec<Vec<String>> {
    let mut child = Command::new(oracle_python())
        .arg(workspace_root().join("tests/oracle/carbon_placement.py"))
        .args([hash, &rf.to_string(), if diverse { "1" } else { "0" }])
        .args(destinations)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(names.join("\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn carbon_ch_places_every_name_where_carbon_does() {
    let names = names();
    let sets: &[&[&str]] = &[
        &["127.0.0.1:2004"],
        &["10.0.0.1:2004:a", "10.0.0.2:2004:a", "10.0.0.3:2004:a"],
        &[
            "node1:2104:a",
            "node1:2204:b",
            "node2:2104:a",
            "node2:2204:b",
            "node3:2104:a",
        ],
        &[
            "10.1.1.1:2004",
            "10.1.1.2:2004",
            "10.1.1.3:2004",
            "10.1.1.4:2004",
            "10.1.1.5:2004",
            "10.1.1.6:2004",
        ],
    ];
    let mut checked = 0;
    for set in sets {
        for rf in [1, 2, 3] {
            for diverse in [true, false] {
                let want = carbon("carbon_ch", rf, diverse, set, &names);
                let ring = Ring::new(
                    Method::CarbonCh,
                    set.iter().map(|d| Destination::parse(d).unwrap()).collect(),
                    rf,
                    diverse,
                )
                .unwrap();
                for (name, want) in names.iter().zip(&want) {
                    let got: Vec<String> = ring
                        .route(name)
                        .iter()
                        .map(|&i| ring.destinations()[i].display())
                        .collect();
                    assert_eq!(
                        &got, want,
                        "{name} over {set:?}, rf {rf}, diverse {diverse}"
                    );
                    checked += 1;
                }
            }
        }
    }
    assert_eq!(checked, 10_000 * sets.len() * 6);
}

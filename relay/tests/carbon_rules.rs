//! carbon 1.1.10's rewrite rules, whitelist and blacklist: the files in
//! tests/fixtures/carbon_rules through graunt's rules and through carbon's
//! own `RewriteRuleManager` and `RegexList` (tests/oracle/carbon_rules.py,
//! run live in the oracle venv, and recorded in expected.json): every name
//! comes out the same, or is dropped by both.

use std::collections::BTreeMap;
use std::path::Path;

use graunt_relay::rules::Rules;

fn fixtures() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/carbon_rules")
}

fn graunt(names: &str) -> BTreeMap<String, Option<String>> {
    let read = |f: &str| std::fs::read_to_string(fixtures().join(f)).unwrap();
    let rules = Rules::from_texts(
        &read("rewrite-rules.conf"),
        &read("whitelist.conf"),
        &read("blacklist.conf"),
    )
    .expect("carbon's files parse");
    names
        .lines()
        .filter(|n| !n.is_empty())
        .map(|n| {
            (
                n.to_string(),
                rules.admits(n).ok().map(|()| rules.rewrite(n)),
            )
        })
        .collect()
}

#[test]
fn rewrite_rules_and_lists_as_carbon_applies_them() {
    let names = std::fs::read_to_string(fixtures().join("names.txt")).unwrap();
    let ours = graunt(&names);
    let recorded: BTreeMap<String, Option<String>> =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("expected.json")).unwrap())
            .unwrap();
    assert_eq!(ours.len(), recorded.len());
    for (name, want) in &recorded {
        assert_eq!(ours.get(name), Some(want), "{name}");
    }
    // And carbon itself, now.
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/oracle/carbon_rules.py");
    let out = std::process::Command::new(graunt_harness::oracle_python())
        .arg(script)
        .args(
            [
                "rewrite-rules.conf",
                "whitelist.conf",
                "blacklist.conf",
                "names.txt",
            ]
            .map(|f| fixtures().join(f)),
        )
        .output()
        .expect("the oracle runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let live: BTreeMap<String, Option<String>> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        live, recorded,
        "carbon's answers changed: record expected.json again"
    );
    let dropped = recorded.values().filter(|v| v.is_none()).count();
    let renamed = recorded
        .iter()
        .filter(|(k, v)| v.as_deref().is_some_and(|v| v != k.as_str()))
        .count();
    assert!(
        dropped >= 4 && renamed >= 12,
        "{dropped} dropped, {renamed} renamed"
    );
}

//! `graunt whisper …` against the whisper-*.py scripts of whisper 1.1.10: the
//! same arguments in twin directories must print the same output, exit the
//! same way and leave byte-identical files.

use std::path::Path;
use std::process::{Command, Output};

use graunt_harness::{python_script, run_with_stdin, temp_dir};
use tempfile::TempDir;

const NOW: i64 = 1_700_000_000;

/// Twin working directories: one for the Python scripts, one for graunt.
struct Twins {
    py: TempDir,
    rs: TempDir,
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

impl Twins {
    fn new() -> Self {
        Twins {
            py: temp_dir(),
            rs: temp_dir(),
        }
    }

    fn python(&self, script: &str, args: &[&str], stdin: &str) -> Output {
        let mut cmd = python_script(script, args, NOW);
        cmd.current_dir(self.py.path()).env("TZ", "UTC");
        run_with_stdin(&mut cmd, stdin)
    }

    fn graunt(&self, args: &[&str], stdin: &str) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_graunt"));
        cmd.arg("whisper")
            .args(args)
            .current_dir(self.rs.path())
            .env("TZ", "UTC");
        run_with_stdin(&mut cmd, stdin)
    }

    /// Runs both and checks stdout and exit status agree (and stderr when
    /// `with_stderr`). `now` adds `--now` for graunt's tools that take it.
    fn same_with(
        &self,
        script: &str,
        args: &[&str],
        stdin: &str,
        now: bool,
        with_stderr: bool,
    ) -> String {
        let py = self.python(script, args, stdin);
        let sub = script
            .trim_start_matches("whisper-")
            .trim_end_matches(".py");
        let sub = if sub == "set-aggregation-method" {
            "set-aggregation"
        } else {
            sub
        };
        let now_arg = format!("--now={NOW}");
        let mut ours: Vec<&str> = vec![sub];
        ours.extend_from_slice(args);
        if now {
            ours.push(&now_arg);
        }
        let rs = self.graunt(&ours, stdin);
        let context = format!(
            "{script} {args:?}\n--- python stderr:\n{}\n--- graunt stderr:\n{}",
            text(&py.stderr),
            text(&rs.stderr)
        );
        assert_eq!(
            text(&rs.stdout),
            text(&py.stdout),
            "stdout differs: {context}"
        );
        assert_eq!(
            rs.status.code(),
            py.status.code(),
            "exit status differs: {context}"
        );
        if with_stderr {
            assert_eq!(
                text(&rs.stderr),
                text(&py.stderr),
                "stderr differs: {context}"
            );
        }
        text(&rs.stdout)
    }

    fn same(&self, script: &str, args: &[&str], now: bool) -> String {
        self.same_with(script, args, "", now, true)
    }

    fn same_file(&self, name: &str) {
        let py = std::fs::read(self.py.path().join(name)).expect("python's file");
        let rs = std::fs::read(self.rs.path().join(name)).expect("graunt's file");
        assert!(
            py == rs,
            "{name} differs ({} vs {} bytes)",
            py.len(),
            rs.len()
        );
    }

    fn exists(&self, name: &str) -> (bool, bool) {
        (
            self.py.path().join(name).exists(),
            self.rs.path().join(name).exists(),
        )
    }
}

/// Points over the last `span` seconds, every `every` seconds, some missing.
fn points(span: i64, every: i64) -> Vec<String> {
    (0..span / every)
        .filter(|i| i % 5 != 2)
        .map(|i| format!("{}:{}", NOW - i * every, (i * 17 % 23) as f64 * 1.5 - 4.0))
        .collect()
}

#[test]
fn create_matches_whisper_create() {
    let t = Twins::new();
    t.same("whisper-create.py", &["a.wsp", "60:1440"], false);
    t.same_file("a.wsp");
    let args = [
        "b.wsp",
        "10s:6h",
        "1m:7d",
        "1h:1y",
        "--xFilesFactor=0.3",
        "--aggregationMethod=max",
    ];
    t.same("whisper-create.py", &args, false);
    t.same_file("b.wsp");
    t.same(
        "whisper-create.py",
        &["c.wsp", "1:60", "1m:1h", "--sparse"],
        false,
    );
    t.same_file("c.wsp");
    for method in [
        "average", "sum", "last", "max", "min", "avg_zero", "absmax", "absmin",
    ] {
        let name = format!("m-{method}.wsp");
        let method = format!("--aggregationMethod={method}");
        t.same(
            "whisper-create.py",
            &[&name, "5:100", "60:1000", &method],
            false,
        );
        t.same_file(&name);
    }
    // Existing file, then --overwrite.
    t.same("whisper-create.py", &["a.wsp", "60:10"], false);
    t.same(
        "whisper-create.py",
        &["a.wsp", "60:10", "--overwrite"],
        false,
    );
    t.same_file("a.wsp");
    // Archive lists whisper refuses.
    t.same("whisper-create.py", &["bad.wsp", "60:10", "60:20"], false);
    t.same(
        "whisper-create.py",
        &["bad.wsp", "60:100", "90:1000"],
        false,
    );
    t.same("whisper-create.py", &["bad.wsp", "60:100", "120:10"], false);
    assert_eq!(t.exists("bad.wsp"), (false, false));
    t.same(
        "whisper-create.py",
        &["--estimate", "10s:1d,1m:10d,1h:400d,1d:10y"],
        false,
    );
    t.same(
        "whisper-create.py",
        &["--estimate", "60:1440", "1h:7d"],
        false,
    );
}

#[test]
fn update_matches_whisper_update() {
    let t = Twins::new();
    t.same(
        "whisper-create.py",
        &["u.wsp", "10s:10m", "1m:1h", "10m:1d"],
        false,
    );
    t.same(
        "whisper-update.py",
        &["u.wsp", &format!("{}:42.5", NOW - 35)],
        true,
    );
    t.same_file("u.wsp");
    t.same("whisper-update.py", &["u.wsp", "N:7"], true);
    t.same_file("u.wsp");
    let pts = points(3000, 7);
    let mut args: Vec<&str> = vec!["u.wsp"];
    args.extend(pts.iter().map(String::as_str));
    t.same("whisper-update.py", &args, true);
    t.same_file("u.wsp");
    // From stdin, one point per line.
    let stdin: String = points(80000, 97).iter().map(|p| format!("{p}\n")).collect();
    t.same_with("whisper-update.py", &["u.wsp"], &stdin, true, false);
    t.same_file("u.wsp");
    // A single point outside the retention is whisper's error.
    t.same(
        "whisper-update.py",
        &["u.wsp", &format!("{}:1", NOW - 100_000)],
        true,
    );
    t.same(
        "whisper-update.py",
        &["u.wsp", &format!("{}:1", NOW + 100)],
        true,
    );
    t.same_file("u.wsp");
}

fn filled(t: &Twins, name: &str, archives: &[&str], method: &str) {
    let mut args = vec![name];
    args.extend_from_slice(archives);
    let method = format!("--aggregationMethod={method}");
    args.push(&method);
    t.same("whisper-create.py", &args, false);
    let stdin: String = points(200_000, 13)
        .iter()
        .map(|p| format!("{p}\n"))
        .collect();
    t.same_with("whisper-update.py", &[name], &stdin, true, false);
    t.same_file(name);
}

#[test]
fn info_fetch_and_dump_match() {
    let t = Twins::new();
    filled(&t, "f.wsp", &["10s:1h", "1m:1d", "1h:7d"], "sum");
    t.same("whisper-info.py", &["f.wsp"], false);
    t.same("whisper-info.py", &["f.wsp", "--json"], false);
    for field in [
        "aggregationMethod",
        "maxRetention",
        "xFilesFactor",
        "archives",
        "fileSize",
        "nope",
    ] {
        t.same("whisper-info.py", &["f.wsp", field], false);
    }
    t.same("whisper-fetch.py", &["f.wsp"], true);
    t.same("whisper-fetch.py", &["f.wsp", "--json"], true);
    let from = format!("--from={}", NOW - 1800);
    let until = format!("--until={}", NOW - 600);
    t.same("whisper-fetch.py", &["f.wsp", &from, &until], true);
    t.same(
        "whisper-fetch.py",
        &["f.wsp", &from, &until, "--json"],
        true,
    );
    t.same("whisper-fetch.py", &["f.wsp", &from, "--pretty"], true);
    t.same(
        "whisper-fetch.py",
        &["f.wsp", &from, "--pretty", "-t", "%Y-%m-%d %H:%M:%S"],
        true,
    );
    for drop in ["nulls", "zeroes", "empty"] {
        t.same(
            "whisper-fetch.py",
            &["f.wsp", &from, &format!("--drop={drop}")],
            true,
        );
    }
    let old = format!("--from={}", NOW - 5 * 86400);
    t.same("whisper-fetch.py", &["f.wsp", &old, "--json"], true);
    // Invalid interval and ranges whisper has no data for.
    t.same(
        "whisper-fetch.py",
        &[
            "f.wsp",
            &format!("--from={}", NOW - 600),
            &format!("--until={}", NOW - 1800),
        ],
        true,
    );
    t.same(
        "whisper-fetch.py",
        &[
            "f.wsp",
            &format!("--from={}", NOW + 10),
            &format!("--until={}", NOW + 20),
        ],
        true,
    );
    t.same("whisper-dump.py", &["f.wsp"], false);
    t.same("whisper-dump.py", &["f.wsp", "-r"], false);
    t.same("whisper-dump.py", &["f.wsp", "--pretty"], false);
}

#[test]
fn fetch_json_none_and_archive_selection() {
    let t = Twins::new();
    filled(&t, "g.wsp", &["10s:1h", "1m:1d"], "average");
    let future = [
        format!("--from={}", NOW + 10),
        format!("--until={}", NOW + 20),
    ];
    let out = t.graunt(
        &[
            "fetch",
            "g.wsp",
            &future[0],
            &future[1],
            "--json",
            &format!("--now={NOW}"),
        ],
        "",
    );
    assert!(out.status.success());
    assert_eq!(text(&out.stdout), "null\n");
    let json = |archive: &str| {
        let out = t.graunt(
            &[
                "fetch",
                "g.wsp",
                &format!("--from={}", NOW - 600),
                "--json",
                &format!("--now={NOW}"),
                &format!("--archive={archive}"),
            ],
            "",
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    assert!(json("60").contains("\"step\" : 60"));
    assert!(json("1m").contains("\"step\" : 60"));
    assert!(json("10").contains("\"step\" : 10"));
    let out = t.graunt(
        &["fetch", "g.wsp", "--archive=30", &format!("--now={NOW}")],
        "",
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stderr), "[ERROR] Invalid granularity: 30\n");
}

#[test]
fn resize_matches_whisper_resize() {
    let t = Twins::new();
    filled(&t, "r.wsp", &["10s:1h", "1m:1d"], "average");
    t.same("whisper-resize.py", &["r.wsp", "30s:2h", "5m:2d"], true);
    t.same_file("r.wsp");
    t.same_file("r.wsp.bak");
    filled(&t, "ra.wsp", &["10s:1h", "1m:1d", "1h:7d"], "max");
    t.same(
        "whisper-resize.py",
        &[
            "ra.wsp",
            "1m:2h",
            "10m:3d",
            "--aggregate",
            "--nobackup",
            "--xFilesFactor=0.1",
        ],
        true,
    );
    t.same_file("ra.wsp");
    assert_eq!(t.exists("ra.wsp.bak"), (false, false));
    filled(&t, "rn.wsp", &["10s:1h"], "last");
    t.same(
        "whisper-resize.py",
        &[
            "rn.wsp",
            "10s:2h",
            "--newfile=rn2.wsp",
            "--aggregationMethod=sum",
        ],
        true,
    );
    t.same_file("rn2.wsp");
    t.same_file("rn.wsp");
}

#[test]
fn merge_fill_and_set_aggregation_match() {
    let t = Twins::new();
    filled(&t, "src.wsp", &["10s:1h", "1m:1d"], "average");
    t.same("whisper-create.py", &["dst.wsp", "10s:1h", "1m:1d"], false);
    t.same(
        "whisper-update.py",
        &[
            "dst.wsp",
            &format!("{}:5", NOW - 20),
            &format!("{}:6", NOW - 3000),
        ],
        true,
    );
    t.same(
        "whisper-merge.py",
        &["src.wsp", "dst.wsp", &format!("--from={}", NOW - 2000)],
        true,
    );
    t.same_file("dst.wsp");
    t.same("whisper-create.py", &["gap.wsp", "10s:1h", "1m:1d"], false);
    let stdin: String = points(1000, 10)
        .iter()
        .chain(points(80000, 600).iter())
        .map(|p| format!("{p}\n"))
        .collect();
    t.same_with("whisper-update.py", &["gap.wsp"], &stdin, true, false);
    t.same("whisper-fill.py", &["src.wsp", "gap.wsp"], true);
    t.same_file("gap.wsp");
    t.same("whisper-merge.py", &["src.wsp", "missing.wsp"], true);
    t.same(
        "whisper-set-aggregation-method.py",
        &["dst.wsp", "max"],
        false,
    );
    t.same_file("dst.wsp");
    t.same(
        "whisper-set-aggregation-method.py",
        &["dst.wsp", "sum", "0.25"],
        false,
    );
    t.same_file("dst.wsp");
    t.same(
        "whisper-set-aggregation-method.py",
        &["dst.wsp", "median"],
        false,
    );
    t.same(
        "whisper-set-aggregation-method.py",
        &["dst.wsp", "sum", "2"],
        false,
    );
    t.same_file("dst.wsp");
}

#[test]
fn corrupt_files_give_clear_errors() {
    let dir = temp_dir();
    let cases: [(&str, Vec<u8>, &str); 4] = [
        ("empty.wsp", vec![], "Unable to read header"),
        (
            "text.wsp",
            b"this is not a whisper file at all\n".to_vec(),
            "aggregation type",
        ),
        (
            "short.wsp",
            [0, 0, 0, 1, 0, 0, 0, 60, 63, 0, 0, 0, 0, 0, 0, 2].to_vec(),
            "archive0 metadata",
        ),
        (
            "truncated.wsp",
            [
                &[0u8, 0, 0, 1, 0, 0, 0, 60, 63, 0, 0, 0, 0, 0, 0, 1][..],
                &[0, 0, 0, 28, 0, 0, 0, 1, 0, 0, 0, 60][..],
                &[0; 100][..],
            ]
            .concat(),
            "past the end of the file",
        ),
    ];
    for (name, bytes, expect) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        for sub in [
            vec!["info"],
            vec!["fetch", "--now=1700000000"],
            vec!["dump"],
            vec!["update", "--now=1700000000"],
        ] {
            let mut args = vec!["whisper", sub[0]];
            let p = path.display().to_string();
            args.push(&p);
            args.extend_from_slice(&sub[1..]);
            if sub[0] == "update" {
                args.push("1700000000:1");
            }
            let out = Command::new(env!("CARGO_BIN_EXE_graunt"))
                .args(&args)
                .output()
                .unwrap();
            let err = text(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
            assert!(
                err.starts_with("[ERROR] ") && err.contains(expect) && err.contains(name),
                "{args:?}: {err}"
            );
        }
    }
    let missing = Command::new(env!("CARGO_BIN_EXE_graunt"))
        .args([
            "whisper",
            "info",
            &dir.path().join("nope.wsp").display().to_string(),
        ])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(text(&missing.stderr).contains("No such file"));
    assert!(Path::new(env!("CARGO_BIN_EXE_graunt")).exists());
}

//! `cargo bench -p graunt-storage --bench whisper`: the whisper engine against
//! Python whisper 1.1.10 (same files, same run) and against the raw
//! `pread`/`pwrite` cost of the same bytes. Prints a Markdown table for
//! docs/BENCHMARKS.md.
//!
//! Workloads (the issue's):
//! - `update_many` of 1 point into each of 10,000 files (10s:6h,1m:7d, sparse)
//! - `update_many` of 100 points into one file, 2,000 calls
//! - `fetch` of one day at 10 s (8,640 points) from each of 1,000 files
//! - creating 10,000 files (10s:1h,1m:1d) as the node's writer does
//!   (`create_atomic`: allocated, linked into place), against Python's
//!   `whisper.create` with carbon's default fallocate, and against the floor
//!   (`open` + `fallocate` + `close`); the zero-filled creation graunt did
//!   before issue 19 is printed beside it
//!
//! The raw baseline opens each file, reads its header and writes (or reads)
//! the point bytes with one `pwrite`/`pread`, then closes it: the least any
//! whisper writer must do.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use graunt_storage::whisper::{self, CreateOptions, Retention, WhisperFile};

const NOW: i64 = 1_700_000_000;
const MANY_FILES: usize = 10_000;
const ONE_FILE_CALLS: usize = 2_000;
const FETCH_FILES: usize = 1_000;
const RUNS: usize = 3;

fn retention(spp: u32, points: u32) -> Retention {
    Retention {
        seconds_per_point: spp,
        points,
    }
}

fn python() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    std::env::var_os("GRAUNT_ORACLE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".venv/bin/python"))
}

fn peer(kind: &str, target: &Path, count: usize, now: i64) -> f64 {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/whisper_peer.py");
    let out = Command::new(python())
        .arg(script)
        .arg(kind)
        .arg(target)
        .arg(count.to_string())
        .arg(now.to_string())
        .output()
        .expect("run bench/whisper_peer.py (create .venv with `bash .ci/run` first)");
    assert!(
        out.status.success(),
        "peer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("peer prints seconds")
}

/// Best of `RUNS` timings of `f`, in seconds.
fn best(mut f: impl FnMut(usize) -> f64) -> f64 {
    (0..RUNS).map(&mut f).fold(f64::INFINITY, f64::min)
}

fn time(f: impl FnOnce()) -> f64 {
    let start = Instant::now();
    f();
    start.elapsed().as_secs_f64()
}

fn raw_write(path: &Path, header_len: usize, bytes: &[u8], at: u64) {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut header = vec![0u8; header_len];
    file.read_exact_at(&mut header, 0).unwrap();
    file.write_all_at(bytes, at).unwrap();
}

fn raw_read(path: &Path, header_len: usize, len: usize, at: u64) -> usize {
    let file = File::open(path).unwrap();
    let mut header = vec![0u8; header_len];
    file.read_exact_at(&mut header, 0).unwrap();
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, at).unwrap();
    buf.len()
}

struct Row {
    name: &'static str,
    unit: &'static str,
    per: f64,
    graunt: f64,
    python: f64,
    raw: f64,
}

fn main() {
    let dir = tempfile::Builder::new()
        .prefix("graunt-bench-")
        .tempdir()
        .unwrap();
    let mut rows = Vec::new();

    // 1. One point into each of 10,000 files.
    let many = dir.path().join("many");
    std::fs::create_dir(&many).unwrap();
    let archives = [retention(10, 2160), retention(60, 10080)];
    let sparse = CreateOptions {
        sparse: true,
        ..Default::default()
    };
    let paths: Vec<PathBuf> = (0..MANY_FILES)
        .map(|i| many.join(format!("m{i:05}.wsp")))
        .collect();
    for p in &paths {
        whisper::create(p, &archives, &sparse).unwrap();
    }
    let header_len = 16 + 12 * archives.len();
    let graunt = best(|run| {
        let now = NOW + run as i64 * 100;
        time(|| {
            for (i, p) in paths.iter().enumerate() {
                WhisperFile::open_rw(p)
                    .unwrap()
                    .update_many(&[(now - 5, i as f64)], now)
                    .unwrap();
            }
        })
    });
    let raw = best(|_| {
        time(|| {
            for p in &paths {
                raw_write(p, header_len, &[7u8; 12], header_len as u64 + 120);
            }
        })
    });
    let python = best(|run| {
        peer(
            "many_files",
            &many,
            MANY_FILES,
            NOW + 1000 + run as i64 * 100,
        )
    });
    rows.push(Row {
        name: "update_many, 1 point into each of 10,000 files",
        unit: "files/s",
        per: MANY_FILES as f64,
        graunt,
        python,
        raw,
    });

    // 2. 100 points into one file, 2,000 calls.
    let one = dir.path().join("one.wsp");
    let py_one = dir.path().join("py-one.wsp");
    whisper::create(&one, &archives, &CreateOptions::default()).unwrap();
    whisper::create(&py_one, &archives, &CreateOptions::default()).unwrap();
    let batch =
        |base: i64| -> Vec<(i64, f64)> { (0..100).map(|k| (base - 10 * k, k as f64)).collect() };
    let graunt = best(|_| {
        time(|| {
            for call in 0..ONE_FILE_CALLS {
                let base = NOW - 1000 + call as i64 * 10;
                WhisperFile::open_rw(&one)
                    .unwrap()
                    .update_many(&batch(base), base)
                    .unwrap();
            }
        })
    });
    let raw = best(|_| {
        let bytes = vec![7u8; 1200];
        time(|| {
            for call in 0..ONE_FILE_CALLS {
                raw_write(
                    &one,
                    header_len,
                    &bytes,
                    header_len as u64 + (call % 1000) as u64 * 12,
                );
            }
        })
    });
    let python = best(|_| peer("one_file", &py_one, ONE_FILE_CALLS, NOW));
    rows.push(Row {
        name: "update_many, 100 points into one file",
        unit: "calls/s",
        per: ONE_FILE_CALLS as f64,
        graunt,
        python,
        raw,
    });

    // 3. One day at 10 s from each of 1,000 files.
    let fetch_dir = dir.path().join("fetch");
    std::fs::create_dir(&fetch_dir).unwrap();
    let day = [retention(10, 8640)];
    let points: Vec<(i64, f64)> = (0..8640).map(|k| (NOW - 10 * k, k as f64)).collect();
    let fetch_paths: Vec<PathBuf> = (0..FETCH_FILES)
        .map(|i| fetch_dir.join(format!("f{i:04}.wsp")))
        .collect();
    for p in &fetch_paths {
        whisper::create(p, &day, &CreateOptions::default()).unwrap();
        WhisperFile::open_rw(p)
            .unwrap()
            .update_many(&points, NOW)
            .unwrap();
    }
    let graunt = best(|_| {
        time(|| {
            let mut total = 0;
            for p in &fetch_paths {
                let s = WhisperFile::open(p)
                    .unwrap()
                    .fetch(NOW - 86400, Some(NOW), NOW, None)
                    .unwrap();
                total += s.unwrap().values.len();
            }
            assert_eq!(total, FETCH_FILES * 8640);
        })
    });
    let raw = best(|_| {
        time(|| {
            for p in &fetch_paths {
                raw_read(p, 28, 8640 * 12, 28);
            }
        })
    });
    let python = best(|_| peer("fetch", &fetch_dir, FETCH_FILES, NOW));
    rows.push(Row {
        name: "fetch one day at 10 s from each of 1,000 files",
        unit: "files/s",
        per: FETCH_FILES as f64,
        graunt,
        python,
        raw,
    });

    // 4. Creating 10,000 files, as the writer does.
    let create_archives = [retention(10, 360), retention(60, 1440)];
    let size = 16 + 12 * 2 + 12 * (360 + 1440) as u64;
    let fresh = |what: &str, run: usize| {
        let d = dir.path().join(format!("create-{what}-{run}"));
        std::fs::create_dir(&d).unwrap();
        d
    };
    let graunt = best(|run| {
        let d = fresh("graunt", run);
        time(|| {
            for i in 0..MANY_FILES {
                whisper::create_atomic(
                    &d.join(format!("c{i:05}.wsp")),
                    &create_archives,
                    &CreateOptions::default(),
                )
                .unwrap();
            }
        })
    });
    let zero_filled = best(|run| {
        let d = fresh("zero", run);
        time(|| {
            for i in 0..MANY_FILES {
                let mut f = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .open(d.join(format!("c{i:05}.wsp")))
                    .unwrap();
                whisper::create_in(&mut f, &create_archives, &CreateOptions::default()).unwrap();
            }
        })
    });
    let raw = best(|run| {
        let d = fresh("raw", run);
        time(|| {
            for i in 0..MANY_FILES {
                let f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(d.join(format!("c{i:05}.wsp")))
                    .unwrap();
                use std::os::fd::AsRawFd;
                // SAFETY: the file is open for writing during the call.
                let r = unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, size as libc::off_t) };
                assert_eq!(r, 0);
            }
        })
    });
    let python = best(|run| {
        peer(
            "create",
            &dir.path().join(format!("create-py-{run}")),
            MANY_FILES,
            NOW,
        )
    });
    eprintln!(
        "creating 10,000 files zero-filled (before issue 19): {:.0} files/s ({:.3} s)",
        MANY_FILES as f64 / zero_filled,
        zero_filled
    );
    rows.push(Row {
        name: "create 10,000 files (10s:1h,1m:1d)",
        unit: "files/s",
        per: MANY_FILES as f64,
        graunt,
        python,
        raw,
    });

    println!("| workload | graunt | Python whisper 1.1.10 | raw pread/pwrite | graunt / Python | graunt cost / raw cost |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for r in rows {
        println!(
            "| {} | {:.0} {unit} ({:.3} s) | {:.0} {unit} ({:.3} s) | {:.0} {unit} ({:.3} s) | {:.1}x faster | {:.2}x |",
            r.name,
            r.per / r.graunt,
            r.graunt,
            r.per / r.python,
            r.python,
            r.per / r.raw,
            r.raw,
            r.python / r.graunt,
            r.graunt / r.raw,
            unit = r.unit,
        );
    }
}
